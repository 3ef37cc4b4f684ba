"""A workshop week in the mocks' terms: the first `up`, the nightly destroy, the next morning,
a server replaced mid-day, a half-failed `up`. The mocks (tests/infra/harness.py) apply the
providers' rules; each test names the rule it stands for."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from infra.catalogue import check_image, check_server_type
from infra.config import ConfigError, WorkshopConfig, load_config
from tests.infra.harness import (
    IMAGES,
    SERVER_TYPES,
    VERDA_INSTANCE,
    WITHDRAWN,
    WORKER_IMAGE,
    UpFailed,
    World,
    destroy,
    make_config,
    run_program,
)

ROOT = Path(__file__).resolve().parents[2]
SERVER = "hcloud:index/server:Server::server"
PASSWORD = "random:index/randomPassword:RandomPassword"
DOCKER = "docker:index/"
GPU = {"count": 2, "hourlyEur": 1.0, "workerImage": WORKER_IMAGE}


def shipped_config(tmp_path: Path) -> WorkshopConfig:
    """Pulumi.workshop.yaml as committed (with a real key file): what an organizer starts from."""
    key = tmp_path / "k"
    key.write_text("x")
    config = yaml.safe_load((ROOT / "Pulumi.workshop.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v for k, v in config.items()} | {"sshPrivateKeyFile": str(key)}
    return load_config(raw.get, lambda k: None, "comfy-workshop", "workshop")


# -- 1. orderable defaults ---------------------------------------------------------------


def test_shipped_defaults_are_on_sale_and_deploy(tmp_path):
    """Hetzner refuses to create a server of a withdrawn type (cx22 since early 2026): the
    stack file's and the program's defaults must be a type, location and image it sells."""
    for cfg in (shipped_config(tmp_path), make_config(tmp_path)):
        arch, locations = SERVER_TYPES[cfg.vps_type]
        assert cfg.vps_type not in WITHDRAWN and cfg.vps_location in locations
        assert cfg.vps_image in IMAGES
        assert (arch == "arm") == (cfg.vps_platform == "linux/arm64")
    s = run_program(shipped_config(tmp_path))
    (server,) = s.world.servers.values()
    assert s.one("hcloud:index/server:Server", "server").inputs["serverType"] == "cx23"
    assert server.tailnet_ip == s.outputs["vpsTailnetIp"]


def test_withdrawn_type_stops_the_preview_before_the_server(tmp_path):
    """The pre-flight asks Hetzner (get_server_type) and fails with the key to change; the
    server's create is never attempted."""
    world = World()
    with pytest.raises(UpFailed) as failed:
        run_program(make_config(tmp_path, vpsType="cx22"), world)
    message = str(failed.value)
    assert "Hetzner withdrew server type 'cx22' in 'nbg1'" in message
    assert "pulumi config set workshop:vpsType" in message and "cx23" in message
    assert world.servers == {}


def test_type_hetzner_has_never_heard_of_fails_the_preview(tmp_path):
    with pytest.raises(UpFailed, match="no server type found with name 'cx99'"):
        run_program(make_config(tmp_path, vpsType="cx99"))


def test_image_hetzner_does_not_offer_fails_the_preview_before_the_server(tmp_path):
    """Hetzner's getImage finds no `ubuntu-19.04` (long removed): the pre-flight stops the
    run with the key to change, and no server is created."""
    world = World()
    with pytest.raises(UpFailed) as failed:
        run_program(make_config(tmp_path, vpsImage="ubuntu-19.04"), world)
    message = str(failed.value)
    assert "Hetzner does not offer image 'ubuntu-19.04' for x86 servers" in message
    assert "pulumi config set workshop:vpsImage" in message and "ubuntu-24.04" in message
    assert world.servers == {}
    assert not any(k.startswith("hcloud:index/server:Server") for k in failed.value.state)


def test_image_is_looked_up_for_the_types_architecture(tmp_path, monkeypatch):
    """Images exist per architecture: an Arm type asks for the image's arm build."""
    import tests.infra.harness as harness

    asked: list[tuple[str, str | None]] = []
    real = harness.image_info

    def recording(name: str, arch: str | None):
        asked.append((name, arch))
        return real(name, arch)

    monkeypatch.setattr(harness, "image_info", recording)
    s = run_program(make_config(tmp_path, vpsType="cax11"))
    assert asked == [("ubuntu-24.04", "arm")]
    assert s.one("hcloud:index/server:Server", "server").inputs["image"] == "ubuntu-24.04"


def test_deprecated_image_is_a_warning():
    image = SimpleNamespace(deprecation_announced="2025-06-01T00:00:00Z", is_deprecated=True)
    name, warnings = check_image(image, "ubuntu-20.04", "x86")
    assert name == "ubuntu-20.04"
    assert warnings and "deprecated" in warnings[0] and "workshop:vpsImage" in warnings[0]
    current = SimpleNamespace(deprecation_announced="", is_deprecated=False)
    assert check_image(current, "ubuntu-24.04", "x86") == ("ubuntu-24.04", [])


def location(name: str, **kw) -> SimpleNamespace:
    fields = {"available": True, "is_deprecated": False, "unavailable_after": ""} | kw
    return SimpleNamespace(name=name, **fields)


@pytest.mark.parametrize(
    ("locations", "message"),
    [
        ([location("fsn1")], "does not offer server type 'cx23' in 'ash' (offered in: fsn1)"),
        ([location("ash", available=False)], "temporarily out of stock in 'ash'"),
        (
            [location("ash", is_deprecated=True, unavailable_after="2026-01-01T00:00:00Z")],
            "withdrew server type 'cx23' in 'ash' on 2026-01-01",
        ),
    ],
)
def test_unorderable_in_the_location_is_a_config_error(locations, message):
    result = SimpleNamespace(name="cx23", locations=locations)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        check_server_type(result, "ash", datetime.date(2026, 6, 1))
    assert "workshop:vpsType" in str(err.value) and "workshop:vpsLocation" in str(err.value)


def test_deprecated_but_still_orderable_is_a_warning():
    result = SimpleNamespace(
        name="cx23",
        locations=[location("nbg1", is_deprecated=True, unavailable_after="2027-01-01T00:00:00Z")],
    )
    name, warnings = check_server_type(result, "nbg1", datetime.date(2026, 6, 1))
    assert name == "cx23"
    assert warnings and "cannot be ordered after 2027-01-01" in warnings[0]


# -- 2. credentials survive the nightly destroy --------------------------------------------


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """Day one's `up`, the evening's `destroy --exclude-protected`, day two's `up`."""
    config = make_config(tmp_path_factory.mktemp("cfg"), gpu=GPU)
    day1 = run_program(config)
    night = destroy(day1)
    zone_overnight = dict(day1.world.zone)
    day2 = run_program(config, world=day1.world, prior=night)
    return SimpleNamespace(day1=day1, night=night, day2=day2, zone_overnight=zone_overnight)


def queue_env(stack) -> dict[str, str]:
    queue = stack.one("docker:index/container:Container", "queue")
    return dict(e.split("=", 1) for e in queue.inputs["envs"])


def test_credentials_survive_destroy_and_up(week):
    """pulumi-random keeps a value only while the resource is in the state, and
    `destroy --exclude-protected` keeps only protected resources (and what they depend on):
    the next morning the same passwords, token secret and worker tokens come back."""
    passwords = {k for k in week.day1.state if k.startswith(PASSWORD)}
    workers = {k for k in passwords if "::worker-token-" in k}
    assert len(passwords) == 20 + 2 + len(workers) and workers  # + admin, token secret
    assert passwords <= set(week.night)
    assert {k for k in week.day2.ops("same") if k.startswith(PASSWORD)} == passwords
    assert week.day2.outputs["credentials"] == week.day1.outputs["credentials"]
    before, after = queue_env(week.day1), queue_env(week.day2)
    for key in ("QUEUE_TOKEN_SECRET", "QUEUE_USERS", "QUEUE_WORKER_TOKENS", "QUEUE_ADMIN_PASSWORD"):
        assert after[key] == before[key], key  # restored sessions still verify
    assert len(week.day2.outputs["credentials"]["workers"]) == len(workers)


def test_what_the_night_keeps_and_what_the_morning_recreates(week):
    kept = {k.split("::")[0] for k in week.night}
    assert kept == {
        "comfy:workshop:Storage",
        "cloudflare:index/r2Bucket:R2Bucket",
        "comfy:workshop:Credentials",
        "comfy:workshop:GpuHosts",
        PASSWORD,
    }
    # Buckets are kept in the state and at R2 (a retained-only bucket would collide).
    assert {k for k in week.day2.ops("same") if "r2Bucket" in k} == {
        f"cloudflare:index/r2Bucket:R2Bucket::bucket-{b}" for b in ("models", "cache", "user-files")
    }
    # A new server every morning, restored from the backup the night wrote.
    assert SERVER in week.day2.ops("create")
    assert "command:remote:Command::restore-then-backup" in week.day2.ops("create")
    assert week.day2.world.backups == 1
    assert len(week.day2.world.servers) == 1
    # The URLs handed out on day one still work.
    for key in ("workshopUrl", "participantUrls", "adminUrl"):
        assert week.day2.outputs[key] == week.day1.outputs[key]


def test_gpu_hosts_are_new_each_morning_with_the_same_worker_tokens(week):
    """What the runbook's "Day two" says: the GPU hosts and their tailnet key are destroyed at
    night and created again, the worker tokens (protected) are not."""
    created = week.day2.ops("create")
    assert "tailscale:index/tailnetKey:TailnetKey::gpu-key" in created
    hosts = {k for k in week.day2.resources if k.startswith(VERDA_INSTANCE)}
    assert len(hosts) == GPU["count"] and hosts <= created
    day1 = week.day1.state["tailscale:index/tailnetKey:TailnetKey::gpu-key"].outputs["key"]
    day2 = week.day2.state["tailscale:index/tailnetKey:TailnetKey::gpu-key"].outputs["key"]
    assert day1 != day2
    workers = week.day1.outputs["credentials"]["workers"]
    assert workers and week.day2.outputs["credentials"]["workers"] == workers
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert "GPU hosts are recreated each morning" in runbook


def test_zone_settings_stay_overnight(week):
    """Deleting a Cloudflare zone setting resets it to the zone's default; the settings are
    retain_on_delete, so the zone stays Full (strict) with Always Use HTTPS all night."""
    assert week.zone_overnight == {"ssl": "strict", "always_use_https": "on"}
    assert week.day2.world.zone == week.zone_overnight


# -- 3. a replaced server comes back whole ---------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINewKeyMaterial admin@new"]},
        {"swapGb": "4"},
        {"vpsImage": "ubuntu-22.04"},
        {"domain": "comfy.example.org"},
    ],
    ids=["ssh-keys", "swap", "image", "domain"],
)
def test_replacing_the_server_recreates_everything_on_it(tmp_path, change):
    """Hetzner replaces a server when its user data, SSH keys or image change; pulumi-docker
    would only update its `host`. Every Docker object must be created on the new server, and
    the new server must join the tailnet with a key that is not its predecessor's spent one."""
    day = run_program(make_config(tmp_path))
    old_key = day.state["tailscale:index/tailnetKey:TailnetKey::vps-key"].outputs["key"]
    later = run_program(make_config(tmp_path, **change), world=day.world, prior=day.state)

    assert later.resources[SERVER].op == "replace"
    (server,) = later.world.servers.values()
    docker = {k for k in later.state if k.startswith(DOCKER)}
    assert len(docker) == 9  # 2 networks, 3 images, 4 containers
    assert {k: later.state[k].id for k in docker} == server.docker  # all of them, on it
    for key in docker:
        expected = "update" if key == "docker:index/image:Image::queue-image" else "replace"
        assert later.resources[key].op == expected, key  # an Image update is a rebuild
    # A fresh single-use key, used once, by the new server.
    assert later.resources["tailscale:index/tailnetKey:TailnetKey::vps-key"].op == "replace"
    assert later.resources["command:remote:Command::tailnet-join"].op == "replace"
    new_key = later.state["tailscale:index/tailnetKey:TailnetKey::vps-key"].outputs["key"]
    assert new_key != old_key and later.world.keys[new_key]["used"]
    assert later.outputs["vpsTailnetIp"] == server.tailnet_ip
    queue = later.one("docker:index/container:Container", "queue")
    assert queue.inputs["ports"][0]["ip"] == server.tailnet_ip
    # The old server's Redis was backed up before it went, and is restored on the new one.
    assert later.world.backups == 1
    assert later.resources["command:remote:Command::restore-then-backup"].op == "replace"


def test_an_ordinary_redeploy_replaces_nothing(tmp_path):
    """The same config again: every resource is unchanged (no restore over live data)."""
    day = run_program(make_config(tmp_path))
    again = run_program(make_config(tmp_path), world=day.world, prior=day.state)
    assert again.ops("same") == set(again.resources)
    assert again.world.backups == 0


# -- 7. a half-failed `up` -------------------------------------------------------------------


def test_half_failed_up_is_finished_by_the_next_up(tmp_path):
    """An `up` that stops part-way leaves what it created in the state (and at the
    providers); fixing the cause and running `up` again completes it without creating
    anything twice (R2 would refuse an existing bucket, Hetzner an existing name)."""
    world = World()
    with pytest.raises(UpFailed) as failed:
        run_program(make_config(tmp_path, vpsLocation="ash"), world)  # cx23 is EU-only
    assert "does not offer server type 'cx23' in 'ash'" in str(failed.value)
    partial = failed.value.state
    assert "cloudflare:index/r2Bucket:R2Bucket::bucket-user-files" in partial
    assert SERVER not in partial and world.servers == {}
    done = run_program(make_config(tmp_path), world, prior=partial)
    assert {k for k in partial if k in done.state} == set(partial)
    assert not any(done.resources[k].op == "create" for k in partial if "r2Bucket" in k)
    assert len(done.world.servers) == 1
