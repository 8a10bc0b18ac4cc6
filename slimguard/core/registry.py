"""Method registries: one place that knows which attacks, defences, selectors... exist.

Each method registers itself in its own file with one decorator::

    DEFENCES = Registry("defence", load="slimguard.guard.backdoor.defences")

    @DEFENCES.register("onion")
    class Onion(Defence): ...

and every list of names (config fields, CLI choices, benchmark grids) is read from the
registry instead of being written out by hand. Names come back in registration order, which
is the import order of the method files (each family's package ``__init__`` imports them).

A config field takes a registered name through :meth:`Registry.name_type`: membership is
checked on validation (so a method registered later, e.g. in a test, is valid at once), the
JSON schema lists the names, and :func:`slimguard.core.config.build` reports an unknown one as
``unknown value 'x' for key 'poison.attack'; did you mean 'punc'?``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Generic, Iterator, TypeVar

from pydantic_core import PydanticCustomError, core_schema

from .errors import ConfigError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # what a CLI choice and a --set value can carry unquoted
UNKNOWN = "unknown_name"  # pydantic error type of a name no registry entry has (see core.config)


class Registry(Generic[T]):
    """Registered name -> object (a class, a factory), in registration order.

    ``family`` names the kind of method in messages ("unknown defence 'x'"); ``load`` is the
    module whose import registers every method of the family. It is imported on the first
    lookup, so a config module can hold a registry-backed field without importing the
    (possibly heavy) method files until a name is actually checked.
    """

    def __init__(self, family: str, *, load: str | None = None):
        self.family = family
        self._load = load
        self._loaded = load is None
        self._items: dict[str, T] = {}

    # ------------------------------------------------------------------ registering

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` over the method's class or factory."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.family} name {name!r} must be lower-case letters, digits, '_' or '-'")

        def deco(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj and _qualname(old) != _qualname(obj):
                # a module reloaded in place re-registers the same qualified name; anything else is a clash
                raise ValueError(f"{self.family} '{name}' is registered twice: by {_qualname(old)} and {_qualname(obj)}")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a throw-away method put the registry back with this)."""
        self._items.pop(name, None)

    # ------------------------------------------------------------------ lookups

    def _ensure(self) -> None:
        if not self._loaded:
            self._loaded = True  # before the import: the method files look themselves up while registering
            try:
                importlib.import_module(self._load)
            except BaseException:
                self._loaded = False  # a failed import is reported again, not hidden behind a partial registry
                raise

    @property
    def loaded(self) -> bool:
        """Whether every method is registered already (reading the names imports nothing)."""
        return self._loaded

    def names(self) -> tuple[str, ...]:
        self._ensure()
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._ensure()
        return list(self._items.items())

    def values(self) -> list[T]:
        self._ensure()
        return list(self._items.values())

    def get(self, name: str) -> T:
        """The object registered as ``name``; a one-line :class:`ConfigError` with a suggestion otherwise."""
        self._ensure()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.family} '{name}'{self.hint(name)}") from None

    def hint(self, name: Any) -> str:
        """``; did you mean 'x'?`` for a near miss, else ``; choose one of a, b, c``."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1) if isinstance(name, str) else []
        if close:
            return f"; did you mean '{close[0]}'?"
        return f"; choose one of {', '.join(names)}" if names else f"; no {self.family} is registered"

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {list(self._items)})"

    # ------------------------------------------------------------------ config fields

    def check(self, name: str) -> str:
        """``name`` if registered, else a pydantic error that :func:`core.config.build` turns into one line."""
        if name not in self:
            raise PydanticCustomError(UNKNOWN, "unknown {family} '{value}'{hint}",
                                      {"family": self.family, "value": str(name), "hint": self.hint(name)})
        return name

    def name_type(self) -> Any:
        """``Annotated[str, ...]`` for a config field that takes one registered name (``list[...]`` for several)."""
        return Annotated[str, _InRegistry(self)]

    def config_with_methods(self, base: type, name: str, module: str, doc: str, settings: str = "settings") -> type:
        """``base`` plus one sub-config field per registered method (``cls.config_type``, named after it), so a
        method adds its settings by registering, not by editing the config's file."""
        from pydantic import Field, create_model

        clash = [n for n in self.names() if n in base.model_fields]
        if clash:
            raise ValueError(f"{self.family} names {clash} clash with {name}'s own fields")
        subs = {n: (cls.config_type, Field(default_factory=cls.config_type, description=f"{cls.title} {settings}."))
                for n, cls in self.items()}
        return create_model(name, __base__=base, __module__=module, __doc__=doc, **subs)


@dataclass(frozen=True, eq=False)
class _InRegistry:
    """Pydantic metadata: validate a string against ``registry`` and list its names in the JSON schema."""

    registry: Registry

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.registry.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict:
        out = handler(schema)
        out["enum"] = list(self.registry.names())
        return out


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
