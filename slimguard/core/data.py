"""Datasets: labelled text, long text and images, by asset name or user file.

Samples are typed records (:class:`TextSample`), never positional tuples. Every labelled
dataset comes back as a fixed, seeded train/dev/test split (:class:`TextSplits`), so two
commands given the same dataset and seed see exactly the same examples.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import assets
from .errors import DataError

TEXT_DATASETS = ("rotten-tomatoes", "sms-spam", "20newsgroups")
LONG_TEXTS = ("pg-essays", "friends")
IMAGE_DATASETS = ("fashion-mnist", "mnist")


@dataclass(frozen=True)
class TextSample:
    text: str
    label: int
    uid: int  # stable index in the full dataset, survives splitting and poisoning
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def with_(self, **kw) -> "TextSample":
        return replace(self, **kw)


@dataclass
class TextSplits:
    name: str
    label_names: list[str]
    train: list[TextSample]
    dev: list[TextSample]
    test: list[TextSample]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict:
        return {"name": self.name, "labels": self.label_names,
                "sizes": {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}}


# --------------------------------------------------------------------------- readers


def _read_rotten_tomatoes(root: Path) -> tuple[list[str], list[str]]:
    import bz2

    with bz2.open(root / "raw" / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    # label 1 = fresh (positive), as in SST-2
    return [r["text"] for r in rows], [("positive" if r["category"] == "fresh" else "negative") for r in rows]


def _read_sms_spam(root: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(root / "raw" / "spam_collection.csv", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 2 and row[0] in ("ham", "spam"):
                labels.append(row[0])
                texts.append(row[1])
    return texts, labels


def _read_orange_tab(path: Path, text_col: str, label_col: str | None) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        f.readline(), f.readline()  # Orange's type and flag rows
        rows = [line.rstrip("\n").split("\t") for line in f]
    ti = header.index(text_col)
    li = header.index(label_col) if label_col else None
    rows = [r for r in rows if len(r) > ti]
    return [r[ti] for r in rows], [r[li] if li is not None else "" for r in rows]


def _read_20ng(root: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for part in ("train", "test"):
        t, y = _read_orange_tab(root / "raw" / f"20newsgroups-{part}.tab", "Text", "Category")
        texts += t
        labels += y
    return texts, labels


_READERS = {"rotten-tomatoes": _read_rotten_tomatoes, "sms-spam": _read_sms_spam, "20newsgroups": _read_20ng}
# label order fixes label ids: binary tasks keep the conventional positive/attack class as 1
_LABEL_ORDER = {"rotten-tomatoes": ["negative", "positive"], "sms-spam": ["ham", "spam"]}


def _read_user_file(path: Path) -> tuple[list[str], list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read dataset file {path}: {e.strerror}") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"dataset file {path} is not UTF-8 text; re-encode it as UTF-8") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}: line {i} is not valid JSON") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(content.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise DataError(f"dataset file {path} must end in .csv, .tsv or .jsonl")
    if not rows or not isinstance(rows[0], dict) or not {"text", "label"} <= set(rows[0]):
        have = sorted(rows[0]) if rows and isinstance(rows[0], dict) else []
        raise DataError(f"dataset file {path} needs 'text' and 'label' columns (found: {', '.join(have) or 'none'})")
    bad = next((i for i, r in enumerate(rows) if not isinstance(r.get("text"), str) or r.get("label") in (None, "")), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} has no text or no label")
    return [r["text"] for r in rows], [str(r["label"]) for r in rows]


def load_text_dataset(name_or_path: str = "rotten-tomatoes", *, seed: int = 0, dev_frac: float = 0.1,
                      test_frac: float = 0.1, max_samples: int | None = None) -> TextSplits:
    """Labelled text as seeded train/dev/test splits.

    ``max_samples`` draws a seeded, stratified-by-shuffle subset before splitting, for fast
    runs; it is recorded in the split name so results never pass for full-size ones.
    """
    if not 0 < dev_frac < 1 or not 0 < test_frac < 1 or dev_frac + test_frac >= 1:
        raise DataError("dev_frac and test_frac must be in (0, 1) and sum to less than 1")
    p = Path(name_or_path).expanduser()
    if name_or_path in _READERS:
        texts, labels = _READERS[name_or_path](assets.require(name_or_path))
    elif p.suffix and (p.exists() or "/" in name_or_path or p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json")):
        if not p.is_file():
            raise DataError(f"dataset file {p} does not exist")
        texts, labels = _read_user_file(p)
    else:
        if name_or_path in assets.REGISTRY:
            raise DataError(f"asset '{name_or_path}' is not a labelled text dataset (try one of {', '.join(TEXT_DATASETS)})")
        assets.get(name_or_path)  # raises with a suggestion
        raise AssertionError("unreachable")
    names = _LABEL_ORDER.get(name_or_path) or sorted(set(labels))
    if len(set(labels)) < 2:
        raise DataError(f"dataset '{name_or_path}' has only one class ({labels[0] if labels else 'empty'}); need at least two")
    index = {n: i for i, n in enumerate(names)}
    samples = [TextSample(t, index[y], i) for i, (t, y) in enumerate(zip(texts, labels))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    tag = name_or_path if name_or_path in _READERS else p.name
    if max_samples is not None and max_samples < len(samples):
        order = order[:max_samples]
        tag = f"{tag}[{max_samples}]"
    n = len(order)
    n_test, n_dev = max(1, int(n * test_frac)), max(1, int(n * dev_frac))
    pick = lambda idx: [samples[i] for i in idx]  # noqa: E731
    return TextSplits(tag, names, pick(order[n_test + n_dev:]), pick(order[n_test:n_test + n_dev]), pick(order[:n_test]))


# --------------------------------------------------------------------------- long text


def load_long_texts(name_or_path: str = "pg-essays") -> list[str]:
    """Long documents: essays (one string each) or Friends episodes (one string each)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        try:
            return [p.read_text(encoding="utf-8")]
        except UnicodeDecodeError:
            raise DataError(f"{p} is not UTF-8 text") from None
    if p.is_dir():
        return [f.read_text(encoding="utf-8") for f in sorted(p.glob("*.txt"))]
    if name_or_path == "pg-essays":
        root = assets.require("pg-essays") / "raw"
        return [f.read_text(encoding="utf-8") for f in sorted(root.glob("*.txt"))]
    if name_or_path == "friends":
        root = assets.require("friends") / "raw"
        with open(root / "friends-transcripts.tab", encoding="utf-8") as f:
            f.readline(), f.readline(), f.readline()
            episodes: dict[str, list[str]] = {}
            for line in f:
                r = line.rstrip("\n").split("\t")
                if len(r) >= 6:
                    episodes.setdefault(r[2], []).append(f"{r[4]}: {r[5].strip()}")
        return ["\n".join(lines) for _, lines in sorted(episodes.items())]
    if name_or_path in assets.REGISTRY:
        raise DataError(f"asset '{name_or_path}' is not a long-text asset (try one of {', '.join(LONG_TEXTS)})")
    assets.get(name_or_path)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- images


@dataclass
class ImageSplits:
    """uint8 images ``[N, H, W]`` and int64 labels."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_images(name: str = "fashion-mnist", *, seed: int = 0) -> ImageSplits:
    if name == "fashion-mnist":
        raw = assets.require(name) / "raw"
        return ImageSplits(name, FASHION_CLASSES,
                           _idx(raw / "train-images-idx3-ubyte.gz"), _idx(raw / "train-labels-idx1-ubyte.gz").astype(np.int64),
                           _idx(raw / "t10k-images-idx3-ubyte.gz"), _idx(raw / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    if name == "mnist":
        raw = assets.require(name) / "raw"
        arr = np.loadtxt(raw / "mnist_5k.csv.gz", delimiter=",", dtype=np.float64)
        x = arr[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
        y = arr[:, -1].astype(np.int64)
        order = np.random.default_rng(seed).permutation(len(y))
        cut = int(len(y) * 0.8)
        tr, te = order[:cut], order[cut:]
        return ImageSplits(name, [str(i) for i in range(10)], x[tr], y[tr], x[te], y[te])
    if name in assets.REGISTRY:
        raise DataError(f"asset '{name}' is not an image dataset (try one of {', '.join(IMAGE_DATASETS)})")
    assets.get(name)
    raise AssertionError("unreachable")
