"""`python -m services.fleet models|verify|fetch|check|watchdog|extra-model-paths`.

The models bucket is configured by FLEET_MODELS__BUCKET, FLEET_MODELS__ENDPOINT,
FLEET_MODELS__ACCESS_KEY_ID, FLEET_MODELS__SECRET_ACCESS_KEY (and FLEET_MODELS__REGION,
default `auto` for R2); HF_TOKEN is sent to the model sources when set (gated models).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.fleet.fetch import BucketSource, FetchError, fetch_models
from services.fleet.manifest import (
    DEFAULT_MANIFEST,
    ManifestError,
    extra_model_paths,
    load_manifest,
)
from services.fleet.placement import COMFYUI_FOLDERS, check_placement, model_roots
from services.storage import S3Store, StorageSettings, open_store


class FleetSettings(BaseSettings):
    """The models bucket (nested like every service's storage settings)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", env_nested_delimiter="__")

    models: StorageSettings | None = None
    hf_token: SecretStr | None = None


def _settings() -> FleetSettings:
    import os

    settings = FleetSettings()
    if settings.hf_token is None and os.environ.get("HF_TOKEN"):
        settings = settings.model_copy(update={"hf_token": SecretStr(os.environ["HF_TOKEN"])})
    return settings


def _bucket(settings: FleetSettings) -> tuple[Any, str]:
    if settings.models is None or settings.models.bucket is None:
        raise SystemExit(
            "error: set FLEET_MODELS__BUCKET (and FLEET_MODELS__ENDPOINT, "
            "FLEET_MODELS__ACCESS_KEY_ID, FLEET_MODELS__SECRET_ACCESS_KEY) to the models bucket"
        )
    store = open_store(settings.models)
    assert isinstance(store, S3Store)
    return store.client, store.bucket


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.fleet")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="fill the models bucket from the sources, then verify it")
    verify = sub.add_parser("verify", help="check the models bucket against the manifest")
    verify.add_argument("--deep", action="store_true", help="download and hash every object")
    fetch = sub.add_parser("fetch", help="fetch the models onto this host")
    fetch.add_argument("--dest", type=Path, required=True)
    fetch.add_argument("--shared", type=Path, help="a provider-local volume holding the models")
    fetch.add_argument("--parallel", type=int, default=8)
    check = sub.add_parser("check", help="is every model where ComfyUI will look?")
    check.add_argument("--comfyui-dir", type=Path)
    check.add_argument("--extra-model-paths", type=Path)
    watchdog = sub.add_parser("watchdog", help="exit 0 when this host should power off")
    watchdog.add_argument("--status-dir", type=Path, required=True)
    watchdog.add_argument("--queue-url", required=True)
    watchdog.add_argument("--idle-minutes", type=float, required=True)
    watchdog.add_argument("--interval", type=float, default=30.0)
    paths = sub.add_parser("extra-model-paths", help="print ComfyUI's extra_model_paths.yaml")
    paths.add_argument("--base", required=True)
    args = parser.parse_args(argv)
    if args.command == "watchdog":  # needs no manifest (the image ships none of its own)
        return _watchdog(args)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, manifest)
    except (FetchError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _watchdog(args: argparse.Namespace) -> int:
    from services.fleet.idle import IdleRule, http_probe, run_watchdog

    verdict = run_watchdog(
        IdleRule(idle_s=args.idle_minutes * 60),
        args.status_dir,
        http_probe(args.queue_url),
        interval_s=args.interval,
        log=lambda line: print(line, flush=True),
    )
    print(verdict.reason, flush=True)
    return 0


def _run(args: argparse.Namespace, manifest: Any) -> int:
    if args.command in ("models", "verify"):
        import httpx

        from services.fleet.bucket import fill_bucket, verify_bucket

        settings = _settings()
        client, bucket = _bucket(settings)
        if args.command == "models":
            token = settings.hf_token.get_secret_value() if settings.hf_token else None
            with httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0)) as http:
                for stored in fill_bucket(manifest, client, bucket, http=http, token=token):
                    print(f"{stored.key}: {stored.how}")
        problems = verify_bucket(manifest, client, bucket, deep=getattr(args, "deep", False))
        for problem in problems:
            print(f"{problem.key}: {problem.message}", file=sys.stderr)
        print(f"{len(manifest.models) - len(problems)}/{len(manifest.models)} models verified")
        return 1 if problems else 0
    if args.command == "fetch":
        settings = _settings()
        source = None
        if settings.models is not None and settings.models.bucket is not None:
            source = BucketSource(*_bucket(settings))
        results = fetch_models(
            manifest, args.dest, bucket=source, shared_dir=args.shared, parallel=args.parallel
        )
        for fetched in results:
            print(f"{fetched.key}: {fetched.how}")
        # What the fetch put where: the layout extra_model_paths.yaml gives ComfyUI.
        problems = check_placement(manifest, {f: [args.dest / f] for f in COMFYUI_FOLDERS})
        for problem in problems:
            print(problem.message, file=sys.stderr)
        return 1 if problems else 0
    if args.command == "check":
        roots = model_roots(args.comfyui_dir, args.extra_model_paths)
        problems = check_placement(manifest, roots)
        for problem in problems:
            print(problem.message, file=sys.stderr)
        print(f"{len(manifest.models) - len(problems)}/{len(manifest.models)} models in place")
        return 1 if problems else 0
    if args.command == "extra-model-paths":
        sys.stdout.write(extra_model_paths(manifest, args.base))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
