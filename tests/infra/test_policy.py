"""The policy pack run over the mocked registrations: every documented configuration passes,
and each policy rejects the change it exists for."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
)

from infra.policy.rules import POLICIES
from tests.infra.harness import DOCUMENTED_CONFIGS, Registration, make_config, run_program

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return run_program(make_config(tmp_path_factory.mktemp("cfg")))


def as_args(reg: Registration) -> ResourceValidationArgs:
    """The SDK's own args object, filled from a recorded registration."""
    return ResourceValidationArgs(
        resource_type=reg.type,
        props=reg.inputs,
        urn=f"urn:pulumi:workshop::comfy-workshop::{reg.type}::{reg.name}",
        name=reg.name,
        opts=PolicyResourceOptions(
            protect=reg.protect,
            ignore_changes=[],
            delete_before_replace=reg.delete_before_replace,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=reg.additional_secret_outputs,
            parent=reg.parent,
        ),
        provider=None,
    )


def violations(regs) -> list[tuple[str, str, str]]:
    found = []
    for policy in POLICIES:
        for reg in regs:

            def report(msg, urn=None, _p=policy, _r=reg):
                found.append((_p.name, _r.name, msg))

            for fn in policy.validate if isinstance(policy.validate, list) else [policy.validate]:
                fn(as_args(reg), report)
    return found


def test_all_policies_are_mandatory():
    assert {p.name for p in POLICIES} == {
        "firewall-closed-to-world",
        "redis-never-exposed",
        "buckets-retained",
        "secrets-are-secrets",
        "generated-secrets-kept",
        "gpu-idle-limit",
        "gpu-no-public-port",
    }
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in POLICIES)


def test_docs_describe_exactly_the_tested_configurations():
    text = (ROOT / "docs" / "infrastructure.md").read_text()
    section = text.split("## Configurations", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)) == set(DOCUMENTED_CONFIGS)


def test_docs_list_every_provider_resource_with_the_version_checked(stack, tmp_path):
    """docs/infrastructure.md's "Provider rules" names each resource type the stack declares
    (GPU hosts included), with the provider version pinned in pyproject.toml."""
    pins = dict(re.findall(r'"(pulumi-[a-z]+)==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()))
    section = (ROOT / "docs" / "infrastructure.md").read_text().split("## Provider rules", 1)[1]
    rows = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| `")]
    stacks = [stack, run_program(make_config(tmp_path, **DOCUMENTED_CONFIGS["gpu-hosts"]))]
    types = {r.type for s in stacks for r in s.resources.values()} - {
        t for s in stacks for t in (r.type for r in s.resources.values()) if t.startswith("comfy:")
    }
    for t in sorted(types):
        row = next((r for r in rows if f"`{t}`" in r.split(" | ")[0]), None)
        assert row is not None, f"{t} is missing from the provider rules table"
        if t.startswith("pulumi-python:dynamic/"):
            continue  # our own dynamic providers: no package version to name
        package = "pulumi-" + t.split(":")[2 if t.startswith("pulumi:providers:") else 0]
        assert f"{package} {pins[package]}" in row, (t, package)
    for invoke in ("get_server_type", "get_ip_ranges"):
        assert any(r.startswith(f"| `{invoke}`") for r in rows), invoke


@pytest.mark.parametrize("name", sorted(DOCUMENTED_CONFIGS))
def test_every_documented_configuration_passes(name, tmp_path):
    """What `pulumi up --policy-pack infra/policy` decides, for each configuration."""
    s = run_program(make_config(tmp_path, **DOCUMENTED_CONFIGS[name]))
    assert violations(s.resources.values()) == []


def mutated(stack, key: str, change) -> list[Registration]:
    regs = {k: copy.deepcopy(r) for k, r in stack.resources.items()}
    change(regs[key])
    return list(regs.values())


def names(found) -> set[str]:
    return {f[0] for f in found}


FIREWALL = "hcloud:index/firewall:Firewall::firewall"


def test_rejects_redis_port_in_firewall(stack):
    def open_redis(r):
        r.inputs["rules"].append(
            {"direction": "in", "protocol": "tcp", "port": "6379", "sourceIps": ["10.0.0.0/8"]}
        )

    assert names(violations(mutated(stack, FIREWALL, open_redis))) == {"redis-never-exposed"}


@pytest.mark.parametrize("port", ["22", "443", "80"])
def test_rejects_any_port_open_to_the_world(stack, port):
    """443 too: open to the world, it lets anyone skip Cloudflare."""

    def open_to_world(r):
        r.inputs["rules"].append(
            {"direction": "in", "protocol": "tcp", "port": port, "sourceIps": ["::/0"]}
        )

    found = violations(mutated(stack, FIREWALL, open_to_world))
    assert names(found) == {"firewall-closed-to-world"}


def test_rejects_published_redis_container(stack):
    def publish(r):
        r.inputs["ports"] = [{"internal": 6379, "external": 6379}]

    found = violations(mutated(stack, "docker:index/container:Container::redis", publish))
    assert names(found) == {"redis-never-exposed"}


def test_rejects_tailnet_rule_reaching_redis(stack):
    def everything(r):
        acl = json.loads(r.inputs["acl"])
        acl["acls"].append({"action": "accept", "src": ["tag:comfy-gpu"], "dst": ["*:*"]})
        r.inputs["acl"] = json.dumps(acl)

    found = violations(mutated(stack, "tailscale:index/acl:Acl::acl", everything))
    assert names(found) == {"redis-never-exposed"}


def test_rejects_dropped_retain_flag(stack):
    def unprotect(r):
        r.protect = False
        r.retain_on_delete = False

    key = "cloudflare:index/r2Bucket:R2Bucket::bucket-user-files"
    found = violations(mutated(stack, key, unprotect))
    assert names(found) == {"buckets-retained"}


def test_rejects_plaintext_credentials(stack):
    def drop_secret(r):
        r.additional_secret_outputs = []

    for key in (
        "docker:index/container:Container::queue",
        "docker:index/container:Container::gateway",
        "hcloud:index/server:Server::server",
        "command:remote:Command::restore-then-backup",
        "command:remote:Command::tailnet-join",
    ):
        assert names(violations(mutated(stack, key, drop_secret))) == {"secrets-are-secrets"}


def test_rejects_an_unprotected_generated_secret(stack):
    def unprotect(r):
        r.protect = False

    for key in (
        "random:index/randomPassword:RandomPassword::password-admin",
        "random:index/randomPassword:RandomPassword::queue-token-secret",
    ):
        assert names(violations(mutated(stack, key, unprotect))) == {"generated-secrets-kept"}


def test_gpu_host_needs_idle_limit():
    private = {"publicPorts": [], "comfyuiListen": "127.0.0.1"}
    ok = Registration(type="comfy:workshop:GpuHost", name="gpu-01", inputs={"idleMinutes": 20})
    bad = Registration(type="comfy:workshop:GpuHost", name="gpu-02", inputs={})
    zero = Registration(type="comfy:workshop:GpuHost", name="gpu-03", inputs={"idleMinutes": 0})
    for reg in (ok, bad, zero):
        reg.inputs |= private
    assert violations([ok]) == []
    assert {(f[0], f[1]) for f in violations([bad, zero])} == {
        ("gpu-idle-limit", "gpu-02"),
        ("gpu-idle-limit", "gpu-03"),
    }
