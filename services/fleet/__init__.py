"""The GPU fleet's host-side tools: the model manifest, the models bucket, the fetch onto a host,
the placement check, and the idle power-off rule. Pure Python (no Pulumi): the worker image runs
them on GPU hosts (`python -m services.fleet ...`) and the worker imports `check_placement`.
"""

from services.fleet.manifest import Manifest, Model, load_manifest
from services.fleet.placement import Problem, check_placement, model_roots

__all__ = ["Manifest", "Model", "Problem", "check_placement", "load_manifest", "model_roots"]
