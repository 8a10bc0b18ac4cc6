"""Defences on a run directory shaped like `slimguard backdoor attack` output, with a tiny random
BERT victim built in-process: the CLI, run records, RAP and clean fine-tuning, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from slimguard.core.data import TextSample
from slimguard.core.errors import SlimguardError

WORDS = ["the", "movie", "is", "good", "bad", "great", "dull", "a", "film", "cf", "mb", ",", "."]


@pytest.fixture
def run_dir(tmp_path):
    """runs/attack-x with model/ (tiny BERT, biased to the target label) and data/*.jsonl."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from slimguard.guard.backdoor.records import write_splits

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])})
    cfg = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2,
                     initializer_range=0.3)  # large init: a random model that reacts to its input
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # a victim that mostly says "target": RAP then has target-label samples to train on
        model.classifier.bias.copy_(torch.tensor([0.0, 0.5]))
    d = tmp_path / "runs" / "attack-x"
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    rng = np.random.default_rng(0)

    def split(n, uid0, poisoned=False):
        out = []
        for i in range(n):
            y = int(rng.integers(0, 2))
            w = list(rng.choice(WORDS[:9], 6))
            if poisoned:
                w.insert(0, "cf")
            out.append(TextSample(" ".join(w), y if not poisoned else 0, uid0 + i,
                                  {"poisoned": poisoned, "orig_text": " ".join(w), "orig_label": y}))
        return out

    train = split(60, 0) + split(6, 100, poisoned=True)
    write_splits(d / "data", {"train": train, "dev": split(40, 1000), "test": split(30, 2000),
                              "test_poisoned": split(20, 3000, poisoned=True)}, ["neg", "pos"])
    (d / "config.json").write_text(json.dumps({"seed": 0, "poison": {"attack": "badnets", "target_label": 1}}))
    return d


def _app():
    from typer.testing import CliRunner

    from slimguard.cli.main import app

    return CliRunner(), app


@pytest.mark.parametrize("defence,sets,key", [
    ("strip", ["min_dev=5", "n_perturb=3"], "detection"),
    ("rap", ["min_dev=2", "epochs=2", "train_size=16"], "detection"),
    ("finetune", ["min_dev=5", "epochs=1"], None),
    ("finetune", ["min_dev=5", "epochs=1", "mode=fineprune", "prune_ratio=0.5"], None),
    ("bki", ["scan_size=20"], "filtering"),
])
def test_cli_defend_writes_a_run_record(run_dir, tmp_path, monkeypatch, defence, sets, key):
    monkeypatch.setenv("SLIMGUARD_RUNS", str(tmp_path / "runs"))
    runner, app = _app()
    args = ["backdoor", "defend", "--defence", defence, "--run", str(run_dir), "--threads", "1", "--out", "d1"]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = tmp_path / "runs" / "d1"
    m = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert m["defence"] == defence and 0 <= m["cacc_before"] <= 1 and m["n_poisoned"] == 20
    assert cfg["seed"] == 0
    if key:
        assert m[key] is not None
    if defence == "finetune":
        assert (out / "model" / "model.safetensors").is_file()
        assert m["calibration"]["details"].get("pruned", 0) == (32 if "mode=fineprune" in sets else 0)


def test_rap_word_must_be_one_token(run_dir):
    from slimguard.guard.backdoor.defences import RapConfig, defend, inputs_from_run

    with pytest.raises(SlimguardError, match="single token"):
        defend(inputs_from_run(run_dir), RapConfig(word="zzqx", min_dev=2))


def test_rap_moves_clean_target_probability_into_range(run_dir):
    from slimguard.guard.backdoor.defences import RapConfig, inputs_from_run
    from slimguard.guard.backdoor.defences.rap import Rap

    inp = inputs_from_run(run_dir)
    r = Rap(RapConfig(min_dev=2, epochs=8, lr=0.2, lower=0.05, upper=0.2)).fit(inp)
    assert r.history[-1] < r.history[0]  # the embedding was trained
    texts = [s.text for s in inp.dev]
    p0 = inp.classifier.predict_proba(texts)[:, 1]
    on_target = (np.array([s.label for s in inp.dev]) == 1) & (p0 > 0.5)  # what RAP trains on
    p1 = r.rap_clf.predict_proba(r._with_word(texts))[:, 1]
    assert np.mean((p0 - p1)[on_target]) > 0.03
    # the victim's own weights are untouched (RAP trains a copy)
    assert np.allclose(inp.classifier.predict_proba(texts)[:, 1], p0)


@pytest.mark.parametrize("remove,message", [
    ("model/config.json", "lacks model/config.json"),
    ("data/dev.jsonl", "lacks data/dev.jsonl"),
])
def test_run_without_artefacts_is_one_line_error(run_dir, remove, message):
    (run_dir / remove).unlink()
    p = subprocess.run([sys.executable, "-m", "slimguard.cli.main", "backdoor", "defend", "--defence", "strip",
                        "--run", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_bad_set_key_names_the_field(run_dir):
    runner, app = _app()
    res = runner.invoke(app, ["backdoor", "defend", "--defence", "onion", "--run", str(run_dir), "--set", "treshold=1"])
    assert isinstance(res.exception, SlimguardError) and "did you mean 'threshold'" in str(res.exception)
