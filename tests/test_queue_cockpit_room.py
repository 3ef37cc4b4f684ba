"""The whole room at once from the cockpit (issue 12): a workflow pushed to every
participant's canvas (or one's), and the printable credentials sheet."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import httpx
import pytest

from services.contracts import PUSH_WORKFLOW_MAX_BYTES
from tests.queue_harness import PASSWORDS, WORKFLOW, MakeQueue, QueueHarness, events

pytestmark = pytest.mark.timeout(60)

UI_WORKFLOW = {
    "last_node_id": 1, "last_link_id": 0, "links": [], "version": 0.4,
    "nodes": [{"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [300, 100],
               "widgets_values": [512, 512, 1, 0]}],
}  # fmt: skip


async def test_a_pushed_workflow_reaches_every_participant_or_one(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    async with events(queue, "alice") as alice, events(queue, "bob") as bob:
        r = await admin.post("/api/admin/push-workflow", json={"workflow": UI_WORKFLOW})
        assert r.status_code == 202 and r.json() == {"sent_to": "*"}
        for stream in (alice, bob):
            event = await stream.until(lambda e: e["type"] == "push_workflow")
            assert event["user"] == "*" and event["data"] == {"workflow": UI_WORKFLOW}
        r = await admin.post(
            "/api/admin/push-workflow", json={"workflow": WORKFLOW, "user": "bob"}
        )
        assert r.status_code == 202 and r.json() == {"sent_to": "bob"}
        event = await bob.until(lambda e: e["type"] == "push_workflow")
        assert event["user"] == "bob" and event["data"] == {"workflow": WORKFLOW}
        # Alice's stream carries nothing of bob's push: her own push is the next she sees.
        r = await admin.post(
            "/api/admin/push-workflow", json={"workflow": UI_WORKFLOW, "user": "alice"}
        )
        assert r.json() == {"sent_to": "alice"}
        event = await alice.until(lambda e: e["type"] == "push_workflow")
        assert event["user"] == "alice" and event["data"] == {"workflow": UI_WORKFLOW}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"workflow": {"nodes": [], "links": "x"}}, 400, "'nodes' and 'links'"),
        ({"workflow": {"1": {"inputs": {}}}}, 400, "not a ComfyUI workflow"),
        ({"workflow": {}}, 400, "no nodes"),
        ({"workflow": WORKFLOW, "user": "nobody"}, 404, "unknown user"),
        ({"workflow": [1, 2]}, 422, ""),
        ({"workflow": UI_WORKFLOW, "colour": 1}, 422, ""),
    ],
)
async def test_a_push_that_cannot_open_is_refused_with_the_reason(
    queue: QueueHarness, body: dict, status: int, reason: str
) -> None:
    admin = await queue.client("admin")
    r = await admin.post("/api/admin/push-workflow", json=body)
    assert r.status_code == status and reason in str(r.json()["detail"])


async def test_a_push_larger_than_one_event_is_413(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    big = dict(UI_WORKFLOW, notes="x" * PUSH_WORKFLOW_MAX_BYTES)
    r = await admin.post("/api/admin/push-workflow", json={"workflow": big})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    participant = await queue.client("alice")
    r = await participant.post("/api/admin/push-workflow", json={"workflow": UI_WORKFLOW})
    assert r.status_code == 403


class _Cards(HTMLParser):
    """The sheet's cards as {user: (url, password)}, read as a browser would."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, dict[str, str]] = {}
        self._card: dict[str, str] | None = None
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class")
        if tag == "section" and cls == "card":
            self._card = {}
        elif tag == "dd" and self._card is not None:
            self._field = cls

    def handle_data(self, data: str) -> None:
        if self._card is not None and self._field:
            self._card[self._field] = self._card.get(self._field, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd":
            self._field = None
        elif tag == "section" and self._card is not None:
            self.cards[self._card["user"]] = self._card
            self._card = None


def _cards(html: str) -> dict[str, dict[str, str]]:
    parser = _Cards()
    parser.feed(html)
    return parser.cards


async def _login(queue: QueueHarness, user: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=queue.base_url) as http:
        r = await http.post("/api/auth/token", json={"username": user, "password": password})
        return r.status_code


async def test_the_sheet_prints_the_passwords_the_organizer_holds(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(public_url="https://workshop.example.org") as queue:
        admin = await queue.client("admin")
        r = await admin.post("/api/admin/credentials-sheet", json={"passwords": PASSWORDS})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-store"
        cards = _cards(r.text)
        # Every participant (carol is an instructor: no card unless asked for).
        assert set(cards) == {"alice", "bob"}
        assert cards["alice"] == {
            "url": "https://workshop.example.org/alice/", "user": "alice",
            "password": PASSWORDS["alice"],
        }  # fmt: skip
        r = await admin.post(
            "/api/admin/credentials-sheet", json={"users": ["carol"], "passwords": PASSWORDS}
        )
        assert set(_cards(r.text)) == {"carol"}


async def test_the_sheet_refuses_what_it_cannot_print_and_changes_nothing(
    queue: QueueHarness,
) -> None:
    admin = await queue.client("admin")
    r = await admin.post("/api/admin/credentials-sheet", json={})
    assert r.status_code == 400 and "only password hashes" in r.json()["detail"]
    assert "alice, bob" in r.json()["detail"]
    wrong = dict(PASSWORDS, bob="not-bobs-password")
    r = await admin.post(
        "/api/admin/credentials-sheet", json={"passwords": wrong, "reset": True}
    )
    assert r.status_code == 400 and "not the current password of bob" in r.json()["detail"]
    r = await admin.post(
        "/api/admin/credentials-sheet", json={"users": ["alice", "zed"], "reset": True}
    )
    assert r.status_code == 404 and "zed" in r.json()["detail"]
    # Nothing was reset by the refused requests.
    assert await _login(queue, "alice", PASSWORDS["alice"]) == 200
    assert await _login(queue, "bob", PASSWORDS["bob"]) == 200


async def test_a_reset_sheet_gives_new_passwords_that_work(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    r = await admin.post(
        "/api/admin/credentials-sheet",
        json={"reset": True, "passwords": {"alice": PASSWORDS["alice"]}},
    )
    assert r.status_code == 200, r.text
    cards = _cards(r.text)
    # The base URL the admin used, when no public URL is configured.
    assert cards["bob"]["url"] == f"{queue.base_url}/bob/"
    assert cards["alice"]["password"] == PASSWORDS["alice"]  # passed: kept
    assert cards["bob"]["password"] != PASSWORDS["bob"]  # not passed: reset
    logins = await asyncio.gather(
        _login(queue, "alice", cards["alice"]["password"]),
        _login(queue, "bob", cards["bob"]["password"]),
        _login(queue, "bob", PASSWORDS["bob"]),
    )
    assert logins == [200, 200, 401]


async def test_the_sheet_escapes_what_it_prints(queue: QueueHarness) -> None:
    admin = await queue.client("admin")
    r = await admin.post(
        "/api/admin/users", json={"id": "eve", "password": "<script>x</script>"}
    )
    assert r.status_code == 201
    r = await admin.post(
        "/api/admin/credentials-sheet",
        json={"users": ["eve"], "passwords": {"eve": "<script>x</script>"}},
    )
    assert "<script>x" not in r.text and "&lt;script&gt;x" in r.text
    assert _cards(r.text)["eve"]["password"] == "<script>x</script>"
