"""`python -m services.gateway`: serve the gateway on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.queue.logging import configure_logging


def main() -> None:
    try:
        settings = GatewaySettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"gateway settings are invalid (GATEWAY_* environment):\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level="warning",
        ws_max_size=16 * 1024 * 1024,
    )


if __name__ == "__main__":
    main()
