"""Typed, validated configs with file loading and ``--set a.b=value`` overrides.

Every capability declares one :class:`Config` subclass (pydantic, keyword-only, unknown
keys forbidden). :func:`resolve` builds it from, in increasing priority: defaults, a
YAML/TOML file, ``--set`` overrides, and explicit CLI options. A misspelled key is an
error that names the key and suggests the closest valid one.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .registry import UNKNOWN


class Config(BaseModel):
    """Base for all slimguard configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


C = TypeVar("C", bound=Config)


def _fields_at(cls: type[BaseModel], path: list[str]) -> list[str]:
    """Valid field names at a nested location, for suggestions."""
    for part in path:
        f = cls.model_fields.get(part)
        ann = getattr(f, "annotation", None) if f else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return []
    return list(cls.model_fields)


def _nested_paths(cls: type[BaseModel], name: str, prefix: tuple[str, ...] = (), depth: int = 3) -> list[str]:
    """Dotted paths below ``cls`` whose last part is ``name``: where a key given at the wrong level lives
    (``steps`` of a benchmark config that nests ``train: QuantTrainConfig`` is ``train.steps``)."""
    out = []
    for field, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and depth:
            if name in ann.model_fields:
                out.append(".".join((*prefix, field, name)))
            out += _nested_paths(ann, name, (*prefix, field), depth - 1)
    return out


def _one_line(cls: type[Config], err: ValidationError) -> str:
    e = err.errors()[0]
    loc = [str(x) for x in e["loc"]]
    key = ".".join(loc) or cls.__name__
    if e["type"] == "extra_forbidden":
        valid = _fields_at(cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        here = cls
        for part in loc[:-1]:  # the config the key was given to, to look for the key one level down
            ann = getattr(getattr(here, "model_fields", {}).get(part), "annotation", None)
            here = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if here is None:
                break
        below = sorted(_nested_paths(here, loc[-1]), key=len) if here is not None else []
        if below:
            hint = f"; did you mean '{'.'.join(loc[:-1] + [below[0]])}'?"
        elif close:
            hint = f"; did you mean '{'.'.join(loc[:-1] + [close[0]])}'?"
        else:
            hint = f"; valid keys: {', '.join(valid)}"
        return f"unknown config key '{key}'{hint}"
    if e["type"] == UNKNOWN:  # a registry-backed field (core.registry): the value, the key and a suggestion
        return f"unknown value '{e['ctx']['value']}' for key '{key}'{e['ctx']['hint']}"
    if isinstance(e.get("input"), dict):  # a check across fields: the message names them; the input is the whole config
        return f"config key '{key}': {e['msg'].removeprefix('Value error, ')}"
    return f"config key '{key}': {e['msg']} (got {e.get('input')!r})"


def build(cls: type[C], data: dict[str, Any]) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(cls, err)) from None


def load_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; pass a .yaml, .toml or .json file (e.g. {p}/config.json)")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    except OSError as e:  # unreadable: permissions, a device, a broken mount
        raise ConfigError(f"config file {p} cannot be read ({e.strerror or e}); check its permissions") from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {p} must end in .yaml, .yml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {p} does not parse: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides; values parse as YAML scalars/lists (never evaluated as code)."""
    out = dict(data)
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"--set expects key=value, got '{s}'")
        key, raw = s.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set key '{key}' is malformed")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, parts, value)
    return out


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """``data[a][b][c] = value`` for ``parts = [a, b, c]``, copying the nested dicts it passes through."""
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        node[part] = dict(nxt) if isinstance(nxt, dict) else {}
        node = node[part]
    node[parts[-1]] = value


def merge_under(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` over ``base``, nested mappings merged key by key (``data`` wins; neither is changed).

    How a config lays its own defaults under what the user gave: a benchmark's sizes for the library
    config it nests (``train: QuantTrainConfig``), or a preset such as ``--full``, stay under every key a
    file, ``--set`` or a flag sets, however deep."""
    out = dict(base)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_under(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys to already-typed values (explicit CLI options); None means "not given"."""
    out = dict(data)
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(out, key.split("."), value)
    return out


def resolve(cls: type[C], *, config_file: str | Path | None = None, sets: list[str] | None = None,
            base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, **explicit: Any) -> C:
    """Defaults < ``base`` (e.g. defaults scaled to a model) < file < --set < explicit (non-None) CLI options.

    ``overrides`` holds explicit options for dotted (nested) keys, ``explicit`` for top-level ones."""
    data: dict[str, Any] = dict(base or {})
    data.update(load_file(config_file) if config_file else {})
    data = apply_sets(data, sets or [])
    data = apply_overrides(data, {**(overrides or {}), **explicit})
    return build(cls, data)
