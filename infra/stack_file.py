"""Check a stack file before CI previews with it: `python -m infra.stack_file Pulumi.<stack>.yaml`.

The committed Pulumi.workshop.yaml is a template (all-zero Cloudflare ids, an example domain
and SSH key): a preview against it shows a plan for a zone and account that do not exist.
CI writes the real stack file from a repository secret and runs this first, so a missing or
still-templated secret fails in one line instead of in the providers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from infra.config import NAMESPACE, ConfigError, load_config

PLACEHOLDERS = {
    "cloudflareZoneId": "0" * 32,
    "cloudflareAccountId": "0" * 32,
    "domain": "workshop.example.org",
}
PLACEHOLDER_SSH_KEY = "ReplaceWithYourOwnPublicKeyMaterial"
SECRET_KEYS = {"adminPassword", "participantPasswords"}


def check(path: Path) -> list[str]:
    """Every problem with the stack file at `path` (empty: ready for `pulumi preview`)."""
    doc = yaml.safe_load(path.read_text()) or {}
    config: dict[str, Any] = doc.get("config") or {}
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(f"{NAMESPACE}:")}
    problems = [
        f"{NAMESPACE}:{key} is the template's placeholder {value!r}; set the real value"
        for key, value in PLACEHOLDERS.items()
        if str(raw.get(key, "")).lower() == value
    ]
    if any(PLACEHOLDER_SSH_KEY in k for k in raw.get("sshPublicKeys") or []):
        problems.append(f"{NAMESPACE}:sshPublicKeys still holds the template's example key")
    # Secrets are encrypted ({secure: ...}) here; the program checks them when it runs.
    plain = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    try:
        load_config(plain.get, lambda k: None, "comfy-workshop", path.stem.split(".", 1)[-1])
    except ConfigError as e:
        problems.append(str(e))
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m infra.stack_file Pulumi.<stack>.yaml", file=sys.stderr)
        return 2
    problems = check(Path(argv[0]))
    for p in problems:
        print(f"{argv[0]}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
