"""The reverse proxy's route plan and its Caddyfile (Caddy terminates TLS with the origin cert)."""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_UPSTREAM = "queue:8000"
GATEWAY_UPSTREAM = "gateway:8188"
TLS_CERT = "/etc/caddy/tls/origin.pem"
TLS_KEY = "/etc/caddy/tls/origin.key"
# Absolute paths the ComfyUI frontend requests outside its /userNNN/ prefix.
# /api/ is NOT among them: it belongs to the queue.
GATEWAY_ROOT_PATHS = ("/assets/*", "/cursor/*", "/docs/*")


@dataclass(frozen=True)
class Route:
    """One routing rule: request paths and where they go ("redirect" or an upstream)."""

    paths: tuple[str, ...]
    upstream: str


def route_plan(usernames: tuple[str, ...]) -> list[Route]:
    """Which paths go where, in the order the proxy matches them."""
    return [
        Route(("/api/*",), QUEUE_UPSTREAM),
        Route(("/admin", "/admin/*"), QUEUE_UPSTREAM),
        Route(tuple(f"/{u}" for u in usernames), "redirect"),
        Route(tuple(f"/{u}/*" for u in usernames), GATEWAY_UPSTREAM),
        Route(GATEWAY_ROOT_PATHS, GATEWAY_UPSTREAM),
    ]


def _upstream_block(upstream: str, gateway_deployed: bool) -> str:
    if upstream == GATEWAY_UPSTREAM and not gateway_deployed:
        return '\t\trespond "The participant gateway is not deployed yet." 503\n'
    return (
        f"\t\treverse_proxy {upstream} {{\n"
        "\t\t\theader_up X-Real-IP {http.request.header.CF-Connecting-IP}\n"
        "\t\t}\n"
    )


def render_caddyfile(domain: str, usernames: tuple[str, ...], gateway_deployed: bool) -> str:
    """A Caddyfile for `domain` implementing `route_plan` (validated by `caddy validate`)."""
    out = [
        "{\n\tadmin off\n\tauto_https disable_certs\n}\n\n",
        f"{domain} {{\n",
        f"\ttls {TLS_CERT} {TLS_KEY}\n",
        "\tencode zstd gzip\n",
        '\theader Strict-Transport-Security "max-age=31536000"\n',
        "\theader -Server\n",
    ]
    for i, route in enumerate(route_plan(usernames)):
        matcher = f"@r{i}"
        out.append(f"\t{matcher} path {' '.join(route.paths)}\n")
        if route.upstream == "redirect":
            out.append(f"\tredir {matcher} {{path}}/ 308\n")
            continue
        out.append(f"\thandle {matcher} {{\n")
        out.append(_upstream_block(route.upstream, gateway_deployed))
        out.append("\t}\n")
    out.append('\thandle {\n\t\trespond "Open the /userNNN/ link you were given." 404\n\t}\n')
    out.append("}\n")
    return "".join(out)
