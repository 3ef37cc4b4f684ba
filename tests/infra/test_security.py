"""Security invariants on the mocked registrations: firewall, tailnet ACL, R2 scopes, secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from infra.storage import R2_ITEM_READ, R2_ITEM_WRITE
from infra.tailnet import acl_document
from tests.infra.harness import (
    ACCOUNT,
    CLOUDFLARE_IPV4,
    CLOUDFLARE_IPV6,
    ProviderError,
    ProviderMocks,
    World,
    make_config,
    run_program,
)

ROOT = Path(__file__).resolve().parents[2]

PREFIX = "comfy-workshop-workshop"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return run_program(make_config(tmp_path_factory.mktemp("cfg")))


def test_firewall_opens_https_to_cloudflare_only_and_ssh_to_admins(stack):
    """Cloudflare's published ranges (getIpRanges) and nothing else reach 443; no port 80:
    Full (strict) with Always Use HTTPS never connects to the origin in plain HTTP."""
    (fw,) = stack.of_type("hcloud:index/firewall:Firewall")
    rules = {(r["protocol"], r["port"]): r["sourceIps"] for r in fw.inputs["rules"]}
    assert rules == {
        ("tcp", "443"): [*CLOUDFLARE_IPV4, *CLOUDFLARE_IPV6],
        ("tcp", "22"): ["198.51.100.0/24"],
    }
    assert all(r["direction"] == "in" for r in fw.inputs["rules"])
    server = stack.one("hcloud:index/server:Server", "server")
    assert len(server.inputs["firewallIds"]) == 1
    proxy = stack.one("docker:index/container:Container", "proxy")
    assert proxy.inputs["ports"] == [{"internal": 443, "external": 443}]


def test_caddy_trusts_the_client_address_header_from_cloudflare_only(stack):
    proxy = stack.one("docker:index/container:Container", "proxy")
    caddyfile = next(
        u["content"] for u in proxy.inputs["uploads"] if u["file"].endswith("Caddyfile")
    )
    trusted = re.search(r"trusted_proxies static (.+)\n", caddyfile).group(1).split()
    assert trusted == [*CLOUDFLARE_IPV4, *CLOUDFLARE_IPV6]
    assert "client_ip_headers CF-Connecting-IP" in caddyfile
    assert "{http.request.header.CF-Connecting-IP}" not in caddyfile  # never taken verbatim


def test_zone_answers_plain_http_at_the_edge(stack):
    settings = {
        r.inputs["settingId"]: r.inputs["value"]
        for r in stack.of_type("cloudflare:index/zoneSetting:ZoneSetting")
    }
    assert settings == {"ssl": "strict", "always_use_https": "on"}
    assert stack.world.zone == settings


# --- a small evaluator of Tailscale ACL semantics (accept rules only, no grants) ---


def _matches_src(src: str, who: str, groups: dict) -> bool:
    return src == "*" or src == who or (src.startswith("group:") and who in groups.get(src, []))


def _port_in(spec: str, port: int) -> bool:
    if spec == "*":
        return True
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if int(lo) <= port <= int(hi or lo):
            return True
    return False


def allowed(acl: dict, who: str, dst_tag: str, port: int) -> bool:
    for rule in acl["acls"]:
        if rule["action"] != "accept":
            continue
        if not any(_matches_src(s, who, acl.get("groups", {})) for s in rule["src"]):
            continue
        for dst in rule["dst"]:
            host, _, ports = dst.rpartition(":")
            if host in ("*", dst_tag) and _port_in(ports, port):
                return True
    return False


@pytest.fixture(scope="module")
def acl(stack):
    return json.loads(stack.one("tailscale:index/acl:Acl", "acl").inputs["acl"])


def test_gpu_reaches_only_the_queue_port(acl):
    reachable = [p for p in range(1, 65536) if allowed(acl, "tag:comfy-gpu", "tag:comfy-vps", p)]
    assert reachable == [8000]
    assert not any(allowed(acl, "tag:comfy-gpu", "tag:comfy-gpu", p) for p in (22, 8188))


def test_nothing_reaches_redis_and_admins_reach_the_rest(acl):
    for who in ("tag:comfy-gpu", "tag:comfy-vps", "admin@example.org", "stranger@example.org"):
        for dst in ("tag:comfy-vps", "tag:comfy-gpu"):
            assert not allowed(acl, who, dst, 6379), (who, dst)
    for port in (22, 443, 8000, 8188, 6378, 6380, 65535):
        assert allowed(acl, "admin@example.org", "tag:comfy-vps", port)
    assert not allowed(acl, "stranger@example.org", "tag:comfy-vps", 8000)
    assert acl["tagOwners"] == {
        "tag:comfy-vps": ["group:comfy-admins"],
        "tag:comfy-gpu": ["group:comfy-admins"],
    }


def test_acl_tests_block_states_the_rules_and_agrees_with_them(acl):
    tests = acl["tests"]
    gpu = next(t for t in tests if t["src"] == "tag:comfy-gpu")
    assert "tag:comfy-vps:8000" in gpu["accept"] and "tag:comfy-vps:6379" in gpu["deny"]
    vps = next(t for t in tests if t["src"] == "tag:comfy-vps")
    assert "tag:comfy-vps:6379" in vps["deny"]
    for t in tests:
        for verdict, expect in (("accept", True), ("deny", False)):
            for dst in t.get(verdict, []):
                tag, _, port = dst.rpartition(":")
                assert allowed(acl, t["src"], tag, int(port)) is expect, (t["src"], dst)


def test_first_acl_apply_passes_on_a_fresh_tailnet(tmp_path):
    """Tailscale runs the policy's `tests` on every apply and fails a test whose source is a
    user without an approved device: on the first `up` the admins have none. The policy's
    tests use tags only, so the first apply passes; admins' reach is asserted above."""
    world = World()  # nobody has a device yet
    s = run_program(make_config(tmp_path, adminEmails=["a@example.org", "b@example.org"]), world)
    tests = json.loads(s.one("tailscale:index/acl:Acl", "acl").inputs["acl"])["tests"]
    assert tests and all(t["src"].startswith("tag:") for t in tests)
    # The mock applies Tailscale's rule: a user source fails without a device, passes with.
    with_user = acl_document(("a@example.org",))
    with_user["tests"].append({"src": "a@example.org", "accept": ["tag:comfy-vps:22"]})
    mocks = ProviderMocks(world, {}, {})
    with pytest.raises(ProviderError, match="no associated IPs for user"):
        mocks.check_acl({"acl": json.dumps(with_user)})
    world.users_with_devices.add("a@example.org")
    mocks.check_acl({"acl": json.dumps(with_user)})


def test_tailscale_ssh_rules_exist_only_if_a_host_enables_tailscale_ssh(acl):
    """SSH rules that no `tailscale up --ssh` enables are dead policy (and a host that turns
    Tailscale SSH on without a rule is locked out): the two must agree."""
    scripts = [p.read_text() for p in (ROOT / "cloud-init").rglob("*") if p.is_file()]
    enables_ssh = any(re.search(r"tailscale (up|set)\b[^\n]*--ssh\b", t) for t in scripts)
    assert bool(acl.get("ssh")) == enables_ssh


def test_auth_keys(stack):
    keys = {k.name: k.inputs for k in stack.of_type("tailscale:index/tailnetKey:TailnetKey")}
    assert keys["vps-key"]["reusable"] is False and keys["vps-key"]["preauthorized"] is True
    assert keys["vps-key"]["tags"] == ["tag:comfy-vps"]
    assert keys["gpu-key"]["ephemeral"] is True and keys["gpu-key"]["preauthorized"] is True
    assert keys["gpu-key"]["tags"] == ["tag:comfy-gpu"]
    for k in stack.of_type("tailscale:index/tailnetKey:TailnetKey"):
        assert "tailscale:index/acl:Acl::acl" in k.depends_on  # tags exist before keys


def test_no_secret_in_the_user_data(stack):
    """Hetzner serves the user data at 169.254.169.254 to anything on the host, containers
    on the edge network included: the tailnet key travels over SSH instead."""
    server = stack.one("hcloud:index/server:Server", "server")
    user_data = server.inputs["userData"]
    assert "tskey" not in user_data and "SECRET" not in user_data
    doc = yaml.safe_load(user_data)
    assert not any("authkey" in f["path"] for f in doc["write_files"])
    join = stack.one("command:remote:Command", "tailnet-join")
    key = stack.one("tailscale:index/tailnetKey:TailnetKey", "vps-key")
    assert join.inputs["stdin"] == stack.state[key.key].outputs["key"]
    assert "stdin" in join.secret_inputs and "stdin" in join.additional_secret_outputs


def _scopes(token) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    names = {R2_ITEM_READ: "read", R2_ITEM_WRITE: "write"}
    for policy in token.inputs["policies"]:
        assert policy["effect"] == "allow"
        perms = {names[g["id"]] for g in policy["permissionGroups"]}
        for resource in json.loads(policy["resources"]):
            bucket = resource.removeprefix(f"com.cloudflare.edge.r2.bucket.{ACCOUNT}_default_")
            got.setdefault(bucket, set()).update(perms)
    return got


def test_r2_credential_scopes(stack):
    tokens = {t.name: t for t in stack.of_type("cloudflare:index/apiToken:ApiToken")}
    assert _scopes(tokens["r2-token-vps"]) == {
        f"{PREFIX}-user-files": {"read", "write"},
        f"{PREFIX}-cache": {"read"},
    }
    assert _scopes(tokens["r2-token-gpu"]) == {
        f"{PREFIX}-models": {"read"},
        f"{PREFIX}-cache": {"read"},
        f"{PREFIX}-user-files": {"write"},
    }


def test_secrets_are_secret(stack):
    assert stack.secret_outputs == {"credentials"}
    creds = stack.outputs["credentials"]
    assert set(creds["participants"]) == {f"user{i:03d}" for i in range(1, 21)}
    assert creds["admin"] == "pw-password-admin-SECRET"
    server = stack.one("hcloud:index/server:Server", "server")
    assert "userData" in server.secret_inputs
    queue = stack.one("docker:index/container:Container", "queue")
    assert "envs" in queue.secret_inputs
    step = stack.one("command:remote:Command", "restore-then-backup")
    assert "stdin" in step.secret_inputs
    # The R2 secret is sha256(token value), derived inside the program, never plain.
    assert "token-value-r2-token-vps-SECRET" not in step.inputs["stdin"]
    assert "BACKUP_S3_ACCESS_KEY_ID=token-id-r2-token-vps" in step.inputs["stdin"]
    for key in ("connection",):
        assert key in step.secret_inputs  # the SSH private key
    plain = json.dumps(
        {
            k: {n: v for n, v in r.inputs.items() if n not in r.secret_inputs}
            for k, r in stack.resources.items()
        }
    )
    for leaked in ("SECRET", "PRIVATE KEY"):
        assert leaked not in plain
