"""Policy pack entry point."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import PolicyPack

from infra.policy.rules import POLICIES

PolicyPack(name="comfy-workshop", policies=POLICIES)
