"""LLMLingua-2 compressor: alignment, selection, assembly, properties and bad input, on a tiny random BERT."""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimguard.core.errors import SlimguardError
from slimguard.slim.compress.align import align, lemma, quality_filter, split_words

# --------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A 2-layer random BERT token classifier with a character-level WordPiece vocab (no weights downloaded)."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("tinycomp")
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "code", "is"] + list(chars) + \
        [f"##{c}" for c in string.ascii_lowercase + string.digits]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=2)
    BertForTokenClassification(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def pc(tiny_dir):
    from slimguard.slim.compress.compressor import PromptCompressor

    return PromptCompressor(str(tiny_dir), rate_tokenizer="encoder")


TEXT = ("The code is 4521. Alice met Bob in Paris on Monday!\nWhat is the plan? "
        "They walked along the river, talking about books, music and the weather.\n")

# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("orig, comp, kept, variation", [
    ("the cat sat on the mat", "the cat sat on the mat", [1, 1, 1, 1, 1, 1], 0.0),
    ("the cat sat on the mat", "cat mat", [0, 1, 0, 0, 0, 1], 0.0),
    ("the cats sat on the mat", "cat sat", [0, 1, 1, 0, 0, 0], 0.0),  # lemmatised match
    ("the cat sat on the mat", "dog mat", [0, 0, 0, 0, 0, 1], 0.5),  # 'dog' is a variation
    ("a b a b", "b a", [0, 1, 1, 0], 0.0),
])
def test_align_table(orig, comp, kept, variation):
    a = align(orig.split(), comp.split(), window=150)
    assert a.labels.tolist() == kept
    assert a.variation_rate == pytest.approx(variation)


def test_align_window_limits_search():
    orig = ["x"] * 20 + ["target"]
    assert align(orig, ["target"], window=5).labels.sum() == 0
    assert align(orig, ["target"], window=50).labels[-1] == 1


def test_alignment_gap_counts_far_matches():
    orig = ["w"] * 10 + ["a"] + ["v"] * 200 + ["b"]
    a = align(orig, ["b", "a"], window=150)  # 'b' is beyond the window from the start
    assert a.hitting_rate == 1.0 and a.matching_rate < 1.0 and a.alignment_gap > 0


@pytest.mark.parametrize("word, want", [("Running", "runn"), ("cats", "cat"), ("is", "is"), ("quickly", "quick")])
def test_lemma(word, want):
    assert lemma(word) == want


def test_quality_filter_drops_worst_of_each():
    var = np.array([0.0, 0.9, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    gap = np.array([0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0])
    keep = quality_filter(var, gap, drop_variation=0.1, drop_gap=0.1)
    assert not keep[1] and not keep[4] and keep.sum() == 8


def test_split_words_spans():
    w = split_words("Hi, you!")
    assert w.words == ["Hi", ",", "you", "!"]
    assert [("Hi, you!")[s:e] for s, e in zip(w.starts, w.ends)] == w.words


# --------------------------------------------------------------------------- compression


def _words(s: str) -> list[str]:
    return [w.lower() for w in split_words(s).words]


def _is_subsequence(sub: list[str], full: list[str]) -> bool:
    it = iter(full)
    return all(any(x == y for y in it) for x in sub)


@pytest.mark.parametrize("rate", [1.0, 0.5, 0.33, 0.2])
def test_rate_and_keys(pc, rate):
    out = pc.compress_prompt(TEXT * 4, rate=rate)
    for k in ("compressed_prompt", "compressed_prompt_list", "origin_tokens", "compressed_tokens", "ratio", "rate",
              "saving"):
        assert k in out
    achieved = out["compressed_tokens"] / out["origin_tokens"]
    assert achieved == pytest.approx(rate, abs=0.06)
    assert _is_subsequence(_words(out["compressed_prompt"]), _words(TEXT * 4))


def test_target_token_overrides_rate(pc):
    out = pc.compress_prompt(TEXT * 4, rate=0.9, target_token=40)
    assert abs(out["compressed_tokens"] - 40) <= 4


def test_force_tokens_digits_and_newlines(pc):
    out = pc.compress_prompt(TEXT * 2, rate=0.2, force_tokens=["?", "!", "\n"], force_reserve_digit=True)
    c = out["compressed_prompt"]
    assert c.count("?") == 2 and c.count("!") == 2 and c.count("4521") == 2 and c.count("\n") >= 3


def test_drop_consecutive(pc):
    text = "? ? ? word ? ? other"
    out = pc.compress_prompt(text, rate=1.0, force_tokens=["?"], drop_consecutive=True)
    assert "? ?" not in out["compressed_prompt"]


def test_llmlingua_threshold_keeps_fewer(pc):
    exact = pc.compress_prompt(TEXT * 6, rate=0.5)
    ref = pc.compress_prompt(TEXT * 6, rate=0.5, threshold="llmlingua")
    assert ref["compressed_tokens"] <= exact["compressed_tokens"]


def test_word_labels_and_context_filter(pc):
    out = pc.compress_prompt([TEXT, "short filler text here", TEXT], rate=0.5, use_context_level_filter=True,
                             return_word_label=True)
    pairs = out["fn_labeled_original_prompt"].split("\t\t|\t\t")
    assert all(p.rsplit(" ", 1)[1] in ("0", "1") for p in pairs)
    assert 1 <= len(out["compressed_prompt_list"]) <= 3


@pytest.mark.parametrize("text, want", [("", ""), ("   \n\t ", ""), ("word", "word")])
def test_degenerate_inputs(pc, text, want):
    out = pc.compress_prompt(text, rate=0.5)
    assert out["compressed_prompt"] == want


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "rate"), ({"rate": 1.5}, "rate"), ({"rate": -0.2}, "rate"), ({"rate": 0.5, "bogus": 1}, "bogus"),
])
def test_bad_arguments(pc, kwargs, message):
    with pytest.raises(SlimguardError, match=message):
        pc.compress_prompt("some text", **kwargs)


def test_non_utf8_bytes_rejected(pc):
    with pytest.raises(SlimguardError, match="UTF-8"):
        pc.compress_prompt(b"\xff\xfe\x00bad", rate=0.5)


def test_100k_token_input(pc):
    words = (TEXT * 3000)  # about 100K WordPiece tokens with the tiny character vocab
    out = pc.compress_prompt(words, rate=0.33)
    assert out["origin_tokens"] > 90_000
    assert out["compressed_tokens"] / out["origin_tokens"] == pytest.approx(0.33, abs=0.03)


_word = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8)
_sep = st.sampled_from([" ", " ", ", ", ". ", "? ", "\n"])
_text = st.lists(st.tuples(_word, _sep), min_size=1, max_size=60).map(lambda xs: "".join(a + b for a, b in xs))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_text, rate=st.floats(0.05, 1.0))
def test_property_subsequence_and_force(pc, text, rate):
    out = pc.compress_prompt(text, rate=rate, force_tokens=["?"])
    assert _is_subsequence(_words(out["compressed_prompt"]), _words(text))
    assert out["compressed_prompt"].count("?") == text.count("?")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_text, rates=st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4))
def test_property_kept_fraction_monotone_in_rate(pc, text, rates):
    from slimguard.slim.compress.config import CompressConfig

    kept = [int(pc.compress(text, CompressConfig(model="x", rate=r, rate_tokenizer="encoder")).labels[0].sum())
            for r in sorted(rates)]
    assert kept == sorted(kept)


@pytest.mark.parametrize("dtype,threshold,native,expected", [
    ("auto", "exact", True, True),
    ("auto", "exact", False, False),
    ("auto", "llmlingua", True, False),  # compat mode promises the reference's words: float32
    ("bfloat16", "llmlingua", False, True),
    ("float32", "exact", True, False),
])
def test_precision_choice(pc, monkeypatch, dtype, threshold, native, expected):
    from slimguard.slim.compress.config import CompressConfig

    monkeypatch.setattr(pc, "_native_bf16", native)
    assert pc.uses_bf16(CompressConfig(model="x", dtype=dtype, threshold=threshold)) is expected


@pytest.mark.parametrize("dtype,matmul_dtype", [("bfloat16", "torch.bfloat16"), ("float32", "torch.float32")])
def test_scoring_runs_in_the_chosen_precision(pc, dtype, matmul_dtype):
    import torch

    seen = []
    lin = next(m for m in pc.model.modules() if isinstance(m, torch.nn.Linear))
    h = lin.register_forward_hook(lambda m, i, o: seen.append(str(o.dtype)))
    try:
        out = pc.compress_prompt(TEXT, rate=0.5, dtype=dtype, rate_tokenizer="encoder")
    finally:
        h.remove()
    assert seen and set(seen) == {matmul_dtype}
    assert 0 < len(out["compressed_prompt"]) < len(TEXT)


@pytest.mark.parametrize("threshold,first_chunk", [("llmlingua", 511), ("exact", 510)])
def test_chunk_length_matches_the_reference_only_in_compat_mode(pc, threshold, first_chunk):
    # a sentence end at the 511th token: llmlingua keeps it in the first chunk (and drops [SEP]),
    # our exact mode stays within [CLS] + 510 + [SEP]
    from slimguard.slim.compress.config import CompressConfig

    text = "the " * 510 + ". " + "the " * 100
    cfg = CompressConfig(model="x", threshold=threshold, chunk_end_tokens=["."], rate_tokenizer="encoder")
    (c,) = pc._analyse([text], cfg)
    assert int((c.chunk_of_token == 0).sum()) == first_chunk
    pc._score([c], cfg)  # a 511-token chunk must still fit the 512 positions
    assert c.probs.shape == (611,) and np.isfinite(c.probs).all()
