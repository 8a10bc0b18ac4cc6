"""Datasets: labelled text, long text and images, by asset name or user file.

Samples are typed records (:class:`TextSample`), never positional tuples. Every labelled
dataset comes back as a fixed, seeded train/dev/test split (:class:`TextSplits`), so two
commands given the same dataset and seed see exactly the same examples.

Labels keep the user's values. A sample's ``label`` is an id ``0..K-1``; ``label_names[id]``
is the user's label as a string and ``label_values[id]`` the value itself, so every export
can map ids back (:func:`canonical_label` turns any spelling of a label into that value):

- numeric labels (ints, integral floats, numeric strings: ``1``, ``1.0``, ``"1"``, ``"1.0"``)
  are one class each, ordered numerically, so integer labels ``0..K-1`` get id == value and
  ``target_label=2`` means the user's class 2;
- other labels are strings in sorted (code point) order; the built-in binary assets fix their
  order instead so the positive/attack class is 1;
- a file mixing the two kinds (``0, 1, spam``) is an error naming the file and the values,
  because any order we picked would silently shift ids against what the user wrote.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import numpy as np

from . import assets
from .errors import DataError

TEXT_DATASETS = ("rotten-tomatoes", "sms-spam", "20newsgroups", "20newsgroups-comp-rec")
# long documents; the short-text assets (reviews, SMS, posts, tweets) come packed into documents of consecutive items
LONG_TEXTS = ("pg-essays", "friends", "bbc-news", "grimm-tales", "book-excerpts", "election-tweets", "20newsgroups",
              "rotten-tomatoes", "sms-spam")
IMAGE_DATASETS = ("fashion-mnist", "mnist")

LabelValue = Union[int, float, str]
# plain decimal numbers only: int()/float() would also take "nan", "inf" and "1_000", which
# users mean as names (or typos), not as numbers
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def canonical_label(raw: object) -> LabelValue:
    """One value per user label: ``1``, ``1.0``, ``"1"`` and ``" 1.0"`` are all ``1``.

    Numbers (and strings that spell a finite decimal number) become an ``int`` when integral
    and a ``float`` otherwise; anything else is its string, unchanged.
    """
    if isinstance(raw, bool):  # JSON true/false: names, not the numbers 1/0
        return str(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return (int(raw) if raw.is_integer() else raw) if math.isfinite(raw) else str(raw)
    if not isinstance(raw, str):
        raise TypeError(f"a label must be a string or a number, not {type(raw).__name__}")
    t = raw.strip()
    if _NUMBER.fullmatch(t):
        try:
            return int(t)
        except ValueError:
            f = float(t)
            if math.isfinite(f):
                return int(f) if f.is_integer() else f
    return raw


def label_name(value: LabelValue) -> str:
    """The string form of a canonical label value (``label_names`` entries)."""
    return repr(value) if isinstance(value, float) else str(value)


def _is_number(v: LabelValue) -> bool:
    return not isinstance(v, str)


def order_labels(labels: list[LabelValue], *, source: str, where: list[str] | None = None) -> list[LabelValue]:
    """Distinct canonical labels in id order (see the module docstring); raises on a mix of kinds."""
    distinct = set(labels)
    nums = sorted(v for v in distinct if _is_number(v))
    names = sorted(v for v in distinct if not _is_number(v))
    if nums and names:
        first = next(i for i, v in enumerate(labels) if not _is_number(v))
        at = f" ({where[first]})" if where else ""
        show = lambda vs: ", ".join(repr(v) if isinstance(v, str) else label_name(v) for v in vs[:5]) + (", ..." if len(vs) > 5 else "")  # noqa: E731
        raise DataError(f"{source}: labels mix numbers ({show(nums)}) and names ({show(names)}), first name "
                        f"{labels[first]!r}{at}; make every label a number or every label a name")
    return nums or names


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
    label_names: list[str]  # the user's label per id, as a string
    train: list[TextSample]
    dev: list[TextSample]
    test: list[TextSample]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def label_values(self) -> list[LabelValue]:
        """The user's label per id as its value (an ``int`` for integer labels): what exports write."""
        return [canonical_label(n) for n in self.label_names]

    def label_id(self, value: object) -> int:
        """The id of a user label in any spelling (``1``, ``1.0``, ``"1"``)."""
        try:
            return self.label_values.index(canonical_label(value))
        except (ValueError, TypeError):
            pass
        raise DataError(f"label {value!r} is not in dataset {self.name} (labels: {', '.join(self.label_names)})")

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


def _read_20ng_comp_rec(root: Path) -> tuple[list[str], list[str]]:
    """20 Newsgroups' classic binary split: the 5 comp.* groups against the 4 rec.* groups (long posts)."""
    texts, labels = _read_20ng(root)
    keep = [(t, y.split(".", 1)[0]) for t, y in zip(texts, labels) if y.startswith(("comp.", "rec."))]
    return [t for t, _ in keep], [y for _, y in keep]


_READERS = {"rotten-tomatoes": _read_rotten_tomatoes, "sms-spam": _read_sms_spam, "20newsgroups": _read_20ng,
            "20newsgroups-comp-rec": _read_20ng_comp_rec}
_ASSET_OF = {"20newsgroups-comp-rec": "20newsgroups"}  # datasets derived from another asset
# label order fixes label ids: binary tasks keep the conventional positive/attack class as 1
_LABEL_ORDER = {"rotten-tomatoes": ["negative", "positive"], "sms-spam": ["ham", "spam"],
                "20newsgroups-comp-rec": ["comp", "rec"]}


def decode_utf8(raw: bytes, path: Path) -> str:
    """``raw`` as text, or a one-line :class:`DataError` naming the file and the first bad line."""
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Excel's CSV export) is not part of the header
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 text (byte {e.start}); re-encode the file as UTF-8") from None


def read_utf8(path: Path) -> str:
    """A user's text file, or a one-line :class:`DataError` naming it (unreadable, not UTF-8)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    return decode_utf8(raw, path)


def _read_user_file(path: Path) -> tuple[list[str], list[LabelValue], list[str]]:
    """Texts, canonical labels and where each row is (``line N``) in a CSV/TSV/JSONL file."""
    content = read_utf8(path)
    rows: list[tuple[int, object]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        # split on "\n" only: str.splitlines() also breaks at U+2028 and friends, which JSON
        # strings may hold unescaped (our own exports write them with ensure_ascii=False)
        for i, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError:
                raise DataError(f"{path}: line {i} is not valid JSON") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            for r in reader:
                rows.append((reader.line_num, r))
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num} does not parse as CSV ({e})") from None
    else:
        raise DataError(f"dataset file {path} must end in .csv, .tsv or .jsonl")
    if not rows or not isinstance(rows[0][1], dict) or not {"text", "label"} <= set(rows[0][1]):
        have = sorted(rows[0][1]) if rows and isinstance(rows[0][1], dict) else []
        raise DataError(f"dataset file {path} needs 'text' and 'label' columns (found: {', '.join(have) or 'none'})")
    texts, labels = [], []
    for line, r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("text"), str) or r.get("label") in (None, ""):
            raise DataError(f"{path}: line {line} has no text or no label")
        try:
            labels.append(canonical_label(r["label"]))
        except TypeError as e:
            raise DataError(f"{path}: line {line}: {e}") from None
        texts.append(r["text"])
    return texts, labels, [f"line {line}" for line, _ in rows]


def load_text_dataset(name_or_path: str = "rotten-tomatoes", *, seed: int = 0, dev_frac: float = 0.1,
                      test_frac: float = 0.1, max_samples: int | None = None) -> TextSplits:
    """Labelled text as seeded train/dev/test splits.

    ``max_samples`` draws a seeded, stratified-by-shuffle subset before splitting, for fast
    runs; it is recorded in the split name so results never pass for full-size ones.
    """
    if not 0 < dev_frac < 1 or not 0 < test_frac < 1 or dev_frac + test_frac >= 1:
        raise DataError("dev_frac and test_frac must be in (0, 1) and sum to less than 1")
    p = Path(name_or_path).expanduser()
    where = None
    if name_or_path in _READERS:
        texts, raw = _READERS[name_or_path](assets.require(_ASSET_OF.get(name_or_path, name_or_path)))
        labels = [canonical_label(y) for y in raw]
        source = f"dataset {name_or_path}"
    elif p.suffix and (p.exists() or "/" in name_or_path or p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json")):
        if not p.is_file():
            raise DataError(f"dataset file {p} does not exist")
        texts, labels, where = _read_user_file(p)
        source = str(p)
    else:
        if name_or_path in assets.REGISTRY:
            raise DataError(f"asset '{name_or_path}' is not a labelled text dataset (try one of {', '.join(TEXT_DATASETS)})")
        assets.get(name_or_path)  # raises with a suggestion
        raise AssertionError("unreachable")
    if len(set(labels)) < 2:
        raise DataError(f"dataset '{name_or_path}' has only one class ({labels[0] if labels else 'empty'}); need at least two")
    values = _LABEL_ORDER.get(name_or_path) or order_labels(labels, source=source, where=where)
    index = {v: i for i, v in enumerate(values)}
    samples = [TextSample(t, index[y], i) for i, (t, y) in enumerate(zip(texts, labels))]
    names = [label_name(v) for v in values]
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
        return [read_utf8(p)]
    if p.is_dir():
        return [read_utf8(f) for f in sorted(p.glob("*.txt"))]
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
    if name_or_path in _LONG_READERS:
        return _LONG_READERS[name_or_path](assets.require(name_or_path) / "raw")
    if name_or_path in assets.REGISTRY:
        raise DataError(f"asset '{name_or_path}' is not a long-text asset (try one of {', '.join(LONG_TEXTS)})")
    assets.get(name_or_path)
    raise AssertionError("unreachable")


def pack_documents(items: list[str], min_words: int, sep: str = "\n") -> list[str]:
    """Consecutive short texts joined (in their order) into documents of at least ``min_words`` words; a short
    tail joins the last document. Order is the dataset's, so a document's neighbours stay its neighbours."""
    docs, cur, n = [], [], 0
    for t in items:
        t = t.strip()
        if not t:
            continue
        cur.append(t)
        n += len(t.split())
        if n >= min_words:
            docs.append(sep.join(cur))
            cur, n = [], 0
    if cur:
        if docs:
            docs[-1] = docs[-1] + sep + sep.join(cur)
        else:
            docs.append(sep.join(cur))
    return docs


def _bbc(raw: Path) -> list[str]:
    # one article per document, topic by topic; the files are Latin-1 (a few pound signs), not UTF-8
    return [f.read_bytes().decode("latin-1").strip() for f in sorted(raw.glob("*/*.txt"))]


def _orange_docs(file: str, col: str):
    return lambda raw: [t.strip() for t in _read_orange_tab(raw / file, col, None)[0] if t.strip()]


def _tweets(raw: Path) -> list[str]:
    import html

    texts = _read_orange_tab(raw / "election-tweets-2016.tab", "Content", None)[0]
    return pack_documents([html.unescape(t) for t in texts], 400)


def _posts(raw: Path) -> list[str]:
    # posts of one newsgroup stay together (a thread-like document), separated by a blank line
    by: dict[str, list[str]] = {}
    for part in ("train", "test"):
        t, y = _read_orange_tab(raw / f"20newsgroups-{part}.tab", "Text", "Category")
        for text, cat in zip(t, y):
            by.setdefault(cat, []).append(text)
    return [d for cat in sorted(by) for d in pack_documents(by[cat], 500, "\n\n")]


def _short(reader, min_words: int):
    return lambda raw: pack_documents(reader(raw.parent)[0], min_words)


_LONG_READERS = {
    "bbc-news": _bbc,
    "grimm-tales": _orange_docs("grimm-tales.tab", "Content"),
    "book-excerpts": _orange_docs("book-excerpts.tab", "Text"),
    "election-tweets": _tweets,
    "20newsgroups": _posts,
    "rotten-tomatoes": _short(_read_rotten_tomatoes, 400),
    "sms-spam": _short(_read_sms_spam, 400),
}


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
