"""A contract is written once, in services/contracts.py: no other module defines its own copy
of a port, the worker-token prefix, the job states, modes, roles or event types."""

from __future__ import annotations

import ast
from pathlib import Path

from services import contracts

ROOT = Path(__file__).resolve().parents[1]
#: Where the contracts must be imported, not repeated. infra/ is being rewritten by its own
#: workstream: only the modules that had literal copies of a contract are checked there.
CHECKED = [
    *sorted((ROOT / "services").rglob("*.py")),
    *sorted((ROOT / "bench").rglob("*.py")),
    *sorted(p for p in (ROOT / "tests").rglob("*.py") if "infra" not in p.parts),
    *(ROOT / "infra" / name for name in ("control_plane.py", "tailnet.py", "gpu.py")),
]
CONTRACT_NAMES = {n for n in vars(contracts) if n.isupper() or n[:1].isupper()}
PORTS = {contracts.QUEUE_PORT, contracts.GATEWAY_PORT}


def _copies(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ClassDef) and node.name in CONTRACT_NAMES:
            found.append(f"{where} defines class {node.name}")
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id in CONTRACT_NAMES:
                found.append(f"{where} assigns {target.id}")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str) and value.startswith(contracts.WORKER_TOKEN_PREFIX):
                found.append(f"{where} spells the worker-token prefix: {value!r}")
            if type(value) is int and value in PORTS:
                found.append(f"{where} spells a port: {value}")
    return found


def test_contracts_are_imported_not_repeated() -> None:
    own = ROOT / "services" / "contracts.py"
    assert [copy for path in CHECKED if path != own for copy in _copies(path)] == []
