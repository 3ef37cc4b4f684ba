"""bench/gpu_pairs.py: it refuses cleanly on a host that cannot run it, its pure parts compute
what they claim on real inputs, and the whole flow runs against the ComfyUI double."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_pairs
from services.comfy.validation import validate_prompt

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "comfyui"
CATALOG = json.loads((SHARED / "object_info_with_random_ckpt.json").read_text())
#: What `nvidia-smi -L` prints on a one-H100 host, and on a host whose driver is not loaded.
SMI_LIST = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-6f1d2c3b-8a9e-4f5d-b1c2-3d4e5f6a7b8c)"
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running."
)


def _fake_smi(folder: Path, stdout: str, rc: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {rc}\n")
    smi.chmod(0o755)
    return folder


def _bench(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_pairs", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    env.update(changes)
    return env


def _refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs COMFYUI_DIR" in lines[0] and "CUDA GPU" in lines[0], lines[0]
    assert reason in lines[0], lines[0]


# --------------------------------------------------------------------------- refusals
def test_refuses_without_comfyui_dir() -> None:
    _refused(_bench(_env()), "(COMFYUI_DIR is not set)")


def test_refuses_a_folder_that_is_not_a_checkout(tmp_path: Path) -> None:
    _refused(_bench(_env(COMFYUI_DIR=str(tmp_path))), f"({tmp_path} holds no main.py)")


def test_refuses_without_nvidia_smi(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = _env(COMFYUI_DIR=str(gpu_pairs.FAKE_CHECKOUT), PATH=str(empty))
    _refused(_bench(env), "no CUDA GPU")


def test_refuses_when_the_driver_does_not_answer(tmp_path: Path) -> None:
    smi = _fake_smi(tmp_path / "bin", SMI_NO_DRIVER, 9)
    env = _env(COMFYUI_DIR=str(gpu_pairs.FAKE_CHECKOUT), PATH=f"{smi}:/usr/bin:/bin")
    _refused(_bench(env), "no CUDA GPU")


def test_refuses_without_a_checkpoint(tmp_path: Path) -> None:
    checkout = tmp_path / "ComfyUI"
    (checkout / "models" / "checkpoints").mkdir(parents=True)
    (checkout / "main.py").write_text("")
    (checkout / "models" / "checkpoints" / "put_checkpoints_here").write_text("")
    smi = _fake_smi(tmp_path / "bin", SMI_LIST, 0)
    env = _env(PATH=f"{smi}:/usr/bin:/bin")
    result = _bench(env, "--comfyui-dir", str(checkout))
    _refused(result, f"(no checkpoint in {checkout / 'models' / 'checkpoints'})")


def test_cuda_gpus_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path / 'ok', SMI_LIST, 0)}:/usr/bin:/bin")
    assert gpu_pairs.cuda_gpus() == [SMI_LIST]
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path / 'no', SMI_NO_DRIVER, 9)}:/usr/bin:/bin")
    assert gpu_pairs.cuda_gpus() == []


# --------------------------------------------------------------------------- pure parts
def test_workload_from_the_traces_catalogue() -> None:
    users = ["user001", "user002", "user003"]
    work = gpu_pairs.build_workload(CATALOG, 7, users, seed0=100)
    assert [u for u, _ in work] == users * 2 + ["user001"]
    seeds = set()
    for _, graph in work:
        nodes = {n["class_type"]: n["inputs"] for n in graph.values()}
        assert nodes["CheckpointLoaderSimple"]["ckpt_name"] == "random-sd15.safetensors"
        assert nodes["EmptyLatentImage"] == {"width": 512, "height": 512, "batch_size": 1}
        assert nodes["KSampler"]["steps"] == 20 and nodes["KSampler"]["sampler_name"] == "euler"
        seeds.add(nodes["KSampler"]["seed"])
        result = validate_prompt(copy.deepcopy(graph), CATALOG, tracebacks=False)
        assert result.ok, result.error_body()
        assert result.outputs == ["9"]
    assert seeds == set(range(100, 107))  # distinct: ComfyUI would cache a repeated graph


def test_workload_refuses_a_checkpoint_the_pool_lacks() -> None:
    with pytest.raises(ValueError, match=r"'sdxl.safetensors' is not in the catalogue: "
                       r"\['random-sd15.safetensors'\]"):  # fmt: skip
        gpu_pairs.build_workload(CATALOG, 1, ["user001"], checkpoint="sdxl.safetensors")
    no_models = json.loads((SHARED / "object_info.json").read_text())  # ckpt_name: []
    with pytest.raises(ValueError, match="offers no checkpoint"):
        gpu_pairs.build_workload(no_models, 1, ["user001"])


def test_workload_refuses_values_the_catalogue_refuses() -> None:
    with pytest.raises(ValueError, match="value_bigger_than_max"):
        gpu_pairs.build_workload(CATALOG, 1, ["user001"], size=100_000)


def test_img_per_min_steady_state() -> None:
    # 21 images one second apart, then a slow start and a straggler outside the trimmed 10 %.
    steady = [10_000.0 + 1000 * i for i in range(21)]
    assert gpu_pairs.img_per_min(steady) == pytest.approx(60.0)
    ramped = [0.0, 5000.0, *steady[:-1], steady[-2] + 9000, steady[-2] + 20_000]
    k = int(len(ramped) * 0.1)
    assert k == 2
    assert gpu_pairs.img_per_min(ramped) == pytest.approx(60.0)
    assert gpu_pairs.img_per_min(ramped, trim=0) == pytest.approx(
        (len(ramped) - 1) / ((ramped[-1] - ramped[0]) / 60_000)
    )
    assert gpu_pairs.img_per_min(reversed(steady)) == pytest.approx(60.0)  # order does not matter
    assert gpu_pairs.img_per_min([]) is None
    assert gpu_pairs.img_per_min([5.0]) is None
    assert gpu_pairs.img_per_min([5.0, 5.0, 5.0]) is None


def test_parse_nvidia_smi_lines() -> None:
    assert gpu_pairs.parse_smi("97, 13456\n") == (97.0, 13456.0)
    assert gpu_pairs.parse_smi("0, 1") == (0.0, 1.0)
    assert gpu_pairs.parse_smi("[N/A], [N/A]") is None
    assert gpu_pairs.parse_smi("") is None
    assert gpu_pairs.parse_smi(SMI_NO_DRIVER) is None


# --------------------------------------------------------------------------- the harness
@pytest.mark.timeout(120)
def test_dry_run_measures_one_and_two_pairs() -> None:
    """The whole flow on the double: P=1 and P=2, each worker managing its own "ComfyUI"."""
    job_time = 0.2
    result = _bench(_env(), "--dry-run", "--jobs-per-pair", "6", "--job-time", str(job_time),
                    "--users", "3", timeout=110)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["dry_run"] is True and out["gpu"] is None
    assert set(out["pairs"]) == {"1", "2"}
    for n in (1, 2):
        r = out["pairs"][str(n)]
        assert r["failed"] == 0 and r["succeeded"] == r["jobs"] == 6 * n
        # Each double runs one prompt at a time: n pairs cannot beat n x 60 / job_time img/min;
        # the queue's finished_at timestamps jitter by a few ms, so allow a margin.
        bound = n * 60 / job_time
        assert 0.3 * bound < r["img_per_min_steady"] <= 1.5 * bound, r
        assert r["img_per_min_wall"] <= 1.5 * bound
        assert r["warm_s_per_image_median"] >= job_time * 0.9
        assert sorted(r["images_per_worker"]) == [f"bw{i}/p{n}-{i}" for i in range(n)]
        assert len(r["cold"]) == n
        for cold in r["cold"]:
            assert 0 < cold["launch_to_ready_s"] < cold["launch_to_first_image_s"]
            assert cold["first_prompt_s"] >= job_time * 0.9
        assert r["gpu_util_mean_pct"] is None and r["gpu_samples"] == 0
    # Two pairs share the work: both ran images.
    assert all(v > 0 for v in out["pairs"]["2"]["images_per_worker"].values())
