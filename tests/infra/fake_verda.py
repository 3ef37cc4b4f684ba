"""A fake Verda public API: a real HTTP server following the routes, OAuth client-credentials
flow and payloads of Verda's Python SDK 1.25.0 (verda/*/_*.py), for the dynamic provider's tests.

What it models of the real API, because the provider depends on it:
- `POST /oauth2/token` (client_credentials, refresh_token) -> bearer tokens; every other route
  wants one (401 `unauthorized_request` otherwise);
- stock per (location, instance type, spot): `GET /instance-availability[/{type}]`, and
  `POST /instances` answers 503 `service_unavailable` when nothing is left;
- an instance goes ordered -> provisioning -> running, one step per `GET /instances/{id}`
  (or -> error, for the types in `fail_types`), and gets an OS volume;
- `PUT /instances` actions start, shutdown, delete; a delete without `volume_ids` keeps the OS
  volume (detached, still billed); with them but not `delete_permanently` it goes to the trash;
- errors are `{"code", "message"}` JSON, as the SDK's `handle_error` parses them.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from services.local_redis import free_port


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def _spec(count: int, gpu: str) -> dict[str, Any]:
    return {
        "cpu": {"description": "vCPU", "number_of_cores": 30 * count},
        "gpu": {"description": gpu, "number_of_gpus": count},
        "memory": {"description": "RAM", "size_in_gigabytes": 120 * count},
        "gpu_memory": {"description": "HBM", "size_in_gigabytes": 80 * count},
        "storage": {"description": "NVMe", "size_in_gigabytes": 0},
    }


INSTANCE_TYPES = {
    "1H100.80S.30V": (2.59, 1.10, "H100 SXM5 80GB"),
    "1A100.22V": (1.29, 0.50, "A100 SXM4 40GB"),
    "1L40S.20V": (0.99, 0.40, "L40S 48GB"),
}


@dataclass
class FakeVerda:
    client_id: str = "fake-client-id"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(8))
    url: str = ""
    #: units in stock per (location, type, is_spot)
    stock: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    fail_types: set[str] = field(default_factory=set)
    #: answer the next order with 503 although the stock check said yes (someone was faster)
    lose_race: bool = False
    #: how many reads an instance stays `provisioning` before it runs
    boot_polls: int = 1
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    trash: dict[str, dict[str, Any]] = field(default_factory=dict)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ssh_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _ip: Any = field(default_factory=lambda: itertools.count(10))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what happens outside Pulumi ------------------------------------------------------------
    def delete_outside(self, instance_id: str) -> None:
        """Someone deletes the instance in the console (volume and all)."""
        with self._lock:
            instance = self.instances.pop(instance_id)
            self.volumes.pop(instance["os_volume_id"], None)

    def power_off_outside(self, instance_id: str) -> None:
        """The idle watchdog (or a person) shuts the host down."""
        with self._lock:
            self.instances[instance_id]["status"] = "offline"

    def billed(self) -> dict[str, list[str]]:
        """Everything that would still cost money (or clutter the account)."""
        return {
            "instances": sorted(self.instances),
            "volumes": sorted(self.volumes) + sorted(self.trash),
            "scripts": sorted(self.scripts),
        }

    # -- helpers -----------------------------------------------------------------------------------
    def _instance(self, instance_id: str) -> dict[str, Any]:
        if instance_id not in self.instances:
            raise ApiError(404, "not_found", f"instance {instance_id} not found")
        return self.instances[instance_id]

    def _available(self, location: str | None, is_spot: bool) -> dict[str, list[str]]:
        offers: dict[str, list[str]] = {}
        for (loc, itype, spot), units in self.stock.items():
            if units > 0 and spot == is_spot and location in (None, loc):
                offers.setdefault(loc, []).append(itype)
        return offers


def create_app(fake: FakeVerda) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        fake.calls.append((request.method, request.url.path.removeprefix("/v1")))
        return await call_next(request)

    def authorized(authorization: str = Header("")) -> None:
        if authorization.removeprefix("Bearer ") not in fake.tokens:
            raise ApiError(401, "unauthorized_request", "Invalid or expired access token")

    auth = [Depends(authorized)]

    def new_tokens() -> dict[str, Any]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        fake.tokens.add(access)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "scope": "cloud-api-v1",
            "token_type": "Bearer",
            "expires_in": 3600,
        }

    @app.post("/v1/oauth2/token")
    async def token(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") == "client_credentials":
            if (body.get("client_id"), body.get("client_secret")) != (
                fake.client_id,
                fake.client_secret,
            ):
                raise ApiError(401, "unauthorized_request", "Invalid client credentials")
            return new_tokens()
        if body.get("grant_type") == "refresh_token":
            return new_tokens()
        raise ApiError(400, "invalid_request", "unsupported grant_type")

    @app.get("/v1/instance-types", dependencies=auth)
    async def instance_types(currency: str = "usd") -> list[dict[str, Any]]:
        factor = 0.92 if currency == "eur" else 1.0  # the fake's exchange rate
        return [
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                "instance_type": name,
                "price_per_hour": f"{price * factor:.4f}",
                "spot_price": f"{spot * factor:.4f}",
                "description": gpu,
                **_spec(1, gpu),
                "best_for": ["inference"],
                "model": gpu.split()[0],
                "name": gpu,
                "p2p": "",
                "currency": currency,
                "manufacturer": "NVIDIA",
                "display_name": gpu,
                "supported_os": ["ubuntu-24.04-cuda-12.8-open-docker"],
            }
            for name, (price, spot, gpu) in INSTANCE_TYPES.items()
        ]

    @app.get("/v1/instance-availability", dependencies=auth)
    async def availabilities(isSpot: str = "false", location_code: str | None = None):
        offers = fake._available(location_code, isSpot == "true")
        return [{"location_code": loc, "availabilities": types} for loc, types in offers.items()]

    @app.get("/v1/instance-availability/{instance_type}", dependencies=auth)
    async def is_available(
        instance_type: str,
        isSpot: str = "false",
        location_code: str | None = None,
    ) -> bool:
        offers = fake._available(location_code, isSpot == "true")
        return any(instance_type in types for types in offers.values())

    @app.post("/v1/instances", dependencies=auth)
    async def create_instance(body: dict[str, Any]) -> PlainTextResponse:
        itype, location = body["instance_type"], body.get("location_code", "FIN-03")
        if itype not in INSTANCE_TYPES:
            raise ApiError(400, "invalid_request", f"unknown instance type {itype}")
        for key in body.get("ssh_key_ids") or []:
            if key not in fake.ssh_keys:
                raise ApiError(400, "invalid_request", f"unknown ssh key {key}")
        script = body.get("startup_script_id")
        if script is not None and script not in fake.scripts:
            raise ApiError(400, "invalid_request", f"unknown startup script {script}")
        with fake._lock:
            slot = (location, itype, bool(body.get("is_spot")))
            if fake.stock.get(slot, 0) <= 0 or fake.lose_race:
                fake.lose_race = False
                raise ApiError(
                    503,
                    "service_unavailable",
                    f"Not enough resources to deploy a 1 GPU instance type {itype} in {location}",
                )
            fake.stock[slot] -= 1
            instance_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
            os_volume = body.get("os_volume") or {"name": f"{body['hostname']}-os", "size": 50}
            fake.volumes[volume_id] = {
                "id": volume_id,
                "status": "attached",
                "name": os_volume["name"],
                "size": os_volume["size"],
                "type": "NVMe",
                "is_os_volume": True,
                "created_at": "2026-01-01T00:00:00Z",
                "location": location,
                "instance_id": instance_id,
                "ssh_key_ids": list(body.get("ssh_key_ids") or []),
            }
            fake.instances[instance_id] = {
                "id": instance_id,
                "instance_type": itype,
                "price_per_hour": INSTANCE_TYPES[itype][1 if body.get("is_spot") else 0],
                "hostname": body["hostname"],
                "description": body["description"],
                "status": "ordered",
                "created_at": "2026-01-01T00:00:00Z",
                "ssh_key_ids": list(body.get("ssh_key_ids") or []),
                **_spec(1, INSTANCE_TYPES[itype][2]),
                "ip": None,
                "os_volume_id": volume_id,
                "location": location,
                "image": body["image"],
                "startup_script_id": script,
                "is_spot": bool(body.get("is_spot")),
                "contract": "SPOT" if body.get("is_spot") else "PAY_AS_YOU_GO",
                "pricing": "FIXED_PRICE",
            }
        return PlainTextResponse(instance_id)

    @app.get("/v1/instances", dependencies=auth)
    async def list_instances(status: str | None = None) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in i.items() if not k.startswith("_")}
            for i in fake.instances.values()
            if status in (None, i["status"])
        ]

    @app.get("/v1/instances/{instance_id}", dependencies=auth)
    async def get_instance(instance_id: str) -> dict[str, Any]:
        with fake._lock:
            instance = fake._instance(instance_id)
            step = {"ordered": "provisioning", "provisioning": "running"}.get(instance["status"])
            if instance["status"] == "provisioning":
                instance["_polls"] = instance.get("_polls", 0) + 1
                if instance["_polls"] < fake.boot_polls:
                    step = None
            if step == "running" and instance["instance_type"] in fake.fail_types:
                step = "error"
            if step:
                instance["status"] = step
            if instance["status"] == "running" and instance["ip"] is None:
                instance["ip"] = f"198.51.100.{next(fake._ip)}"
            return {k: v for k, v in instance.items() if not k.startswith("_")}

    @app.put("/v1/instances", dependencies=auth)
    async def instance_action(body: dict[str, Any]) -> PlainTextResponse:
        ids = body["id"] if isinstance(body["id"], list) else [body["id"]]
        with fake._lock:
            for instance_id in ids:
                instance = fake._instance(instance_id)
                action = body["action"]
                if action == "shutdown":
                    if instance["status"] != "running":
                        raise ApiError(400, "invalid_request", "instance is not running")
                    instance["status"] = "offline"
                elif action == "start":
                    if instance["status"] != "offline":
                        raise ApiError(400, "invalid_request", "instance is not offline")
                    instance["status"], instance["_polls"] = "provisioning", 0
                elif action == "delete":
                    del fake.instances[instance_id]
                    doomed = set(body.get("volume_ids") or [])
                    for volume_id, volume in list(fake.volumes.items()):
                        if volume["instance_id"] != instance_id:
                            continue
                        volume["instance_id"] = None
                        volume["status"] = "detached"  # kept, and billed, unless named
                        if volume_id in doomed:
                            del fake.volumes[volume_id]
                            if not body.get("delete_permanently"):
                                fake.trash[volume_id] = volume | {"status": "deleted"}
                else:
                    raise ApiError(400, "invalid_request", f"unsupported action {action}")
        return PlainTextResponse("", status_code=202)

    @app.get("/v1/volumes/trash", dependencies=auth)
    async def volumes_trash() -> list[dict[str, Any]]:
        return list(fake.trash.values())

    @app.get("/v1/volumes/{volume_id}", dependencies=auth)
    async def get_volume(volume_id: str) -> dict[str, Any]:
        volume = fake.volumes.get(volume_id) or fake.trash.get(volume_id)
        if volume is None:
            raise ApiError(404, "not_found", f"volume {volume_id} not found")
        return volume

    @app.put("/v1/volumes", dependencies=auth)
    async def volume_action(body: dict[str, Any]) -> PlainTextResponse:
        ids = body["id"] if isinstance(body["id"], list) else [body["id"]]
        for volume_id in ids:
            volume = fake.volumes.get(volume_id)
            if volume is None:
                raise ApiError(404, "not_found", f"volume {volume_id} not found")
            if body["action"] == "resize":
                if body["size"] <= volume["size"]:
                    raise ApiError(400, "invalid_request", "volumes can only grow")
                volume["size"] = body["size"]
            else:
                raise ApiError(400, "invalid_request", f"unsupported action {body['action']}")
        return PlainTextResponse("", status_code=202)

    @app.delete("/v1/volumes/{volume_id}", dependencies=auth)
    async def delete_volume(volume_id: str, request: Request) -> PlainTextResponse:
        body = await request.json()
        with fake._lock:
            volume = fake.volumes.pop(volume_id, None) or fake.trash.pop(volume_id, None)
            if volume is None:
                raise ApiError(404, "not_found", f"volume {volume_id} not found")
            if not body.get("is_permanent"):
                fake.trash[volume_id] = volume | {"status": "deleted"}
        return PlainTextResponse("", status_code=202)

    def _named(store: dict[str, dict[str, Any]], what: str, key: str):
        @app.post(f"/v1/{what}", dependencies=auth)
        async def create(body: dict[str, Any]) -> PlainTextResponse:
            item_id = str(uuid.uuid4())
            store[item_id] = {"id": item_id, "name": body["name"], key: body[key]}
            return PlainTextResponse(item_id)

        @app.get(f"/v1/{what}/{{item_id}}", dependencies=auth)
        async def get(item_id: str) -> list[dict[str, Any]]:
            if item_id not in store:
                raise ApiError(404, "not_found", f"{what} {item_id} not found")
            return [store[item_id]]

        @app.delete(f"/v1/{what}/{{item_id}}", dependencies=auth)
        async def delete(item_id: str) -> PlainTextResponse:
            if store.pop(item_id, None) is None:
                raise ApiError(404, "not_found", f"{what} {item_id} not found")
            return PlainTextResponse("", status_code=202)

    _named(fake.scripts, "scripts", "script")
    _named(fake.ssh_keys, "sshkeys", "key")
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class ServerThread:
    """uvicorn on a free loopback port in a thread (the SDK is synchronous `requests`)."""

    def __init__(self, fake: FakeVerda) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(fake), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = _Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        fake.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        if not self.server.listening.wait(timeout=20) or self.server.should_exit:
            raise RuntimeError("fake Verda API did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
