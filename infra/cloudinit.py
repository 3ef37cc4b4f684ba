"""Render the VPS's cloud-config from cloud-init/ (a base document plus its scripts)."""

from __future__ import annotations

from pathlib import Path

import yaml

CLOUD_INIT_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
SCRIPTS = (
    "comfy-prepare-data",
    "comfy-origin-csr",
    "comfy-install-tailscale",
    "comfy-join-tailnet",
)
JOIN_TAILNET = "/usr/local/sbin/comfy-join-tailnet"


def volume_device(volume_id: int | str) -> str:
    """Hetzner exposes an attached volume under a stable by-id path."""
    return f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id}"


def render_vps(
    *,
    domain: str,
    hostname: str,
    volume_id: int | str,
    ssh_public_keys: tuple[str, ...],
    swap_gb: int,
) -> str:
    """The complete #cloud-config document. It holds no secret (see cloud-init/vps.yaml)."""
    doc = yaml.safe_load((CLOUD_INIT_DIR / "vps.yaml").read_text())
    doc["users"][0]["ssh_authorized_keys"] = list(ssh_public_keys)
    if swap_gb > 0:
        doc["swap"] = {"filename": "/swapfile", "size": f"{swap_gb}G", "maxsize": f"{swap_gb}G"}
    else:
        doc.pop("swap", None)
    host_env = (
        f"COMFY_DATA_DEVICE={volume_device(volume_id)}\n"
        f"COMFY_DOMAIN={domain}\n"
        f"COMFY_TS_HOSTNAME={hostname}\n"
    )
    files = [{"path": "/etc/comfy/host.env", "permissions": "0644", "content": host_env}]
    for script in SCRIPTS:
        files.append(
            {
                "path": f"/usr/local/sbin/{script}",
                "permissions": "0755",
                "content": (CLOUD_INIT_DIR / "scripts" / script).read_text(),
            }
        )
    doc["write_files"] = list(doc.get("write_files", [])) + files
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)
    return "#cloud-config\n" + body
