"""The resource graph for 20 and 200 participants: resources, properties, ordering."""

from __future__ import annotations

import hashlib
import json

import pytest

from services.contracts import GATEWAY_PORT, QUEUE_PORT
from services.queue.settings import QueueSettings
from tests.infra.harness import ACCOUNT, WORKER_IMAGE, make_config, run_program

SERVER = "hcloud:index/server:Server"
CMD = "command:remote:Command"
CONTAINER = "docker:index/container:Container"
BUCKET = "cloudflare:index/r2Bucket:R2Bucket"


@pytest.fixture(scope="module", params=[20, 200], ids=["20-participants", "200-participants"])
def stack(request, tmp_path_factory):
    """Read-only in every test here, so one build per size serves the module."""
    config = make_config(tmp_path_factory.mktemp("cfg"), participants=request.param)
    return run_program(config), request.param


def test_every_component_and_resource_is_present(stack):
    s, n = stack
    types = {r.type for r in s.resources.values()}
    for component in (
        "Storage",
        "Tailnet",
        "Credentials",
        "Vps",
        "GpuHosts",
        "ControlPlane",
        "Backup",
    ):
        assert f"comfy:workshop:{component}" in types
    assert {r.name for r in s.of_type(BUCKET)} == {
        "bucket-models",
        "bucket-cache",
        "bucket-user-files",
    }
    assert len(s.of_type("random:index/randomPassword:RandomPassword")) == n + 2
    assert {r.name for r in s.of_type(CONTAINER)} == {"redis", "queue", "gateway", "proxy"}
    assert [r.inputs["type"] for r in s.of_type("cloudflare:index/dnsRecord:DnsRecord")] == ["A"]
    assert s.outputs["participantUrls"]["user001"] == "https://workshop.example.org/user001/"
    assert len(s.outputs["participantUrls"]) == n
    server = s.one(SERVER, "server")
    assert s.outputs["vpsIpv4"] == s.world.servers[server.id].ipv4
    assert s.outputs["vpsTailnetIp"] == s.world.servers[server.id].tailnet_ip
    assert s.outputs["adminUrl"] == "https://workshop.example.org/admin/"
    assert s.outputs["estimatedCostEurPerHour"] > 0


def test_buckets_named_from_project_and_stack_and_kept(stack):
    s, _ = stack
    for r in s.of_type(BUCKET):
        assert r.inputs["name"].startswith("comfy-workshop-workshop-")
        assert r.inputs["accountId"] == ACCOUNT
        assert r.protect and r.retain_on_delete


def test_server_properties(stack):
    s, _ = stack
    server = s.one(SERVER, "server")
    assert server.inputs["serverType"] == "cx23"
    assert server.inputs["publicNets"] == [{"ipv4Enabled": True, "ipv6Enabled": True}]
    assert server.inputs["userData"].startswith("#cloud-config")
    assert "userData" in server.additional_secret_outputs
    dns = s.one("cloudflare:index/dnsRecord:DnsRecord", "dns-a")
    assert dns.inputs["proxied"] is True and dns.inputs["content"] == s.outputs["vpsIpv4"]


def test_containers_wait_for_cloud_init(stack):
    s, _ = stack
    ready = f"{CMD}::cloud-init-done"
    assert f"{SERVER}::server" in s.ancestors(ready)
    for r in s.resources.values():
        if r.provider == "pulumi:providers:docker::vps-docker":
            assert ready in s.ancestors(r.key), r.key


def test_restore_before_queue_and_backup_before_server_goes(stack):
    s, _ = stack
    step = s.one(CMD, "restore-then-backup")
    assert "services.backup restore" in step.inputs["create"]
    assert "services.backup backup" in step.inputs["delete"]
    assert step.delete_before_replace
    # An update (new image, new credentials) must not restore over live data.
    assert "services.backup" not in step.inputs["update"]
    assert step.inputs["update"].endswith("cat > /srv/comfy/backup.env\n")
    # A new server (empty Redis) replaces the step: backup on the old, restore on the new.
    assert "triggers" in step.replace_on_changes
    assert step.inputs["triggers"] == [s.one(SERVER, "server").id]
    # Pulumi deletes dependents first: since the step depends on the server, Redis, both
    # networks and the R2 token, its delete (the backup) runs while they all still exist.
    for needed in (
        f"{SERVER}::server",
        f"{CONTAINER}::redis",
        "docker:index/network:Network::private",
        "docker:index/network:Network::edge",
        "cloudflare:index/apiToken:ApiToken::r2-token-vps",
    ):
        assert needed in s.ancestors(step.key), needed
    # Hetzner names are unique: the server and its keys are replaced delete-first.
    assert s.one(SERVER, "server").delete_before_replace
    assert all(k.delete_before_replace for k in s.of_type("hcloud:index/sshKey:SshKey"))
    # The queue depends on the step: restored before it starts, stopped before the backup.
    assert step.key in s.ancestors(f"{CONTAINER}::queue")
    assert f"{CONTAINER}::queue" in s.ancestors(f"{CONTAINER}::proxy")


def test_redis_is_private_and_persistent(stack):
    s, _ = stack
    redis = s.one(CONTAINER, "redis")
    assert not redis.inputs.get("ports")
    assert [n["name"] for n in redis.inputs["networksAdvanced"]] == ["comfy-private"]
    net = s.one("docker:index/network:Network", "private")
    assert net.inputs["internal"] is True
    # Only the queue shares Redis's network; the participant-facing proxy does not.
    on_private = {
        c.name
        for c in s.of_type(CONTAINER)
        if "comfy-private" in [n["name"] for n in c.inputs["networksAdvanced"]]
    }
    assert on_private == {"redis", "queue"}
    conf = redis.inputs["uploads"][0]["content"]
    assert "appendonly yes" in conf and "appendfsync always" in conf
    assert redis.inputs["volumes"] == [{"hostPath": "/mnt/data/redis", "containerPath": "/data"}]


def test_queue_env_contract_and_tailnet_only_port(stack, monkeypatch):
    s, n = stack
    queue = s.one(CONTAINER, "queue")
    env = dict(e.split("=", 1) for e in queue.inputs["envs"])
    # The queue's own settings class accepts exactly this environment.
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = QueueSettings()
    assert set(env) <= {f"QUEUE_{f.upper()}" for f in QueueSettings.model_fields}
    assert len(settings.users) == n
    assert settings.admin_password.get_secret_value() == s.outputs["credentials"]["admin"]
    assert env["QUEUE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["QUEUE_MODE"] == "fair"
    users = json.loads(env["QUEUE_USERS"])
    assert len(users) == n
    assert users["user001"]["role"] == "participant"
    assert users["user001"]["password_hash"].startswith("$2a$")
    assert "pw-password-user001" not in env["QUEUE_USERS"]  # only hashes reach the queue
    assert json.loads(env["QUEUE_WORKER_TOKENS"]) == {}
    assert queue.inputs["ports"] == [
        {"internal": 8000, "external": 8000, "ip": s.outputs["vpsTailnetIp"]}
    ]
    assert "envs" in queue.additional_secret_outputs


def test_images_pinned_by_digest_or_content_tag(stack):
    s, _ = stack
    for img in s.of_type("docker:index/remoteImage:RemoteImage"):
        assert "@sha256:" in img.inputs["name"] and ":latest" not in img.inputs["name"]
    built = s.one("docker:index/image:Image", "queue-image")
    tag = built.inputs["imageName"].rsplit(":", 1)[1]
    assert len(tag) == 16 and tag != "latest"
    assert built.inputs["build"]["dockerfile"].endswith("images/queue.Dockerfile")


def test_gateway_runs_from_the_queue_image_on_the_edge_network(stack):
    s, _ = stack
    gw = s.one(CONTAINER, "gateway")
    queue = s.one(CONTAINER, "queue")
    assert gw.inputs["image"] == queue.inputs["image"]  # the image built on the VPS
    assert gw.inputs["command"] == ["python", "-m", "services.gateway"]
    # Edge network only: never Redis's.
    assert [n["name"] for n in gw.inputs["networksAdvanced"]] == ["comfy-edge"]
    assert f"{CMD}::cloud-init-done" in s.ancestors(gw.key)
    assert gw.key in s.ancestors(f"{CONTAINER}::proxy")
    assert "envs" in gw.secret_inputs and "envs" in gw.additional_secret_outputs


def test_gateway_env_contract(stack):
    s, _ = stack
    env = dict(e.split("=", 1) for e in s.one(CONTAINER, "gateway").inputs["envs"])
    assert env == {
        "GATEWAY_QUEUE_URL": f"http://queue:{QUEUE_PORT}",
        "GATEWAY_PORT": str(GATEWAY_PORT),
        "GATEWAY_PUBLIC_URL": "https://workshop.example.org",
        "GATEWAY_STORAGE__BUCKET": "comfy-workshop-workshop-user-files",
        "GATEWAY_STORAGE__ENDPOINT": f"https://{ACCOUNT}.r2.cloudflarestorage.com",
        "GATEWAY_STORAGE__ACCESS_KEY_ID": "token-id-r2-token-vps",
        # R2's S3 secret is the SHA-256 of the VPS token's value (read+write user-files).
        "GATEWAY_STORAGE__SECRET_ACCESS_KEY": hashlib.sha256(
            b"token-value-r2-token-vps-SECRET"
        ).hexdigest(),
        "GATEWAY_STORAGE__REGION": "auto",
    }


def test_gateway_image_overrides_the_queue_image(tmp_path):
    ref = "ghcr.io/example/gateway@sha256:" + "b" * 64
    s = run_program(make_config(tmp_path, gatewayImage=ref))
    gw = s.one(CONTAINER, "gateway")
    pulled = s.one("docker:index/remoteImage:RemoteImage", "gateway-image")
    assert pulled.inputs["name"] == ref
    assert gw.inputs["image"] == "sha256:" + "a" * 64  # the pulled image's id
    assert gw.inputs["image"] != s.one(CONTAINER, "queue").inputs["image"]


def test_worker_tokens_reach_queue_with_prefix(tmp_path, monkeypatch):
    gpu = {"count": 2, "hourlyEur": 1.0, "workerImage": WORKER_IMAGE, "tokenPool": 3}
    s = run_program(make_config(tmp_path, gpu=gpu))
    env = dict(e.split("=", 1) for e in s.one(CONTAINER, "queue").inputs["envs"])
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tokens = {k: v.get_secret_value() for k, v in QueueSettings().worker_tokens.items()}
    # A pool larger than count, so a third host later does not change the queue's env.
    assert set(tokens) == {"gpu-01", "gpu-02", "gpu-03"}
    # services/queue/auth.py treats only `cqw_...` bearer tokens as worker tokens.
    assert all(t.startswith("cqw_") and len(t) > 40 for t in tokens.values())
    assert s.outputs["credentials"]["workers"] == tokens
    assert "credentials" in s.secret_outputs


def test_arm_server_builds_arm_image(tmp_path):
    s = run_program(make_config(tmp_path, vpsType="cax11"))
    built = s.one("docker:index/image:Image", "queue-image")
    assert built.inputs["build"]["platform"] == "linux/arm64"


def test_pulled_queue_image_replaces_build(tmp_path):
    ref = "ghcr.io/example/queue@sha256:" + "c" * 64
    s = run_program(make_config(tmp_path, queueImage=ref))
    assert not s.of_type("docker:index/image:Image")
    assert s.one("docker:index/remoteImage:RemoteImage", "queue-image").inputs["name"] == ref
