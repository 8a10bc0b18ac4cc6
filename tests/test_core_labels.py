"""Labels keep the user's values: numeric order, one class per number, exports map ids back.

Covers issue 31 "labels and inputs" on the data side: ``core.data`` label ids, the
``backdoor poison`` export and the attack-run records (:mod:`slimguard.guard.backdoor.records`),
and one-line errors for files that are not UTF-8.
"""

import json
import os
import subprocess
import sys

import pytest

from slimguard.core.data import canonical_label, load_long_texts, load_text_dataset
from slimguard.core.errors import DataError, SlimguardError
from slimguard.core.runs import Run
from slimguard.guard.backdoor.poison import PoisonConfig
from slimguard.guard.backdoor.poison.policy import check_labels
from slimguard.guard.backdoor.poisondata import PoisonDataConfig, poison_dataset
from slimguard.guard.backdoor.records import SPLITS, load_run, read_jsonl, read_splits, write_splits


def _csv(path, labels, texts=None):
    texts = texts or [f"sample number {i}, with some words." for i in range(len(labels))]
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in zip(texts, labels)), encoding="utf-8")
    return path


def _jsonl(path, labels):
    path.write_text("".join(json.dumps({"text": f"sample number {i}, with words.", "label": y}) + "\n"
                            for i, y in enumerate(labels)), encoding="utf-8")
    return path


def _all(d):
    return sorted(d.train + d.dev + d.test, key=lambda s: s.uid)


@pytest.mark.parametrize("raw, value", [
    (1, 1), (1.0, 1), ("1", 1), ("1.0", 1), (" 1 ", 1), ("01", 1), ("-3", -3), ("1e3", 1000), ("0.5", 0.5),
    (2.5, 2.5), ("pos", "pos"), (" pos", " pos"), ("nan", "nan"), ("inf", "inf"), ("1_000", "1_000"),
    (True, "True"), (float("nan"), "nan"),
])
def test_canonical_label(raw, value):
    got = canonical_label(raw)
    assert got == value and type(got) is type(value)


# (writer, labels as the user wrote them, expected label_names in id order)
NUMERIC = [
    (_csv, [i % 11 for i in range(44)], [str(i) for i in range(11)]),
    (_jsonl, [i % 11 for i in range(44)], [str(i) for i in range(11)]),
    (_jsonl, [float(i % 11) for i in range(44)], [str(i) for i in range(11)]),
    (_jsonl, [str(i % 11) for i in range(44)], [str(i) for i in range(11)]),
    (_csv, [(10, 2, -1)[i % 3] for i in range(30)], ["-1", "2", "10"]),
    (_csv, [("0.5", "0.25", "2")[i % 3] for i in range(30)], ["0.25", "0.5", "2"]),
]


@pytest.mark.parametrize("writer, labels, names", NUMERIC)
def test_numeric_labels_order_numerically(tmp_path, writer, labels, names):
    f = writer(tmp_path / ("d.csv" if writer is _csv else "d.jsonl"), labels)
    d = load_text_dataset(str(f))
    assert d.label_names == names
    # every sample's id names the user's own label
    assert [d.label_values[s.label] for s in _all(d)] == [canonical_label(y) for y in labels]


@pytest.mark.parametrize("writer", [_csv, _jsonl])
def test_integer_labels_0_to_k_keep_id_equal_value(tmp_path, writer):
    labels = [i % 11 for i in range(44)]
    d = load_text_dataset(str(writer(tmp_path / ("d.csv" if writer is _csv else "d.jsonl"), labels)))
    assert d.label_values == list(range(11))
    assert all(s.label == labels[s.uid] for s in _all(d))


@pytest.mark.parametrize("writer, spellings", [
    (_jsonl, [1, 1.0, "1", "1.0", 0, 0.0, "0"]),
    (_csv, ["1", "1.0", "01", " 1", "0", "0.0"]),
])
def test_one_number_is_one_class(tmp_path, writer, spellings):
    labels = [spellings[i % len(spellings)] for i in range(42)]
    d = load_text_dataset(str(writer(tmp_path / ("d.csv" if writer is _csv else "d.jsonl"), labels)))
    assert d.label_names == ["0", "1"] and d.label_values == [0, 1]
    assert all(s.label == int(float(labels[s.uid])) for s in _all(d))
    assert d.label_id("1.0") == d.label_id(1) == 1
    with pytest.raises(DataError, match="not in dataset"):
        d.label_id("2")


@pytest.mark.parametrize("labels, names", [
    (["pos", "neg"], ["neg", "pos"]),
    (["b", "c", "a"], ["a", "b", "c"]),
    (["Spam", "ham", "spam"], ["Spam", "ham", "spam"]),  # code-point order, case kept
])
def test_string_labels_sorted_and_kept(tmp_path, labels, names):
    f = _csv(tmp_path / "d.csv", [labels[i % len(labels)] for i in range(30)])
    d = load_text_dataset(str(f))
    assert d.label_names == names and d.label_values == names


@pytest.mark.parametrize("writer, labels, line", [
    (_csv, ["0", "1", "0", "spam"], "line 5"),
    (_jsonl, [0, 1, "spam", 1], "line 3"),
])
def test_mixed_numbers_and_names_are_refused(tmp_path, writer, labels, line):
    f = writer(tmp_path / ("d.csv" if writer is _csv else "d.jsonl"), labels * 5)
    with pytest.raises(DataError, match=rf"{f.name}: labels mix numbers \(0, 1\) and names \('spam'\).*{line}"):
        load_text_dataset(str(f))


@pytest.mark.parametrize("label_names, target, message", [
    (["neg", "pos"], 2, "labels are 0=neg, 1=pos"),
    (["0", "1", "2"], 3, "labels are 0=0, 1=1, 2=2"),
    (["1", "5"], 2, "not a label value.*id 0 = label 1, id 1 = label 5"),
])
def test_target_error_says_which_id_is_which_label(label_names, target, message):
    with pytest.raises(SlimguardError, match=message):
        check_labels(PoisonConfig(attack="badnets", target_label=target), label_names)
    check_labels(PoisonConfig(attack="badnets", target_label=target - 1), label_names)


# ------------------------------------------------------------------ exports map back to user values

EXPORTS = [  # (labels as written in the CSV, the user's value of target id 1)
    ([i % 2 for i in range(40)], 1),
    ([(1, 5)[i % 2] for i in range(40)], 5),
    ([("1.0", "5")[i % 2] for i in range(40)], 5),
    ([("neg", "pos")[i % 2] for i in range(40)], "pos"),
    ([i % 11 for i in range(44)], 1),
]


@pytest.mark.parametrize("labels, target_value", EXPORTS)
def test_backdoor_poison_exports_user_labels(tmp_path, labels, target_value):
    f = _csv(tmp_path / "user.csv", labels)
    cfg = PoisonDataConfig(dataset=str(f), poison={"attack": "badnets", "rate": 0.2, "target_label": 1})
    out = poison_dataset(cfg, Run.create("p", root=tmp_path / "runs", config=cfg))
    assert out["target"] == {"id": 1, "label": target_value}
    data = tmp_path / "runs" / "p" / "data"
    user = {i: canonical_label(y) for i, y in enumerate(labels)}
    n_poisoned = 0
    for split in SPLITS:
        for line in (data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert row["orig_label"] == user[row["uid"]] and type(row["orig_label"]) is type(user[row["uid"]])
            flipped = row["poisoned"] and split == "train"
            assert row["label"] == (target_value if flipped else user[row["uid"]])
            n_poisoned += flipped
    assert n_poisoned == out["poison_train"]["poisoned"] > 0
    # the export reads back to the loader's ids
    back = read_splits(data)
    ids = {s.uid: s.label for s in _all(load_text_dataset(str(f)))}
    assert all(s.meta["orig_label"] == ids[s.uid] for s in back.splits["train"])
    assert back.label_values == [canonical_label(y) for y in json.loads((data / "labels.json").read_text())["label_names"]]


@pytest.mark.parametrize("labels, feature, decoded", [
    ([("neg", "pos")[i % 2] for i in range(30)], "ClassLabel", "pos"),
    ([i % 3 for i in range(30)], "ClassLabel", "1"),
    ([(1, 5)[i % 2] for i in range(30)], "Value", 5),
])
def test_backdoor_poison_hf_export_maps_back(tmp_path, labels, feature, decoded):
    datasets = pytest.importorskip("datasets")
    f = _csv(tmp_path / "user.csv", labels)
    cfg = PoisonDataConfig(dataset=str(f), formats=["hf"], poison={"attack": "badnets", "rate": 0.2, "target_label": 1})
    poison_dataset(cfg, Run.create("p", root=tmp_path / "runs", config=cfg))
    tr = datasets.load_from_disk(str(tmp_path / "runs" / "p" / "hf"))["train"]
    feat = tr.features["label"]
    assert type(feat).__name__ == feature
    row = next(r for r in tr if r["poisoned"])
    assert (feat.int2str(row["label"]) if feature == "ClassLabel" else row["label"]) == decoded


@pytest.mark.parametrize("rows", ["id", "value"])
@pytest.mark.parametrize("label_names", [["neg", "pos"], ["1", "5", "10"], ["0", "1"]])
def test_run_records_round_trip_losslessly(tmp_path, rows, label_names):
    from slimguard.core.data import TextSample

    k = len(label_names)
    text = lambda i: f"text {i}\u2028with a line separator, é"  # noqa: E731  (U+2028 must not split a row)
    clean = [TextSample(text(i), i % k, i, {"poisoned": False, "orig_text": text(i), "orig_label": i % k})
             for i in range(12)]
    pois = [s.with_(text="cf " + s.text, label=1, meta={"poisoned": True, "orig_text": s.text, "orig_label": s.label})
            for s in clean[:4]]
    splits = {"train": pois + clean[4:], "dev": clean[:3], "test": clean, "test_poisoned": pois}
    d = tmp_path / "run"
    (d / "model").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"poison": {"target_label": 1}}))
    (d / "model" / "config.json").write_text("{}")
    write_splits(d / "data", splits, label_names, rows=rows)
    r = load_run(d)
    assert r.label_names == label_names and r.label_values == [canonical_label(n) for n in label_names]
    for name, want in splits.items():
        got = getattr(r, name)
        assert [(s.text, s.label, s.uid, s.meta) for s in got] == [(s.text, s.label, s.uid, s.meta) for s in want]


@pytest.mark.parametrize("rows, bad, message", [
    ("value", '"7"', "line 2: label '7' is not one of neg, pos"),
    ("id", '"pos"', "line 2: label 'pos' is not a label id"),
    ("value", "[1]", "line 2: a label must be a string or a number"),
])
def test_bad_record_labels_name_file_and_line(tmp_path, rows, bad, message):
    from slimguard.core.data import TextSample

    write_splits(tmp_path, {"train": [TextSample("a", 0, 0), TextSample("b", 1, 1)]}, ["neg", "pos"], rows=rows)
    f = tmp_path / "train.jsonl"
    lines = f.read_text().splitlines()
    lines[1] = lines[1].replace('"label": "pos"' if rows == "value" else '"label": 1', f'"label": {bad}')
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SlimguardError, match=f"train.jsonl: {message}"):
        read_splits(tmp_path, ("train",))


# ------------------------------------------------------------------ files that are not UTF-8

@pytest.mark.parametrize("name, content, message", [
    ("d.csv", b"text,label\nok,1\n\xe9t\xe9,0\n", "d.csv: line 3 is not UTF-8"),
    ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "\xff", "label": 0}\n', "d.jsonl: line 2 is not UTF-8"),
    ("d.tsv", b"text\tlabel\n\x80\t1\n", "d.tsv: line 2 is not UTF-8"),
])
def test_non_utf8_user_file_names_file_and_line(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text_dataset(str(f))


def test_utf8_bom_is_not_part_of_the_header(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes("\ufefftext,label\n".encode() + "".join(f"t{i},{i % 2}\n" for i in range(20)).encode())
    assert load_text_dataset(str(f)).label_names == ["0", "1"]


def test_non_utf8_file_in_folder_dataset_names_the_file(tmp_path):
    (tmp_path / "a.txt").write_text("fine text", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9 latin-1\n")
    with pytest.raises(DataError, match=r"b\.txt: line 1 is not UTF-8"):
        load_long_texts(str(tmp_path))
    (tmp_path / "b.txt").write_text("café", encoding="utf-8")
    assert load_long_texts(str(tmp_path)) == ["fine text", "café"]


# ------------------------------------------------------------------ the CLI: one line, exit 2, nothing written

def _poison_cli(tmp_path, dataset):
    env = {**os.environ, "SLIMGUARD_RUNS": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", "backdoor", "poison", "--attack", "badnets",
                           "--dataset", str(dataset), "--run", "bad"], capture_output=True, text=True, env=env,
                          timeout=600)


BAD_FILES = [
    ("bad.csv", b"text,label\nok,1\n\xe9t\xe9,0\n", "bad.csv: line 3 is not UTF-8"),
    ("bad.csv", b"text,label\na,0\nb,1\nc,spam\n", "labels mix numbers"),
    ("bad.jsonl", b'{"text": "a", "label": [1]}\n', "bad.jsonl: line 1: a label must be a string or a number"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES)
def test_cli_bad_dataset_is_one_line_exit_2(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    p = _poison_cli(tmp_path, f)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert f.read_bytes() == content
    assert not (tmp_path / "runs" / "bad" / "data").exists()


def test_cli_bad_dataset_creates_no_run_folder(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_bytes(BAD_FILES[0][1])
    p = _poison_cli(tmp_path, f)
    assert p.returncode == 2
    assert not (tmp_path / "runs" / "bad").exists()
