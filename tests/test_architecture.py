"""The arrows of the design: ml never imports Django or the app; webapp never imports workers."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


@pytest.mark.parametrize(
    "package, forbidden",
    [("ml", ("django", "webapp", "workers", "celery")), ("webapp", ("workers",))],
)
def test_forbidden_imports(package, forbidden):
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imported_modules(package)
        if module.split(".")[0] in forbidden
    ]
    assert offenders == []
