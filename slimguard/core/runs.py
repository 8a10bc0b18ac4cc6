"""Run records: ``runs/<name>/`` with the resolved config, metrics, a log and artefacts.

The contract every command follows (docs/runs.md):

- a run name is a plain folder name (``[A-Za-z0-9._-]+``, not ``.``/``..``), so a run is
  always created under the runs root (``$SLIMGUARD_RUNS``, default ``./runs``);
- an existing run is never changed unless the caller asks: ``resume=True`` continues it
  after checking that the stored config equals the new one (the differing fields are
  named), ``overwrite=True`` empties it first; otherwise :class:`RunExistsError`;
- a run is locked (``flock`` on ``.lock``) while a process writes it, so a second process
  fails at once instead of interleaving checkpoints and logs;
- ``run.json`` records ``status`` (``running``, ``done``, ``failed`` with the one-line
  error, ``interrupted``) and keeps ``started`` across resumes;
- all writes are atomic (temp file + rename) with one file mode (0666 minus the umask), and
  temp files a killed process left behind are removed at the next start.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import SlimguardError

RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
# mkstemp's names: ".<target>.<8 random chars>" (+ ".tmp" since this module adds it)
_TEMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}(\.tmp)?")
LOCK = ".lock"
STATUSES = ("running", "done", "failed", "interrupted")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# mkstemp creates 0600 files; every run file gets the mode a plain open() would give instead
FILE_MODE = 0o666 & ~_umask()


class RunExistsError(SlimguardError):
    """The run folder exists and the caller asked neither to resume nor to overwrite it."""


class RunLockedError(SlimguardError):
    """Another process is writing the run."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(file)`` into a temp file beside it, then rename: a killed process
    leaves the old file (or none), never a truncated one, and nothing is held twice in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any):
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` straight into a temp file in the same folder, then rename."""
    import torch

    return _atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files a killed atomic write left under ``folder`` (recursively); returns them."""
    gone = []
    for p in Path(folder).rglob(".*"):
        if p.is_file() and p.name != LOCK and _TEMP.fullmatch(p.name):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def git_commit(short: bool = True) -> str:
    cmd = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parents[2])
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs_root() -> Path:
    return Path(os.environ.get("SLIMGUARD_RUNS", "runs"))


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name, else a one-line error (no paths, no ``..``)."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise SlimguardError(f"run name {name!r} is not a plain name: use only letters, digits, '.', '_' and '-' "
                             f"(runs are created under {runs_root()}/)")
    return name


def safe_run_name(*parts: Any) -> str:
    """A default run name built from config values (model paths, file names): unsafe characters become '-'."""
    name = "-".join(str(p) for p in parts if p not in (None, ""))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    return name


def diff_config(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (added and removed keys count)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(dict.fromkeys([*old, *new])):
            out += diff_config(old.get(k, "<unset>"), new.get(k, "<unset>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix[:-1] or "<config>"]


def _config_dict(config: Any) -> Any:
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(config, default=_json_default)) if config is not None else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


class Run:
    """One run directory. ``Run.create("attack-punc")`` -> ``runs/attack-punc/``, locked until finished.

    Use it as a context manager (``with Run.create(...) as run:``) or call :meth:`finish`, so
    ``run.json`` ends as ``done``, ``failed`` or ``interrupted`` and the lock is released.
    ``Run(path)`` / :meth:`open` attach to an existing folder for reading (no lock).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self._handler: logging.Handler | None = None
        self._fresh = False  # created empty by this process (see __exit__)
        self.resumed = False  # continuing an earlier start (trainers load their checkpoint)
        self.progress = True  # draw progress bars (the CLI's --no-progress turns them off)

    @property
    def log(self) -> logging.Logger:
        """The run's logger, writing ``log.txt`` (opened on first use: reading a run writes nothing)."""
        log = logging.getLogger(f"slimguard.run.{self.path.resolve()}")
        if self._handler is None:
            log.setLevel(logging.INFO)
            log_file = (self.path / "log.txt").resolve()
            for h in log.handlers:
                if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file:
                    self._handler = h
            if self._handler is None:
                self._handler = logging.FileHandler(log_file, encoding="utf-8")
                self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
                log.addHandler(self._handler)
        return log

    # -- creating, locking, finishing ---------------------------------------------------------

    @classmethod
    def create(cls, name: str, *, root: str | Path | None = None, command: str | None = None,
               config: Any = None, resume: bool = False, overwrite: bool = False) -> "Run":
        """Start ``<root>/<name>/`` (root: the runs root) under the rules in the module docstring."""
        check_run_name(name)
        if resume and overwrite:
            raise SlimguardError("--resume and --overwrite exclude each other: resume continues a run, "
                                 "overwrite replaces it")
        path = (Path(root) if root else runs_root()) / name
        existing = path.is_dir() and any(p.name != LOCK for p in path.iterdir())
        if path.exists() and not path.is_dir():
            raise SlimguardError(f"run path {path} exists and is not a folder")
        if existing and not (resume or overwrite):
            raise RunExistsError(f"run '{name}' already exists at {path}; pass --resume to continue it "
                                 f"or --overwrite to replace it (or choose another --run name)")
        if resume and not existing:
            raise SlimguardError(f"--resume: run '{name}' does not exist yet at {path}; start it without --resume")
        new_config = _config_dict(config)
        if resume and new_config is not None:
            old = _read_json(path / "config.json")
            if old is not None:
                diff = diff_config(old, new_config)
                if diff:
                    shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                    raise SlimguardError(f"--resume: run '{name}' was started with a different config ({shown}); "
                                         f"resume with the same settings or use --overwrite")
        path.mkdir(parents=True, exist_ok=True)
        fd = _lock(path, name)
        try:
            if overwrite:
                for p in path.iterdir():
                    if p.name != LOCK:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            remove_stale_temps(path)
            prev = _read_json(path / "run.json") if resume else None
            prev = prev if isinstance(prev, dict) else {}
            run = cls(path)
            run._lock_fd = fd
            run._fresh = not existing
            run.resumed = resume
            info = {"name": name, "command": command, "git_commit": git_commit(),
                    "started": prev.get("started", now_iso()), "status": "running", "pid": os.getpid()}
            if resume:
                info["resumed"] = [*prev.get("resumed", []), now_iso()]
            atomic_write_json(path / "run.json", info)
            if new_config is not None:
                atomic_write_json(path / "config.json", new_config)
        except BaseException:
            _unlock(fd)
            raise
        return run

    @classmethod
    def reuse(cls, name: str, *, root: str | Path | None = None, command: str | None = None,
              config: Any = None) -> "Run":
        """Continue ``name`` if it exists (same config required), else start it: for caches such as
        a benchmark's trained models, which a later call picks up where an earlier one stopped."""
        path = (Path(root) if root else runs_root()) / check_run_name(name)
        exists = path.is_dir() and any(p.name != LOCK for p in path.iterdir())
        return cls.create(name, root=root, command=command, config=config, resume=exists)

    def finish(self, status: str = "done", error: str | None = None) -> None:
        """Record how the run ended and release its lock (idempotent)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        info = self.info()
        info.update(status=status, finished=now_iso())
        info.pop("pid", None)
        if error:
            info["error"] = error.splitlines()[0] if error.strip() else error
        else:
            info.pop("error", None)
        atomic_write_json(self.path / "run.json", info)
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None
        if self._handler is not None:
            self._handler.close()
            logging.getLogger(f"slimguard.run.{self.path.resolve()}").removeHandler(self._handler)
            self._handler = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("done")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("interrupted", "interrupted by the user (SIGINT)")
        elif issubclass(exc_type, SlimguardError) and self._fresh and not self._produced():
            # bad input found before anything was made: leave no half-made folder behind
            self.release()
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            msg = str(exc) if isinstance(exc, SlimguardError) else f"{exc_type.__name__}: {exc}"
            self.finish("failed", msg)
        return False

    def _produced(self) -> bool:
        return any(p.name not in (LOCK, "run.json", "config.json", "log.txt") for p in self.path.iterdir())

    def __del__(self):
        try:
            if self._lock_fd is not None:
                _unlock(self._lock_fd)
        except Exception:  # interpreter shutdown
            pass

    @classmethod
    def open(cls, path: str | Path, *, need: tuple[str, ...] = ()) -> "Run":
        p = Path(path)
        if not p.is_dir():
            raise SlimguardError(f"run directory {p} does not exist")
        missing = [n for n in need if not (p / n).exists()]
        if missing:
            raise SlimguardError(f"run directory {p} lacks {', '.join(missing)}; was it produced by the right command?")
        return cls(p)

    # -- contents -------------------------------------------------------------------------------

    def info(self) -> dict:
        d = _read_json(self.path / "run.json")
        return d if isinstance(d, dict) else {}

    def save_config(self, config: Any) -> None:
        atomic_write_json(self.path / "config.json", _config_dict(config))

    def save_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.path / "metrics.json", metrics)

    def metrics(self) -> dict:
        p = self.path / "metrics.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def config(self) -> dict:
        p = self.path / "config.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def artefact(self, name: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def _lock(path: Path, name: str) -> int:
    import fcntl

    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunLockedError(f"run '{name}' is being written by another process"
                                 f"{f' (pid {holder})' if holder else ''}; wait for it to finish "
                                 f"or choose another --run name") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    import fcntl

    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: str | Path) -> bool:
    """Whether a live process holds the run's lock (a 'running' run whose lock is free was killed)."""
    import fcntl

    p = Path(path) / LOCK
    if not p.exists():
        return False
    fd = os.open(p, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
