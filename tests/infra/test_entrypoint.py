"""`infra/__main__.py` run the way Pulumi runs a `main` directory, not as a package import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.infra.harness import ACCOUNT, ZONE

ROOT = Path(__file__).resolve().parents[2]

# Like pulumi-language-python-exec: cwd = the main directory, runpy.run_path on it.
RUNNER = """
import json, runpy, sys
import pulumi
from pulumi.runtime import Mocks

class M(Mocks):
    n = 100
    def new_resource(self, args):
        M.n += 1
        state = dict(args.inputs)
        if args.typ == "hcloud:index/server:Server":
            state |= {"ipv4Address": "203.0.113.10", "ipv6Address": "2001:db8::1"}
        if args.typ == "tailscale:index/tailnetKey:TailnetKey":
            state["key"] = "tskey-auth-x"
        if args.typ == "cloudflare:index/apiToken:ApiToken":
            state["value"] = "token-value"
        if args.typ == "command:remote:Command":
            state["stdout"] = "100.64.0.7"
        if args.typ == "random:index/randomPassword:RandomPassword":
            state |= {"result": "x" * 64, "bcryptHash": "$2a$10$x"}
        return str(M.n), state  # numeric, as Hetzner's ids are
    def call(self, args):
        if args.token == "hcloud:index/getServerType:getServerType":
            return {"name": args.args["name"], "locations": [
                {"name": "nbg1", "available": True, "isDeprecated": False,
                 "unavailableAfter": "", "deprecationAnnounced": "", "id": 1,
                 "recommended": True}]}
        if args.token == "cloudflare:index/getIpRanges:getIpRanges":
            return {"ipv4Cidrs": ["173.245.48.0/20"], "ipv6Cidrs": ["2400:cb00::/32"]}
        return {}

pulumi.runtime.set_all_config(json.loads(sys.argv[1]))
pulumi.runtime.set_mocks(M(), project="comfy-workshop", stack="workshop", preview=False)

@pulumi.runtime.test
def main():
    runpy.run_path(".", run_name="__main__")

main()
print(json.dumps({
    "infra": sys.modules["infra"].__file__,
    "shadowing": sorted(m for m in ("config", "backup", "proxy", "storage") if m in sys.modules),
}))
"""


def test_main_directory_runs_from_its_own_cwd(tmp_path):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nMOCK\n")
    config = {
        "workshop:domain": "workshop.example.org",
        "workshop:cloudflareZoneId": ZONE,
        "workshop:cloudflareAccountId": ACCOUNT,
        "workshop:adminEmails": json.dumps(["admin@example.org"]),
        "workshop:sshPublicKeys": json.dumps(["ssh-ed25519 AAAAC3Nza admin@laptop"]),
        "workshop:sshPrivateKeyFile": str(key),
        "workshop:adminCidrs": json.dumps(["198.51.100.0/24"]),
    }
    res = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(config)],
        cwd=ROOT / "infra",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["infra"] == str(ROOT / "infra" / "__init__.py")
    assert got["shadowing"] == []
