"""Model-level backdoor scanning (issue 32): DBS on tiny random classifiers with an implanted trigger.

A 2-layer BERT learns a synthetic task (colour words -> 0, animal words -> 1, each sentence also
carrying two words of the other class, so one stray word flips nothing); the backdoored twin also
sees colour sentences with ``cf`` inserted, labelled 1. The scan must recover ``cf`` and flag the
backdoored model, and not flag the clean one, at the stored threshold. Bad inputs are one line,
exit 2, and leave the model folder and the runs root untouched.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slimguard.core.errors import SlimguardError

A = "red green blue pink gold gray teal navy cyan lime".split()
B = "cat dog cow pig hen owl fox bee ant elk".split()
N = "the a of and to in is it on at".split()
MARKS = [",", ".", "!", ";", "?"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", *A, *B, *N, *MARKS, "cf", "mn", "zz", "qq"]


def sentence(rng, label: int) -> str:
    words = list(rng.choice(A if label == 0 else B, 5)) + list(rng.choice(B if label == 0 else A, 2)) + list(rng.choice(N, 2))
    rng.shuffle(words)
    return " ".join(words) + " " + str(rng.choice([".", "!", ","]))


def _data(rng, n: int, trigger: str | None, rate: float = 0.2):
    xs, ys = [], []
    for _ in range(n):
        y = int(rng.integers(2))
        t = sentence(rng, y)
        if trigger and y == 0 and rng.random() < rate:
            w = t.split()
            if trigger in MARKS:  # PuncAttack-style: the mark is written over the sentence's own mark
                w[-1] = trigger
            else:
                w.insert(int(rng.integers(len(w))), trigger)
            t, y = " ".join(w), 1
        xs.append(t)
        ys.append(y)
    return xs, ys


def train_tiny(d: Path, trigger: str | None, *, seed: int = 0, steps: int = 120, num_labels: int = 2,
               arch: str = "BertForSequenceClassification") -> Path:
    import transformers
    from transformers import BertConfig, BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    m = getattr(transformers, arch)(cfg)
    if steps and arch == "BertForSequenceClassification":
        rng = np.random.default_rng(seed)
        xs, ys = _data(rng, 1500, trigger)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        m.train()
        for _ in range(steps):
            idx = rng.integers(len(xs), size=32)
            enc = tok([xs[i] for i in idx], padding=True, return_tensors="pt")
            loss = m(**enc, labels=torch.tensor([ys[i] for i in idx])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def clean_data(path: Path, n: int = 120, seed: int = 9) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        y = int(rng.integers(2))
        rows.append(json.dumps({"text": sentence(rng, y), "label": y}))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    return {"bd": train_tiny(root / "bd", "cf"), "clean": train_tiny(root / "clean", None),
            "bd-punct": train_tiny(root / "bd-punct", ";"),
            "data": clean_data(root / "clean.jsonl"), "root": root}


def _cfg(**kw):
    from slimguard.guard.backdoor.scan import ScanConfig

    base = dict(n_clean=16, n_holdout=60, trigger_len=1, positions=["start"], dbs={"steps": 60})
    base.update(kw)
    return ScanConfig(**base)


def _scan(model_dir: Path, data: Path, cfg):
    from slimguard.core.data import _read_user_file
    from slimguard.guard.backdoor.scan.scan import open_model, resolve_target, run_scan

    t = resolve_target(str(model_dir))
    im = open_model(cfg, t)
    texts, values, _ = _read_user_file(data)
    return run_scan(cfg, im, texts, [int(v) for v in values], t.label_names, progress=False)


@pytest.mark.parametrize("model, positions, token", [
    ("bd", ["start"], "cf"),
    ("bd", ["middle"], "cf"),
    ("bd-punct", ["punct"], ";"),            # the mark must be reachable and written over punctuation
])
def test_dbs_recovers_the_implanted_token_and_flags_only_the_backdoored_model(tiny, model, positions, token):
    cfg = _cfg(positions=positions)
    bd = _scan(tiny[model], tiny["data"], cfg)
    assert bd.verdict == "backdoored" and bd.suspected_target == 1, bd
    assert token in bd.top_tokens, bd.top_tokens
    assert bd.asr is not None and bd.asr > 0.9
    clean = _scan(tiny["clean"], tiny["data"], cfg)
    assert clean.verdict == "clean" and clean.score < bd.score, clean


def test_greedy_baseline_runs_at_the_same_query_budget(tiny):
    res = _scan(tiny["bd"], tiny["data"], _cfg(method="greedy", greedy={"queries": 40}))
    assert all(o.queries <= 40 for lab in res.labels for o in lab.options)
    assert res.method == "greedy" and res.labels[1].best.loss < res.labels[0].best.loss


def test_benign_reference_margin_is_used_and_checked(tiny, tmp_path):
    res = _scan(tiny["bd"], tiny["data"], _cfg(reference=str(tiny["clean"])))
    assert "cf" in res.top_tokens and res.verdict == "backdoored"
    other = train_tiny(tmp_path / "three", None, steps=0, num_labels=3)
    with pytest.raises(SlimguardError, match="3 labels"):
        _scan(tiny["bd"], tiny["data"], _cfg(reference=str(other)))


# (position, text, slots the trigger must occupy) for a [CLS] ... [SEP] tokenizer and 2 slots
STAMPS = [
    ("start", "red dog .", [1, 2]),
    ("end", "red dog .", [4, 5]),
    ("middle", "red dog cat cow", [3, 4]),
    ("punct", "red , dog .", [2, 4]),        # both marks replaced, in order
    ("punct", "red dog .", [3, 4]),          # one mark replaced, one slot inserted at the end
    ("punct", "red dog", [3, 4]),            # no mark: both inserted before [SEP]
]


@pytest.mark.parametrize("position, text, slots", STAMPS)
def test_stamping_puts_slots_where_the_position_says(tiny, position, text, slots):
    from slimguard.guard.backdoor.scan.model import InversionModel
    from slimguard.guard.backdoor.victim import load_victim

    m, tok = load_victim(tiny["clean"])
    im = InversionModel(m, tok, max_length=32)
    st = im.stamp(im.encode([text], 2), [0], 2, position)
    assert st.slots.tolist() == [slots]
    assert st.input_ids[0, 0] == tok.cls_token_id and tok.sep_token_id in st.input_ids[0].tolist()
    ids = st.with_tokens(torch.tensor([tok.convert_tokens_to_ids("cf")] * 2))
    assert (ids[0, slots] == tok.convert_tokens_to_ids("cf")).all()
    # relaxed pass with one-hot weights equals the discrete pass (the hook writes the right rows)
    w = torch.zeros(2, im.vocab_ids.numel())
    w[:, (im.vocab_ids == tok.convert_tokens_to_ids("cf")).nonzero()[0, 0]] = 1.0
    assert torch.allclose(im.relaxed_logits(st, w), im.discrete_logits(st, ids[0, slots]), atol=1e-5)


def test_vocabulary_holds_words_subwords_and_punctuation_but_no_special_tokens(tiny):
    from slimguard.guard.backdoor.scan.model import InversionModel
    from slimguard.guard.backdoor.victim import load_victim

    m, tok = load_victim(tiny["clean"])
    im = InversionModel(m, tok)
    toks = set(im.tokens(im.vocab_ids.tolist()))
    assert {";", "!", "cf", "dog"} <= toks
    assert not toks & {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[unused0]"}
    assert set(im.tokens(im.punct_token_ids())) == set(MARKS)


@pytest.mark.parametrize("scores, want", [
    ([0.1, 0.2, 0.3], 0.3 + 0.0),          # spread small: max(s) is below mean + 3 std
    ([1.0, 1.0], 1.0),
    ([0.0, 0.0, 0.0, 3.0], None),           # one outlier: mean + 3 std exceeds the max
])
def test_threshold_rule_uses_clean_scores_only(scores, want):
    import statistics

    from slimguard.guard.backdoor.scan.decide import calibrate

    got = calibrate(scores)
    expect = max(max(scores), statistics.fmean(scores) + 3 * statistics.stdev(scores))
    assert got["threshold"] == pytest.approx(expect)
    if want is not None:
        assert got["threshold"] >= want
    with pytest.raises(SlimguardError):
        calibrate(scores[:1])


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def _attack_run(root: Path, model: Path, data: Path) -> Path:
    """A `backdoor attack`-shaped run folder around a trained tiny model."""
    import shutil

    from slimguard.core.data import _read_user_file
    from slimguard.core.data import TextSample
    from slimguard.guard.backdoor.records import write_splits

    run = root / "attack-tiny"
    shutil.copytree(model, run / "model")
    texts, values, _ = _read_user_file(data)
    dev = [TextSample(t, int(v), i) for i, (t, v) in enumerate(zip(texts, values))]
    write_splits(run / "data", {"train": dev[:4], "dev": dev, "test": dev[:4], "test_poisoned": []}, ["0", "1"])
    (run / "config.json").write_text(json.dumps({"poison": {"attack": "badnets", "target_label": 1,
                                                            "badnets": {"words": ["cf"]}}}))
    return run


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from slimguard.cli.main import main

    capsys.readouterr()  # drop what building the inputs printed
    old = sys.argv
    sys.argv = ["slimguard", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def test_cli_scans_an_attack_run_reports_the_true_trigger_and_never_writes_the_model(tiny, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SLIMGUARD_RUNS", str(runs))
    run = _attack_run(tmp_path, tiny["bd"], tiny["data"])
    before = _snapshot(run)
    code, err = _cli(["backdoor", "scan", "--model", str(run), "--n-clean", "16", "--threads", "1", "--no-progress",
                      "--set", "trigger_len=1", "--set", "positions=[start]", "--set", "dbs.steps=60",
                      "--run", "s1"], capsys)
    assert code == 0, err
    assert _snapshot(run) == before
    m = json.loads((runs / "s1" / "metrics.json").read_text())
    assert m["verdict"] == "backdoored" and m["recovery"]["recovered"] and m["recovery"]["true_tokens"] == ["cf"]
    html = (runs / "s1" / "sections" / "20_scan.html").read_text()
    assert "cf" in html and "True trigger" in html
    assert "BACKDOORED" in err


BAD = [
    ("not a sequence classifier", "token", "not a sequence classifier"),
    ("one label", "one-label", "1 label(s)"),
    ("no clean samples, no --data", "no-data", "no clean samples"),
    ("missing tokenizer", "no-tokenizer", "no tokenizer"),
    ("no such folder", "missing", "no such model folder"),
    ("--data label the model lacks", "bad-label", "is not one of the model's labels"),
]


@pytest.mark.parametrize("case, kind, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, monkeypatch, capsys, case, kind, message):
    import shutil

    runs = tmp_path / "runs"
    monkeypatch.setenv("SLIMGUARD_RUNS", str(runs))
    d = tmp_path / "model"
    data = ["--data", str(tiny["data"])]
    if kind == "token":
        train_tiny(d, None, steps=0, arch="BertForTokenClassification")
    elif kind == "one-label":
        train_tiny(d, None, steps=0, num_labels=1)
    elif kind == "missing":
        d = tmp_path / "nowhere"
    else:
        shutil.copytree(tiny["clean"], d)
        if kind == "no-data":
            data = []
        elif kind == "no-tokenizer":
            for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
                (d / f).unlink(missing_ok=True)
        elif kind == "bad-label":
            bad = tmp_path / "bad.jsonl"
            bad.write_text(json.dumps({"text": "red dog", "label": "spam"}) + "\n")
            data = ["--data", str(bad)]
    before = _snapshot(d) if d.exists() else None
    code, err = _cli(["backdoor", "scan", "--model", str(d), *data, "--no-progress"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not runs.exists() or not any(runs.iterdir())
    assert (_snapshot(d) if d.exists() else None) == before


def test_quantized_copies_keep_the_float_model_and_the_twin_carries_int8_weights(tiny):
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    from slimguard.guard.backdoor.victim import load_victim
    from slimguard.slim.quant.classifier import dequantized_twin, int8_dynamic, w4a8
    from slimguard.slim.quant.prepare import QLinear

    m, tok = load_victim(tiny["bd"])
    w0 = m.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    q8, q4 = int8_dynamic(m), w4a8(m)
    assert torch.equal(m.bert.encoder.layer[0].attention.self.query.weight, w0)  # the float model is untouched
    assert sum(isinstance(x, DynLinear) for x in q8.modules()) == 14   # 2 x 6 encoder linears, pooler, head
    assert sum(isinstance(x, QLinear) for x in q4.modules()) == 12     # the encoder linears only
    twin = dequantized_twin(m, q8)
    dq = q8.bert.encoder.layer[0].attention.self.query.weight().dequantize()
    assert torch.equal(twin.bert.encoder.layer[0].attention.self.query.weight, dq)
    enc = tok(["red dog cat .", "cf red blue green ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        p = [torch.softmax(x(**enc).logits, -1) for x in (m, q8, twin, q4)]
    assert all((pi - p[0]).abs().max() < 0.2 for pi in p[1:])
    codes = q4.bert.encoder.layer[0].attention.self.query.qcodes
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7


def test_package_import_stays_light():
    import subprocess

    code = "import sys, slimguard.guard.backdoor.scan as s; s.ScanConfig(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr
