"""Entry point for `pulumi up` (Pulumi.yaml's main is infra/)."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script; make `import infra` work from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.config import from_pulumi
from infra.program import build, export

export(build(from_pulumi()))
