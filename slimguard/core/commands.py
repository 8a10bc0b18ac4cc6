"""The command contract: every capability command is a library verb that owns its run folder.

A verb has the shape ``fn(cfg, run, **inputs) -> dict``: it reads its typed config, writes
its artefacts, report sections and (through :func:`execute`) ``metrics.json`` into ``run``,
and returns the metrics. It registers once, next to its code, with :func:`command`::

    @command("backdoor attack", config=AttackConfig, run_name=default_name,
             flags=[Flag("--attack", "poison.attack", "-a"), Flag("--dataset", "dataset", "-d")])
    def attack_command(cfg: AttackConfig, run: Run) -> dict: ...

The CLI (``slimguard/cli/adapter.py``) builds every ``slimguard <group> <name>`` command from
these records: the shortcut flags take their type, choices and help from the config field
they set, so a field is declared once. Benchmarks and the demo call :func:`execute` (or the
verb on a :class:`Run` of their own), never the CLI.

A command that owns no run folder (``owns_run=False``: the benchmarks, which write
``benchmarks/results/`` and keep their caches under the runs root themselves) has the shape
``fn(cfg, call, **inputs) -> dict``, where ``call`` is an :class:`Invocation` (the command line
to record, progress, a log) instead of a :class:`Run`.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import SlimguardError
from .runs import Run, check_run_name, runs_root

# CLI group -> the module whose import registers that capability's commands (see `commands()`)
COMMAND_MODULES = {
    "compress": "slimguard.slim.compress.commands",
    "longctx": "slimguard.slim.kvselect.commands",
    "quant": "slimguard.slim.quant.commands",
    "backdoor": "slimguard.guard.backdoor.commands",
    "promptattack": "slimguard.guard.promptattack.commands",
    "diffusion": "slimguard.guard.diffusion.commands",
    # the benchmarks: a shell over the library (bench/ may import the library, never the reverse), named
    # here by string only so `execute("bench quant", ...)` finds its command
    "bench": "slimguard.bench.commands",
}


@dataclass(frozen=True)
class Flag:
    """A CLI shortcut for one config field (``--attack`` sets ``poison.attack``).

    Type, choices and help come from the field unless given here; ``positional`` makes it
    an argument (``slimguard quant eval RUN_DIR``).
    """

    name: str
    field: str
    short: str | None = None
    help: str | None = None
    positional: bool = False
    # a flag whose value is not the field's own type: ``--seeds 3`` (type=int) sets ``seeds`` to
    # ``convert(3) == [0, 1, 2]``; the config still validates the converted value
    type: type | None = None
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Input:
    """A CLI parameter that is data, not config (the attack run a defence reads, a prompt file).

    Passed to the verb as the keyword ``param``; recorded in the run through the command line."""

    name: str
    param: str
    help: str
    type: type = str
    required: bool = False
    short: str | None = None


@dataclass(frozen=True)
class Command:
    """One registered verb: ``slimguard <name>`` in the CLI, :func:`execute` in Python."""

    name: str                                   # "backdoor attack"
    config: type | Callable[[], dict[str, type]]  # config type, or (with ``variant``) name -> config type
    fn: Callable[..., dict | None]             # (cfg, run, **inputs) -> metrics (None: fn saved them itself)
    run_name: Callable[..., str] | None         # (cfg, **inputs) -> default run name (None: owns no run)
    flags: tuple[Flag, ...] = ()
    inputs: tuple[Input, ...] = ()
    variant: Flag | None = None                 # picks the config type (``--defence onion``)
    run_option: str = "--run"                   # the flag naming the run folder
    resumable: bool = True
    summary: Callable[[dict], str] | None = None  # one line for the terminal (stderr)
    stdout: Callable[[dict, Run], str | None] | None = None  # stdout (default: the run path; None: nothing)
    read_inputs: Callable[[Any, dict], dict] | None = None  # CLI edge: complete the inputs (e.g. from stdin)
    help: str = ""
    owns_run: bool = True                       # False: fn(cfg, Invocation, **inputs), no run folder (benchmarks)

    @property
    def takes_threads(self) -> bool:
        """The command's config has its own ``--threads`` flag (recorded with the result), in place of the shared one."""
        return any(f.name == "--threads" for f in self.flags)

    @property
    def group(self) -> str:
        return self.name.split()[0]

    @property
    def verb(self) -> str:
        return self.name.split(maxsplit=1)[1]

    def config_types(self) -> dict[str, type]:
        return self.config() if self.variant else {"": self.config}  # type: ignore[operator,dict-item]

    def config_for(self, variant: str | None = None) -> type:
        if not self.variant:
            return self.config  # type: ignore[return-value]
        types = self.config_types()
        if variant not in types:
            raise SlimguardError(f"{self.variant.name}: unknown value {variant!r}; choose one of {', '.join(types)}")
        return types[variant]


_COMMANDS: dict[str, Command] = {}


def command(name: str, *, config, run_name: Callable[..., str] | None = None, flags: list[Flag] | tuple[Flag, ...] = (),
            inputs: list[Input] | tuple[Input, ...] = (), **kw) -> Callable:
    """Register the decorated verb as ``slimguard <name>`` (see the module docstring)."""

    def deco(fn: Callable) -> Callable:
        if name in _COMMANDS and _COMMANDS[name].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"command '{name}' is registered twice")
        if kw.get("owns_run", True) and run_name is None:
            raise ValueError(f"command '{name}' owns a run folder: give run_name (or owns_run=False)")
        doc = (fn.__doc__ or "").strip()
        _COMMANDS[name] = Command(name=name, config=config, fn=fn, run_name=run_name, flags=tuple(flags),
                                  inputs=tuple(inputs),
                                  help=kw.pop("help", doc), **kw)
        return fn

    return deco


def commands(group: str | None = None) -> dict[str, Command]:
    """Every registered command (of ``group``), importing the capability modules that register them."""
    for g, mod in COMMAND_MODULES.items():
        if group and g != group:
            continue
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a capability missing from this checkout
            if e.name != mod:
                raise
    return {k: c for k, c in _COMMANDS.items() if not group or c.group == group}


def get(name: str) -> Command:
    cmds = commands(name.split()[0])
    if name not in cmds:
        raise SlimguardError(f"unknown command '{name}'; commands: {', '.join(sorted(cmds))}")
    return cmds[name]


@dataclass
class Invocation:
    """What a command that owns no run folder (``owns_run=False``) gets in place of a :class:`Run`."""

    command: str           # the command line that reproduces this call, recorded in what it writes
    progress: bool = True

    def log(self, message: str) -> None:
        """One progress line on stderr (stdout carries the command's output)."""
        print(message, file=sys.stderr, flush=True)


def reproducing_command(cmd: Command, cfg: Any) -> str:
    """``slimguard <name>`` plus a ``--set key=value`` for every field of ``cfg`` that differs from the
    config type's defaults: the line that reproduces a call made from Python."""
    parts = ["slimguard", *cmd.name.split()]
    try:
        default = type(cfg)().to_dict()
    except Exception:  # a config with required fields has no defaults to compare with  # noqa: BLE001
        return shlex.join(parts)
    for key, value in _leaves(cfg.to_dict(), default):
        parts += ["--set", f"{key}={_yaml_scalar(value)}"]
    return shlex.join(parts)


def _leaves(new: dict, old: dict, prefix: str = ""):
    for k, v in new.items():
        o = old.get(k) if isinstance(old, dict) else None
        if isinstance(v, dict) and isinstance(o, dict):
            yield from _leaves(v, o, f"{prefix}{k}.")
        elif v != o:
            yield f"{prefix}{k}", v


def _yaml_scalar(value: Any) -> str:
    import json

    import yaml

    # JSON is YAML: `--set` reads the value back as the same number, list or null; a plain string stays
    # bare when YAML reads it back unchanged
    if isinstance(value, str) and value and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


@dataclass
class Outcome:
    """What :func:`execute` returns: the finished run (None for a command that owns none) and its metrics."""

    run: Run | None
    metrics: dict = field(default_factory=dict)

    @property
    def path(self) -> Path | None:
        """The run folder, or for a command that owns none the file it wrote (its metrics' ``path``)."""
        if self.run is not None:
            return self.run.path
        return Path(self.metrics["path"]) if self.metrics.get("path") else None


def execute(name: str | Command, cfg: Any, *, run: str | None = None, root: str | Path | None = None,
            resume: bool = False, overwrite: bool = False, command_line: str | None = None,
            progress: bool = True, **inputs: Any) -> Outcome:
    """Run a registered verb in its run folder (``<root>/<run or default name>``) under the run rules.

    The run is locked while ``fn`` runs, ``metrics.json`` is written from what it returns, and
    ``run.json`` ends as ``done``, ``failed`` or ``interrupted``.
    """
    cmd = name if isinstance(name, Command) else get(name)
    if not cmd.owns_run:
        if run or resume or overwrite:
            raise SlimguardError(f"`slimguard {cmd.name}` keeps no run folder; it takes no run name, --resume or --overwrite")
        call = Invocation(command=command_line or reproducing_command(cmd, cfg), progress=progress)
        return Outcome(None, cmd.fn(cfg, call, **inputs) or {})
    run_name = check_run_name(run) if run else cmd.run_name(cfg, **inputs)
    if resume and not cmd.resumable:
        raise SlimguardError(f"`slimguard {cmd.name}` cannot resume; rerun it with --overwrite")
    if int(os.environ.get("RANK", "0")) > 0:
        # a worker of a torchrun/DDP job: rank 0 created and locked the run; workers write into it
        r = Run((Path(root) if root else runs_root()) / run_name)
        r.resumed, r.progress = resume, False
        cmd.fn(cfg, r, **inputs)
        return Outcome(r, {})
    with Run.create(run_name, root=root, command=command_line or f"slimguard {cmd.name}", config=cfg,
                    resume=resume, overwrite=overwrite) as r:
        r.progress = progress
        metrics = cmd.fn(cfg, r, **inputs)
        if metrics is not None:
            r.save_metrics(metrics)
    return Outcome(r, metrics if metrics is not None else r.metrics())
