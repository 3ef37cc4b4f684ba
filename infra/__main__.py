"""Entry point for `pulumi up` (Pulumi.yaml's main is infra/).

Pulumi runs a `main` directory with that directory as the working directory and as
sys.path[0], so `infra` itself is not importable and its modules (config, backup,
proxy, ...) would shadow same-named top-level packages. Put the repository root in
its place.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from infra.config import from_pulumi  # noqa: E402  (needs the sys.path fix above)
from infra.program import build, export  # noqa: E402

export(build(from_pulumi()))
