"""Render a GPU host's bootstrap from cloud-init/gpu.yaml and cloud-init/gpu-scripts/.

One source, two forms: `render_cloud_config` (for a provider that runs cloud-init) and
`render_script`, the same files and the same runcmd as a shell script (Verda runs a startup
script; the ssh provider pipes it to `bash -s`). Both hold the host's secrets (tailnet key,
worker token, R2 keys): treat them as secrets.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.contracts import COMFYUI_PORT
from services.fleet.manifest import extra_model_paths, parse_manifest

CLOUD_INIT_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
SCRIPTS_DIR = CLOUD_INIT_DIR / "gpu-scripts"
MODELS_DIR = "/srv/comfy/models"  # on the host; the containers see it as /models
CONTAINER_MODELS_DIR = "/models"
COMFYUI_THREADS = 2  # OMP/MKL threads per ComfyUI process (../shared/comfyui/GPU.md)
WORKER_IMAGE_GB = 25  # disk the preflight keeps for the worker image (CUDA, torch)
SCRIPTS = (
    "comfy-gpu-bootstrap",
    "comfy-gpu-preflight",
    "comfy-gpu-join-tailnet",
    "comfy-gpu-wait-queue",
    "comfy-gpu-fetch-models",
    "comfy-gpu-start-workers",
    "comfy-gpu-wait-registered",
    "comfy-gpu-teardown",
)
STATUS_DIR = "/run/comfy/status"  # the workers' status files (tmpfiles in cloud-init/gpu.yaml)
#: How long the bootstrap waits for every pair to register (ComfyUI's start, first model
#: scan, registration); WAIT_FOR_BOOTSTRAP's hour covers it.
REGISTER_TIMEOUT_S = 600

#: A rented host's sshd answers on its public address (Pulumi waits for the bootstrap over
#: it): keys only. Read first (00-), so it wins over the image's and cloud-init's 50-*.conf.
SSHD_KEYS_ONLY_PATH = "/etc/ssh/sshd_config.d/00-comfy-keys-only.conf"
SSHD_KEYS_ONLY = """# ComfyUI workshop GPU host: public SSH with keys only (infra/gpu_bootstrap.py).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
"""

# What Pulumi runs on a Verda host to wait for its startup script (stdout: the tailnet IP).
WAIT_FOR_BOOTSTRAP = """set -eu
i=0
while [ ! -e /srv/comfy/bootstrap.done ]; do
  if [ -e /srv/comfy/bootstrap.failed ]; then cat /srv/comfy/bootstrap.failed >&2; exit 1; fi
  i=$((i + 1))
  if [ "$i" -gt 360 ]; then
    echo "bootstrap still running after an hour: /var/log/comfy-gpu-bootstrap.log" >&2
    exit 1
  fi
  sleep 10
done
tailscale ip -4 | head -n 1
"""
# The ssh provider's commands (as root, or through passwordless sudo).
AS_ROOT = 'if [ "$(id -u)" -eq 0 ]; then bash -s; else sudo -n bash -s; fi'
TEARDOWN = (
    'if [ "$(id -u)" -eq 0 ]; then /usr/local/sbin/comfy-gpu-teardown;'
    " else sudo -n /usr/local/sbin/comfy-gpu-teardown; fi"
)


@dataclass(frozen=True)
class HostBootstrap:
    """Everything one host's bootstrap needs (secrets included)."""

    host: str  # gpu-01: the worker token's name
    hostname: str  # <prefix>-gpu-01: the host's and its tailnet device's name
    provider: str
    worker_image: str
    queue_url: str
    processes_per_gpu: int
    idle_minutes: int
    hourly_eur: float
    tailscale_auth_key: str
    worker_token: str
    storage_endpoint: str
    user_files_bucket: str
    models_bucket: str
    s3_access_key_id: str
    s3_secret_access_key: str
    manifest_text: str
    shared_models_dir: str = ""
    shared_models_nfs: str = ""
    poweroff_on_failure: bool = True


def _env(values: dict[str, Any], quote: bool) -> str:
    """KEY=VALUE lines; quoted for bash and systemd, raw for `docker --env-file`."""
    lines = []
    for key, value in values.items():
        text = str(value)
        if "\n" in text or "\0" in text:
            raise ValueError(f"{key} must be a single line")
        lines.append(f"{key}={shlex.quote(text) if quote else text}")
    return "\n".join(lines) + "\n"


def host_files(b: HostBootstrap) -> list[dict[str, str]]:
    """The per-host write_files entries."""
    manifest = parse_manifest(b.manifest_text)
    gpu_env = {
        "COMFY_HOST": b.host,
        "COMFY_TS_HOSTNAME": b.hostname,
        "COMFY_PROVIDER": b.provider,
        "COMFY_WORKER_IMAGE": b.worker_image,
        "COMFY_QUEUE_URL": b.queue_url,
        "COMFY_PROCESSES_PER_GPU": b.processes_per_gpu,
        "COMFY_THREADS": COMFYUI_THREADS,
        "COMFY_COMFYUI_BASE_PORT": COMFYUI_PORT,
        "COMFY_IDLE_MINUTES": b.idle_minutes,
        "COMFY_HOURLY_EUR": b.hourly_eur,
        "COMFY_MODELS_DIR": MODELS_DIR,
        "COMFY_MODELS_BYTES": manifest.total_bytes,
        "COMFY_IMAGE_GB": WORKER_IMAGE_GB,
        "COMFY_SHARED_MODELS_DIR": b.shared_models_dir,
        "COMFY_SHARED_MODELS_NFS": b.shared_models_nfs,
        "COMFY_POWEROFF_ON_FAILURE": int(b.poweroff_on_failure),
        "COMFY_STATUS_DIR": STATUS_DIR,
        "COMFY_REGISTER_TIMEOUT_S": REGISTER_TIMEOUT_S,
    }
    storage = {
        "ENDPOINT": b.storage_endpoint,
        "ACCESS_KEY_ID": b.s3_access_key_id,
        "SECRET_ACCESS_KEY": b.s3_secret_access_key,
        "REGION": "auto",
    }
    # Worker settings (team brief 5.1); the per-pair ones come from comfy-gpu-start-workers.
    worker_env = {
        "WORKER_QUEUE_URL": b.queue_url,
        "WORKER_TOKEN": b.worker_token,
        "WORKER_PROVIDER": b.provider,
        "WORKER_EXTRA_MODEL_PATHS": "/etc/comfy/extra_model_paths.yaml",
        "WORKER_MODELS_MANIFEST": "/etc/comfy/models.yaml",
        "WORKER_STORAGE__BUCKET": b.user_files_bucket,
        **{f"WORKER_STORAGE__{k}": v for k, v in storage.items()},
    }
    models_env = {
        "FLEET_MODELS__BUCKET": b.models_bucket,
        **{f"FLEET_MODELS__{k}": v for k, v in storage.items()},
    }
    secret, public = "0600", "0644"
    # Only on the hosts the stack rents: an `ssh` host's sshd is its owner's to configure.
    sshd = (
        [{"path": SSHD_KEYS_ONLY_PATH, "permissions": public, "content": SSHD_KEYS_ONLY}]
        if b.provider == "verda"
        else []
    )
    return [
        *sshd,
        {"path": "/etc/comfy/gpu.env", "permissions": public, "content": _env(gpu_env, True)},
        {
            "path": "/etc/comfy/worker.env",
            "permissions": secret,
            "content": _env(worker_env, False),
        },
        {
            "path": "/etc/comfy/models.env",
            "permissions": secret,
            "content": _env(models_env, False),
        },
        {
            "path": "/etc/comfy/tailscale-authkey",
            "permissions": secret,
            "content": b.tailscale_auth_key + "\n",
        },
        {"path": "/etc/comfy/models.yaml", "permissions": public, "content": b.manifest_text},
        {
            "path": "/etc/comfy/extra_model_paths.yaml",
            "permissions": public,
            "content": extra_model_paths(manifest, CONTAINER_MODELS_DIR),
        },
    ]


def _document(b: HostBootstrap) -> dict[str, Any]:
    doc = yaml.safe_load((CLOUD_INIT_DIR / "gpu.yaml").read_text())
    scripts = [
        {
            "path": f"/usr/local/sbin/{name}",
            "permissions": "0755",
            "content": (SCRIPTS_DIR / name).read_text(),
        }
        for name in SCRIPTS
    ]
    doc["write_files"] = host_files(b) + list(doc.get("write_files", [])) + scripts
    return doc


def render_cloud_config(b: HostBootstrap) -> str:
    body = yaml.safe_dump(_document(b), sort_keys=False, default_flow_style=False, width=1000)
    return "#cloud-config\n" + body


def render_script(b: HostBootstrap) -> str:
    """The same bootstrap as one bash script: write the files, then run the runcmd."""
    doc = _document(b)
    out = [
        "#!/usr/bin/env bash",
        f"# GPU host {b.host} ({b.hostname}): rendered by infra/gpu_bootstrap.py from",
        "# cloud-init/gpu.yaml; writes its files, then runs what cloud-init's runcmd would.",
        "set -euo pipefail",
        "put() {",
        '  install -d -m 0755 "$(dirname "$1")"',
        '  (umask 077 && base64 -d >"$1.new")',
        '  chmod "$2" "$1.new"',
        '  mv -f "$1.new" "$1"',
        "}",
    ]
    for entry in doc["write_files"]:
        encoded = base64.encodebytes(entry["content"].encode()).decode()
        out += [f"put {shlex.quote(entry['path'])} {entry['permissions']} <<'B64'", encoded + "B64"]
    for command in doc["runcmd"]:
        out.append(command if isinstance(command, str) else shlex.join(command))
    return "\n".join(out) + "\n"
