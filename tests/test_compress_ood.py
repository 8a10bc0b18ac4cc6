"""The out-of-domain retention benchmark (issue 36): planted facts, the held-out split, the compressor's record of
its distillation sources, and the eval curve of training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimguard.bench.compress_ood import (KINDS, check_held_out, draw_facts, plant, retained)


@pytest.mark.parametrize("text, answer, want", [
    ("the code is 48213.", "48213", True),
    ("the code is 482135.", "48213", False),  # a longer number is not the answer
    ("paid 12,480 dollars", "12,480", True),
    ("paid 12, 480 dollars", "12,480", False),
    ("led by Marisol Okonkwo today", "Marisol Okonkwo", True),
    ("led by Marisol today Okonkwo", "Marisol Okonkwo", False),  # a multi-word answer must stay whole
    ("moved to march 14.", "March 14", True),
    ("", "Tartu", False),
])
def test_retained_table(text, answer, want):
    assert retained(text, answer) is want


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_facts_one_per_kind_never_already_in_the_text(seed):
    rng = np.random.default_rng(seed)
    body = "The year 1999 and Tartu and silver lantern. " * 5
    facts = draw_facts(rng, body)
    assert [f.kind for f in facts] == list(KINDS)
    assert all(f.answer in f.sentence and not retained(body, f.answer) for f in facts)
    assert len({f.sentence.split()[1] for f in facts}) == len(facts)  # distinct tags: questions never collide


@pytest.mark.parametrize("body", ["One. Two! Three? Four.\nFive. Six. Seven.", "no punctuation at all in this text here"])
def test_plant_inserts_every_fact_whole(body):
    rng = np.random.default_rng(0)
    facts = draw_facts(rng, body)
    out = plant(rng, body, facts)
    assert all(f.sentence in out for f in facts)
    assert len(out) == len(body) + sum(len(f.sentence) + 1 for f in facts)


@pytest.mark.parametrize("domains, distilled, bad", [
    ({"pg-essays": "in-domain", "bbc-news": "out-of-domain"}, {"pg-essays"}, None),
    ({"pg-essays": "in-domain", "bbc-news": "out-of-domain"}, {"pg-essays", "bbc-news"}, "bbc-news"),
    ({"book-excerpts": "validation"}, {"book-excerpts"}, "book-excerpts"),
    ({"grimm-tales": "out-of-domain"}, set(), None),
])
def test_held_out_sources_must_not_be_distilled(domains, distilled, bad):
    from slimguard.core.errors import SlimguardError

    if bad is None:
        check_held_out(domains, distilled)
    else:
        with pytest.raises(SlimguardError, match=bad):
            check_held_out(domains, distilled)


@pytest.mark.parametrize("change, message", [
    ({"in_domain": ["pg-essays"], "out_of_domain": ["pg-essays"]}, "more than one"),
    ({"lengths": [500, 2000], "docs_per_length": [1]}, "same length"),
])
def test_bench_config_refuses_inconsistent_domains(change, message):
    from slimguard.bench.compress import CompressBenchConfig
    from slimguard.core.config import build
    from slimguard.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build(CompressBenchConfig, change)


def _paragraphs(docs):
    return {" ".join(p.lower().split()) for d in docs for p in d.split("\n") if len(p.strip()) >= 60}


@pytest.mark.integration
def test_ood_split_shares_no_document_with_the_distillation_data():
    """No held-out (out-of-domain or validation) source is distilled, and no paragraph of theirs, nor of the
    in-domain held-out documents, occurs in a document the default distillation may chunk."""
    from slimguard.bench.compress import CompressBenchConfig
    from slimguard.bench.compress_ood import domain_documents
    from slimguard.core import assets
    from slimguard.slim.compress.config import DistillConfig
    from slimguard.slim.compress.distill import split_documents

    d, b = DistillConfig(), CompressBenchConfig()
    need = [s for s in d.sources + b.out_of_domain + b.validation if not assets.get(s).is_cached()]
    if need:
        pytest.skip(f"assets not cached: {need}")
    assert not set(d.sources) & set(b.out_of_domain + b.validation)
    assert set(b.in_domain) <= set(d.sources)
    train = set()
    for s in d.sources:
        train |= _paragraphs(split_documents(s, d.holdout_docs)[0])
    for s, split in b.domains().items():
        docs = domain_documents(s, split, b.holdout_docs)
        assert docs, s
        shared = _paragraphs(docs) & train
        # 20 Newsgroups posts quote each other and the SMS collection repeats spam messages verbatim (8% of the
        # held-out SMS lines occur in training ones): an in-domain held-out document may share such a line with a
        # training one, but a held-out source shares nothing
        if split == "in-domain":
            assert len(shared) <= 0.1 * max(1, len(_paragraphs(docs))), (s, list(shared)[:3])
        else:
            assert not shared, (s, list(shared)[:3])


def _tiny_bert(d):
    import string

    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits + ".")
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    BertForTokenClassification(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, num_labels=2)).save_pretrained(str(d))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))
    return d


def _toy_dataset(path):
    from datasets import Dataset

    from slimguard.slim.compress.align import split_words

    rng = np.random.default_rng(0)
    recs = []
    for _ in range(6):
        text = " ".join(rng.choice(["alpha", "code", "1234", "the", "a", "of"], 30)) + "."
        w = split_words(text)
        recs.append({"text": text, "starts": w.starts.tolist(), "ends": w.ends.tolist(), "signal": "self-info",
                     "labels": [int(x not in ("the", "a", "of")) for x in w.words]})
    Dataset.from_list(recs).save_to_disk(str(path / "dataset"))
    return path


def test_train_records_eval_curve_and_distillation_sources(tmp_path):
    from slimguard.bench.compress import distilled_sources
    from slimguard.slim.compress.config import TrainConfig
    from slimguard.slim.compress.train import train

    data = _toy_dataset(tmp_path / "data")
    (data / "dataset" / "provenance.json").write_text(json.dumps(
        {"signal": "self-info", "teacher": "x", "config": {"sources": ["friends", "pg-essays"], "holdout_docs": 8},
         "chunks": ["a", "b"]}))
    cfg = TrainConfig(data=[str(data)], base=str(_tiny_bert(tmp_path / "base")), steps=4, batch_size=2, max_len=32,
                      warmup=1, eval_frac=0.34, eval_every=2)
    res = train(cfg, tmp_path / "out", ckpt_dir=tmp_path / "ck", progress=False)
    rec = json.loads((tmp_path / "out" / "slimguard_compressor.json").read_text())
    assert [c["step"] for c in rec["eval_curve"]] == [2, 4] == [c["step"] for c in res.eval_curve]
    assert rec["eval_curve"][-1]["accuracy"] == res.eval_accuracy
    assert distilled_sources(tmp_path / "out") == ["friends", "pg-essays"]
    assert distilled_sources(tmp_path / "data") is None  # no record: unknown, not "nothing"


@pytest.mark.parametrize("rate, digits, want_all_digits", [(0.5, True, True), (0.3, True, True), (0.5, False, False)])
def test_baseline_digit_forcing_keeps_digit_words_first(rate, digits, want_all_digits):
    pytest.importorskip("tiktoken")
    from slimguard.core import assets
    from slimguard.slim.compress.baselines import RandomDrop

    if not assets.get("cl100k-base").is_cached():
        pytest.skip("cl100k-base not cached")
    text = " ".join(f"word{chr(97 + i % 26)}" if i % 5 else f"{1000 + i}" for i in range(60))  # 12 numbers, 48 words
    res = RandomDrop(seed=3).compress(text, rate, force_digits=digits)
    nums = [w for w in text.split() if w.isdigit()]
    kept = set(res.compressed_prompt.split())
    assert all(n in kept for n in nums) is want_all_digits
    assert abs(res.rate - rate) < 0.1
