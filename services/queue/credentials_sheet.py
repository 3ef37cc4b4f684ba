"""The printable credentials sheet: one card per participant with their ComfyUI's address,
their user name and password. The queue keeps only password hashes, so the passwords come from
the caller (the organizer's stack outputs or local credentials file) or are new ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class Card:
    user: str
    password: str
    url: str


def participant_url(public_url: str, user: str) -> str:
    """Where a participant's own ComfyUI is: `/userNNN/`, with the slash the frontend needs."""
    return f"{public_url.rstrip('/')}/{user}/"


def render_sheet(public_url: str, passwords: dict[str, str]) -> str:
    """The sheet's HTML, cards in the order given."""
    cards = [Card(u, p, participant_url(public_url, u)) for u, p in passwords.items()]
    return _TEMPLATES.get_template("credentials_sheet.html.j2").render(cards=cards)
