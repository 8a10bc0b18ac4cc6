"""Resumable training checkpoints: one format, one atomic write, one resume check for every trainer.

A checkpoint holds the model (or trainable-parameter) state, the optimizer and scheduler
states, the step, every RNG state the trainer draws from (torch CPU, the current CUDA
device when one is in use, named ``torch.Generator`` s, named ``numpy.random.Generator`` s and
optionally Python's ``random``), trainer-specific extras (loss history, an EMA, ...), and
the *config fingerprint*: the sha256 of the canonical JSON of the training-relevant config,
stored together with that config so a refusal can name the fields that differ.

The file is a plain ``torch.save`` dict of tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)``: no pickled code runs when a checkpoint is read.

Writes stream to a temp file in the checkpoint's own folder and ``os.replace`` it, so a kill
leaves the previous checkpoint intact and a multi-GB state is never held twice in memory.
A SIGKILL mid-write still leaves the temp file (``.checkpoint.pt.XXXXXXXX``) behind;
:func:`save_checkpoint` removes those siblings before it writes and trainers call
:func:`clean_stale_temps` on their checkpoint folder when they start.

Used by the four trainers: ``slim/quant/train.py``, ``slim/compress/train.py``,
``guard/backdoor/victim.py`` and ``guard/diffusion/train.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SlimguardError
from .runs import atomic_torch_save

FORMAT = "slimguard-checkpoint"
VERSION = 1
_RESTART = "start without --resume or use --overwrite"
# tempfile.mkstemp appends 8 characters from this alphabet to the prefix ".<name>."
_TEMP_SUFFIX = r"\.[A-Za-z0-9_]{8}(\.tmp)?"


# --------------------------------------------------------------------------- fingerprint


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _plain(config: Any) -> dict:
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        # a JSON round trip makes tuples lists and keys strings, as a reloaded checkpoint sees them
        return json.loads(_canonical(dict(config)))
    raise TypeError(f"a fingerprint needs a pydantic config or a mapping, got {type(config).__name__}")


@dataclass(frozen=True)
class Fingerprint:
    """The training-relevant config of a run and its sha256 (of the canonical JSON)."""

    config: dict
    digest: str

    @classmethod
    def of(cls, config: Any, *, exclude: tuple[str, ...] = (), **more: Any) -> "Fingerprint":
        """Fingerprint ``config`` (a pydantic config or a mapping) without the top-level keys in ``exclude``
        (cadence, evaluation size: what may change between a run and its resume), plus ``more`` keys
        (seed, data digest, ...) that are not part of the config object."""
        d = {k: v for k, v in _plain(config).items() if k not in exclude}
        d.update(_plain(more))
        return cls(d, hashlib.sha256(_canonical(d).encode()).hexdigest())


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_fields(a: dict, b: dict) -> list[str]:
    """Dotted names of the leaves where two configs differ (present in only one counts)."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, ...) != fb.get(k, ...))


def data_digest(*parts: Any) -> str:
    """A short sha256 of training data (arrays, tensors, strings, numbers), for fingerprints of trainers whose
    data does not follow from their config."""
    h = hashlib.sha256()
    for p in parts:
        if hasattr(p, "detach"):  # torch tensor
            p = p.detach().cpu().numpy()
        if hasattr(p, "tobytes"):  # numpy array
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(p.tobytes())
        else:
            h.update(_canonical(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- RNG states


@dataclass
class RngState:
    """Every random stream a trainer draws from, as tensors and ints (``weights_only``-loadable)."""

    torch_cpu: Any  # torch.ByteTensor
    torch_cuda: Any = None  # the current CUDA device's state, when CUDA is in use
    generators: dict[str, Any] = field(default_factory=dict)  # name -> torch.Generator state
    numpy: dict[str, dict] = field(default_factory=dict)  # name -> numpy bit_generator.state
    python: tuple | None = None  # random.getstate()

    @classmethod
    def capture(cls, *, generators: Mapping[str, Any] | None = None, numpy_generators: Mapping[str, Any] | None = None,
                python_random: bool = False) -> "RngState":
        import torch

        # only an initialised CUDA: asking for the state would create a context on a CPU run
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, {k: g.get_state() for k, g in (generators or {}).items()},
                   {k: g.bit_generator.state for k, g in (numpy_generators or {}).items()},
                   random.getstate() if python_random else None)

    def restore(self, *, generators: Mapping[str, Any] | None = None, numpy_generators: Mapping[str, Any] | None = None,
                python_random: bool = False) -> None:
        """Set the global torch streams and the given generators back to the captured states; a generator the
        checkpoint lacks is an error (the checkpoint was written by other code)."""
        import torch

        missing = [k for k in (generators or {}) if k not in self.generators]
        missing += [k for k in (numpy_generators or {}) if k not in self.numpy]
        if python_random and self.python is None:
            missing.append("python random")
        if missing:
            raise KeyError(", ".join(missing))
        torch.set_rng_state(self.torch_cpu)
        # a run written on a GPU resumes on CPU too (trainers draw their data on CPU generators); the
        # trainer has moved its model to the device before restoring, so CUDA is initialised if it is used
        if self.torch_cuda is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.set_rng_state(self.torch_cuda)
        for k, g in (generators or {}).items():
            g.set_state(self.generators[k])
        for k, g in (numpy_generators or {}).items():
            g.bit_generator.state = self.numpy[k]
        if python_random:
            random.setstate((self.python[0], tuple(self.python[1]), self.python[2]))

    def to_dict(self) -> dict:
        return {"torch_cpu": self.torch_cpu, "torch_cuda": self.torch_cuda, "generators": self.generators,
                "numpy": self.numpy, "python": self.python}

    @classmethod
    def from_dict(cls, d: dict) -> "RngState":
        return cls(d["torch_cpu"], d.get("torch_cuda"), dict(d.get("generators", {})), dict(d.get("numpy", {})),
                   d.get("python"))


# --------------------------------------------------------------------------- checkpoint


@dataclass
class Checkpoint:
    """A loaded checkpoint; :meth:`restore` puts it back into a freshly built trainer."""

    path: Path
    kind: str  # which trainer wrote it
    step: int
    fingerprint: Fingerprint
    model: dict  # state dict (all parameters, or the trainable ones)
    optimizer: dict
    scheduler: dict | None
    rng: RngState
    extra: dict = field(default_factory=dict)

    def restore(self, *, model=None, optimizer=None, scheduler=None, generators: Mapping[str, Any] | None = None,
                numpy_generators: Mapping[str, Any] | None = None, python_random: bool = False,
                allow_missing: Callable[[str], bool] | None = None) -> None:
        """Load the states into the given objects. ``allow_missing(key)`` names model keys the checkpoint
        may lack (e.g. frozen embeddings a trainer does not save); any other mismatch is an error."""
        if model is not None:
            try:
                missing, unexpected = model.load_state_dict(self.model, strict=False)
            except RuntimeError as e:  # a shape mismatch
                raise SlimguardError(f"checkpoint {self.path} does not match the model: {_first_line(e)}; "
                                     f"{_RESTART}") from None
            missing = [k for k in missing if not (allow_missing and allow_missing(k))]
            if missing or unexpected:
                raise SlimguardError(f"checkpoint {self.path} does not match the model (missing: "
                                     f"{_few(missing)}; unexpected: {_few(unexpected)}); {_RESTART}")
        if optimizer is not None:
            try:
                optimizer.load_state_dict(self.optimizer)
            except (ValueError, KeyError) as e:
                raise SlimguardError(f"checkpoint {self.path} has a different optimizer layout ({_first_line(e)}); "
                                     f"it was written by another slimguard version: {_RESTART}") from None
        if scheduler is not None:
            if self.scheduler is None:
                raise SlimguardError(f"checkpoint {self.path} holds no scheduler state; {_RESTART}")
            scheduler.load_state_dict(self.scheduler)
        try:
            self.rng.restore(generators=generators, numpy_generators=numpy_generators, python_random=python_random)
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise SlimguardError(f"checkpoint {self.path} lacks or has an unusable random state ({_first_line(e)}); "
                                 f"{_RESTART}") from None


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _few(keys: list[str], n: int = 4) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "") if keys else "none"


def _temp_pattern(name: str | None) -> re.Pattern:
    body = re.escape(name) if name else r".+\.pt"
    return re.compile(rf"^\.{body}{_TEMP_SUFFIX}$")


def clean_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove temp files a killed checkpoint write left in ``folder`` (``.<name>.XXXXXXXX``; with no
    ``name``, those of any ``*.pt``). Call it when a run starts, before anything writes there.
    Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    rx = _temp_pattern(name)
    gone = []
    for p in folder.iterdir():
        if rx.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def save_checkpoint(path: str | Path, *, kind: str, step: int, fingerprint: Fingerprint, model, optimizer,
                    scheduler=None, generators: Mapping[str, Any] | None = None,
                    numpy_generators: Mapping[str, Any] | None = None, python_random: bool = False,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``model`` is a module or a state dict (e.g. only the trainable
    tensors); ``extra`` holds trainer-specific plain data (losses, an EMA state, ...)."""
    path = Path(path)
    clean_stale_temps(path.parent, path.name)  # a killed earlier write of this same file
    state = model.state_dict() if hasattr(model, "state_dict") and not isinstance(model, Mapping) else dict(model)
    obj = {"format": FORMAT, "version": VERSION, "kind": kind, "step": int(step),
           "fingerprint": fingerprint.digest, "config": _canonical(fingerprint.config),
           "model": state, "optimizer": optimizer.state_dict(),
           "scheduler": scheduler.state_dict() if scheduler is not None else None,
           "rng": RngState.capture(generators=generators, numpy_generators=numpy_generators,
                                   python_random=python_random).to_dict(),
           "extra": extra or {}}
    atomic_torch_save(obj, path)
    return path


_KEYS = ("kind", "step", "fingerprint", "config", "model", "optimizer", "scheduler", "rng", "extra")


def load_checkpoint(path: str | Path, *, kind: str, fingerprint: Fingerprint,
                    missing_ok: bool = False) -> Checkpoint | None:
    """Read and vet a checkpoint for resuming: it must be intact, of this format and version, written by the
    ``kind`` trainer, and by a run whose config has the same ``fingerprint``. Every refusal is a one-line
    :class:`SlimguardError` naming the file. A missing file is an error too, or ``None`` with ``missing_ok``."""
    import torch

    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise SlimguardError(f"--resume: no checkpoint at {path}; start without --resume")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files before refusing them
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (truncated zip, foreign pickle, unreadable file: all the same to the user)
        raise SlimguardError(f"checkpoint {path} is not a slimguard checkpoint or truncated ({_first_line(e)}); "
                             f"delete it and {_RESTART}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SlimguardError(f"checkpoint {path} is not a slimguard checkpoint or truncated (no format marker: "
                             f"written by another tool or a slimguard before checkpoint format {VERSION}); {_RESTART}")
    if raw.get("version") != VERSION:
        raise SlimguardError(f"checkpoint {path} has format version {raw.get('version')}, this slimguard reads "
                             f"version {VERSION}; {_RESTART}")
    lacking = [k for k in _KEYS if k not in raw]
    if lacking:
        raise SlimguardError(f"checkpoint {path} is not a slimguard checkpoint or truncated (lacks "
                             f"{', '.join(lacking)}); {_RESTART}")
    if raw["kind"] != kind:
        raise SlimguardError(f"checkpoint {path} was written by the {raw['kind']} trainer, not {kind}; {_RESTART}")
    try:
        stored = json.loads(raw["config"])
    except (TypeError, ValueError):
        stored = None
    if raw["fingerprint"] != fingerprint.digest:
        fields = _few(differing_fields(stored, fingerprint.config), 6) if isinstance(stored, dict) else "unknown"
        raise SlimguardError(f"checkpoint {path} was written by a run with a different config (fields: {fields}); "
                             f"{_RESTART}")
    return Checkpoint(path, kind, int(raw["step"]), Fingerprint(stored, raw["fingerprint"]), raw["model"],
                      raw["optimizer"], raw["scheduler"], RngState.from_dict(raw["rng"]), dict(raw["extra"]))
