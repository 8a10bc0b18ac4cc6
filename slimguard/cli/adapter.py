"""Builds every ``slimguard <group> <verb>`` from its registered command (``core/commands.py``).

Each command gets its shortcut flags, whose type, choices and help come from the config
field they set, plus the options every command shares: ``--config``, ``--set``, ``--run``,
``--threads``, ``--resume``, ``--overwrite`` and ``--progress/--no-progress``. The command
resolves its config (defaults < file < ``--set`` < flags), runs the library verb through
:func:`slimguard.core.commands.execute` and prints the verb's summary line (stderr) and its
output (stdout; by default the run folder).

A command that owns no run folder (``owns_run=False``: ``slimguard bench <capability>``) gets
``--config``, ``--set`` and ``--threads`` only, and records the command line rebuilt from the
options given (:func:`given_command_line`), so a result names the command that reproduces it.
"""

from __future__ import annotations

import inspect
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any, List, Literal, Optional

import typer

from ..core.commands import Command, Flag, Input
from ..options import ConfigOpt, SetOpt, ThreadsOpt, set_threads
from .options import console

_SCALARS = (bool, int, float, str)


def _unwrap(ann: Any) -> Any:
    """Strip Optional[...] / Annotated[...] down to the value type."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann


def field_at(cls: type, dotted: str):
    """The pydantic FieldInfo of ``a.b.c`` in config type ``cls``."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = getattr(cls, "model_fields", {})
        if part not in fields:
            raise ValueError(f"{cls.__name__} has no field '{'.'.join(parts[:i + 1])}'")
        info = fields[part]
        if i < len(parts) - 1:
            cls = _unwrap(info.annotation)
    return info


def _registry_names(meta) -> list[str] | None:
    reg = getattr(meta, "registry", None)
    # a registry whose methods load torch on first lookup stays free text here, so `--help` stays
    # fast; the registry-backed config field still rejects an unknown name in one line
    return list(reg.names()) if reg is not None and reg.loaded else None


def choices_of(info) -> list[str] | None:
    """Allowed values of a field: a Literal's values, or a (light) method registry's names."""
    ann = info.annotation
    metas = list(getattr(info, "metadata", []))
    for a in [ann, *typing.get_args(ann)]:
        if typing.get_origin(a) is typing.Annotated:
            metas += list(typing.get_args(a)[1:])
    for meta in metas:
        if getattr(meta, "registry", None) is not None:
            return _registry_names(meta)
    base = _unwrap(ann)
    if typing.get_origin(base) is Literal:
        return [str(v) for v in typing.get_args(base)]
    return None


def _choice_type(info, base) -> Any:
    """A Literal of the field's allowed values (typer turns it into a choice), or None."""
    lit = typing.get_args(base) if typing.get_origin(base) is Literal else ()
    if lit:
        return Literal[lit]  # type: ignore[valid-type]
    choices = choices_of(info)
    return Literal[tuple(choices)] if choices else None  # type: ignore[valid-type]


def _option_type(info) -> Any:
    """The typer annotation of a field's flag (always Optional, so 'not given' is None)."""
    base = _unwrap(info.annotation)
    if typing.get_origin(base) in (list, List, tuple):
        item = _unwrap((typing.get_args(base) or (str,))[0])  # typer has no list-of-choices: the config checks
        return Optional[List[item if item in _SCALARS else str]]
    choice = _choice_type(info, base)
    if choice is not None:
        return Optional[choice]
    if base in _SCALARS or base is Path:
        return Optional[base]
    return Optional[str]


SHARED = ("config", "set_", "run_name", "threads", "overwrite", "resume", "progress")


def _pyname(flag: Flag) -> str:
    # the click parameter carries the flag's own name (`attack` for --attack): tools that walk the
    # CLI tree (tests/test_registry.py) find a method family's option by it
    name = flag.name.lstrip("-").replace("-", "_")
    if name in SHARED and name != "threads":  # a config's own --threads replaces the shared one (Command.takes_threads)
        raise ValueError(f"flag {flag.name} collides with a shared option")
    return name


def _help(flag: Flag, info) -> str:
    text = flag.help or (info.description or "")
    return f"{text} (config: {flag.field})" if not flag.positional else text


def _flag_param(flag: Flag, cfg_type: type) -> inspect.Parameter:
    info = field_at(cfg_type, flag.field)
    ann = Optional[flag.type] if flag.type is not None else _option_type(info)
    kw: dict[str, Any] = {"help": _help(flag, info)}
    if flag.positional:
        default = typer.Argument(None, show_default=False, metavar=flag.name.upper(), **kw)
    else:
        decls = [flag.name] + ([flag.short] if flag.short else [])
        if _unwrap(info.annotation) is bool:
            neg = "--no-" + flag.name[2:]
            decls = [f"{flag.name}/{neg}"] + ([flag.short] if flag.short else [])
        default = typer.Option(None, *decls, show_default=False, **kw)
    return inspect.Parameter(_pyname(flag), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)


def _input_param(inp: Input) -> inspect.Parameter:
    decls = [inp.name if inp.type is not bool else f"{inp.name}/--no-{inp.name[2:]}"] + ([inp.short] if inp.short else [])
    default = typer.Option(... if inp.required else None, *decls, help=inp.help, show_default=False)
    ann = inp.type if inp.required else Optional[inp.type]
    return inspect.Parameter("in_" + inp.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)


def _shared_params(cmd: Command) -> list[inspect.Parameter]:
    K = inspect.Parameter.KEYWORD_ONLY
    ps = [inspect.Parameter("config", K, default=ConfigOpt, annotation=Optional[Path]),
          inspect.Parameter("set_", K, default=SetOpt, annotation=Optional[List[str]])]
    if not cmd.takes_threads:
        ps.append(inspect.Parameter("threads", K, default=ThreadsOpt, annotation=Optional[int]))
    if not cmd.owns_run:
        return ps
    ps += [inspect.Parameter("run_name", K, annotation=Optional[str], default=typer.Option(
               None, cmd.run_option, help="Name of the run folder under the runs root (letters, digits, . _ -; "
                                          "default: derived from the config).")),
           inspect.Parameter("overwrite", K, annotation=bool, default=typer.Option(
               False, "--overwrite", help="Replace an existing run of the same name."))]
    if cmd.resumable:
        ps.append(inspect.Parameter("resume", K, annotation=bool, default=typer.Option(
            False, "--resume", help="Continue an existing run (its config must equal this one).")))
    ps.append(inspect.Parameter("progress", K, annotation=bool, default=typer.Option(
        True, "--progress/--no-progress", help="Show progress bars.")))
    return ps


def build(cmd: Command) -> typer.models.CommandFunctionType:
    """A typer command function for ``cmd`` (its signature is generated from the config type)."""
    from ..core.config import Config

    base = Config
    if cmd.variant:
        # options shared by every variant are declared on their common base class
        bases = [set(t.__mro__) for t in cmd.config_types().values()]
        common = set.intersection(*bases) if bases else {Config}
        base = min((t for t in common if isinstance(t, type) and issubclass(t, Config)),
                   key=lambda t: -len(t.__mro__))
    else:
        base = cmd.config  # type: ignore[assignment]
    params: list[inspect.Parameter] = []
    if cmd.variant:
        names = list(cmd.config_types())
        params.append(inspect.Parameter(_pyname(cmd.variant), inspect.Parameter.KEYWORD_ONLY, annotation=Literal[tuple(names)],
                                        default=typer.Option(..., cmd.variant.name,
                                                             *([cmd.variant.short] if cmd.variant.short else []),
                                                             help=cmd.variant.help or f"One of: {', '.join(names)}.")))
    positional = [f for f in cmd.flags if f.positional]
    params += [_flag_param(f, base).replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for f in positional]
    params += [_flag_param(f, base) for f in cmd.flags if not f.positional]
    params += [_input_param(i) for i in cmd.inputs]
    params += _shared_params(cmd)
    # positional parameters must come first in a Python signature
    params.sort(key=lambda p: p.kind != inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def run_command(*args, **kw):
        bound = inspect.Signature(params).bind(*args, **kw)
        _invoke(cmd, dict(bound.arguments))

    run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_command.__annotations__ = {p.name: p.annotation for p in params}
    run_command.__doc__ = cmd.help
    run_command.__name__ = cmd.verb.replace("-", "_")
    return run_command


def _invoke(cmd: Command, kw: dict[str, Any]) -> None:
    from ..core.commands import execute
    from ..core.config import resolve

    variant = kw.pop(_pyname(cmd.variant), None) if cmd.variant else None
    cfg_type = cmd.config_for(variant)
    overrides = {}
    for flag in cmd.flags:
        v = kw.get(_pyname(flag))
        if v is None or (isinstance(v, (list, tuple)) and not v):
            continue
        v = list(v) if isinstance(v, tuple) else v
        overrides[flag.field] = flag.convert(v) if flag.convert else v
    cfg = resolve(cfg_type, config_file=kw.get("config"), sets=kw.get("set_") or [], overrides=overrides)
    if not cmd.takes_threads:  # else the verb sets the threads its config records
        set_threads(kw.get("threads"))
    inputs = {i.param: kw.get("in_" + i.param) for i in cmd.inputs}
    if cmd.read_inputs:
        inputs = cmd.read_inputs(cfg, inputs)
    line = shlex.join(["slimguard", *sys.argv[1:]]) if cmd.owns_run else given_command_line(cmd, kw, variant)
    try:
        out = execute(cmd, cfg, run=kw.get("run_name"), resume=kw.get("resume", False),
                      overwrite=kw.get("overwrite", False), command_line=line,
                      progress=kw.get("progress", True), **inputs)
    except KeyboardInterrupt:
        # typer turns the interrupt into a silent exit 130: say what became of the run
        print(f"interrupted (SIGINT); the run's run.json says status 'interrupted'"
              f"{'; continue it with --resume' if cmd.resumable else ''}", file=sys.stderr)
        raise
    if cmd.summary and out.metrics:
        console().print(cmd.summary(out.metrics), highlight=False, markup=False)
    text = cmd.stdout(out.metrics, out.run) if cmd.stdout else (str(out.path) if out.path else None)
    if text is not None:
        typer.echo(text)


def given_command_line(cmd: Command, kw: dict[str, Any], variant: str | None = None) -> str:
    """The command line of the options given, in declaration order (flags, inputs, ``--config``, each
    ``--set``, ``--threads``): what a result records as its reproducing command, whatever the shell
    or test harness that called it (``sys.argv`` is not always the command's own)."""
    parts = ["slimguard", *cmd.name.split()]
    if cmd.variant and variant is not None:
        parts += [cmd.variant.name, str(variant)]
    named = [(f.name, kw.get(_pyname(f)), f.positional) for f in cmd.flags]
    named += [(i.name, kw.get("in_" + i.param), False) for i in cmd.inputs]
    for name, v, positional in named:
        if v is None or (isinstance(v, (list, tuple)) and not v):
            continue
        if positional:
            parts.append(str(v))
        elif isinstance(v, bool):
            parts.append(name if v else "--no-" + name[2:])
        else:
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                parts += [name, str(item)]
    if kw.get("config"):
        parts += ["--config", str(kw["config"])]
    for s in kw.get("set_") or []:
        parts += ["--set", s]
    if kw.get("threads") and not cmd.takes_threads:
        parts += ["--threads", str(kw["threads"])]
    return shlex.join(parts)


def add_command(app: typer.Typer, cmd: Command) -> None:
    """Mount ``cmd`` on ``app`` as its verb."""
    app.command(cmd.verb, help=cmd.help)(build(cmd))


def add_commands(app: typer.Typer, group: str) -> None:
    """Mount every registered command of ``group`` on ``app``."""
    from ..core.commands import commands

    for cmd in commands(group).values():
        add_command(app, cmd)
