"""Config: one frozen object; every bad key fails early, naming the key and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_config
from tests.infra.harness import make_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_frozen(tmp_path):
    cfg = make_config(tmp_path)
    assert cfg.participants == 20 and cfg.vps_type == "cx23" and cfg.queue_mode == "fair"
    assert cfg.prefix == "comfy-workshop-workshop"
    assert cfg.usernames[0] == "user001" and cfg.usernames[-1] == "user020"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.participants = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ({"domain": None}, "workshop:domain", "pulumi config set workshop:domain"),
        ({"domain": "not a domain"}, "workshop:domain", "pulumi config set workshop:domain"),
        ({"cloudflareZoneId": "xyz"}, "workshop:cloudflareZoneId", "pulumi config set"),
        ({"participants": "0"}, "workshop:participants", "pulumi config set workshop:participants"),
        ({"participants": "many"}, "workshop:participants", "pulumi config set"),
        ({"adminEmails": []}, "workshop:adminEmails", "pulumi config set --path"),
        ({"sshPublicKeys": ["nope"]}, "workshop:sshPublicKeys", "OpenSSH public key"),
        (
            {"sshPrivateKeyFile": "/nonexistent/key"},
            "workshop:sshPrivateKeyFile",
            "pulumi config set workshop:sshPrivateKeyFile",
        ),
        ({"adminCidrs": ["0.0.0.0/0"]}, "workshop:adminCidrs", "must not open SSH"),
        ({"adminCidrs": ["10.0.0.300/8"]}, "workshop:adminCidrs", "invalid CIDR"),
        ({"queueMode": "random"}, "workshop:queueMode", "pulumi config set workshop:queueMode"),
        ({"queueImage": "ghcr.io/x/queue:latest"}, "workshop:queueImage", "digest"),
        ({"redisImage": "redis:7"}, "workshop:redisImage", "digest"),
        ({"gpu": {"provider": "aws"}}, "workshop:gpu.provider", "pulumi config set --path"),
        ({"gpu": {"idleMinutes": 0}}, "workshop:gpu.idleMinutes", "pulumi config set"),
        (
            {"participantPasswords": {"user999": "longenough"}},
            "workshop:participantPasswords",
            "user001..user020",
        ),
        ({"r2Location": "mars"}, "workshop:r2Location", "pulumi config set workshop:r2Location"),
        ({"adminPassword": "short"}, "workshop:adminPassword", "pulumi config set --secret"),
    ],
)
def test_bad_key_names_key_and_fix(tmp_path, override, key, hint):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, **override)
    assert key in str(err.value)
    assert hint in str(err.value)


def test_200_participants_allowed(tmp_path):
    assert make_config(tmp_path, participants=200).usernames[-1] == "user200"


def test_stack_file_documents_every_key_with_a_comment(tmp_path):
    text = (ROOT / "Pulumi.workshop.yaml").read_text()
    config = yaml.safe_load(text)["config"]
    read = {
        "domain",
        "cloudflareZoneId",
        "cloudflareAccountId",
        "participants",
        "adminEmails",
        "sshPublicKeys",
        "sshPrivateKeyFile",
        "adminCidrs",
        "vpsType",
        "vpsLocation",
        "vpsImage",
        "dataVolumeGb",
        "swapGb",
        "queueMode",
        "queueImage",
        "gatewayImage",
        "redisImage",
        "caddyImage",
        "r2Location",
        "manageZoneSsl",
        "gpu",
    }
    assert {k.split(":", 1)[1] for k in config} == read
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  workshop:"):
            assert lines[i - 1].strip().startswith("#") or lines[i - 1].startswith("  workshop:"), (
                line
            )
    assert "adminPassword" in text and "--secret" in text
    # The shipped file (with a real key path) loads: every default is valid.
    key = tmp_path / "k"
    key.write_text("x")
    raw = {k.split(":", 1)[1]: v for k, v in config.items()} | {"sshPrivateKeyFile": str(key)}
    cfg = load_config(raw.get, lambda k: None, "comfy-workshop", "workshop")
    assert cfg.participants == 20
