"""Dataset loaders: user files, seeded splits, bad input."""

import json

import pytest

from slimguard.core.data import load_text_dataset
from slimguard.core.errors import DataError


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_user_jsonl_split_is_seeded_and_disjoint(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(100)])
    a, b, c = (load_text_dataset(str(f), seed=s) for s in (0, 0, 1))
    assert [s.uid for s in a.test] == [s.uid for s in b.test]
    assert [s.uid for s in a.test] != [s.uid for s in c.test]
    ids = [s.uid for s in a.train + a.dev + a.test]
    assert sorted(ids) == list(range(100))
    assert (len(a.train), len(a.dev), len(a.test)) == (80, 10, 10)
    assert a.label_names == ["0", "1"]


def test_user_csv(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "\n".join(f"hello {i},{'pos' if i % 2 else 'neg'}" for i in range(20)))
    d = load_text_dataset(str(f))
    assert d.label_names == ["neg", "pos"] and len(d.train) == 16


@pytest.mark.parametrize("name, content, message", [
    ("d.csv", b"sentence,y\nhi,1\n", "needs 'text' and 'label'"),
    ("d.jsonl", b"\xff\xfe bad", "not UTF-8"),
    ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n', "only one class"),
    ("d.jsonl", b'{"text": "a", "label": 1}\nnot json\n', "line 2"),
    ("d.txt", b"whatever", "must end in"),
])
def test_bad_user_files(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text_dataset(str(f))


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text_dataset(str(tmp_path / "nope.csv"))
    from slimguard.core.errors import AssetError

    with pytest.raises(AssetError, match="rotten-tomatoes"):
        load_text_dataset("rotten-tomatoe")
    with pytest.raises(DataError, match="not a labelled text dataset"):
        load_text_dataset("pg-essays")


@pytest.mark.integration
@pytest.mark.parametrize("name, n_labels, min_total", [("rotten-tomatoes", 2, 12000), ("sms-spam", 2, 4800), ("20newsgroups", 20, 18000)])
def test_real_text_datasets(need_asset, name, n_labels, min_total):
    need_asset(name)
    d = load_text_dataset(name)
    total = len(d.train) + len(d.dev) + len(d.test)
    assert d.num_labels == n_labels and total >= min_total
    assert all(s.text.strip() for s in d.test[:50])


@pytest.mark.integration
def test_real_long_texts_and_images(need_asset):
    need_asset("pg-essays", "friends", "fashion-mnist", "mnist")
    from slimguard.core.data import load_images, load_long_texts

    essays = load_long_texts("pg-essays")
    assert len(essays) >= 40 and sum(map(len, essays)) > 500_000
    assert len(load_long_texts("friends")) > 100
    fm = load_images("fashion-mnist")
    assert fm.x_train.shape == (60000, 28, 28) and fm.x_test.shape == (10000, 28, 28) and fm.y_train.max() == 9
    mn = load_images("mnist")
    assert mn.x_train.shape[1:] == (28, 28) and len(mn.y_train) + len(mn.y_test) == 5000
