"""Caddy's config, rendered from the route plan in services/contracts.py.

Caddy terminates TLS with the Cloudflare Origin CA certificate and listens on 443 only:
Cloudflare reaches the origin over HTTPS ("Full (strict)", with "Always Use HTTPS" answering
plain-HTTP visitors at the edge), so there is no port-80 redirect server. The client address
is taken from `CF-Connecting-IP` only when the connection comes from one of Cloudflare's
published ranges (`trusted_proxies`); from anywhere else the header is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.contracts import (
    GATEWAY_PORT,
    NOT_ROUTED_MESSAGE,
    QUEUE_PORT,
    Route,
    Upstream,
    route_plan,
)

TLS_CERT = "/etc/caddy/tls/origin.pem"
TLS_KEY = "/etc/caddy/tls/origin.key"
HTTPS_PORT = 443
#: Container names on the edge network (Docker's DNS resolves them).
UPSTREAMS: Mapping[Upstream, str] = {
    Upstream.QUEUE: f"queue:{QUEUE_PORT}",
    Upstream.GATEWAY: f"gateway:{GATEWAY_PORT}",
}
CLIENT_IP_HEADER = "CF-Connecting-IP"


def render_caddyfile(
    domain: str,
    trusted_proxies: Sequence[str],
    upstreams: Mapping[Upstream, str] = UPSTREAMS,
) -> str:
    """The Caddyfile for `domain` implementing `route_plan` (checked by `caddy validate`).

    `trusted_proxies` are the CIDRs whose `CF-Connecting-IP` is believed (Cloudflare's).
    Participants are routed by pattern (`path_regexp`), so the file names none of them and a
    participant added at runtime is served without a redeploy.
    """
    if not trusted_proxies:
        raise ValueError("trusted_proxies is empty: Cloudflare's ranges are required")
    out = [
        "{\n",
        "\tadmin off\n",
        # The certificate is loaded from files, and Cloudflare never speaks plain HTTP to us.
        "\tauto_https disable_redirects\n",
        "\tservers {\n",
        f"\t\ttrusted_proxies static {' '.join(trusted_proxies)}\n",
        f"\t\tclient_ip_headers {CLIENT_IP_HEADER}\n",
        "\t}\n",
        "}\n\n",
        f"https://{domain} {{\n",
        f"\ttls {TLS_CERT} {TLS_KEY}\n",
        "\tencode zstd gzip\n",
        '\theader Strict-Transport-Security "max-age=31536000"\n',
        "\theader -Server\n",
    ]
    for i, route in enumerate(route_plan()):
        matcher = f"@r{i}"
        out.append(f"\t{matcher} {_matcher(route)}\n")
        if route.upstream is Upstream.REDIRECT:
            # Inside `handle`: a bare `redir` would run before every `handle` (Caddy's
            # directive order) and take `/admin` from the queue's route above.
            out.append(f"\thandle {matcher} {{\n\t\tredir {{path}}/ 308\n\t}}\n")
            continue
        out += [
            f"\thandle {matcher} {{\n",
            f"\t\treverse_proxy {upstreams[route.upstream]} {{\n",
            # {client_ip}: CF-Connecting-IP from a trusted proxy, else the peer's address.
            "\t\t\theader_up X-Real-IP {client_ip}\n",
            "\t\t}\n",
            "\t}\n",
        ]
    out.append(f'\thandle {{\n\t\trespond "{NOT_ROUTED_MESSAGE}" 404\n\t}}\n')
    out.append("}\n")
    return "".join(out)


def _matcher(route: Route) -> str:
    """A named matcher's body for `route`: `path` (its own matching ignores case), or
    `path_regexp` for a route by pattern, made to match the whole path, ignoring case, as
    `Route.matches` does."""
    if route.regexp is None:
        return f"path {' '.join(route.paths)}"
    if route.paths:
        raise ValueError("a route is rendered with paths or with a regexp, not both")
    if any(c.isspace() or c in "\"`#" for c in route.regexp):
        raise ValueError(f"regexp {route.regexp!r} would need quoting in a Caddyfile")
    return f"path_regexp ^(?i){route.regexp}$"
