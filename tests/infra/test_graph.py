"""The resource graph for 20 and 200 participants: resources, properties, ordering."""

from __future__ import annotations

import json

import pytest

from tests.infra.harness import ACCOUNT, make_config, run_program

SERVER = "hcloud:index/server:Server"
CMD = "command:remote:Command"
CONTAINER = "docker:index/container:Container"
BUCKET = "cloudflare:index/r2Bucket:R2Bucket"


@pytest.fixture(params=[20, 200], ids=["20-participants", "200-participants"])
def stack(request, tmp_path):
    return run_program(make_config(tmp_path, participants=request.param)), request.param


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
    assert {r.name for r in s.of_type(CONTAINER)} == {"redis", "queue", "proxy"}
    assert len(s.of_type("cloudflare:index/dnsRecord:DnsRecord")) == 2
    assert s.outputs["participantUrls"]["user001"] == "https://workshop.example.org/user001/"
    assert len(s.outputs["participantUrls"]) == n
    assert s.outputs["vpsIpv4"] == "203.0.113.10"
    assert s.outputs["vpsIpv6"] == "2001:db8::1"
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
    assert server.inputs["serverType"] == "cx22"
    assert server.inputs["publicNets"] == [{"ipv4Enabled": True, "ipv6Enabled": True}]
    assert server.inputs["userData"].startswith("#cloud-config")
    assert "userData" in server.additional_secret_outputs
    dns = s.one("cloudflare:index/dnsRecord:DnsRecord", "dns-a")
    assert dns.inputs["proxied"] is True and dns.inputs["content"] == "203.0.113.10"


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
    # Pulumi deletes dependents first: since the step depends on the server and Redis,
    # its delete (the backup) runs while both still exist.
    assert f"{SERVER}::server" in s.ancestors(step.key)
    assert f"{CONTAINER}::redis" in s.ancestors(step.key)
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
    conf = redis.inputs["uploads"][0]["content"]
    assert "appendonly yes" in conf and "appendfsync everysec" in conf
    assert redis.inputs["volumes"] == [{"hostPath": "/mnt/data/redis", "containerPath": "/data"}]


def test_queue_env_contract_and_tailnet_only_port(stack):
    s, n = stack
    queue = s.one(CONTAINER, "queue")
    env = dict(e.split("=", 1) for e in queue.inputs["envs"])
    assert env["QUEUE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["QUEUE_MODE"] == "fair"
    users = json.loads(env["QUEUE_USERS"])
    assert len(users) == n
    assert users["user001"]["role"] == "participant"
    assert users["user001"]["password_hash"].startswith("$2a$")
    assert "pw-password-user001" not in env["QUEUE_USERS"]  # only hashes reach the queue
    assert json.loads(env["QUEUE_WORKER_TOKENS"]) == {}
    assert queue.inputs["ports"] == [
        {"internal": 8000, "external": 8000, "ip": "100.64.0.7", "protocol": "tcp"}
    ] or queue.inputs["ports"] == [{"internal": 8000, "external": 8000, "ip": "100.64.0.7"}]
    assert "envs" in queue.additional_secret_outputs


def test_images_pinned_by_digest_or_content_tag(stack):
    s, _ = stack
    for img in s.of_type("docker:index/remoteImage:RemoteImage"):
        assert "@sha256:" in img.inputs["name"] and ":latest" not in img.inputs["name"]
    built = s.one("docker:index/image:Image", "queue-image")
    tag = built.inputs["imageName"].rsplit(":", 1)[1]
    assert len(tag) == 16 and tag != "latest"
    assert built.inputs["build"]["dockerfile"].endswith("images/queue.Dockerfile")


def test_gateway_deployed_when_image_configured(tmp_path):
    ref = "ghcr.io/example/gateway@sha256:" + "b" * 64
    s = run_program(make_config(tmp_path, gatewayImage=ref))
    gw = s.one(CONTAINER, "gateway")
    assert [n["name"] for n in gw.inputs["networksAdvanced"]] == ["comfy-private"]
    assert f"{CMD}::cloud-init-done" in s.ancestors(gw.key)
    assert gw.key in s.ancestors(f"{CONTAINER}::proxy")
    assert s.one("docker:index/remoteImage:RemoteImage", "gateway-image").inputs["name"] == ref


def test_pulled_queue_image_replaces_build(tmp_path):
    ref = "ghcr.io/example/queue@sha256:" + "c" * 64
    s = run_program(make_config(tmp_path, queueImage=ref))
    assert not s.of_type("docker:index/image:Image")
    assert s.one("docker:index/remoteImage:RemoteImage", "queue-image").inputs["name"] == ref
