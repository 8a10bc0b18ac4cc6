"""Every `from slimguard... import name` inside a function names something that exists.

Heavy dependencies are imported lazily inside functions, so a renamed helper only fails when
that function runs (a demo step broke this way). This reads every module's AST and resolves
each internal lazy import without running it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "slimguard"


def _lazy_imports():
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        mod = ".".join(parts[:-1] if path.name == "__init__.py" else parts)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("slimguard")):
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                    for alias in node.names:
                        yield pytest.param(target, alias.name, id=f"{mod}:{node.lineno}:{alias.name}")


@pytest.mark.parametrize("module,name", list(_lazy_imports()))
def test_lazy_import_resolves(module, name):
    try:
        m = importlib.import_module(module)
    except ImportError as e:  # an optional third-party dependency of that module is missing
        pytest.skip(f"{module}: {e}")
    if not hasattr(m, name):
        importlib.import_module(f"{module}.{name}")  # a submodule is fine; anything else fails here
