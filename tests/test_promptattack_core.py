"""PromptAttack: templates, verbalizers, victims (tiny random models) and strategies within budget."""

from __future__ import annotations

import pytest
import torch

from slimguard.core.config import build
from slimguard.core.errors import SlimguardError
from slimguard.guard.promptattack.templates import Template, TemplateError, Verbalizer, token_edits

WORDS = ("it was is this message great good terrible bad fine junk normal the a movie film not very "
         "boring fun loved hated plot . , !").split()


def _tokenizer(special: tuple[str, ...]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(list(special) + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    kw = dict(zip(("unk_token", "pad_token", "eos_token", "cls_token", "sep_token", "mask_token"), special))
    return PreTrainedTokenizerFast(tokenizer_object=tk, **kw)


@pytest.fixture
def causal_victim(tiny_llama):
    from slimguard.core.models import LoadedModel
    from slimguard.guard.promptattack.victims import CausalVictim

    return CausalVictim(LoadedModel(tiny_llama, _tokenizer(("[UNK]", "[PAD]", "[EOS]")), "tiny"), "tiny-llama")


@pytest.fixture
def masked_victim():
    from transformers import BertConfig, BertForMaskedLM

    from slimguard.guard.promptattack.victims import MaskedVictim

    tok = _tokenizer(("[UNK]", "[PAD]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, pad_token_id=tok.pad_token_id)
    return MaskedVictim(BertForMaskedLM(cfg).eval(), tok, "tiny-bert")


SAMPLES = [("the movie was fun", 1), ("hated the plot", 0), ("very boring film", 0), ("loved it", 1),
           ("a fun film !", 1), ("not good", 0), ("the plot was very bad", 0), ("great movie", 1)]
TEMPLATE, VERB = Template("{x} It was {answer}."), Verbalizer.parse("terrible,bad|great,good")


def _data():
    from slimguard.core.data import TextSample

    return [TextSample(t.lower(), y, i) for i, (t, y) in enumerate(SAMPLES)]


# ------------------------------------------------------------------ templates and verbalizers

@pytest.mark.parametrize("text, message", [
    ("It was {answer}.", "no {x} slot"),
    ("{x} It was great.", "no {answer} slot"),
    ("{x} {x} It was {answer}.", "has 2 {x} slots"),
    ("It was {answer}. {x}", "before {x}"),
    ("{x} It was {label} {answer}", "stray"),
])
def test_bad_templates_are_one_line_errors(text, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")) as e:
        Template(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, prefix, infix, suffix", [
    ("{x} It was {answer}.", "", " It was ", "."),
    ("Review: {x}\nSentiment: {answer}", "Review: ", "\nSentiment: ", ""),
])
def test_template_segments(text, prefix, infix, suffix):
    t = Template(text)
    assert (t.prefix, t.infix, t.suffix) == (prefix, infix, suffix)
    assert t.with_infix(" was not ").text == f"{prefix}{{x}} was not {{answer}}{suffix}"


@pytest.mark.parametrize("spec, ok", [("terrible,bad|great,good", True), ("great|great", False), ("great", False),
                                      ("a||b", False)])
def test_verbalizer_validation(spec, ok):
    if ok:
        assert Verbalizer.parse(spec).words == (("terrible", "bad"), ("great", "good"))
    else:
        with pytest.raises(TemplateError):
            Verbalizer.parse(spec)


@pytest.mark.parametrize("a, b, d", [([1, 2, 3], [1, 2, 3], 0), ([1, 2], [1, 5], 1), ([1, 2], [1, 2, 9], 1),
                                     ([1, 2, 3], [3], 2), ([], [4, 4], 2)])
def test_token_edits(a, b, d):
    assert token_edits(a, b) == d


@pytest.mark.parametrize("field, value, message", [
    ("strategy", "hotflip", "unknown strategy 'hotflip'"),
    ("template", "{x} It was", "no {answer} slot"),
    ("verbalizer", "good|good", "used for classes"),
    ("max_edits", 0, "max_edits"),
    ("settting", "fewshot", "did you mean 'setting'"),
])
def test_config_rejects_bad_input(field, value, message):
    from slimguard.guard.promptattack.attack import PromptAttackConfig

    with pytest.raises(SlimguardError, match=message.replace("{", r"\{").replace("}", r"\}")):
        build(PromptAttackConfig, {field: value})


# ------------------------------------------------------------------ victims

def test_multi_token_label_word_is_an_error_not_truncated(causal_victim):
    with pytest.raises(TemplateError, match="'very good' is 2 tokens"):
        causal_victim.word_ids(Verbalizer.parse("bad|very good"))


def test_causal_cache_matches_full_forward(causal_victim):
    """Cached input + infix (left-padded batch) == one plain forward of input+infix per example."""
    v, data = causal_victim, _data()[:4]
    batch = v.prepare([s.text for s in data], [s.label for s in data], [s.uid for s in data], TEMPLATE)[0]
    infix = v.encode_infix(TEMPLATE)
    f = v.features(batch, infix_ids=infix)
    for r, uid in enumerate(batch.uids):
        ids = v.tokenizer(data[uid].text, add_special_tokens=False).input_ids + infix
        with torch.no_grad():
            ref = v.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        assert torch.allclose(f[r], ref, atol=1e-4)
    assert batch.state["cache"].get_seq_length() == batch.state["len"]  # the shared cache is restored


@pytest.mark.parametrize("victim_name", ["causal_victim", "masked_victim"])
def test_batched_candidates_and_embeds_match(victim_name, request):
    v, data = request.getfixturevalue(victim_name), _data()
    batch = v.prepare([s.text for s in data], [s.label for s in data], [s.uid for s in data], TEMPLATE)[0]
    infix = v.encode_infix(TEMPLATE)
    cands = [infix, infix[:-1] + [v.tokenizer.convert_tokens_to_ids("not")], infix + [v.tokenizer.convert_tokens_to_ids("very")]]
    with torch.no_grad():
        many = v.features_many(batch, cands)
        one = torch.stack([v.features(batch, infix_ids=c) for c in cands])
        emb = v.features(batch, infix_embeds=v.embeddings[torch.tensor(infix)])
    assert torch.allclose(many, one, atol=1e-4)
    assert torch.allclose(emb, one[0], atol=1e-4)


@pytest.mark.parametrize("setting", ["zeroshot", "fewshot", "full"])
def test_classifier_settings(causal_victim, setting):
    from slimguard.guard.promptattack.fewshot import build_classifier

    clf = build_classifier(causal_victim, TEMPLATE, VERB, _data(), setting=setting, k=2, n_full=8, head_steps=30,
                           head_lr=0.1)
    batch = causal_victim.prepare([s.text for s in _data()], [s.label for s in _data()], list(range(8)), TEMPLATE)
    pred = clf.predict(batch)
    assert set(pred) == set(range(8)) and set(pred.values()) <= {0, 1}
    if setting != "zeroshot":
        assert clf.fit_info["n_train"] == (4 if setting == "fewshot" else 8)
        assert clf.fit_info["train_acc"] >= 0.75  # 4-8 separable points, 30 Adam steps


def test_fewshot_needs_enough_examples(causal_victim):
    from slimguard.guard.promptattack.fewshot import build_classifier

    with pytest.raises(SlimguardError, match="need k=16 per class"):
        build_classifier(causal_victim, TEMPLATE, VERB, _data(), setting="fewshot", k=16)


# ------------------------------------------------------------------ strategies

@pytest.mark.parametrize("victim_name, recipe, objective", [
    ("causal_victim", r, "ce") for r in ("gradient", "char", "word", "random", "distractor+gradient")
] + [("masked_victim", "gradient", "ce"), ("causal_victim", "gradient", "margin"), ("masked_victim", "random", "margin")])
def test_strategies_respect_budget_and_raise_loss(victim_name, recipe, objective, request):
    from slimguard.guard.promptattack.attack import search
    from slimguard.guard.promptattack.fewshot import build_classifier

    v = request.getfixturevalue(victim_name)
    clf = build_classifier(v, TEMPLATE, VERB, _data(), setting="zeroshot")
    st = search(clf, _data(), recipe=recipe, max_edits=2, max_steps=2, max_queries=12, seed=0, objective=objective)
    assert st.queries <= 12 and st.steps <= 2
    assert token_edits(clf.infix_ids, st.infix) <= 2
    losses = [t["loss"] for t in st.trace]
    assert losses == sorted(losses) and st.loss == losses[-1]  # greedy: never accepts a worse template
    if recipe in ("gradient", "distractor+gradient"):
        assert st.steps >= 1
    text = TEMPLATE.with_infix(v.decode_infix(st.infix))  # found templates stay valid templates
    assert text.text.count("{x}") == 1


@pytest.mark.parametrize("objective, logits, label, expected", [
    ("margin", [2.0, 0.0], 0, -2.0),   # still correct: negative, unclipped
    ("margin", [2.0, 0.0], 1, 1.0),    # flipped by 2 > kappa: clipped at kappa
    ("margin", [0.5, 0.0], 1, 0.5),    # flipped by less than kappa
    ("margin", [0.0, 3.0, 1.0], 1, -2.0),  # three classes: the strongest other class counts
    ("ce", [2.0, 0.0], 1, 2.126928),   # unbounded: confidence keeps paying
])
def test_attack_loss(objective, logits, label, expected):
    from slimguard.guard.promptattack.strategies.base import attack_loss

    got = attack_loss(torch.tensor([logits]), torch.tensor([label]), objective, kappa=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_random_templates_stay_in_budget_and_vocabulary():
    from slimguard.guard.promptattack.strategies.random_template import random_infix

    benign, mask = [3, 4, 5], torch.zeros(50, dtype=torch.bool)
    mask[20:30] = True
    draws = [random_infix(benign, mask, 3, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(token_edits(benign, d) <= 3 for d in draws)
    assert all(t in benign or 20 <= t < 30 for d in draws for t in d)
    assert len({tuple(d) for d in draws}) > 10  # actually random
    again = [random_infix(benign, mask, 3, torch.Generator().manual_seed(s)) for s in range(20)]
    assert again == draws  # explicit generator: reproducible
