"""Run records: ``runs/<name>/`` with the resolved config, metrics, a log and artefacts.

All writes are atomic (temp file + rename), so a killed run never leaves a truncated
``metrics.json`` or checkpoint behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .errors import SlimguardError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


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


class Run:
    """One run directory. ``Run.create("attack-punc")`` -> ``runs/attack-punc/``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = logging.getLogger(f"slimguard.run.{self.path.name}")
        self.log.setLevel(logging.INFO)
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == (self.path / "log.txt").resolve()
                   for h in self.log.handlers):
            h = logging.FileHandler(self.path / "log.txt", encoding="utf-8")
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.log.addHandler(h)

    @classmethod
    def create(cls, name: str, *, root: str | Path | None = None, command: str | None = None,
               config: Any = None) -> "Run":
        run = cls((Path(root) if root else runs_root()) / name)
        info = {"name": name, "command": command, "git_commit": git_commit(), "started": now_iso()}
        atomic_write_json(run.path / "run.json", info)
        if config is not None:
            run.save_config(config)
        return run

    @classmethod
    def open(cls, path: str | Path, *, need: tuple[str, ...] = ()) -> "Run":
        p = Path(path)
        if not p.is_dir():
            raise SlimguardError(f"run directory {p} does not exist")
        missing = [n for n in need if not (p / n).exists()]
        if missing:
            raise SlimguardError(f"run directory {p} lacks {', '.join(missing)}; was it produced by the right command?")
        return cls(p)

    def save_config(self, config: Any) -> None:
        data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        atomic_write_json(self.path / "config.json", data)

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
