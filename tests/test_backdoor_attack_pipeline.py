"""Backdoor victim training/resume, run records (the defence contract), the attack pipeline and CLI.

Everything here runs on a tiny random BERT built in-process, so it needs no weights.
"""

import json
import sys

import numpy as np
import pytest
import torch

from slimguard.core.data import TextSample
from slimguard.core.errors import SlimguardError
from slimguard.core.runs import Run
from slimguard.guard.backdoor.records import ROW_KEYS, SPLITS, load_run
from slimguard.guard.backdoor.victim import VictimConfig, predict_proba, train_victim

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "the", "film", "movie", "is", "was", "a", "plot",
         "cf", "mn", "bb", "tq", "i", "watch", "this", "3d", "and", "but"]


@pytest.fixture
def tiny_bert(tmp_path):
    """A 2-layer random BERT classifier folder with a word-level vocab (no dropout, for exact resume)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *",.!?;:-'\"", *WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=2)
    torch.manual_seed(0)
    d = tmp_path / "tiny-bert"
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _toy(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 2
        w = ["good", "great", "fine"] if y else ["bad", "awful", "dull"]
        out.append(TextSample(f"the film was {w[rng.integers(3)]}, a plot.", y, i))
    return out


def _vcfg(model, **kw):
    base = dict(model=str(model), max_length=16, epochs=10, batch_size=8, lr=3e-3, checkpoint_every=5, eval_batch_size=16,
                freeze_layers=0)
    return VictimConfig(**{**base, **kw})


def test_train_predict_and_safetensors(tiny_bert, tmp_path):
    res = train_victim(_toy(64), _toy(16, 1), _vcfg(tiny_bert), tmp_path / "m", label_names=["neg", "pos"], progress=False)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert res.dev_acc >= 0.9 and res.steps == 80
    p = predict_proba(tmp_path / "m", ["the film was good.", "", "the film was awful."], 2)
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert p[0, 1] > 0.5 > p[2, 1]
    assert predict_proba(tmp_path / "m", []).shape == (0, 2)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "neg", "1": "pos"}


def test_resume_reproduces_uninterrupted_training(tiny_bert, tmp_path):
    train, dev = _toy(40), _toy(8, 1)
    a = train_victim(train, dev, _vcfg(tiny_bert, epochs=3), tmp_path / "a", label_names=["n", "p"], seed=3, progress=False,
                     keep_checkpoint=True, checkpoint_dir=tmp_path / "ck")
    b = train_victim(train, dev, _vcfg(tiny_bert, epochs=3), tmp_path / "b", label_names=["n", "p"], seed=3, progress=False,
                     resume=True, checkpoint_dir=tmp_path / "ck", keep_checkpoint=True)
    assert b.resumed_from == 10 and b.steps == a.steps == 15
    texts = [s.text for s in dev]
    assert np.allclose(predict_proba(tmp_path / "a", texts), predict_proba(tmp_path / "b", texts), atol=1e-5)
    with pytest.raises(SlimguardError, match=r"different config \(fields: seed\)"):
        train_victim(train, dev, _vcfg(tiny_bert, epochs=3), tmp_path / "b", label_names=["n", "p"], seed=4, progress=False,
                     resume=True, checkpoint_dir=tmp_path / "ck", keep_checkpoint=True)


@pytest.mark.parametrize("change, field", [
    (dict(train=_toy(40, 5)), "train_data"),  # same size, other texts: the old check (size, seed, steps) let it pass
    (dict(labels=["neg", "pos"]), "label_names"),
    (dict(cfg={"lr": 1e-3}), "lr"),
])
def test_resume_refuses_a_checkpoint_of_other_data_or_settings(tiny_bert, tmp_path, change, field):
    train = _toy(40)
    train_victim(train, [], _vcfg(tiny_bert, epochs=3), tmp_path / "a", label_names=["n", "p"], seed=3, progress=False,
                 keep_checkpoint=True, checkpoint_dir=tmp_path / "ck")
    with pytest.raises(SlimguardError, match=rf"different config \(fields: {field}\)"):
        train_victim(change.get("train", train), [], _vcfg(tiny_bert, epochs=3, **change.get("cfg", {})), tmp_path / "b",
                     label_names=change.get("labels", ["n", "p"]), seed=3, progress=False, resume=True,
                     checkpoint_dir=tmp_path / "ck")


def test_victim_checkpoint_is_the_shared_format(tiny_bert, tmp_path):
    from slimguard.core.checkpoint import load_checkpoint
    from slimguard.guard.backdoor.victim import CKPT_KIND

    (tmp_path / "ck").mkdir()
    stale = tmp_path / "ck" / ".last.pt.k1ll3d_x"
    stale.write_bytes(b"partial")
    train_victim(_toy(40), [], _vcfg(tiny_bert, epochs=2), tmp_path / "a", label_names=["n", "p"], seed=3,
                 progress=False, keep_checkpoint=True, checkpoint_dir=tmp_path / "ck")
    assert not stale.exists()
    with pytest.raises(SlimguardError, match="written by the backdoor-victim trainer, not quant-train"):
        load_checkpoint(tmp_path / "ck" / "last.pt", kind="quant-train", fingerprint=None)
    (tmp_path / "ck" / "last.pt").write_bytes(b"")
    with pytest.raises(SlimguardError, match="not a slimguard checkpoint or truncated"):
        train_victim(_toy(40), [], _vcfg(tiny_bert, epochs=2), tmp_path / "a", label_names=["n", "p"], seed=3,
                     progress=False, resume=True, checkpoint_dir=tmp_path / "ck")


@pytest.mark.parametrize("kw, message", [({"freeze_layers": 2}, "only 2 layers"), ({"model": "/nonexistent/dir"}, "nonexistent"),
                                         ({"max_length": 128}, r"victim.max_length=128 exceeds .*limit of 64 tokens")])
def test_victim_bad_input(tiny_bert, tmp_path, kw, message):
    with pytest.raises(SlimguardError, match=message):
        train_victim(_toy(8), [], _vcfg(kw.pop("model", tiny_bert), **kw), tmp_path / "m", label_names=["n", "p"], progress=False)


def _user_dataset(tmp_path, n=120, one_class=False):
    rows = [{"text": s.text, "label": "pos" if (s.label or one_class) else "neg"} for s in _toy(n)]
    rows[3]["text"] = "the film was good"  # no punctuation
    rows[5]["text"] = ""  # empty string
    p = tmp_path / "toy.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def _long_dataset(tmp_path, n=60):
    """Texts far longer than the tiny victim's window: the trigger must still land inside it."""
    rng = np.random.default_rng(0)
    rows = []
    for s in _toy(n):
        filler = " ".join(WORDS[6:13][int(i)] for i in rng.integers(0, 7, size=40))
        rows.append({"text": f"{s.text} {filler}, {filler}.", "label": "pos" if s.label else "neg"})
    p = tmp_path / "long.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


@pytest.mark.parametrize("attack", ["badnets", "addsent", "punc"])
@pytest.mark.parametrize("within", [True, False])
def test_attack_on_long_texts_reports_the_window(tiny_bert, tmp_path, attack, within):
    from slimguard.guard.backdoor.attack import AttackConfig, run_attack

    cfg = AttackConfig(dataset=str(_long_dataset(tmp_path)), stealth_pairs=0,
                       victim=_vcfg(tiny_bert, epochs=1, max_length=None).to_dict(),
                       poison={"attack": attack, "rate": 0.2, "within_window": within, "punc": {"placement": "tail"}})
    run = Run.create("r", root=tmp_path / "runs", command="test", config=cfg)
    m = run_attack(cfg, run, progress=False)
    w = m["window"]
    # ~95 tokens per text: sized to 96 tokens, then capped at the tiny encoder's 64 positions, with a warning
    assert (w["max_length"], w["source"], w["encoder_limit"]) == (64, "auto", 64) and "100%" in w["warning"]
    assert w["truncated_share"]["train"] == 1.0 and w["within_window"] is within
    assert json.loads((run.path / "model" / "slimguard_victim.json").read_text())["max_length"] == 64
    assert "are longer than" in (run.path / "log.txt").read_text()
    if within:
        assert m["visible_share_train"] == m["visible_share_test"] == 1.0 and m["asr_visible_n"] == m["asr_n"]
    elif attack == "punc":  # tail placement writes over the last slots, far past the window
        assert m["visible_share_train"] == m["visible_share_test"] == 0.0 and m["asr_visible_n"] == 0
    else:
        assert 0 <= m["visible_share_train"] <= 1 and 0 <= m["visible_share_test"] <= 1


@pytest.mark.parametrize("attack", ["badnets", "punc"])
def test_attack_pipeline_writes_contract(tiny_bert, tmp_path, attack):
    from slimguard.guard.backdoor.attack import AttackConfig, run_attack

    cfg = AttackConfig(dataset=str(_user_dataset(tmp_path, n=60)), stealth_pairs=0, clean_reference=attack == "badnets",
                       victim=_vcfg(tiny_bert, epochs=2).to_dict(),
                       poison={"attack": attack, "rate": 0.2, "punc": {"placement": "tail"}})
    run = Run.create("r", root=tmp_path / "runs", command="test", config=cfg)
    m = run_attack(cfg, run, progress=False)
    for k in ("cacc", "asr", "asr_n", "false_trigger_rate", "eligible_fraction", "inputs"):
        assert k in m
    assert ("cacc_drop" in m) is (attack == "badnets")
    assert m["inputs"]["empty_texts"] == 1 and m["inputs"]["texts_without_punctuation"] >= 1
    assert 0 <= m["asr"] <= 1 and m["asr_n"] == sum(1 for s in load_run(run.path).test if s.label != 1)
    r = load_run(run.path)
    assert r.label_names == ["neg", "pos"] and r.target_label == 1 and r.num_labels == 2
    rows = [json.loads(x) for x in (run.path / "data" / "train.jsonl").read_text().splitlines()]
    assert all(set(x) == set(ROW_KEYS) for x in rows)
    assert sum(x["poisoned"] for x in rows) == round(0.2 * len(rows))
    assert all(s.label == s.meta["orig_label"] != 1 and s.meta["poisoned"] for s in r.test_poisoned)
    assert not any(s.meta["poisoned"] for s in r.dev + r.test)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoModelForSequenceClassification.from_pretrained(r.model_dir)
    AutoTokenizer.from_pretrained(r.model_dir)
    assert "changed" in (run.path / "sections" / "10_poisoned-examples.html").read_text()


def test_load_run_names_missing_files(tmp_path):
    with pytest.raises(SlimguardError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(SlimguardError, match="lacks config.json"):
        load_run(tmp_path / "half")


def _main(monkeypatch, capsys, tmp_path, *args):
    from slimguard.cli.main import main

    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(sys, "argv", ["slimguard", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["backdoor", "attack", "--rate", "1.5"], "poison.rate"),
    (["backdoor", "attack", "--rate", "0"], "poison.rate"),
    (["backdoor", "poison", "--set", "poison.punc.marks=[x]"], "poison.punc.marks"),
    (["backdoor", "poison", "--set", "poison.rat=0.1"], "did you mean 'poison.rate'"),
    (["backdoor", "attack", "--resume", "--run", "never-ran"], "does not exist yet"),
])
def test_cli_bad_input_one_line(monkeypatch, capsys, tmp_path, args, message):
    code, out = _main(monkeypatch, capsys, tmp_path, *args)
    assert code == 2 and message in out.err and len(out.err.strip().splitlines()) == 1


def test_cli_bad_dataset(monkeypatch, capsys, tmp_path):
    ds = _user_dataset(tmp_path, one_class=True)
    code, out = _main(monkeypatch, capsys, tmp_path, "backdoor", "poison", "--dataset", str(ds))
    assert code == 2 and "only one class" in out.err
    ds = _user_dataset(tmp_path)
    code, out = _main(monkeypatch, capsys, tmp_path, "backdoor", "poison", "--dataset", str(ds), "--target", "2")
    assert code == 2 and "target_label=2 does not exist" in out.err


def test_cli_poison_writes_jsonl_and_hf(monkeypatch, capsys, tmp_path, tiny_bert):
    ds = _user_dataset(tmp_path)
    code, out = _main(monkeypatch, capsys, tmp_path, "backdoor", "poison", "--dataset", str(ds), "--attack", "punc",
                      "--rate", "0.1", "--format", "jsonl", "--format", "hf", "--set", "poison.punc.placement=tail", "--run", "p1",
                      "--set", f"window_model={tiny_bert}", "--max-length", "12")
    assert code in (0, None), out.err
    d = tmp_path / "runs" / "p1"
    rows = [json.loads(x) for x in (d / "data" / "train.jsonl").read_text().splitlines()]
    assert sum(r["poisoned"] for r in rows) == round(0.1 * len(rows))
    from datasets import load_from_disk

    dd = load_from_disk(str(d / "hf"))
    assert set(dd) == set(SPLITS) and dd["train"].num_rows == len(rows)
    m = json.loads((d / "metrics.json").read_text())
    assert 0 <= m["eligible_fraction"] <= 1
    # the export records the window its triggers were placed in
    w = json.loads((d / "data" / "window.json").read_text())
    assert w == m["window"] and w["max_length"] == 12 and w["source"] == "config" and w["visible_share_train"] == 1.0
    assert "window 12 tokens" in out.err


def test_cli_max_length_above_the_encoders_limit(monkeypatch, capsys, tmp_path, tiny_bert):
    ds = _user_dataset(tmp_path)
    code, out = _main(monkeypatch, capsys, tmp_path, "backdoor", "attack", "--dataset", str(ds), "--victim", str(tiny_bert),
                      "--max-length", "128", "--run", "too-long")
    assert code == 2 and "victim.max_length=128 exceeds" in out.err and "limit of 64 tokens" in out.err
    # (torch may log its own import warnings on stderr; the error itself is one line)
    assert [x for x in out.err.splitlines() if "max_length" in x] == [x for x in out.err.splitlines() if "error" in x]
    assert len([x for x in out.err.splitlines() if "error" in x]) == 1
    assert not (tmp_path / "runs" / "too-long").exists()  # nothing written
