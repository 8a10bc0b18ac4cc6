"""The victim's window (issue 35): sizing, trigger placement inside it, the visible-share metric, and
PuncAttack's batched LM placement against the reference path. Tiny in-process tokenizers and LMs only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimguard.core.data import TextSample
from slimguard.core.errors import SlimguardError
from slimguard.guard.backdoor.poison import PoisonConfig, PuncConfig, PuncTrigger, make_trigger, poison_test, poison_train
from slimguard.guard.backdoor.window import Window, size_window

WORDS = ["the", "film", "was", "good", "bad", "a", "plot", "and", "but", "it", "is", "long", "story", "of", "men",
         "cf", "mn", "bb", "tq", "i", "watch", "this", "3d", "movie"]
PUNCT = list(",.!?;:-'\"")


def _bert_tok():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *PUNCT, *WORDS]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="module")
def tok():
    return _bert_tok()


def _long(n_words: int, rng: np.random.Generator, punct: bool = True) -> str:
    body = ["the", "film", "was", "good", "and", "it", "is", "a", "long", "story", "of", "men", "but", "plot"]
    out = []
    for i in range(n_words):
        w = body[int(rng.integers(len(body)))]
        out.append(w + ("," if punct and i % 7 == 6 else "") + ("." if punct and i % 11 == 10 else ""))
    return " ".join(out)


def _visible_part(tok, text: str, max_length: int) -> str:
    """What the victim reads, independently of Window: the characters of the tokens truncation keeps."""
    enc = tok(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ends = [e for (a, e) in enc["offset_mapping"] if e > a]
    return text[:max(ends)] if ends else ""


# texts much longer than the window (16 tokens incl. [CLS]/[SEP]), for every poisoner
POISONERS = [
    ("badnets", {}),
    ("badnets", {"badnets": {"num_triggers": 3}}),
    ("addsent", {}),
    ("punc", {"punc": {"placement": "random"}}),
    ("punc", {"punc": {"placement": "tail"}}),  # tail = the last slots of the text: far past the cut unless windowed
    ("punc", {"punc": {"few_slots": "insert"}}),  # texts without punctuation: the marks are inserted
]


@pytest.mark.parametrize("attack, extra", POISONERS)
@pytest.mark.parametrize("within", [True, False])
def test_trigger_lands_inside_the_window(tok, attack, extra, within):
    rng = np.random.default_rng(0)
    punct = not extra.get("punc", {}).get("few_slots")
    texts = [_long(int(n), rng, punct) for n in rng.integers(30, 80, size=40)]
    cfg = PoisonConfig(attack=attack, within_window=within, **extra)
    trig = make_trigger(cfg)
    win = Window(tok, 16)
    edits = [e for e in trig.apply_many(texts, np.random.default_rng(1), window=win if within else None) if e.spans]
    assert len(edits) >= 20  # (PuncAttack skips texts without two slots inside the window)
    parts = [_visible_part(tok, e.text, 16) for e in edits]
    seen = [all(b <= len(p) for _, b in e.spans) for e, p in zip(edits, parts)]
    assert win.visible([e.text for e in edits], [e.spans for e in edits]) == seen  # spans vs reading the truncated text
    if within:
        assert all(seen) and all(trig.present(p) for p in parts)
    else:  # the same texts poisoned anywhere: most triggers fall past the cut (the bug this fixes)
        assert sum(seen) < len(seen) / 2


@pytest.mark.parametrize("attack, extra", POISONERS)
def test_short_texts_are_poisoned_exactly_as_without_a_window(tok, attack, extra):
    texts = ["the film was good, a plot.", "it is a long story, and men.", "the movie: bad."]
    if extra.get("punc", {}).get("few_slots"):
        texts = ["the film was good", "it is a long story"]
    trig = make_trigger(PoisonConfig(attack=attack, **extra))
    a = trig.apply_many(texts, np.random.default_rng(5), window=Window(tok, 64))
    b = trig.apply_many(texts, np.random.default_rng(5))
    assert [e.text for e in a] == [e.text for e in b]


@pytest.mark.parametrize("text, spans, max_length, visible", [
    ("a b cf", [(4, 6)], 5, True),  # 3 tokens + 2 specials
    ("a b a cf", [(6, 8)], 5, False),  # 4th token is cut
    ("cf a b a b", [(0, 2)], 5, True),
    ("a b; a!", [(3, 4), (6, 7)], 6, False),  # ';' kept, '!' cut: the trigger is incomplete
    ("a b; a!", [(3, 4), (6, 7)], 7, True),
    ("", [], 5, False),  # no trigger at all is not a visible one
])
def test_visible_counts_spans_against_the_window(tok, text, spans, max_length, visible):
    assert Window(tok, max_length).visible([text], [spans]) == [visible]


def test_visible_share_counts_rows(tok):
    # 4 short and 4 long non-target rows; tail placement without the window rule puts the long
    # texts' marks past the cut, so exactly half of the triggered rows are visible
    rng = np.random.default_rng(0)
    short = ["the film, good.", "a plot, bad.", "it is, long.", "men, and story."]
    samples = [TextSample(t, 0, i) for i, t in enumerate(short + [_long(60, rng) for _ in range(4)])]
    cfg = PoisonConfig(attack="punc", within_window=False, punc={"placement": "tail"})
    rep = poison_test(samples, cfg, rng=np.random.default_rng(0), window=Window(_bert_tok(), 16))
    assert rep.visible == {0: True, 1: True, 2: True, 3: True, 4: False, 5: False, 6: False, 7: False}
    assert rep.visible_share == 0.5 and rep.summary()["visible"] == 4
    inside = poison_test(samples, cfg.model_copy(update={"within_window": True}), rng=np.random.default_rng(0),
                         window=Window(_bert_tok(), 16))
    assert inside.visible_share == 1.0
    assert poison_test(samples, cfg, rng=np.random.default_rng(0)).summary()["visible_measured"] == 0


def test_train_poisoning_records_visibility_and_skips_windowless_slots(tok):
    # skip policy: a text whose slots all lie past the window cannot take the trigger inside it
    rng = np.random.default_rng(0)
    lead = " ".join(["the film was good and it is a long story of men"] * 3)
    samples = [TextSample(lead + " but, plot.", 0, 0)] + [TextSample(_long(40, rng), i % 2, i) for i in range(1, 40)]
    cfg = PoisonConfig(attack="punc", rate=0.2, punc={"placement": "random"})
    win = Window(tok, 24)
    assert not make_trigger(cfg).eligible_many([samples[0].text], window=win)[0]
    rep = poison_train(samples, cfg, rng=np.random.default_rng(0), window=win)
    assert 0 not in rep.poisoned_uids and rep.visible_share == 1.0 and len(rep.visible) == len(rep.poisoned_uids)


# --------------------------------------------------------------------------- sizing


def _encoder_dir(tmp_path, max_pos=64):
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path / f"enc{max_pos}"
    cfg = BertConfig(vocab_size=len(WORDS) + len(PUNCT) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=max_pos)
    BertForSequenceClassification(cfg).save_pretrained(d)
    _bert_tok().save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("n_words, max_length, want, source, truncated", [
    ([5] * 100, None, 32, "auto", 0),  # short texts: the 32-token floor
    ([20] * 90 + [60] * 10, None, 64, "auto", 0),  # p95 = 62 tokens -> 64
    ([40] * 100, None, 64, "auto", 0),  # 42 tokens -> 64
    ([100] * 100, None, 64, "auto", 100),  # every text beyond the encoder: capped, warned
    ([20] * 100, 16, 16, "config", 100),  # the user's choice: truncation is theirs, no warning
    ([20] * 95 + [80] * 5, None, 32, "auto", 5),  # the 5% above the percentile are truncated
])
def test_size_window(tmp_path, n_words, max_length, want, source, truncated):
    enc = _encoder_dir(tmp_path)
    texts = [" ".join(["film"] * n) for n in n_words]
    win, sz = size_window(enc, max_length, {"train": texts})
    assert (win.max_length, sz.source, sz.truncated["train"], sz.encoder_limit) == (want, source, truncated, 64)
    if truncated == 100 and source == "auto":
        assert sz.warning and "100%" in sz.warning and "limit of 64 tokens" in sz.warning
    else:
        assert sz.warning is None


def test_max_length_above_the_encoders_limit_is_one_line(tmp_path):
    with pytest.raises(SlimguardError, match=r"victim.max_length=128 exceeds .* limit of 64 tokens") as e:
        size_window(_encoder_dir(tmp_path), 128, {"train": ["a film"]})
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- batched LM placement


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A random 2-layer Llama with a word-level fast tokenizer (offsets), saved as a local model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["[UNK]", "[PAD]", "[EOS]", *PUNCT, "...", "--", "?!", *WORDS]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _placement_texts() -> list[str]:
    rng = np.random.default_rng(3)
    texts = [_long(int(n), rng) for n in rng.integers(5, 60, size=30)]
    texts += [texts[0], texts[1]]  # duplicates share one pass
    texts += [texts[2] + " and the plot, bad.", texts[2][: len(texts[2]) // 2] + ", good!"]  # prefixes of others
    texts += [", the film, was good.", "film -- plot... men?! story, a."]  # slot at the start; runs of marks
    texts += [_long(300, rng)]  # longer than the LM's 256 tokens: later slots score 0 on both paths
    return texts


@pytest.mark.parametrize("batch_tokens", [64, 512, 100_000])
@pytest.mark.parametrize("marks", [[";", "!"], ["?", "-", ":"]])
def test_batched_placement_equals_the_reference(tiny_lm_dir, batch_tokens, marks):
    from slimguard.guard.backdoor.poison import punc as P

    texts = _placement_texts()
    fast = PuncTrigger(PuncConfig(lm=tiny_lm_dir, marks=marks, lm_batch_tokens=batch_tokens))
    ref = PuncTrigger(PuncConfig(lm=tiny_lm_dir, marks=marks, lm_batched=False, lm_batch_size=7))
    slots = [fast.slots(t) for t in texts]
    P._SCORE_CACHE.clear()
    a = P.lm_slot_scores(texts, slots, marks, tiny_lm_dir, batched=True, batch_tokens=batch_tokens, progress=False)
    b = P.lm_slot_scores(texts, slots, marks, tiny_lm_dir, 7, batched=False, progress=False)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.allclose(x, y, atol=1e-4)
    assert np.all(a[-1][-3:] == 0) and np.all(b[-1][-3:] == 0)
    ea = fast.apply_many(texts, np.random.default_rng(0))
    eb = ref.apply_many(texts, np.random.default_rng(0))
    assert [e.text for e in ea] == [e.text for e in eb]
    assert sum(e.text != t for e, t in zip(ea, texts)) >= 30  # the placement did something


@pytest.mark.integration
@pytest.mark.slow
def test_batched_placement_equals_the_reference_on_smollm2(need_asset):
    need_asset("smollm2-135m", "pg-essays")
    from slimguard.core.data import load_long_texts
    from slimguard.guard.backdoor.poison import punc as P

    words = " ".join(load_long_texts("pg-essays")[:3]).split()
    texts = [" ".join(words[i:i + 75]) for i in range(0, 75 * 12, 75)]
    P._SCORE_CACHE.clear()
    ea = PuncTrigger(PuncConfig()).apply_many(texts, np.random.default_rng(0))
    eb = PuncTrigger(PuncConfig(lm_batched=False)).apply_many(texts, np.random.default_rng(0))
    assert [e.text for e in ea] == [e.text for e in eb]
