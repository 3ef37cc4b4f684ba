"""Verda instances and SSH keys as Pulumi dynamic resources (over infra/verda_api.py).

Why a dynamic provider and not the bridged `pulumi-verda` package: see docs/infrastructure.md
("Verda: our dynamic provider"). What this one guarantees:

- create checks the stock first and fails with the alternatives Verda offers at that moment;
  a create that fails later (provisioning error, timeout) deletes what it made (instance,
  OS volume, startup script) before it reports the error: nothing stays behind, billed;
- diff looks at the live instance: one deleted outside Pulumi is replaced, one powered off
  (the idle watchdog, or by hand) is started again by an in-place update, so a plain
  `pulumi up` (and `pulumi preview` on a pull request) shows and repairs both;
- update in place where Verda allows it: power state, and a larger OS volume; every other
  input (type, image, location, spot, SSH keys, the startup script, the name) replaces the
  instance, deleting the old one first (one host name, one worker token, one tailnet name);
- delete removes the instance with its OS volume permanently, then the startup script.

The startup script holds the host's secrets: it is never an output (only its sha256 is).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from infra.verda_api import (
    OFFLINE,
    RUNNING,
    Credentials,
    MissingCredentials,
    Verda,
    VerdaError,
    Waits,
)

INSTANCE_INPUTS = (
    "hostname",
    "description",
    "instanceType",
    "image",
    "location",
    "spot",
    "osVolumeGb",
    "sshKeyIds",
    "startupScript",
    "running",
)
#: What Verda changes in place; every other input replaces the instance (the startup script
#: by its hash: it is never an output).
IN_PLACE = ("osVolumeGb", "running")
REPLACE_ON = (
    *(k for k in INSTANCE_INPUTS if k not in (*IN_PLACE, "startupScript")),
    "startupScriptSha256",
)
# The provider process unpickles this. It runs in infra/ (Pulumi.yaml's main) or the repository
# root, without the program's sys.path fix (infra/__main__.py): drop infra/ itself from sys.path
# (its modules would shadow packages: `verda`, `config`), put the root in front, then import.
_RESTORE = (
    "(lambda os, sys: ("
    "[sys.path.remove(p) for p in list(sys.path) if os.path.basename(os.path.abspath(p or '.'))"
    " == 'infra' and os.path.isfile(os.path.join(p or '.', 'verda_provider.py'))],"
    "[sys.path.insert(0, r) for r in [d for d in (os.getcwd(), os.path.dirname(os.getcwd()))"
    " if os.path.isfile(os.path.join(d, 'infra', '__init__.py'))][:1] if r not in sys.path],"
    "__import__('infra.verda_provider', fromlist=['restore']).restore({!r}, {!r}))[-1])"
    "(__import__('os'), __import__('sys'))"
)


def restore(kind: str, settings: dict[str, Any]) -> ResourceProvider:
    """Rebuild a pickled provider (see `_Portable.__reduce__`)."""
    return {"instance": InstanceProvider, "ssh-key": SshKeyProvider}[kind](**settings)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Portable(ResourceProvider):
    """Pickles as a call to `restore`, so the provider process needs only `infra` on disk."""

    kind: ClassVar[str]

    def __init__(
        self,
        api_url: str | None = None,
        poll_s: float = 5.0,
        create_timeout_s: float = 20 * 60.0,
        delete_timeout_s: float = 10 * 60.0,
    ) -> None:
        super().__init__()
        self.settings = {
            "api_url": api_url,
            "poll_s": poll_s,
            "create_timeout_s": create_timeout_s,
            "delete_timeout_s": delete_timeout_s,
        }

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # eval of our own literal: the one callable every Python can unpickle by reference.
        return (eval, (_RESTORE.format(self.kind, self.settings),))

    def api(self) -> Verda:
        s = self.settings
        return Verda(
            Credentials.from_env(api_url=s["api_url"]),
            Waits(s["poll_s"], s["create_timeout_s"], s["delete_timeout_s"]),
        )


class InstanceProvider(_Portable):
    kind = "instance"

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(k, f"{k} is required") for k in INSTANCE_INPUTS if k not in news]
        size = news.get("osVolumeGb")
        if isinstance(size, int | float) and size < 50:
            failures.append(CheckFailure("osVolumeGb", "the OS volume needs at least 50 GB"))
        return CheckResult(news, failures)

    @staticmethod
    def _wanted(news: dict[str, Any]) -> dict[str, Any]:
        wanted = {k: news.get(k) for k in INSTANCE_INPUTS if k != "startupScript"}
        wanted["startupScriptSha256"] = _sha(str(news.get("startupScript", "")))
        return wanted

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        wanted = self._wanted(news)
        replaces = [k for k in REPLACE_ON if olds.get(k) != wanted.get(k)]
        if (wanted.get("osVolumeGb") or 0) < (olds.get("osVolumeGb") or 0):
            replaces.append("osVolumeGb")  # volumes only grow
        changes = bool(replaces) or any(olds.get(k) != wanted.get(k) for k in wanted)
        try:
            live = self.api().get_instance(id_)
        except MissingCredentials:  # e.g. a preview without Verda credentials: inputs only
            return DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)
        if live is None:
            replaces.append("instanceId")  # deleted outside Pulumi: make a new one
        elif wanted.get("running") and live.status != RUNNING:
            changes = True  # powered off (idle watchdog, console): start it again
        return DiffResult(
            changes=changes or bool(replaces),
            replaces=replaces,
            delete_before_replace=True,
        )

    def _outs(self, news: dict[str, Any], instance: Any, script_id: str, hourly: Any) -> dict:
        outs = self._wanted(news)
        outs.update(
            instanceId=str(instance.id),
            status=instance.status,
            running=instance.status == RUNNING,
            ip=instance.ip,
            osVolumeId=instance.os_volume_id,
            startupScriptId=script_id,
            hourlyEur=hourly,
            pricePerHour=instance.price_per_hour,
        )
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        api = self.api()
        api.check_stock(props["instanceType"], props["location"], bool(props["spot"]))
        script_id = api.create_script(f"{props['hostname']}-bootstrap", props["startupScript"])
        instance_id = None
        try:
            instance_id = api.create_instance(props, script_id)
            instance = api.wait_for(instance_id, RUNNING, api.waits.create_s)
        except BaseException as exc:
            self._clean_up(api, instance_id, script_id, exc)
            raise
        hourly = api.hourly_eur(props["instanceType"], bool(props["spot"]))
        return CreateResult(str(instance_id), self._outs(props, instance, script_id, hourly))

    @staticmethod
    def _clean_up(
        api: Verda, instance_id: str | None, script_id: str, cause: BaseException
    ) -> None:
        """Undo a failed create; if that fails too, say exactly what is left to delete."""
        try:
            if instance_id is not None:
                instance = api.get_instance(instance_id)
                volume = instance.os_volume_id if instance is not None else None
                api.delete_instance(instance_id, volume)
            api.delete_script(script_id)
        except Exception as exc:
            raise VerdaError(
                f"{cause}; and cleaning up failed ({exc}): delete instance {instance_id}, its OS "
                f"volume and startup script {script_id} in the Verda console"
            ) from cause

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        instance = self.api().get_instance(id_)
        if instance is None:
            return ReadResult("", {})  # gone: Pulumi drops it, the next `up` creates it again
        outs = dict(props)
        outs.update(
            status=instance.status,
            running=instance.status == RUNNING,
            ip=instance.ip,
            osVolumeId=instance.os_volume_id,
        )
        return ReadResult(id_, outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        api = self.api()
        if (news.get("osVolumeGb") or 0) > (olds.get("osVolumeGb") or 0) and olds.get("osVolumeId"):
            api.resize_volume(olds["osVolumeId"], int(news["osVolumeGb"]))
        instance = api.get_instance(id_)
        if instance is None:
            raise VerdaError(
                f"instance {id_} no longer exists; run `pulumi up` again to replace it"
            )
        if news.get("running") and instance.status == OFFLINE:
            instance = api.start(id_)
        elif not news.get("running") and instance.status == RUNNING:
            instance = api.shutdown(id_)
        outs = self._outs(news, instance, olds.get("startupScriptId", ""), olds.get("hourlyEur"))
        return UpdateResult(outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        api = self.api()
        api.delete_instance(id_, props.get("osVolumeId"))
        if props.get("startupScriptId"):
            api.delete_script(props["startupScriptId"])


class SshKeyProvider(_Portable):
    kind = "ssh-key"

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("name", "publicKey") if olds.get(k) != news.get(k)]
        try:
            if not self.api().ssh_key_exists(id_):
                changed.append("keyId")
        except MissingCredentials:
            pass
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        key_id = self.api().create_ssh_key(props["name"], props["publicKey"])
        return CreateResult(key_id, {**props, "keyId": key_id})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if self.api().ssh_key_exists(id_) else ReadResult("", {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.api().delete_ssh_key(id_)


class _VerdaResource(pulumi.dynamic.Resource):
    """Declares its outputs (so they are attributes of the same names) and its provider."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ()
    PROVIDER: ClassVar[type[_Portable]]

    def __init__(
        self,
        name: str,
        props: dict[str, Any],
        provider: _Portable | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        outputs = dict.fromkeys(self.OUTPUTS)
        super().__init__(provider or self.PROVIDER(), name, {**outputs, **props}, opts)


class VerdaInstance(_VerdaResource, module="verda", name="Instance"):
    """A Verda GPU instance (type `pulumi-python:dynamic/verda:Instance`): instanceId, ip,
    status, osVolumeId, hourlyEur, ... are its outputs."""

    OUTPUTS = (
        "instanceId",
        "ip",
        "status",
        "osVolumeId",
        "startupScriptId",
        "startupScriptSha256",
        "hourlyEur",
        "pricePerHour",
    )
    PROVIDER = InstanceProvider


class VerdaSshKey(_VerdaResource, module="verda", name="SshKey"):
    """A public key Verda puts on new instances (type `pulumi-python:dynamic/verda:SshKey`)."""

    OUTPUTS = ("keyId",)
    PROVIDER = SshKeyProvider
