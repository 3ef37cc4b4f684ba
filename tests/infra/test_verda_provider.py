"""The Verda dynamic provider's create/read/update/delete over real HTTP, through Verda's own
SDK, against the fake Verda API (tests/infra/fake_verda.py)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from infra.verda_api import Credentials, MissingCredentials, OutOfStock, Verda, VerdaError
from infra.verda_provider import InstanceProvider, SshKeyProvider
from tests.infra.fake_verda import FakeVerda, ServerThread

ROOT = Path(__file__).resolve().parents[2]
H100 = "1H100.80S.30V"
SCRIPT = "#!/bin/bash\n# secrets inside\necho bootstrap\n"


@pytest.fixture
def fake(monkeypatch):
    api = FakeVerda(
        stock={
            ("FIN-01", H100, False): 2,
            ("FIN-01", "1L40S.20V", False): 1,
            ("FIN-03", H100, False): 1,
            ("FIN-01", H100, True): 1,
        }
    )
    with ServerThread(api):
        monkeypatch.setenv("VERDA_CLIENT_ID", api.client_id)
        monkeypatch.setenv("VERDA_CLIENT_SECRET", api.client_secret)
        monkeypatch.setenv("VERDA_API_URL", api.url)
        yield api


@pytest.fixture
def provider():
    return InstanceProvider(poll_s=0.01, create_timeout_s=5, delete_timeout_s=5)


@pytest.fixture
def key_id(fake):
    created = SshKeyProvider().create({"name": "admin-0", "publicKey": "ssh-ed25519 AAAA k"})
    return created.id


@pytest.fixture
def props(key_id):
    return {
        "hostname": "cw-gpu-01",
        "description": "comfy workshop gpu-01",
        "instanceType": H100,
        "image": "ubuntu-24.04-cuda-12.8-open-docker",
        "location": "FIN-01",
        "spot": False,
        "osVolumeGb": 200,
        "sshKeyIds": [key_id],
        "startupScript": SCRIPT,
        "running": True,
    }


NOTHING = {"instances": [], "volumes": [], "scripts": []}


def test_create_read_delete_leaves_nothing_billed(fake, provider, props):
    created = provider.create(props)
    outs = created.outs
    instance = fake.instances[created.id]
    assert instance["status"] == "running" and outs["status"] == "running"
    assert outs["ip"] == instance["ip"] and outs["running"] is True
    assert fake.volumes[outs["osVolumeId"]]["size"] == 200
    assert fake.scripts[outs["startupScriptId"]]["script"] == SCRIPT
    assert instance["startup_script_id"] == outs["startupScriptId"]
    assert instance["ssh_key_ids"] == props["sshKeyIds"]
    assert outs["hourlyEur"] == pytest.approx(2.59 * 0.92)  # the EUR list price, not USD
    assert "startupScript" not in outs and SCRIPT not in str(outs)  # the secrets stay inputs
    # The whole OAuth flow ran: a token first, then bearer calls.
    assert fake.calls[0] == ("POST", "/oauth2/token")

    read = provider.read(created.id, outs)
    assert read.id == created.id and read.outs["status"] == "running"
    assert provider.diff(created.id, outs, props).changes is False

    provider.delete(created.id, outs)
    assert fake.billed() == NOTHING


def test_out_of_stock_fails_with_the_offers_and_creates_nothing(fake, provider, props):
    fake.stock[("FIN-01", H100, False)] = 0
    with pytest.raises(OutOfStock) as err:
        provider.create(props)
    message = str(err.value)
    assert f"no on-demand {H100} in FIN-01" in message
    assert "available in FIN-03" in message and "gpu.location' FIN-03" in message
    assert "Available in FIN-01: 1L40S.20V" in message
    assert err.value.offers == {"FIN-01": ["1L40S.20V"], "FIN-03": [H100]}
    assert fake.billed() == NOTHING


def test_losing_the_race_for_the_last_unit_cleans_up_the_script(fake, provider, props):
    fake.lose_race = True  # the stock check said yes; the order is refused with 503
    with pytest.raises(OutOfStock, match="no on-demand"):
        provider.create(props)
    assert ("POST", "/scripts") in fake.calls and fake.billed() == NOTHING


def test_a_failed_create_leaves_no_instance_volume_or_script(fake, provider, props):
    fake.fail_types.add(H100)  # provisioning ends in status `error`
    with pytest.raises(VerdaError, match="failed to provision"):
        provider.create(props)
    assert ("PUT", "/instances") in fake.calls  # it did order, then deleted
    assert fake.billed() == NOTHING


def test_a_create_that_times_out_is_undone(fake, props):
    fake.boot_polls = 1000
    slow = InstanceProvider(poll_s=0.01, create_timeout_s=0.2, delete_timeout_s=5)
    with pytest.raises(VerdaError, match="still provisioning after 0 s"):
        slow.create(props)
    assert fake.billed() == NOTHING


def test_an_instance_deleted_outside_pulumi_is_replaced(fake, provider, props):
    created = provider.create(props)
    fake.delete_outside(created.id)
    assert provider.read(created.id, created.outs).id == ""  # refresh: gone from the state
    diff = provider.diff(created.id, created.outs, props)  # plain `up`: replace it
    assert "instanceId" in diff.replaces and diff.delete_before_replace
    provider.delete(created.id, created.outs)  # deleting what is gone is fine
    assert fake.billed() == NOTHING


def test_an_instance_powered_off_outside_is_started_again_in_place(fake, provider, props):
    created = provider.create(props)
    fake.power_off_outside(created.id)  # the idle watchdog powered it off
    read = provider.read(created.id, created.outs)
    assert read.outs["status"] == "offline" and read.outs["running"] is False
    diff = provider.diff(created.id, read.outs, props)
    assert diff.changes is True and diff.replaces == []
    updated = provider.update(created.id, read.outs, props)
    assert updated.outs["status"] == "running"
    assert fake.instances[created.id]["status"] == "running"
    assert len(fake.instances) == 1  # the same instance, models and all


def test_update_in_place_grows_the_volume_and_everything_else_replaces(fake, provider, props):
    created = provider.create(props)
    outs = created.outs
    bigger = props | {"osVolumeGb": 300}
    diff = provider.diff(created.id, outs, bigger)
    assert diff.changes and diff.replaces == []
    provider.update(created.id, outs, bigger)
    assert fake.volumes[outs["osVolumeId"]]["size"] == 300
    for change in (
        {"osVolumeGb": 100},
        {"instanceType": "1L40S.20V"},
        {"location": "FIN-03"},
        {"spot": True},
        {"startupScript": SCRIPT + "echo new worker token\n"},
        {"hostname": "cw-gpu-02"},
    ):
        diff = provider.diff(created.id, outs, props | change)
        assert diff.replaces, change
        assert diff.delete_before_replace  # one host name, one worker token at a time


def test_update_can_power_a_host_down(fake, provider, props):
    created = provider.create(props)
    updated = provider.update(created.id, created.outs, props | {"running": False})
    assert updated.outs["status"] == "offline" and fake.instances[created.id]["status"] == "offline"


def test_spot_instances_delete_their_disk_when_reclaimed(fake, provider, props):
    created = provider.create(props | {"spot": True})
    order = fake.instances[created.id]
    assert order["is_spot"] is True and order["price_per_hour"] == 1.10
    assert created.outs["hourlyEur"] == pytest.approx(1.10 * 0.92)
    provider.delete(created.id, created.outs)
    assert fake.billed() == NOTHING


def test_the_sdk_alone_keeps_the_os_volume_which_is_why_delete_names_it(fake, provider, props):
    """Verda's quirk, reproduced by the fake: a plain delete keeps the disk (billed)."""
    created = provider.create(props)
    Verda(Credentials.from_env()).client.instances.action(created.id, "delete")
    assert fake.billed()["volumes"] == [created.outs["osVolumeId"]]
    provider.delete(created.id, created.outs)  # the provider still removes it
    assert fake.billed() == NOTHING


def test_credentials(fake, provider, props, monkeypatch):
    monkeypatch.setenv("VERDA_CLIENT_SECRET", "wrong")
    with pytest.raises(VerdaError, match="refused the client credentials"):
        provider.create(props)
    monkeypatch.delenv("VERDA_CLIENT_SECRET")
    with pytest.raises(MissingCredentials, match="VERDA_CLIENT_SECRET"):
        provider.create(props)
    # A preview without credentials still diffs on the inputs alone.
    olds = InstanceProvider._wanted(props)
    assert provider.diff("some-id", olds, props).changes is False
    assert provider.diff("some-id", olds, props | {"location": "FIN-03"}).replaces == ["location"]


def test_check_reports_missing_inputs(provider, props):
    assert provider.check({}, props).failures == []
    failures = provider.check({}, {k: v for k, v in props.items() if k != "instanceType"}).failures
    assert [f.property for f in failures] == ["instanceType"]
    assert provider.check({}, props | {"osVolumeGb": 10}).failures[0].property == "osVolumeGb"


def test_ssh_keys(fake):
    keys = SshKeyProvider()
    created = keys.create({"name": "admin-0", "publicKey": "ssh-ed25519 AAAA k"})
    assert fake.ssh_keys[created.id]["key"] == "ssh-ed25519 AAAA k"
    assert keys.read(created.id, created.outs).id == created.id
    assert keys.diff(created.id, created.outs, created.outs).changes is False
    changed = keys.diff(created.id, created.outs, created.outs | {"publicKey": "ssh-ed25519 B"})
    assert changed.replaces == ["publicKey"]
    keys.delete(created.id, created.outs)
    assert fake.ssh_keys == {}
    assert keys.read(created.id, created.outs).id == ""
    keys.delete(created.id, created.outs)  # already gone: fine


@pytest.mark.parametrize("cwd", ["infra", "."])
def test_the_pickled_provider_loads_where_pulumi_runs_it(cwd):
    """The provider process runs in infra/ (or the root) without the program's sys.path fix,
    and infra/verda_api.py must not shadow the `verda` SDK there."""
    blob = serialize_provider(InstanceProvider(poll_s=0.25))
    code = (
        "import base64, dill, verda\n"
        f"p = dill.loads(base64.b64decode({blob!r}))\n"
        "import verda\n"
        "print(type(p).__name__, p.settings['poll_s'], verda.VerdaClient.__module__)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["InstanceProvider", "0.25", "verda._verda"]
    assert base64.b64decode(blob)  # plain base64, as Pulumi stores it
