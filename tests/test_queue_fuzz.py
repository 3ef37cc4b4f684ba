"""Schema-driven bad input (issue 13, acceptance): every operation in the queue's own OpenAPI
document (/api/openapi.json, read over HTTP) is sent cases made from its parameters and body
schema by a seeded RNG — wrong types, integers past 64 bits, deep nesting, lone surrogates,
empty and garbage bodies, missing fields, odd path and query values, no credentials, and the
wrong kind of caller (a participant or a worker on admin routes, a participant on worker
routes). Neither schemathesis nor hypothesis is in uv.lock, hence the generator of our own.

For every answer: never a 5xx; an error is the one JSON shape ``{"detail": "<text>"}``; and a
refused request (4xx) changes nothing in Redis: a digest of every key's content (members in
sorted order, absolute expiry) is the same before and after it. Left out of the digest:
``loginfail:*``, the failed-login counters, because counting refused logins is their whole job
(issue 13, defect 7). Nothing else is excluded: metrics live in the process (Prometheus), not
in Redis.

Deterministic (fixed seed, sequential requests, no background writes: the reaper's interval is
longer than the test) and a few seconds long."""

from __future__ import annotations

import hashlib
import random
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.queue_harness import WORKER_TOKENS, WORKFLOW, MakeQueue, QueueHarness, WorkerClient

SEED = 13
#: Cases per operation drawn at random on top of the systematic ones.
RANDOM_CASES = 12
#: Keys a refused request may change, and why: see the module docstring.
DIGEST_EXCLUDED = ("loginfail:",)

PUBLIC = {"/api/auth/token", "/api/health", "/api/ready"}
HUGE = 2**64 + 7
SURROGATE = b'"\\ud800"'  # a lone surrogate, as JSON text (orjson refuses to write one)


def audience(path: str) -> str:
    """Who may call a route, by the prefixes the API is organised under (docs: HTTP API)."""
    if path in PUBLIC:
        return "public"
    if path.startswith("/api/admin/") or path == "/api/metrics":
        return "admin"
    if path.startswith("/api/worker/"):
        return "worker"
    if path == "/api/catalog":
        return "person-or-worker"
    return "person"


@dataclass
class Case:
    """One request: raw bytes for the body so that anything can be sent."""

    name: str
    method: str
    url: str
    caller: str | None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: The status it must get, when the case decides it (auth cases); else only "no 5xx".
    expect: set[int] | None = None


class Schemas:
    """Just enough JSON Schema (as FastAPI writes it) to build values and wrong values."""

    def __init__(self, doc: dict[str, Any], rng: random.Random, ids: dict[str, str]) -> None:
        self.components = doc["components"]["schemas"]
        self.rng = rng
        self.ids = ids  # known-good values for fields of these names (worker_id, lease_id...)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
                return self.resolve(options[0])
        return schema

    def valid(self, schema: dict[str, Any], name: str = "", depth: int = 0) -> Any:
        """A plain value the schema accepts (numbers at their minimum: no long-polls)."""
        s = self.resolve(schema)
        if name in self.ids:
            return self.ids[name]
        if name == "workflow":
            return WORKFLOW
        if "const" in s:
            return s["const"]
        if "enum" in s:
            return s["enum"][0]
        kind = s.get("type", "object")
        if kind == "object":
            if depth > 3:
                return {}
            props = s.get("properties", {})
            return {
                k: self.valid(v, k, depth + 1)
                for k, v in props.items()
                if k in s.get("required", ()) or self.rng.random() < 0.5
            }
        if kind == "array":
            items = s.get("items", {})
            return [] if depth > 3 or not items else [self.valid(items, "", depth + 1)]
        if kind == "string":
            size = max(s.get("minLength", 1), 1)
            return "fz" + "x" * max(size - 2, 0)
        if kind == "integer":
            return int(s.get("minimum", 0))
        if kind == "number":
            return float(s.get("minimum", 0))
        if kind == "boolean":
            return False
        return None

    def wrong(self, schema: dict[str, Any]) -> Any:
        """A value of another JSON type than the schema's."""
        kind = self.resolve(schema).get("type", "object")
        choices: list[Any] = [{"a": [1]}, [1, "x"], "text", 12.5, True, None, -1]
        if kind == "object":
            choices.remove({"a": [1]})
        elif kind == "array":
            choices.remove([1, "x"])
        elif kind == "string":
            choices.remove("text")
        elif kind in ("integer", "number"):
            choices = [c for c in choices if not isinstance(c, int | float) or c is True]
        return self.rng.choice(choices)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def with_raw(body: dict[str, Any], key: str, raw: bytes) -> bytes:
    """`body` as JSON with `key`'s value replaced by raw JSON text."""
    marker = "__fuzz_marker__"
    text = orjson.dumps({**body, key: marker})
    return text.replace(orjson.dumps(marker), raw, 1)


def path_values(ids: dict[str, str]) -> list[str]:
    """Path parameters, already URL-encoded: real ids, then the odd ones."""
    odd = ["fz-unknown", "x" * 300, "..%2F..%2Fadmin", "%00", "%ED%A0%80", "%C3%A9", "%20", "a.b"]
    return [urllib.parse.quote(ids["job_id"]), *odd]


QUERY_ODD = ["", "abc", str(HUGE), "-1", "1e309", "%ED%A0%80", "%00", "x" * 2000, "true"]


def cases(doc: dict[str, Any], ids: dict[str, str], rng: random.Random) -> Iterator[Case]:
    """Every operation's cases, in document order."""
    schemas = Schemas(doc, rng, ids)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            yield from operation_cases(schemas, path, method.upper(), op, ids, rng)


def operation_cases(
    schemas: Schemas,
    path: str,
    method: str,
    op: dict[str, Any],
    ids: dict[str, str],
    rng: random.Random,
) -> Iterator[Case]:
    who = audience(path)
    caller = {"admin": "admin", "worker": "w0", "person": "alice"}.get(who, "alice")
    params = op.get("parameters", [])
    path_params = [p for p in params if p["in"] == "path"]
    query = [p for p in params if p["in"] == "query"]
    content = op.get("requestBody", {}).get("content", {})
    body_schema = content.get("application/json", {}).get("schema")

    def url(values: dict[str, str] | None = None, qs: str = "") -> str:
        out = path
        for p in path_params:
            default = urllib.parse.quote(ids.get(p["name"], ids["job_id"]))
            out = out.replace("{" + p["name"] + "}", (values or {}).get(p["name"], default))
        return out + (f"?{qs}" if qs else "")

    base = schemas.valid(body_schema) if body_schema else None
    good = orjson.dumps(base) if base is not None else None
    tag = f"{method} {path}"

    # Who may call it.
    if who != "public":
        yield Case(f"{tag} no auth", method, url(), None, good, expect={401})
        yield Case(f"{tag} bad bearer", method, url(), "bearer:junk", good, expect={401})
        yield Case(f"{tag} non-ascii basic", method, url(), "basic:éé", good, expect={401})
    if who == "admin":
        yield Case(f"{tag} participant", method, url(), "alice", good, expect={403})
        yield Case(f"{tag} worker", method, url(), "w0", good, expect={401, 403})
    if who == "worker":
        yield Case(f"{tag} participant", method, url(), "alice", good, expect={401, 403})
    if who == "person":
        yield Case(f"{tag} worker", method, url(), "w0", good, expect={401, 403})

    # As the schema says (a wrong password, on the login route), then path and query values.
    yield Case(f"{tag} schema-valid", method, url(), caller, good)
    for p in path_params:
        for value in path_values(ids):
            yield Case(f"{tag} {p['name']}={value[:12]}", method, url({p["name"]: value}),
                       caller, good)
    for q in query:
        for value in QUERY_ODD:
            yield Case(f"{tag} ?{q['name']}={value[:12]}", method, url(qs=f"{q['name']}={value}"),
                       caller, good)
    if query:
        yield Case(f"{tag} repeated query", method,
                   url(qs="&".join(f"{q['name']}=1&{q['name']}=x" for q in query)), caller, good)

    # Bodies.
    if method in ("POST", "PUT"):
        bodies: list[tuple[str, bytes]] = [
            ("empty", b""),
            ("garbage", b"\x00\xff{]not json"),
            ("random bytes", rng.randbytes(64)),
            ("utf-16", orjson.dumps(base or {}).decode().encode("utf-16")),
            ("deep", deep(300)),
            ("huge int", str(HUGE).encode()),
            ("lone surrogate", SURROGATE),
            ("null", b"null"),
            ("array", b"[]"),
        ]
        for name, raw in bodies:
            yield Case(f"{tag} body {name}", method, url(), caller, raw)
    if isinstance(base, dict) and body_schema is not None:
        s = schemas.resolve(body_schema)
        props = s.get("properties", {})
        for key, prop in props.items():
            present = {**base, key: schemas.valid(prop, key)}
            yield Case(f"{tag} {key} wrong type", method, url(), caller,
                       orjson.dumps({**base, key: schemas.wrong(prop)}))
            yield Case(f"{tag} {key} huge int", method, url(), caller,
                       with_raw(present, key, str(HUGE).encode()))
            yield Case(f"{tag} {key} nested huge int", method, url(), caller,
                       with_raw(present, key, b'{"a": [{"b": -' + str(HUGE).encode() + b"}]}"))
            yield Case(f"{tag} {key} deep", method, url(), caller,
                       with_raw(present, key, deep(260)))
            yield Case(f"{tag} {key} lone surrogate", method, url(), caller,
                       with_raw(present, key, SURROGATE))
        for key in s.get("required", ()):
            yield Case(f"{tag} {key} missing", method, url(), caller,
                       orjson.dumps({k: v for k, v in base.items() if k != key}))
        # Random mixtures: several fields wrong at once, or wrong and odd in one body.
        for i in range(RANDOM_CASES if props else 0):
            body = dict(base)
            for key in rng.sample(sorted(props), k=rng.randint(1, len(props))):
                body[key] = rng.choice(
                    [schemas.wrong(props[key]), "x" * rng.randint(0, 5000), -(2**63), 2**63 - 1,
                     {"k" * 3: [None] * 3}, rng.random() * 1e300]
                )
            yield Case(f"{tag} random {i}", method, url(), caller, orjson.dumps(body))


async def digest(redis: Any) -> dict[bytes, str]:
    """Each key's content (type, members in sorted order, absolute expiry), hashed; keys a
    refusal may touch left out. Content, not DUMP bytes: a read of a hash that is rehashing
    (HSETNX on a field that exists, say) reorders its table and so its DUMP, changing nothing."""
    keys = sorted(await redis.keys("*"))
    prefix = b"cq:"
    kept = [k for k in keys if not k.removeprefix(prefix).decode().startswith(DIGEST_EXCLUDED)]
    async with redis.pipeline(transaction=False) as pipe:
        for key in kept:
            pipe.type(key)
        types = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for key, kind in zip(kept, types, strict=True):
            read = {
                b"string": lambda k: pipe.get(k),
                b"hash": lambda k: pipe.hgetall(k),
                b"set": lambda k: pipe.smembers(k),
                b"zset": lambda k: pipe.zrange(k, 0, -1, withscores=True),
                b"list": lambda k: pipe.lrange(k, 0, -1),
                b"stream": lambda k: pipe.xrange(k),
            }[kind]
            read(key)
            pipe.execute_command("PEXPIRETIME", key)
        values = await pipe.execute()
    out: dict[bytes, str] = {}
    for i, (key, kind) in enumerate(zip(kept, types, strict=True)):
        value, expiry = values[2 * i], values[2 * i + 1]
        if isinstance(value, dict):
            value = sorted(value.items())
        elif isinstance(value, set):
            value = sorted(value)
        out[key] = hashlib.sha256(repr((kind, value, expiry)).encode()).hexdigest()
    return out


async def headers_for(queue: QueueHarness, caller: str | None) -> dict[str, str | bytes]:
    if caller is None:
        return {}
    if caller == "bearer:junk":
        return {"Authorization": "Bearer not-a-token"}
    if caller.startswith("basic:"):
        return {"Authorization": ("Basic " + caller.removeprefix("basic:")).encode()}
    if caller in WORKER_TOKENS:
        return {"Authorization": f"Bearer {WORKER_TOKENS[caller]}"}
    return {"Authorization": f"Bearer {await queue.token(caller)}"}


async def setup_ids(queue: QueueHarness) -> tuple[dict[str, str], WorkerClient]:
    """A queued job, a registered worker holding a leased one: the real ids cases start from."""
    alice = await queue.client("alice")
    r = await alice.post("/api/jobs", json={"workflow": WORKFLOW})
    assert r.status_code == 201, r.text
    leased = (await alice.post("/api/jobs", json={"workflow": WORKFLOW})).json()["id"]
    await alice.aclose()
    worker = await WorkerClient.register(queue, "w0")
    lease = await worker.lease()
    assert lease is not None
    ids = {
        "job_id": lease["job"]["id"],
        "lease_id": lease["lease_id"],
        "worker_id": worker.worker_id,
        "uid": "fzuser",
        "name": "fztoken",
        "digest": "0" * 64,
        "queued_job": leased,
    }
    return ids, worker


@pytest.mark.timeout(90)
async def test_every_route_refuses_bad_input_cleanly(make_queue: MakeQueue) -> None:
    rng = random.Random(SEED)
    async with make_queue(
        lease_ttl_s=600.0, reap_interval_s=600.0, lease_wait_max_s=0.05,
        login_failures_per_address=10_000,
    ) as queue:
        ids, worker = await setup_ids(queue)
        for caller in ("alice", "admin"):
            await queue.token(caller)  # before any refused login counts against the address
        async with httpx.AsyncClient(base_url=queue.base_url, timeout=30) as http:
            doc = (await http.get("/api/openapi.json")).json()
            redis = queue.app.state.ctx.store.redis
            seen: dict[str, int] = {}
            failures: list[str] = []
            count = 0
            for case in cases(doc, ids, rng):
                count += 1
                headers: dict[str, str | bytes] = {"Content-Type": "application/json",
                           **case.headers,
                           **await headers_for(queue, case.caller)}
                before = await digest(redis)
                r = await http.request(case.method, case.url, content=case.body, headers=headers)
                after = await digest(redis)
                seen[f"{r.status_code // 100}xx"] = seen.get(f"{r.status_code // 100}xx", 0) + 1
                problem = check(case, r, before, after)
                if problem:
                    failures.append(f"{case.name}: {problem}")
                if case.caller == "w0" and r.status_code < 400 and "release" in case.url:
                    await worker.http.post("/api/worker/register", json={"gpu": "test"})
        await worker.aclose()
    assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} of {count})"
    # The cases reached the routes' own logic, not only the auth check in front of them.
    assert count > 800 and seen.get("4xx", 0) > 600 and seen.get("2xx", 0) > 20, seen


def check(case: Case, r: httpx.Response, before: dict[bytes, str], after: dict[bytes, str]) -> str:
    """What is wrong with the answer to `case`, or ''."""
    if r.status_code >= 500:
        return f"{r.status_code} {r.text[:200]}"
    if case.expect is not None and r.status_code not in case.expect:
        return f"expected {sorted(case.expect)}, got {r.status_code} {r.text[:120]}"
    if r.status_code >= 400:
        if r.headers.get("content-type") != "application/json":
            return f"{r.status_code} content-type {r.headers.get('content-type')}"
        try:
            body = r.json()
        except ValueError:
            return f"{r.status_code} body not JSON: {r.text[:120]}"
        if not (isinstance(body, dict) and set(body) == {"detail"}
                and isinstance(body["detail"], str) and body["detail"]):
            return f"{r.status_code} not the error shape: {r.text[:120]}"
        if before != after:
            changed = sorted(k for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k))
            return f"{r.status_code} changed Redis: {changed[:5]}"
    return ""
