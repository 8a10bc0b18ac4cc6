"""The command contract (issue 31): every command is a registered verb the adapter builds, declared once.

Walks every registered command (run-folder verbs and the benchmarks) and the CLI tree: each ``Flag``
names a field its config has, each ``Input`` reaches the verb, every command has a one-line help,
and no ``typer.Option`` in ``slimguard/cli/`` restates a config field by hand.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from slimguard.cli.adapter import field_at
from slimguard.core.commands import Command, commands

PKG = Path(__file__).resolve().parents[1] / "slimguard"
ALL = commands()
IDS = sorted(ALL)


def test_every_capability_and_benchmark_registers_commands():
    from slimguard.bench.harness import CAPABILITIES
    from slimguard.core.commands import COMMAND_MODULES

    groups = {c.group for c in ALL.values()}
    assert groups == set(COMMAND_MODULES)
    # a benchmark still declaring its own typer signature (register(app)) is the exception, named here
    own_signature = {"backdoor", "compress", "kvselect", "scan"}
    assert {c.verb for c in ALL.values() if c.group == "bench"} | own_signature == set(CAPABILITIES)


@pytest.mark.parametrize("name", IDS)
def test_each_flag_points_at_a_config_field(name):
    cmd: Command = ALL[name]
    for cfg_type in cmd.config_types().values():
        for flag in cmd.flags:
            field_at(cfg_type, flag.field)  # raises naming the missing field
        if cmd.variant is not None:
            assert cmd.variant.field  # the variant picks the config type itself


@pytest.mark.parametrize("name", IDS)
def test_each_input_reaches_the_verb(name):
    cmd: Command = ALL[name]
    params = inspect.signature(cmd.fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for inp in cmd.inputs:
        assert takes_any or inp.param in params, f"`slimguard {name}`: input {inp.name} is not a parameter of the verb"
    # the verb's own parameters after (cfg, run) are its inputs, or completed at the CLI edge (a prompt on stdin)
    own = [p for p in list(params)[2:] if params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    if cmd.read_inputs is None:
        assert set(own) <= {i.param for i in cmd.inputs}, f"`slimguard {name}`: verb parameters {own} have no Input"


@pytest.mark.parametrize("name", IDS)
def test_every_command_has_a_one_line_help(name):
    cmd: Command = ALL[name]
    assert cmd.help and "\n" not in cmd.help.strip(), f"`slimguard {name}`: help must be one line"
    from slimguard.cli.main import app

    res = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert cmd.help.split()[0] in res.output


@pytest.mark.parametrize("name", IDS)
def test_the_cli_command_is_the_adapters(name):
    """Every registered command is mounted as the adapter built it (not a hand-written twin)."""
    from slimguard.cli.main import app

    node = typer.main.get_command(app)
    for part in name.split():
        node = node.commands[part]
    assert node.callback.__qualname__.startswith("build.")
    flags = {p.name for p in node.params}
    assert {f.name.lstrip("-").replace("-", "_") for f in ALL[name].flags} <= flags


def _typer_options(path: Path) -> list[tuple[int, str, str]]:
    """(line, function, option name) of every typer.Option/typer.Argument declared in ``path``."""
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        args = fn.args.args + fn.args.kwonlyargs
        defaults = [None] * (len(fn.args.args) - len(fn.args.defaults)) + fn.args.defaults + fn.args.kw_defaults
        for arg, default in zip(args, defaults):
            call = default
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
                    and call.func.attr in ("Option", "Argument") and getattr(call.func.value, "id", "") == "typer":
                names = [a.value for a in call.args[1:] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                long = next((n.split("/")[0] for n in names if n.startswith("--")), "--" + arg.arg.replace("_", "-"))
                out.append((fn.lineno, fn.name, long.lstrip("-").replace("-", "_")))
    return out


def _config_fields(cfg_type, prefix: str = "") -> set[str]:
    out = set()
    for name, info in getattr(cfg_type, "model_fields", {}).items():
        out.add(name)
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            out |= _config_fields(ann)
    return out


def restated_fields(cli_dir: Path = PKG / "cli") -> list[str]:
    """Hand-written options in a CLI group module that name a field of one of that group's configs."""
    bad = []
    for path in sorted(cli_dir.glob("*.py")):
        if path.name == "adapter.py":  # the generic options every built command gets
            continue
        group = path.stem
        fields: set[str] = set()
        for cmd in ALL.values():
            if cmd.group == group:
                for t in cmd.config_types().values():
                    fields |= _config_fields(t)
        for line, fn, opt in _typer_options(path):
            if opt in fields:
                bad.append(f"{path.name}:{line} {fn}() declares --{opt.replace('_', '-')}, a field of a `{group}` "
                           "config: give the command a config and a Flag instead")
    return bad


def test_no_cli_option_restates_a_config_field():
    assert restated_fields() == []
    # the hand-written commands left (generate, report, demo, assets) take no capability config
    assert {path.stem for path in (PKG / "cli").glob("*.py") if _typer_options(path)} <= {"common", "assets"}


def test_group_modules_declare_no_options_of_their_own():
    """A CLI module of a capability group only mounts the adapter's commands."""
    for group in {c.group for c in ALL.values()}:
        path = PKG / "cli" / f"{group}.py"
        assert path.is_file(), f"no CLI module mounts the `{group}` commands"
        assert _typer_options(path) == [], f"{path.name} declares options by hand"


def test_the_checker_sees_a_hand_written_option(tmp_path):
    """The checks above must be able to fail: a hand-written --steps in a quant CLI module is caught."""
    (tmp_path / "quant.py").write_text(
        "import typer\n\ndef train(steps: int = typer.Option(5, help='Steps.'),\n"
        "          w_bits: int = typer.Option(4, '--w-bits')) -> None:\n    pass\n")
    assert restated_fields(tmp_path) == [
        "quant.py:3 train() declares --steps, a field of a `quant` config: give the command a config and a Flag instead",
        "quant.py:3 train() declares --w-bits, a field of a `quant` config: give the command a config and a Flag instead"]


@pytest.mark.parametrize("argv, want", [
    (["bench", "quant", "--full", "--set", "bits=[W4A8KV4]"], "slimguard bench quant --full --set 'bits=[W4A8KV4]'"),
    (["bench", "defence", "--seeds", "2", "--threads", "1"], "slimguard bench defence --seeds 2 --threads 1"),
    (["bench", "promptattack", "--victim", "minilm-l6", "--victim", "smollm2-135m", "--n-test", "8"],
     "slimguard bench promptattack --n-test 8 --victim minilm-l6 --victim smollm2-135m"),
])
def test_a_benchmark_records_the_command_that_reproduces_it(monkeypatch, argv, want):
    """The recorded command is rebuilt from the options given (sys.argv is the test runner's here)."""
    from slimguard.cli.main import app
    from slimguard.core import commands as C

    seen = {}

    def fake_execute(cmd, cfg, *, command_line=None, **kw):
        seen.update(cfg=cfg, line=command_line)
        return C.Outcome(None, {"path": "x.json", "heatmap": "x.png"})

    monkeypatch.setattr(C, "execute", fake_execute)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert seen["line"] == want


def test_a_benchmark_called_from_python_records_its_settings():
    from slimguard.bench.defence import DefenceBenchConfig
    from slimguard.core.commands import get, reproducing_command

    cfg = DefenceBenchConfig(seeds=[0, 1], defence={"bki": {"scan_size": 250}})
    line = reproducing_command(get("bench defence"), cfg)
    assert line == "slimguard bench defence --set defence.bki.scan_size=250 --set 'seeds=[0, 1]'"


def _recorded_commands():
    import json

    out = []
    for path in sorted((PKG.parent / "benchmarks" / "results").rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for part in str(doc.get("command", "")).split("&&"):
            argv = __import__("shlex").split(part.strip())
            if argv[:2] == ["slimguard", "bench"] and f"bench {argv[2]}" in ALL:
                out.append(pytest.param(argv[1:], id=f"{path.relative_to(PKG.parent / 'benchmarks' / 'results')}"
                                                     f":{len(out)}"))
    return out


@pytest.mark.parametrize("argv", _recorded_commands())
def test_every_recorded_benchmark_command_still_resolves(monkeypatch, argv):
    """The `command` of every result in benchmarks/results/ reruns as written: flat keys of older results are moved
    to their nested place (BenchConfig.MOVED), not refused."""
    from slimguard.cli.main import app
    from slimguard.core import commands as C

    seen = {}

    def fake_execute(cmd, cfg, *, command_line=None, **kw):
        seen["cfg"] = cfg
        return C.Outcome(None, {"path": "x.json", "heatmap": "x.png", "rows": [], "targets": {}})

    monkeypatch.setattr(C, "execute", fake_execute)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert type(seen["cfg"]).__name__.endswith("BenchConfig")


def test_recorded_kvselect_commands_still_resolve():
    """`bench kvselect` declares its own options; its recorded --set keys must still build its config."""
    import json
    import shlex

    from slimguard.bench.kvselect import KVSelectBenchConfig
    from slimguard.core.config import resolve

    n = 0
    for path in sorted((PKG.parent / "benchmarks" / "results").glob("kvselect*.json")) + \
            sorted((PKG.parent / "benchmarks" / "results" / "kvselect").glob("*.json")):
        argv = shlex.split(json.loads(path.read_text())["command"])
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        resolve(KVSelectBenchConfig, sets=sets)
        n += 1
    assert n > 10
