"""Two participants over every route (queue, history, view, upload, userdata, settings, ws,
interrupt): nothing of one reaches the other; wrong or missing credentials get 401; the
admin enters every space and acts there for its participant. Then bad input: ComfyUI's 4xx
shapes, never a 500."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.local_redis import LocalRedis
from tests.gateway_harness import Stack, play_worker, start_stack
from tests.test_gateway_api_client import GRAPH

pytestmark = pytest.mark.timeout(120)


def _png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def stack(
    redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, Any]]:
    import redis

    from tests.comfyui_double import start_double

    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    root = tmp_path_factory.mktemp("isolation")
    async with (
        start_double(root / "comfy") as comfy,
        start_stack(
            redis_server.url,
            root / "files",
            max_upload_bytes=1024 * 1024,
            max_json_bytes=4 * 1024 * 1024,
        ) as stack,
        play_worker(stack, comfy),
    ):
        yield stack, comfy


async def _socket(s: Stack, user: str, client_id: str, as_user: str | None = None) -> Any:
    url = s.url(user, f"/ws?clientId={client_id}").replace("http", "ws", 1)
    return await connect(url, additional_headers=s.ws_headers(as_user or user))


async def _until(ws: Any, predicate: Any, timeout_s: float = 30) -> dict:
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return message


def _ended(prompt_id: str) -> Any:
    return lambda m: (
        m["type"] == "executing" and m["data"] == {"node": None, "prompt_id": prompt_id}
    )


async def _run(
    c: httpx.AsyncClient, s: Stack, user: str, client_id: str, as_user: str | None = None
) -> str:
    ws = await _socket(s, user, client_id, as_user)
    r = await c.post(f"/{user}/prompt", json={"prompt": GRAPH, "client_id": client_id})
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    await _until(ws, _ended(prompt_id))
    await ws.close()
    return prompt_id


async def test_two_participants_see_nothing_of_each_other(stack: tuple[Stack, Any]) -> None:
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    # user001 has a finished job, an upload, a saved workflow and a setting.
    r = await one.post("/user001/upload/image", files={"image": ("mine.png", _png(), "image/png")})
    assert r.status_code == 200 and r.json() == {
        "name": "mine.png",
        "subfolder": "",
        "type": "input",
    }
    assert (
        await one.post("/user001/userdata/workflows%2Fsecret.json", content=b'{"a":1}')
    ).status_code == 200
    assert (await one.post("/user001/settings/Comfy.Secret", json="one's")).status_code == 200
    ws_one = await connect(
        s.url("user001", "/ws?clientId=tab-one").replace("http", "ws", 1),
        additional_headers=s.ws_headers("user001"),
    )
    ws_two = await connect(
        s.url("user002", "/ws?clientId=tab-one").replace("http", "ws", 1),
        additional_headers=s.ws_headers("user002"),
    )
    prompt_id = await _run(one, s, "user001", "tab-one-run")
    history = (await one.get("/user001/history")).json()
    image = history[prompt_id]["outputs"]["3"]["images"][0]

    # user002, in their own space, sees none of it.
    assert (await two.get("/user002/history")).json() == {}
    assert (await two.get(f"/user002/history/{prompt_id}")).json() == {}
    assert (await two.get("/user002/queue")).json() == {"queue_running": [], "queue_pending": []}
    assert (await two.get("/user002/view", params=image)).status_code == 404
    assert (
        await two.get("/user002/view", params={"filename": "mine.png", "type": "input"})
    ).status_code == 404
    assert (await two.get("/user002/userdata/workflows%2Fsecret.json")).status_code == 404
    assert (await two.get("/user002/userdata?dir=workflows")).status_code == 404
    assert (await two.get("/user002/settings")).json() == {}
    assert (await two.get("/user002/internal/files/input")).json() == []
    load_image = (await two.get("/user002/object_info/LoadImage")).json()
    assert load_image["LoadImage"]["input"]["required"]["image"][0] == []
    assert "mine.png" in json.dumps((await one.get("/user001/object_info/LoadImage")).json())
    # user002 cannot delete, interrupt or load user001's things through their own space.
    assert (await two.post("/user002/history", json={"delete": [prompt_id]})).status_code == 200
    assert prompt_id in (await one.get("/user001/history")).json()
    r = await two.post(
        "/user002/prompt",
        json={
            "prompt": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}},
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "x"},
                },
            }
        },
    )
    assert (
        r.status_code == 400
        and r.json()["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"
    )

    # user002's socket heard only its own status (nothing queued: 0).
    heard_two = await _drain(ws_two)
    assert {m["type"] for m in heard_two} == {"status"}
    assert all(m["data"]["status"]["exec_info"]["queue_remaining"] == 0 for m in heard_two)
    heard_one = await _drain(ws_one)  # user001's other tab: the queue count, not the job
    assert {m["type"] for m in heard_one} == {"status"}
    assert any(m["data"]["status"]["exec_info"]["queue_remaining"] == 1 for m in heard_one)
    await ws_one.close()
    await ws_two.close()

    # No way into another participant's space: 403 for every route, the socket refused.
    for method, path in [
        ("GET", "/"),
        ("GET", "/history"),
        ("GET", "/queue"),
        ("POST", "/interrupt"),
        ("GET", "/view?filename=mine.png&type=input"),
        ("POST", "/upload/image"),
        ("GET", "/userdata?dir=workflows"),
        ("GET", "/settings"),
        ("POST", "/prompt"),
        ("GET", "/api/history"),
        ("GET", "/assets/does-not-matter.js"),
    ]:
        r = await two.request(method, "/user001" + path)
        assert r.status_code == 403, (method, path, r.status_code)
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            s.url("user001", "/ws").replace("http", "ws", 1),
            additional_headers=s.ws_headers("user002"),
        )
    assert refused.value.response.status_code == 403
    await one.aclose()
    await two.aclose()


async def _drain(ws: Any) -> list[dict]:
    seen = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.3)
        except TimeoutError:
            return seen
        seen.append(json.loads(raw))


async def test_interrupt_stops_only_the_callers_job(stack: tuple[Stack, Any]) -> None:
    s, comfy = stack
    one, two = s.client("user001"), s.client("user002")
    comfy.timing.node_time_s["ImageInvert"] = 5.0
    try:
        graph = json.loads(json.dumps(GRAPH))
        graph["1"]["inputs"]["color"] = 1234  # not in ComfyUI's cache
        ws = await _socket(s, "user001", "slow")
        r = await one.post("/user001/prompt", json={"prompt": graph, "client_id": "slow"})
        prompt_id = r.json()["prompt_id"]
        await _until(ws, lambda m: m["type"] == "executing" and m["data"].get("node") == "2")
        assert (await two.post("/user002/interrupt", json={})).status_code == 200
        r = await two.post("/user002/interrupt", json={"prompt_id": prompt_id})
        assert r.status_code == 200
        # Neither reached the job: it runs on, nobody asked to cancel it.
        assert (await one.get("/user001/queue")).json()["queue_running"][0][1] == prompt_id
        admin = await s.queue.client("admin")
        assert (await admin.get(f"/api/jobs/{prompt_id}")).json()["cancel_requested"] is False
        await admin.aclose()
        r = await one.post("/user001/interrupt", json={"prompt_id": prompt_id})
        assert r.status_code == 200
        stopped = await _until(ws, lambda m: m["type"] == "execution_interrupted")
        assert stopped["data"]["prompt_id"] == prompt_id
        await _until(ws, _ended(prompt_id))
        await ws.close()
        entry = (await one.get(f"/user001/history/{prompt_id}")).json()[prompt_id]
        assert entry["status"]["status_str"] == "error"
    finally:
        comfy.timing.node_time_s.clear()
        await one.aclose()
        await two.aclose()


async def test_credentials(stack: tuple[Stack, Any]) -> None:
    s, _ = stack
    for client in (s.client(None), s.client("user001", "wrong password"), s.client("nobody", "x")):
        for path in (
            "/user001/",
            "/user001/api/prompt",
            "/user001/history",
            "/user001/assets/x.js",
        ):
            r = await client.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="ComfyUI (user001)"')
        await client.aclose()
    with pytest.raises(InvalidStatus) as refused:
        await connect(s.url("user001", "/ws").replace("http", "ws", 1))
    assert refused.value.response.status_code == 401
    # The root API paths need the session cookie the space sets.
    anonymous = httpx.AsyncClient(base_url=s.gateway_url)
    assert (await anonymous.get("/api/view?filename=x.png&type=input")).status_code == 401
    one = s.client("user001")
    r = await one.get("/user001/")
    assert r.status_code == 200 and "comfy_workshop" in r.headers["set-cookie"]
    assert "HttpOnly" in r.headers["set-cookie"]
    await one.post("/user001/upload/image", files={"image": ("cookie.png", _png(), "image/png")})
    cookie_only = httpx.AsyncClient(
        base_url=s.gateway_url, cookies={"comfy_workshop": one.cookies["comfy_workshop"]}
    )
    assert (await cookie_only.get("/api/view?filename=cookie.png&type=input")).status_code == 200
    assert (await cookie_only.get("/user001/settings")).status_code == 200
    assert (await cookie_only.get("/user002/settings")).status_code == 403
    for client in (anonymous, one, cookie_only):
        await client.aclose()


async def test_admin_acts_in_any_space(stack: tuple[Stack, Any]) -> None:
    s, _ = stack
    admin = s.client("admin")
    prompt_id = await _run(admin, s, "user003", "admin-tab", as_user="admin")
    three = s.client("user003")
    history = (await three.get("/user003/history")).json()
    assert prompt_id in history  # the job is user003's
    assert prompt_id in (await admin.get("/user003/history")).json()
    assert prompt_id not in (await admin.get("/user002/history")).json()
    image = history[prompt_id]["outputs"]["3"]["images"][0]
    assert (await admin.get("/user003/view", params=image)).status_code == 200
    assert (await admin.get("/user002/view", params=image)).status_code == 404
    await admin.aclose()
    await three.aclose()


# -- bad input ------------------------------------------------------------------------------
BIG = b"x" * (2 * 1024 * 1024)

#: (method, path, request kwargs, expected status, expected body or None for "any")
BAD_INPUT: list[tuple[str, str, dict[str, Any], int, Any]] = [
    ("POST", "/prompt", {"content": b"{not json"}, 400, "invalid_prompt"),
    ("POST", "/prompt", {"json": [1, 2]}, 400, "invalid_prompt"),
    ("POST", "/prompt", {"json": {"prompt": [1, 2]}}, 400, "invalid_prompt"),
    ("POST", "/prompt", {"json": {"prompt": {"1": 5}}}, 400, "invalid_prompt"),
    ("POST", "/prompt", {"json": {"client_id": "x"}}, 400, "no_prompt"),
    ("POST", "/prompt", {"json": {"prompt": {}}}, 400, "prompt_no_outputs"),
    (
        "POST",
        "/prompt",
        {"json": {"prompt": GRAPH, "prompt_id": "../../etc"}},
        400,
        "invalid_prompt",
    ),
    ("POST", "/prompt", {"json": {"prompt": GRAPH, "extra_data": 3}}, 400, "invalid_prompt"),
    (
        "POST",
        "/prompt",
        {"json": {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}},
        400,
        "invalid_prompt",
    ),
    ("POST", "/queue", {"content": b"{"}, 400, b""),
    ("POST", "/history", {"content": b"nope"}, 400, b""),
    ("POST", "/interrupt", {"content": b"nope"}, 200, b""),
    ("GET", "/history?max_items=abc", {}, 400, b""),
    ("POST", "/settings", {"content": b"{"}, 400, b""),
    ("POST", "/settings", {"json": [1]}, 400, b""),
    (
        "POST",
        "/upload/image",
        {"files": {"image": ("a.png", b"not an image", "image/png")}},
        400,
        b"",
    ),
    (
        "POST",
        "/upload/image",
        {"files": {"image": ("a.exe", b"MZ...", "application/x-dosexec")}},
        400,
        b"",
    ),
    ("POST", "/upload/image", {"files": {"image": ("../a.png", _png(), "image/png")}}, 400, b""),
    (
        "POST",
        "/upload/image",
        {"files": {"image": ("a.png", _png(), "image/png")}, "data": {"subfolder": "../../x"}},
        400,
        b"",
    ),
    (
        "POST",
        "/upload/image",
        {"files": {"image": ("a.png", _png(), "image/png")}, "data": {"type": "bogus"}},
        400,
        b"",
    ),
    ("POST", "/upload/image", {"data": {"overwrite": "1"}}, 400, b""),
    (
        "POST",
        "/upload/image",
        {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}},
        400,
        b"",
    ),
    (
        "POST",
        "/upload/image",
        {"files": {"image": ("big.png", BIG, "image/png")}},
        413,
        "413: Request Entity Too Large",
    ),
    (
        "POST",
        "/upload/mask",
        {"files": {"image": ("m.png", _png(), "image/png")}, "data": {"original_ref": "{bad"}},
        400,
        b"",
    ),
    ("GET", "/view?filename=../x.png", {}, 400, b""),
    ("GET", "/view?filename=x.png&type=bogus", {}, 400, b""),
    ("GET", "/view?filename=x.png&type=output&subfolder=../../", {}, 403, b""),
    ("GET", "/view?filename=x.png&type=output&subfolder=a%00b", {}, 404, b""),
    ("GET", "/view", {}, 404, b""),
    ("GET", "/history/a%00b", {}, 200, {}),  # no prompt can have that id
    ("GET", "/view_metadata/checkpoints?filename=..%2Fx.safetensors", {}, 404, b""),
    ("GET", "/userdata", {}, 400, "Directory not provided"),
    ("GET", "/userdata?dir=..%2F..", {}, 403, "Invalid directory"),
    ("GET", "/userdata/..%2F..%2Fx", {}, 403, b""),
    ("POST", "/userdata/..%2Fx", {"content": b"x"}, 403, b""),
    (
        "POST",
        "/userdata/big.json",
        {"content": b"x" * (4 * 1024 * 1024 + 1)},
        413,
        "413: Request Entity Too Large",
    ),
    ("GET", "/v2/userdata?path=..%2F..", {}, 400, "Invalid path requested"),
    ("GET", "/internal/files/bogus", {}, 400, {"error": "Invalid directory type"}),
    ("GET", "/models/not-a-folder", {}, 404, b""),
    ("GET", "/no/such/route", {}, 404, "404: Not Found"),
    ("GET", "/api/no-such-route", {}, 404, "404: Not Found"),
    ("DELETE", "/prompt", {}, 405, "405: Method Not Allowed"),
    ("GET", "/nonexistent-file.js", {}, 404, "404: Not Found"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "body"),
    BAD_INPUT,
    ids=[f"{m} {p} {i}" for i, (m, p, *_rest) in enumerate(BAD_INPUT)],
)
async def test_bad_input_gets_comfyuis_4xx(
    stack: tuple[Stack, Any], method: str, path: str, kwargs: dict, status: int, body: Any
) -> None:
    s, _ = stack
    client = s.client("user001")
    r = await client.request(method, "/user001" + path, **kwargs)
    await client.aclose()
    assert r.status_code == status, (r.status_code, r.text[:200])
    if isinstance(body, bytes):
        assert r.content == body
    elif isinstance(body, dict):
        assert r.json() == body
    elif r.headers.get("content-type", "").startswith("application/json"):
        assert r.json()["error"]["type"] == body and r.json()["node_errors"] is not None
    else:
        assert r.text == body


async def test_a_reset_or_disabled_participant_is_signed_out_at_once(
    stack: tuple[Stack, Any],
) -> None:
    """The gateway caches sign-ins (`auth_cache_s`), but a session the queue ended (password
    reset, user disabled) is answered with the Basic challenge at once, and the old password
    does not work again from the cache. A participant added at runtime works at once too."""
    s, _ = stack
    admin = await s.queue.client("admin")
    for uid, end in (("user901", "reset-password"), ("user902", "disable")):
        r = await admin.post("/api/admin/users", json={"id": uid, "password": "late-password"})
        assert r.status_code == 201, r.text
        person = httpx.AsyncClient(base_url=s.gateway_url, auth=(uid, "late-password"))
        assert (await person.get(f"/{uid}/history")).status_code == 200
        assert (await admin.post(f"/api/admin/users/{uid}/{end}", json={})).is_success
        for path in (f"/{uid}/history", f"/{uid}/queue"):
            r = await person.get(path)
            assert r.status_code == 401, (uid, path, r.status_code, r.text)
            assert r.headers["WWW-Authenticate"].startswith(f'Basic realm="ComfyUI ({uid})"')
        await person.aclose()
    await admin.aclose()


# -- what one participant's requests cannot do to the other's things --------------------------
async def _job(s: Stack, job_id: str) -> dict[str, Any]:
    admin = await s.queue.client("admin")
    try:
        r = await admin.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]
    finally:
        await admin.aclose()


async def test_deleting_or_clearing_the_queue_leaves_the_others_jobs(
    stack: tuple[Stack, Any],
) -> None:
    """`POST /queue` `delete` naming user001's waiting job and `clear` by user002: 200 as
    ComfyUI answers for ids it does not hold, user002's own waiting jobs go, user001's job
    waits on, uncancelled, and runs once the queue is resumed."""
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    admin = await s.queue.client("admin")
    ws = await _socket(s, "user001", "queued-one")
    paused = False
    try:
        assert (await admin.post("/api/admin/queue/pause")).json() == {"paused": True}
        paused = True

        async def submit(c: httpx.AsyncClient, user: str, color: int) -> str:
            graph = json.loads(json.dumps(GRAPH))
            graph["1"]["inputs"]["color"] = color
            r = await c.post(f"/{user}/prompt", json={"prompt": graph, "client_id": "queued-one"})
            assert r.status_code == 200, r.text
            return str(r.json()["prompt_id"])

        mine = await submit(one, "user001", 4101)
        theirs_a = await submit(two, "user002", 4102)
        theirs_b = await submit(two, "user002", 4103)
        queue_one = (await one.get("/user001/queue")).json()
        assert [e[1] for e in queue_one["queue_pending"]] == [mine]

        r = await two.post("/user002/queue", json={"delete": [mine, theirs_a]})
        assert r.status_code == 200 and r.content == b""
        assert [e[1] for e in (await two.get("/user002/queue")).json()["queue_pending"]] == [
            theirs_b
        ]  # user002's own named job went: the route works, it only skipped user001's
        assert (await one.get("/user001/queue")).json() == queue_one
        record = await _job(s, mine)
        assert record["state"] == "queued" and record["cancel_requested"] is False

        r = await two.post("/user002/queue", json={"clear": True})
        assert r.status_code == 200 and r.content == b""
        assert (await two.get("/user002/queue")).json() == {
            "queue_running": [],
            "queue_pending": [],
        }
        assert (await one.get("/user001/queue")).json() == queue_one
        record = await _job(s, mine)
        assert record["state"] == "queued" and record["cancel_requested"] is False
        assert (await _job(s, theirs_a))["state"] == "cancelled"
        assert (await _job(s, theirs_b))["state"] == "cancelled"

        assert (await admin.post("/api/admin/queue/resume")).json() == {"paused": False}
        paused = False
        await _until(ws, _ended(mine))
        entry = (await one.get(f"/user001/history/{mine}")).json()[mine]
        assert entry["status"]["status_str"] == "success"
    finally:
        if paused:
            await admin.post("/api/admin/queue/resume")
        await ws.close()
        await admin.aclose()
        await one.aclose()
        await two.aclose()


async def test_clearing_or_deleting_history_leaves_the_others_history(
    stack: tuple[Stack, Any],
) -> None:
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    try:
        prompt_id = await _run(one, s, "user001", "history-one")
        before = (await one.get("/user001/history")).json()
        assert prompt_id in before
        for body in (
            {"delete": [prompt_id]},
            {"clear": True},
            {"clear": True, "delete": [prompt_id]},
        ):
            r = await two.post("/user002/history", json=body)
            assert r.status_code == 200 and r.content == b"", (body, r.status_code, r.text)
            assert (await one.get("/user001/history")).json() == before, body
            assert (await one.get(f"/user001/history/{prompt_id}")).json() == {
                prompt_id: before[prompt_id]
            }
            assert (await _job(s, prompt_id))["state"] == "succeeded"
        # user001's own delete does remove it: what user002 asked for was refused, not slow.
        assert (await one.post("/user001/history", json={"delete": [prompt_id]})).status_code == 200
        assert prompt_id not in (await one.get("/user001/history")).json()
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_mask_cannot_reference_the_others_upload(stack: tuple[Stack, Any]) -> None:
    """`/upload/mask` with `original_ref` naming user001's input: resolved in user002's own
    files only, where there is no such file, so (as ComfyUI when the original is gone) the
    mask is stored as uploaded; none of user001's pixels reach user002."""
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    try:
        original = _png((200, 0, 0))
        r = await one.post(
            "/user001/upload/image", files={"image": ("masked-secret.png", original, "image/png")}
        )
        assert r.status_code == 200 and r.json()["name"] == "masked-secret.png"
        buffer = io.BytesIO()
        Image.new("RGBA", (8, 8), (0, 0, 255, 128)).save(buffer, "PNG")
        mask = buffer.getvalue()
        for ref in (
            {"filename": "masked-secret.png", "subfolder": "", "type": "input"},
            {"filename": "masked-secret.png [input]", "subfolder": ""},
        ):
            r = await two.post(
                "/user002/upload/mask",
                files={"image": ("mask-of-two.png", mask, "image/png")},
                data={"original_ref": json.dumps(ref), "overwrite": "true"},
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"name": "mask-of-two.png", "subfolder": "", "type": "input"}
            stored = await two.get(
                "/user002/view", params={"filename": "mask-of-two.png", "type": "input"}
            )
            assert stored.status_code == 200 and stored.content == mask, ref
            with Image.open(io.BytesIO(stored.content)) as img:
                assert img.convert("RGBA").getpixel((0, 0)) == (0, 0, 255, 128)
        assert (
            await two.get(
                "/user002/view", params={"filename": "masked-secret.png", "type": "input"}
            )
        ).status_code == 404
        assert "masked-secret.png" not in (await two.get("/user002/internal/files/input")).json()
        r = await one.get(
            "/user001/view", params={"filename": "masked-secret.png", "type": "input"}
        )
        assert r.status_code == 200 and r.content == original
        assert "mask-of-two.png" not in (await one.get("/user001/internal/files/input")).json()
    finally:
        await one.aclose()
        await two.aclose()


async def test_userdata_list_and_move_see_only_ones_own(stack: tuple[Stack, Any]) -> None:
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    secret = b'{"nodes": ["private"]}'
    try:
        assert (
            await one.post("/user001/userdata/workflows%2Fprivate.json", content=secret)
        ).status_code == 200
        # Listing: user002 has no workflows folder; the root listing names none of user001's.
        r = await two.get("/user002/v2/userdata", params={"path": "workflows"})
        assert (r.status_code, r.text) == (404, "Requested path not found")
        r = await two.get("/user002/v2/userdata")
        assert r.status_code == 200 and "private.json" not in r.text, r.text
        assert (
            "workflows/private.json" in (await one.get("/user001/v2/userdata?path=workflows")).text
        )
        r = await two.get(
            "/user002/v2/userdata", params={"path": "../../user001/userdata/workflows"}
        )
        assert (r.status_code, r.text) == (400, "Invalid path requested")

        # Moving: user001's file is not user002's to move, nor a target to overwrite.
        r = await two.post(
            "/user002/userdata/workflows%2Fprivate.json/move/workflows%2Fstolen.json"
        )
        assert r.status_code == 404
        r = await two.post(
            "/user002/userdata/..%2F..%2Fuser001%2Fuserdata%2Fworkflows%2Fprivate.json"
            "/move/workflows%2Fstolen.json"
        )
        assert r.status_code == 403
        assert (
            await two.post("/user002/userdata/workflows%2Fmine.json", content=b"overwritten")
        ).status_code == 200
        r = await two.post(
            "/user002/userdata/workflows%2Fmine.json"
            "/move/..%2F..%2Fuser001%2Fuserdata%2Fworkflows%2Fprivate.json"
        )
        assert r.status_code == 403
        # A move inside user002's space works (the route is not simply shut).
        r = await two.post("/user002/userdata/workflows%2Fmine.json/move/workflows%2Fprivate.json")
        assert r.status_code == 200 and r.json() == "workflows/private.json"
        assert (
            await two.get("/user002/userdata/workflows%2Fprivate.json")
        ).content == b"overwritten"

        r = await one.get("/user001/userdata/workflows%2Fprivate.json")
        assert r.status_code == 200 and r.content == secret
        assert (await one.get("/user001/userdata/workflows%2Fstolen.json")).status_code == 404
        assert (await one.get("/user001/userdata/workflows%2Fmine.json")).status_code == 404
        assert (await two.get("/user002/userdata/workflows%2Fstolen.json")).status_code == 404
        assert (await two.delete("/user002/userdata/workflows%2Fprivate.json")).status_code == 204
    finally:
        await one.aclose()
        await two.aclose()


async def test_root_view_with_the_others_cookie_finds_nothing(stack: tuple[Stack, Any]) -> None:
    """`/api/view` at the root reads the space of the participant the session cookie names."""
    s, _ = stack
    one, two = s.client("user001"), s.client("user002")
    cookie_clients: list[httpx.AsyncClient] = []
    try:
        picture = _png((1, 2, 3))
        r = await one.post(
            "/user001/upload/image", files={"image": ("root-secret.png", picture, "image/png")}
        )
        assert r.status_code == 200 and r.json()["name"] == "root-secret.png"
        for c, user in ((one, "user001"), (two, "user002")):
            assert (await c.get(f"/{user}/")).status_code == 200
        cookies = {u: c.cookies["comfy_workshop"] for u, c in (("user001", one), ("user002", two))}
        assert cookies["user001"] != cookies["user002"]
        query = {"filename": "root-secret.png", "type": "input"}
        for user, status in (("user002", 404), ("user001", 200)):
            c = httpx.AsyncClient(base_url=s.gateway_url, cookies={"comfy_workshop": cookies[user]})
            cookie_clients.append(c)
            r = await c.get("/api/view", params=query)
            assert r.status_code == status, (user, r.status_code)
            if status == 200:
                assert r.content == picture
            else:
                assert r.content == b""
            r = await c.get("/api/view", params={**query, "filename": "root-secret.png [input]"})
            assert r.status_code == status, (user, r.status_code)
    finally:
        for c in (one, two, *cookie_clients):
            await c.aclose()
