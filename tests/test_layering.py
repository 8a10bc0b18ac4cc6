"""Import layering (issue 31): the library never imports the shells built on top of it.

``core/``, ``slim/`` and ``guard/`` are the library; ``cli/``, ``bench/`` and the demo runner
(``slimguard/demo.py``) sit above it, and ``report/`` is a leaf the library may use. Every
import statement is read from the AST (module level and inside functions, absolute and
relative), so a lazy import inside a function body is caught without running it. ``bench/``
never imports ``cli/`` or the demo either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "slimguard"
SHELLS = ("slimguard.cli", "slimguard.bench", "slimguard.demo")
# (layer, modules it must not import)
RULES = [("core", SHELLS), ("slim", SHELLS), ("guard", SHELLS),
         ("report", SHELLS + ("slimguard.slim", "slimguard.guard")),
         # the benchmarks are a shell over the library too, beside the CLI: they register commands the CLI builds
         # (slimguard/cli/bench.py) and take shared options from slimguard/options.py, never from cli/
         ("bench", ("slimguard.cli", "slimguard.demo"))]


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, which is the text of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from slimguard import demo` imports the module slimguard.demo: count each name as a submodule too
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if a.name != "*"]
    return out


def _is_under(name: str, banned: str) -> bool:
    return name == banned or name.startswith(banned + ".")


def violations(layer: str, banned: tuple[str, ...], root: Path = PKG) -> list[str]:
    bad: dict[str, str] = {}  # one entry per import statement: its first banned name
    for path in sorted((root / layer).rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_pkg = path.name == "__init__.py"
        module = ".".join(rel.parts[:-1] if is_pkg else rel.parts)
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module, is_package=is_pkg):
            if any(_is_under(name, b) for b in banned):
                bad.setdefault(f"{path.relative_to(root.parent)}:{line}", name)
    return [f"{where} imports {name}" for where, name in bad.items()]


@pytest.mark.parametrize("layer, banned", RULES, ids=[r[0] for r in RULES])
def test_library_does_not_import_shells(layer, banned):
    assert (PKG / layer).is_dir()
    assert violations(layer, banned) == []


# the checker itself must see each form of import (else the test above could pass vacuously)
@pytest.mark.parametrize("source, module, is_package, banned", [
    ("import slimguard.bench.harness", "slimguard.slim.quant.speed", False, "slimguard.bench"),
    ("from slimguard.cli import main", "slimguard.core.models", False, "slimguard.cli"),
    ("from slimguard import demo", "slimguard.core.models", False, "slimguard.demo"),
    ("def f():\n    from ...bench.harness import time_it\n", "slimguard.slim.kvselect.demo", False, "slimguard.bench"),
    ("def f():\n    from ....demo import StepResult\n", "slimguard.guard.backdoor.defences.demo", False,
     "slimguard.demo"),
    ("from .. import cli", "slimguard.core.models", False, "slimguard.cli"),
    ("from ..cli.common import report", "slimguard.slim", True, "slimguard.cli"),
    ("class A:\n    def m(self):\n        import slimguard.demo as d\n", "slimguard.guard.x", False, "slimguard.demo"),
])
def test_checker_sees_each_import_form(source, module, is_package, banned):
    names = [n for _, n in imported_modules(source, module, is_package=is_package)]
    assert any(_is_under(n, banned) for n in names), names


@pytest.mark.parametrize("source, module", [
    ("from ..core.timing import time_it", "slimguard.slim.quant"),  # `slimguard.core`, not `slimguard.cli`
    ("from ...report.step import StepResult", "slimguard.slim.kvselect.demo"),
    ("import benchmark_tools", "slimguard.core.models"),  # a name that merely starts like a shell
    ("from .demo import demo_step", "slimguard.core.models"),  # slimguard.core.demo is a capability's own step
])
def test_checker_allows_library_imports(source, module):
    names = [n for _, n in imported_modules(source, module)]
    assert not any(_is_under(n, b) for n in names for b in SHELLS), names


def test_a_planted_violation_is_reported(tmp_path):
    pkg = tmp_path / "slimguard"
    (pkg / "slim" / "quant").mkdir(parents=True)
    (pkg / "slim" / "quant" / "speed.py").write_text("def f():\n    from ...bench.harness import time_it\n")
    assert violations("slim", SHELLS, root=pkg) == ["slimguard/slim/quant/speed.py:2 imports slimguard.bench.harness"]
