"""`workshop:gpu`: defaults from GPU.md, and every bad key named with the command that fixes it."""

from __future__ import annotations

import pytest

from infra.config import ConfigError
from infra.gpu_config import GpuConfigError, parse_gpu
from tests.infra.harness import WORKER_IMAGE, make_config

ACTIVE = {"count": 1, "workerImage": WORKER_IMAGE}


def test_defaults_declare_nothing():
    s = parse_gpu(None)
    assert (s.provider, s.count, s.active, s.host_names, s.token_names) == (
        "verda",
        0,
        False,
        (),
        (),
    )
    assert s.idle_minutes == 20 and s.processes_per_gpu == 2 and not s.spot
    assert parse_gpu({"provider": "none", "count": 5, "workerImage": WORKER_IMAGE}).active is False


def test_processes_per_gpu_follow_the_workload_class_of_gpu_md():
    assert parse_gpu({"workload": "sd15"}).processes_per_gpu == 4
    assert parse_gpu({"workload": "sdxl"}).processes_per_gpu == 2
    assert parse_gpu({"workload": "sd15", "processesPerGpu": 6}).processes_per_gpu == 6


def test_hosts_and_the_token_pool():
    s = parse_gpu(ACTIVE | {"count": 3})
    assert s.host_names == ("gpu-01", "gpu-02", "gpu-03")
    assert len(s.token_names) == 8 and s.token_names[-1] == "gpu-08"
    assert len(parse_gpu(ACTIVE | {"count": 12}).token_names) == 12
    assert parse_gpu(ACTIVE | {"spot": "true", "hourlyEur": "1.5"}).spot is True


def test_ssh_hosts_are_parsed():
    s = parse_gpu(
        ACTIVE
        | {
            "provider": "ssh",
            "count": 2,
            "hosts": [
                {"address": "192.0.2.1", "user": "ubuntu", "port": "2222", "hourlyEur": 0.4},
                {"address": "box.venue.example", "sharedModelsDir": "/data/models"},
            ],
        }
    )
    first, second = s.ssh_hosts
    assert (first.address, first.user, first.port, first.hourly_eur) == (
        "192.0.2.1",
        "ubuntu",
        2222,
        0.4,
    )
    assert (second.user, second.port, second.shared_models_dir) == ("root", 22, "/data/models")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"provider": "aws"}, "gpu.provider"),
        ({"count": 65}, "gpu.count"),
        ({"count": "two"}, "gpu.count"),
        ({"idleMinutes": 0}, "gpu.idleMinutes"),
        ({"workload": "huge"}, "gpu.workload"),
        ({"instanceType": "big-gpu"}, "gpu.instanceType"),
        ({"spot": "maybe"}, "gpu.spot"),
        ({"hourlyEur": -1}, "gpu.hourlyEur"),
        ({"workerImage": "ghcr.io/x/worker:latest"}, "gpu.workerImage"),
        ({"count": 1}, "gpu.workerImage"),  # required as soon as a host runs
        (ACTIVE | {"count": 4, "tokenPool": 2}, "gpu.tokenPool"),
        (ACTIVE | {"provider": "ssh", "hosts": []}, "gpu.hosts"),
        ({"hosts": [{"address": "not a host!"}]}, "gpu.hosts[0].address"),
        ({"hosts": [{"user": "x"}]}, "gpu.hosts[0]"),
        ({"sharedModelsNfs": "just-a-name"}, "gpu.sharedModelsNfs"),
        ("[1, 2]", "gpu"),
    ],
)
def test_bad_keys_name_the_key_and_the_fix(raw, key):
    with pytest.raises(GpuConfigError) as err:
        parse_gpu(raw)
    assert f"'workshop:{key}" in str(err.value)
    assert "run: pulumi config set --path 'workshop:gpu." in str(err.value)


def test_the_stack_config_reports_gpu_errors_as_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"pulumi config set --path 'workshop:gpu.workerImage'"):
        make_config(tmp_path, gpu={"count": 2})
    assert make_config(tmp_path, gpu=ACTIVE).gpu.count == 1


def test_the_stack_file_documents_the_gpu_keys():
    import yaml

    from tests.infra.test_config import ROOT

    gpu = yaml.safe_load((ROOT / "Pulumi.workshop.yaml").read_text())["config"]["workshop:gpu"]
    assert parse_gpu(gpu).active is False
    read = {
        "provider", "count", "tokenPool", "workerImage", "instanceType", "location", "spot",
        "image", "osVolumeGb", "sshUser", "sharedModelsNfs", "workload", "idleMinutes",
        "hourlyEur", "hosts",
    }  # fmt: skip
    assert set(gpu) == read  # processesPerGpu is optional: it defaults from the workload
