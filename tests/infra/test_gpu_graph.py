"""The GPU fleet in the mocked resource graph: 0, 1 and 3 hosts on verda and on ssh, a count
change that touches only the hosts it adds, outputs, secrets and the GPU policies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra.gpu_config import host_name
from tests.infra.harness import (
    GPU_TAILNET_IP,
    VERDA_EUR_PER_HOUR,
    VERDA_INSTANCE,
    WORKER_IMAGE,
    Stack,
    make_config,
    run_program,
)
from tests.infra.test_policy import violations

GPU_HOST = "comfy:workshop:GpuHost"
CMD = "command:remote:Command"
SSH_KEY = "pulumi-python:dynamic/verda:SshKey"
TOKEN = "random:index/randomPassword:RandomPassword"
SSH_HOSTS = [
    {"address": "192.0.2.10", "user": "ubuntu", "hourlyEur": 0.5},
    {"address": "gpu-box.venue.example", "port": 2222},
    {"address": "192.0.2.12", "sharedModelsDir": "/data/models"},
]


def gpu_stack(tmp_path, provider: str, count: int, **gpu: Any) -> Stack:
    settings = {"provider": provider, "count": count, "workerImage": WORKER_IMAGE} | gpu
    if provider == "ssh":
        settings.setdefault("hosts", SSH_HOSTS)
    return run_program(make_config(tmp_path, gpu=settings))


def gpu_keys(stack: Stack) -> set[str]:
    """Every registration that exists only because of GPU hosts."""
    keys = set()
    for key, reg in stack.resources.items():
        parents = {key}
        parent = reg.parent
        while parent:
            parents.add(parent)
            parent = stack.resources[parent].parent
        if any(p.startswith(f"{GPU_HOST}::") for p in parents) or reg.type == SSH_KEY:
            keys.add(key)
        if reg.type == TOKEN and reg.name.startswith("worker-token-"):
            keys.add(key)
    return keys


@pytest.mark.parametrize("provider", ["verda", "ssh", "none"])
def test_zero_hosts_means_no_gpu_resources_at_all(tmp_path, provider):
    count = 3 if provider == "none" else 0
    stack = gpu_stack(tmp_path, provider, count)
    assert gpu_keys(stack) == set()
    assert stack.of_type("comfy:workshop:GpuHosts")  # the (empty) component only
    env = dict(
        e.split("=", 1)
        for e in stack.one("docker:index/container:Container", "queue").inputs["envs"]
    )
    assert json.loads(env["QUEUE_WORKER_TOKENS"]) == {}
    assert stack.outputs["gpuHosts"] == {} and stack.outputs["gpuFleetEurPerHour"] == 0


@pytest.mark.parametrize("count", [1, 3])
def test_verda_hosts(tmp_path, count):
    stack = gpu_stack(tmp_path, "verda", count)
    names = [host_name(i) for i in range(1, count + 1)]
    assert sorted(r.name for r in stack.of_type(GPU_HOST)) == names
    instances = {r.name: r for r in stack.of_type(VERDA_INSTANCE)}
    assert sorted(instances) == [f"{n}-instance" for n in names]
    keys = stack.of_type(SSH_KEY)
    assert [k.inputs["publicKey"] for k in keys] == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKeyMaterial admin@laptop"
    ]
    for name in names:
        inst = instances[f"{name}-instance"]
        assert inst.parent == f"{GPU_HOST}::{name}"
        assert inst.inputs["hostname"] == f"comfy-workshop-workshop-{name}"
        assert inst.inputs["instanceType"] == "1H100.80S.30V" and inst.inputs["spot"] is False
        assert inst.inputs["sshKeyIds"] == [keys[0].id]
        assert inst.inputs["running"] is True
        assert "startupScript" in inst.secret_inputs
        assert "startupScript" in inst.additional_secret_outputs
        ready = stack.one(CMD, f"{name}-ready")
        assert inst.key in ready.depends_on
        assert ready.inputs["connection"]["host"] == "198.51.100.20"  # the instance's IP
        assert ready.inputs["triggers"] == [f"verda-{name}-instance"]
    assert not [c for c in stack.of_type(CMD) if c.name.endswith("-bootstrap")]


@pytest.mark.parametrize("provider", ["verda", "ssh"])
def test_declared_public_ports_are_how_pulumi_reaches_the_host(tmp_path, provider):
    """A Verda instance's public sshd is what `gpu-NN-ready` connects to: the host declares
    exactly that port, with key-only SSH, and its bootstrap makes sshd key-only. An `ssh`
    host is the organizer's machine: the stack opens nothing on it and leaves its sshd alone."""
    stack = gpu_stack(tmp_path, provider, 2)
    for host in stack.of_type(GPU_HOST):
        commands = [
            c for c in stack.of_type(CMD) if c.parent == host.key and "connection" in c.inputs
        ]
        assert commands, host.name
        script = (
            stack.one(VERDA_INSTANCE, f"{host.name}-instance").inputs["startupScript"]
            if provider == "verda"
            else commands[0].inputs["stdin"]
        )
        keys_only = "/etc/ssh/sshd_config.d/00-comfy-keys-only.conf" in script
        if provider == "verda":
            ports = {c.inputs["connection"]["port"] for c in commands}
            assert host.inputs["publicPorts"] == sorted(ports) == [22]
            assert host.inputs["sshAuth"] == "publickey" and keys_only
        else:
            assert host.inputs["publicPorts"] == [] and not keys_only


@pytest.mark.parametrize("count", [1, 3])
def test_ssh_hosts(tmp_path, count):
    stack = gpu_stack(tmp_path, "ssh", count)
    assert not stack.of_type(VERDA_INSTANCE) and not stack.of_type(SSH_KEY)
    for i in range(count):
        name = host_name(i + 1)
        boot = stack.one(CMD, f"{name}-bootstrap")
        assert boot.parent == f"{GPU_HOST}::{name}"
        conn = boot.inputs["connection"]
        assert conn["host"] == SSH_HOSTS[i]["address"]
        assert conn.get("port", 22) == SSH_HOSTS[i].get("port", 22)
        assert conn["user"] == SSH_HOSTS[i].get("user", "root")
        assert {"stdin", "connection"} <= boot.secret_inputs
        assert boot.inputs["stdin"].startswith("#!/usr/bin/env bash")
        assert "sudo -n bash -s" in boot.inputs["create"] == boot.inputs["update"]
        assert "comfy-gpu-teardown" in boot.inputs["delete"]  # `pulumi destroy` cleans up


def _by_key(stack: Stack) -> dict[str, Any]:
    return {k: (r.inputs, r.parent, sorted(r.depends_on)) for k, r in stack.resources.items()}


@pytest.mark.parametrize("provider", ["verda", "ssh"])
def test_one_to_two_gpus_changes_nothing_but_the_new_host(tmp_path, provider):
    one = _by_key(gpu_stack(tmp_path, provider, 1))
    two_stack = gpu_stack(tmp_path, provider, 2)
    two = _by_key(two_stack)
    assert set(one) <= set(two)  # nothing removed
    added = set(two) - set(one)
    assert added and all(
        k == f"{GPU_HOST}::gpu-02" or two_stack.resources[k].parent == f"{GPU_HOST}::gpu-02"
        for k in added
    ), added
    changed = sorted(k for k in one if one[k] != two[k])
    assert changed == []  # not the queue, not gpu-01, not the tailnet


def test_three_to_one_removes_exactly_the_last_two(tmp_path):
    three = _by_key(gpu_stack(tmp_path, "verda", 3))
    one = _by_key(gpu_stack(tmp_path, "verda", 1))
    gone = {k.split("::")[1] for k in set(three) - set(one)}
    assert gone == {
        "gpu-02",
        "gpu-03",
        "gpu-02-instance",
        "gpu-03-instance",
        "gpu-02-ready",
        "gpu-03-ready",
    }
    assert all(one[k] == three[k] for k in one)


def test_outputs_name_each_host_its_tailnet_name_and_price(tmp_path):
    stack = gpu_stack(tmp_path, "verda", 2)
    hosts = stack.outputs["gpuHosts"]
    assert set(hosts) == {"gpu-01", "gpu-02"}
    assert hosts["gpu-01"] == {
        "tailnetName": "comfy-workshop-workshop-gpu-01",
        "tailnetIp": GPU_TAILNET_IP,
        "hourlyEur": VERDA_EUR_PER_HOUR,  # Verda's own price when none is configured
        "provider": "verda",
    }
    assert stack.outputs["gpuFleetEurPerHour"] == round(2 * VERDA_EUR_PER_HOUR, 4)
    assert "gpuHosts" not in stack.secret_outputs
    priced = gpu_stack(tmp_path, "ssh", 3, hourlyEur=1.25).outputs
    assert [h["hourlyEur"] for _, h in sorted(priced["gpuHosts"].items())] == [0.5, 1.25, 1.25]
    assert priced["gpuFleetEurPerHour"] == 3.0


def test_no_gpu_secret_is_in_plain_text(tmp_path):
    for provider in ("verda", "ssh"):
        stack = gpu_stack(tmp_path, provider, 2)
        plain = json.dumps(
            {
                k: {n: v for n, v in r.inputs.items() if n not in r.secret_inputs}
                for k, r in stack.resources.items()
            }
        )
        for leaked in ("SECRET", "PRIVATE KEY", "cqw_"):
            assert leaked not in plain, (provider, leaked)
        tokens = stack.outputs["credentials"]["workers"]
        assert set(tokens) == {host_name(i) for i in range(1, 9)}  # the default pool of 8
        assert "credentials" in stack.secret_outputs


def test_the_gpu_stack_passes_the_policies_and_each_gpu_rule_bites(tmp_path):
    stack = gpu_stack(tmp_path, "verda", 2)
    assert violations(stack.resources.values()) == []

    def with_change(key: str, change) -> list:
        regs = {k: copy.deepcopy(r) for k, r in stack.resources.items()}
        change(regs[key])
        return {f[0] for f in violations(regs.values())}

    host = f"{GPU_HOST}::gpu-02"
    assert with_change(host, lambda r: r.inputs.pop("idleMinutes")) == {"gpu-idle-limit"}
    assert with_change(host, lambda r: r.inputs.update(publicPorts=[8188])) == {
        "gpu-no-public-port"
    }
    assert with_change(host, lambda r: r.inputs.update(comfyuiListen="0.0.0.0")) == {
        "gpu-no-public-port"
    }
    # Public SSH is the one allowed port, and only with keys; anything else bites.
    assert with_change(host, lambda r: r.inputs.update(publicPorts=[22, 8188])) == {
        "gpu-no-public-port"
    }
    assert with_change(host, lambda r: r.inputs.update(publicPorts=[2222])) == {
        "gpu-no-public-port"
    }
    assert with_change(host, lambda r: r.inputs.update(sshAuth="password")) == {
        "gpu-no-public-port"
    }
    assert with_change(host, lambda r: r.inputs.pop("publicPorts")) == {"gpu-no-public-port"}
    instance = f"{VERDA_INSTANCE}::gpu-02-instance"
    assert with_change(instance, lambda r: r.additional_secret_outputs.clear()) == {
        "secrets-are-secrets"
    }
