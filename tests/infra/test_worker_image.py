"""images/worker.Dockerfile: the ComfyUI release the traces were recorded with, the locked
groups it installs, and a build context of exactly what it copies (hadolint, the digest pin and
the non-root user are checked for every Dockerfile in test_validators.py)."""

from __future__ import annotations

import re
import tomllib

from tests.infra.test_validators import ROOT
from tests.traces import shared_comfyui_dir

DOCKERFILE = ROOT / "images" / "worker.Dockerfile"


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, name
    return match.group(1)


def test_comfyui_is_the_release_the_traces_describe():
    first_line = (shared_comfyui_dir() / "INDEX.txt").read_text().splitlines()[0]
    version, commit, frontend = re.match(
        r"ComfyUI (\S+) \(\S+ ([0-9a-f]+)\), frontend package (\S+),", first_line
    ).groups()
    assert _arg("COMFYUI_TAG") == f"v{version}"
    assert _arg("COMFYUI_COMMIT").startswith(commit) and len(_arg("COMFYUI_COMMIT")) == 40
    text = DOCKERFILE.read_text()
    assert 'test "$(git -C /opt/ComfyUI rev-parse HEAD)" = "${COMFYUI_COMMIT}"' in text
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert f"comfyui-frontend-package=={frontend}" in groups["comfyui"]


def test_the_image_installs_locked_groups_and_runs_the_worker():
    text = DOCKERFILE.read_text()
    sync = re.search(r"uv sync --frozen --no-default-groups (.*) --no-install-project", text)
    wanted = set(re.findall(r"--group (\S+)", sync.group(1)))
    assert wanted == {"worker", "comfyui"}
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    root = next(p for p in lock["package"] if p["name"] == "comfy-workshop")
    assert wanted <= set(root["dev-dependencies"])  # `uv sync --frozen` can install them
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "comfyui" not in pyproject["tool"]["uv"]["default-groups"]  # torch is image-only
    assert text.rstrip().endswith('CMD ["python", "-m", "services.worker"]')
    assert "WORKER_COMFYUI_DIR=/opt/ComfyUI" in text
    assert "OMP_NUM_THREADS=2 MKL_NUM_THREADS=2" in text


def test_the_build_context_is_what_the_image_copies():
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {src.rstrip("/") for src in line.split()[1:-1]}
    ignore = (ROOT / "images" / "worker.Dockerfile.dockerignore").read_text().splitlines()
    rules = [r for r in ignore if r and not r.startswith("#")]
    assert rules[0] == "*"
    assert {r[1:].rstrip("/") for r in rules if r.startswith("!")} == copied
