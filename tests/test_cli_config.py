"""Where the workshop CLI finds the queue and the admin password: each source on its own
(flags, environment, a `pulumi` on PATH, local mode's data/credentials.json) and which one
wins when several know."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.cli.config import LOCAL_URL, ConfigError, resolve
from services.contracts import WORKER_TOKEN_PREFIX

pytestmark = pytest.mark.timeout(30)

STACK = {
    "adminUrl": "https://workshop.example/admin/",
    "workshopUrl": "https://workshop.example/",
    "credentials": {"admin": "stack-admin-pw", "participants": {"user001": "stack-pw-1"},
                    "workers": {"gpu1": WORKER_TOKEN_PREFIX + "x"}},
}


def fake_pulumi(bin_dir: Path, outputs: object, rc: int = 0) -> Path:
    """A `pulumi` executable that logs its arguments and prints `outputs` as JSON."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "pulumi.args"
    exe = bin_dir / "pulumi"
    exe.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        f"cat <<'EOF'\n{json.dumps(outputs)}\nEOF\n"
        f"exit {rc}\n"
    )
    exe.chmod(0o755)
    return log


def local_file(folder: Path, admin: str = "local-admin-pw") -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "credentials.json"
    path.write_text(json.dumps({"admin_password": admin, "token_secret": "s",
                                "participants": {"user001": "local-pw-1"}}))
    return path


@pytest.fixture
def empty_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds nothing, so no pulumi."""
    nothing = tmp_path / "nothing-on-path"
    nothing.mkdir()
    return {"PATH": str(nothing)}


def test_flags(empty_env: dict[str, str], tmp_path: Path) -> None:
    config = resolve("https://q.example/admin/", "boss", "flag-pw", env=empty_env, cwd=tmp_path)
    assert (config.url, config.user, config.password) == ("https://q.example", "boss", "flag-pw")
    assert config.origin["password"] == "--url/--user/--password"


def test_environment(empty_env: dict[str, str], tmp_path: Path) -> None:
    env = {**empty_env, "WORKSHOP_URL": "q.example:8000", "WORKSHOP_ADMIN_USER": "boss",
           "WORKSHOP_ADMIN_PASSWORD": "env-pw"}
    config = resolve(env=env, cwd=tmp_path)
    assert (config.url, config.user, config.password) == ("http://q.example:8000", "boss",
                                                          "env-pw")
    # A flag still beats the environment.
    assert resolve(password="flag-pw", env=env, cwd=tmp_path).password == "flag-pw"


def test_pulumi_stack_outputs(tmp_path: Path) -> None:
    log = fake_pulumi(tmp_path / "bin", STACK)
    local_file(tmp_path)  # there too, but the stack comes first
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    config = resolve(env=env, cwd=tmp_path)
    assert (config.url, config.user, config.password) == (
        "https://workshop.example", "admin", "stack-admin-pw")
    assert config.origin["password"] == "pulumi stack outputs"
    assert config.participants == {"user001": "stack-pw-1"}
    assert log.read_text().split() == ["stack", "output", "--json", "--show-secrets"]


def test_a_failing_pulumi_falls_through_to_the_local_file(tmp_path: Path) -> None:
    fake_pulumi(tmp_path / "bin", {"error": "no stack selected"}, rc=255)
    local_file(tmp_path)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    assert resolve(env=env, cwd=tmp_path).password == "local-admin-pw"


def test_local_mode_credentials_file(empty_env: dict[str, str], tmp_path: Path) -> None:
    path = local_file(tmp_path)
    config = resolve(env=empty_env, cwd=tmp_path)
    assert (config.url, config.user, config.password) == (LOCAL_URL, "admin", "local-admin-pw")
    assert config.origin["password"] == str(path)
    assert config.participants == {"user001": "local-pw-1"}
    # COMFY_DATA_DIR moves it, as it moves `make up`'s data.
    other = tmp_path / "elsewhere"
    local_file(other, admin="moved-pw")
    env = {**empty_env, "COMFY_DATA_DIR": str(other / "data")}
    assert resolve(env=env, cwd=tmp_path).password == "moved-pw"
    # The environment's URL with the local file's password: each value from its first source.
    env = {**empty_env, "WORKSHOP_URL": "http://10.0.0.5:8000"}
    config = resolve(env=env, cwd=tmp_path)
    assert (config.url, config.password) == ("http://10.0.0.5:8000", "local-admin-pw")


def test_no_source_says_where_a_password_can_come_from(
    empty_env: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="WORKSHOP_ADMIN_PASSWORD"):
        resolve(env=empty_env, cwd=tmp_path)
