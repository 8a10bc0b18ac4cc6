"""Carry cached assets to a machine that cannot reach the registries (an air-gapped edge box, a lent GPU).

``pack`` writes one asset's cache as a tar stream cut into parts of at most ``part_bytes`` (for links that cap a
transfer's size), with a JSON index of every part's sha256. Files the asset can rebuild from others are left out:
a causal LM travels as its GGUF (98 MB for SmolLM2, 253 MB for Gemma-3), not as the 0.5-1 GB float32 folder that
``slimguard assets fetch`` converts it into. ``unpack`` finds the parts in any of the folders it is given (they may
have arrived in different transfers), checks every part's hash before reading it, extracts regular files only,
rebuilds what was left out, checks the files against the source machine's manifest, and renames the asset into
the cache, so a failed unpack leaves nothing half-written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable

from . import assets as A
from .errors import AssetError

FORMAT = "slimguard-asset-pack/1"
INDEX = ".pack.json"


class _PartWriter:
    """A write-only file that cuts what it is given into numbered parts of at most ``limit`` bytes."""

    def __init__(self, out: Path, stem: str, limit: int):
        self.out, self.stem, self.limit = out, stem, limit
        self.parts: list[dict] = []
        self.whole = hashlib.sha256()
        self._f: BinaryIO | None = None
        self._h = None
        self._n = 0

    def _roll(self) -> None:
        self._close_part()
        name = f"{self.stem}.part{len(self.parts):03d}"
        self._f, self._h, self._n = open(self.out / name, "wb"), hashlib.sha256(), 0
        self.parts.append({"file": name})

    def _close_part(self) -> None:
        if self._f is not None:
            self._f.close()
            self.parts[-1].update(bytes=self._n, sha256=self._h.hexdigest())
            self._f = None

    def write(self, data: bytes) -> int:
        self.whole.update(data)
        view = memoryview(data)
        while view:
            if self._f is None or self._n == self.limit:
                self._roll()
            take = min(len(view), self.limit - self._n)
            self._f.write(view[:take])
            self._h.update(view[:take])
            self._n += take
            view = view[take:]
        return len(data)

    def close(self) -> None:
        self._close_part()


def pack(name: str, out: str | Path, *, part_bytes: int = 60 << 20) -> Path:
    """Write asset ``name`` as ``NAME.partNNN`` files and ``NAME.pack.json`` into ``out``; returns the index."""
    if part_bytes < 1 << 20:
        raise AssetError(f"part size {part_bytes} bytes is below 1 MiB")
    # the parts go into a folder; refuse a file (or a path through one) before anything is written or deleted
    clash = next((p for p in (Path(out), *Path(out).parents) if p.exists() and not p.is_dir()), None)
    if clash is not None:
        raise AssetError(f"--out {out}: {clash} is a file, not a folder; give a folder for the parts "
                         "(it is created if missing)")
    asset = A.get(name)
    root = asset.path()
    if not asset.is_cached():
        raise AssetError(f"asset '{name}' is not cached here; run `slimguard assets fetch {name}` first")
    manifest = json.loads((root / A.MANIFEST).read_text())
    files = sorted(rel for rel in manifest["files"] if not any(fnmatch.fnmatch(rel, g) for g in asset.rebuilt))
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AssetError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    for old in out.glob(f"{name}.part*"):
        old.unlink()  # a stale part of an earlier pack would be mistaken for this one's
    w = _PartWriter(out, name, part_bytes)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for rel in [A.MANIFEST] + files:
            t.add(root / rel, arcname=rel, recursive=False)
    w.close()
    index = {"format": FORMAT, "name": name, "sha256": w.whole.hexdigest(), "parts": w.parts,
             "files": files, "rebuilt": list(asset.rebuilt)}
    path = out / f"{name}{INDEX}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    tmp.replace(path)
    return path


class _Joined:
    """A read-only stream over the parts in order; each part's hash is checked before its bytes are served."""

    def __init__(self, paths: list[Path], parts: list[dict]):
        self.paths, self.parts, self.i, self.f = paths, parts, -1, None

    def _next(self) -> bool:
        if self.f is not None:
            self.f.close()
        self.i += 1
        if self.i == len(self.paths):
            self.f = None
            return False
        p, want = self.paths[self.i], self.parts[self.i]
        if p.stat().st_size != want["bytes"] or A.sha256_file(p) != want["sha256"]:
            raise AssetError(f"{p}: does not match its size/sha256 in the pack index (a broken transfer; copy it again)")
        self.f = open(p, "rb")
        return True

    def read(self, n: int = -1) -> bytes:
        chunks = []
        while n != 0:
            if self.f is None and not self._next():
                break
            b = self.f.read(n if n > 0 else -1)
            if not b:
                if not self._next():
                    break
                continue
            chunks.append(b)
            n = n - len(b) if n > 0 else n
        return b"".join(chunks)


def _find(name: str, dirs: list[Path]) -> Path:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise AssetError(f"part {name} is in none of {', '.join(map(str, dirs))}; copy it over first")


def unpack(dirs: list[str | Path], *, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Install every asset whose ``NAME.pack.json`` is in ``dirs`` into the cache; returns their directories."""
    say = progress or (lambda s: None)
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            raise AssetError(f"{d} is not a folder")
    indexes = sorted({p for d in dirs for p in d.glob(f"*{INDEX}")})
    if not indexes:
        raise AssetError(f"no *{INDEX} in {', '.join(map(str, dirs))}: nothing to unpack")
    done = []
    for ip in indexes:
        try:
            index = json.loads(ip.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AssetError(f"{ip}: not a readable pack index ({e})") from None
        if index.get("format") != FORMAT:
            raise AssetError(f"{ip}: format {index.get('format')!r}, expected {FORMAT!r}")
        done.append(_unpack_one(index, dirs, say))
    return done


def _unpack_one(index: dict, dirs: list[Path], say: Callable[[str], None]) -> Path:
    name = index["name"]
    asset = A.get(name)  # an unknown name fails here, before anything is written
    paths = [_find(p["file"], dirs) for p in index["parts"]]

    def fill(work: Path) -> None:
        say(f"{name}: joining {len(paths)} part(s)")
        with tarfile.open(fileobj=_Joined(paths, index["parts"]), mode="r|") as t:
            for m in t:
                if not (m.isfile() or m.isdir()):
                    raise AssetError(f"{name}: pack member {m.name!r} is not a plain file; refusing it")
                t.extract(m, work, filter="data")  # no absolute paths, no '..', no links or devices
        manifest = json.loads((work / A.MANIFEST).read_text())
        missing = [rel for rel in index["files"] if not (work / rel).is_file()]
        if missing:
            raise AssetError(f"{name}: pack lacks {missing[:3]}")
        for rel in index["files"]:
            if A.sha256_file(work / rel) != manifest["files"][rel]:
                raise AssetError(f"{name}: {rel} does not match the source machine's manifest")
        if index["rebuilt"]:
            if asset.rebuild is None:
                raise AssetError(f"{name}: the pack left out {index['rebuilt']} but this version cannot rebuild them")
            say(f"{name}: rebuilding {', '.join(index['rebuilt'])}")
            asset.rebuild(work)
            differ = [rel for rel, h in manifest["files"].items()
                      if rel not in index["files"] and (work / rel).is_file() and A.sha256_file(work / rel) != h]
            if differ:
                # a rebuild under other library versions may round differently; the packed sources did match
                say(f"{name}: rebuilt {differ[:3]} differ from the source machine's (library versions?); "
                    "recording this machine's hashes")

    return A.install_staged(asset, fill)
