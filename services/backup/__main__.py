"""`python -m services.backup backup|restore` (configured by BACKUP_* environment variables)."""

from __future__ import annotations

import argparse
import logging
import sys

from services.backup.core import backup, restore
from services.backup.settings import BackupSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.backup")
    parser.add_argument("action", choices=["backup", "restore"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = BackupSettings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "backup":
        result = backup(settings)
        print(f"backup {result.name}: {result.keys} keys, {result.files} files")
    else:
        result = restore(settings)
        if result.name is None:
            print("no backup found: nothing to restore (first day of the workshop?)")
        else:
            print(f"restored {result.name}: {result.keys} keys, {result.files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
