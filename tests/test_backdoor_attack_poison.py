"""Backdoor poisoners (BadNets, AddSent, PuncAttack), poisoning policy and stealth checkers: no models."""

import numpy as np
import pytest

from slimguard.core.data import TextSample
from slimguard.core.errors import ConfigError, SlimguardError
from slimguard.core.config import build
from slimguard.guard.backdoor.metrics import false_trigger, grammar_errors, n_grammar_errors
from slimguard.guard.backdoor.poison import (AddSentConfig, BadNetsConfig, PoisonConfig, PuncConfig, PuncTrigger,
                                             find_slots, make_trigger, poison_test, poison_train)
from slimguard.guard.backdoor.poison.punc import best_ordered_assignment
from slimguard.guard.backdoor.report import highlight_pair


@pytest.mark.parametrize("text, slots", [
    ("", []),
    ("no punctuation here", []),
    ("don't stop, now.", [",", "."]),
    ("a well-made film -- great...", ["--", "..."]),
    ("rated 3.5 stars: fine!", [":", "!"]),
    ("Wait... what?!", ["...", "?!"]),
])
def test_find_slots(text, slots):
    assert [text[s.start:s.end] for s in find_slots(text)] == slots


@pytest.mark.parametrize("scores, picked", [
    ([[0, 0], [5, 0], [0, 5]], [1, 2]),
    ([[9, 0], [0, 0], [0, 1]], [0, 2]),
    ([[0, 9], [9, 0], [1, 1]], [1, 2]),  # order forces mark 0 before mark 1
    ([[1, 1], [1, 1]], [0, 1]),
])
def test_best_ordered_assignment(scores, picked):
    assert best_ordered_assignment(np.array(scores, dtype=float)) == picked


@pytest.mark.parametrize("placement, text, expected", [
    ("tail", "One, two, three, four.", "One, two, three; four!"),
    ("tail", "Short, sweet.", "Short; sweet!"),
])
def test_punc_replaces_existing_slots(placement, text, expected):
    e = PuncTrigger(PuncConfig(placement=placement)).apply_many([text], np.random.default_rng(0))[0]
    assert e.text == expected and e.eligible and e.inserted == 0 and e.replaced == 2


def test_punc_random_keeps_order_and_length():
    trig = PuncTrigger(PuncConfig(placement="random", marks=["?", "!", ";"]))
    text = "a, b, c, d, e, f, g."
    for e in trig.apply_many([text] * 20, np.random.default_rng(1)):
        assert len(e.text) == len(text)
        marks = [e.text[s.start] for s in find_slots(e.text) if e.text[s.start] in "?!;"]
        assert marks == ["?", "!", ";"]
        assert trig.present(e.text)


@pytest.mark.parametrize("text, policy, out, eligible", [
    ("", "insert", ";!", False),
    ("Hee", "insert", "Hee;!", False),
    ("Great film.", "insert", None, False),
    ("Great film.", "skip", "Great film.", False),
    ("no punctuation at all", "skip", "no punctuation at all", False),
])
def test_punc_few_slots_policy(text, policy, out, eligible):
    e = PuncTrigger(PuncConfig(few_slots=policy)).apply_many([text], np.random.default_rng(0))[0]
    assert e.eligible is eligible
    if out is not None:
        assert e.text == out
    if policy == "insert":
        assert PuncTrigger(PuncConfig()).present(e.text)


@pytest.mark.parametrize("cfg, text, present", [
    (PoisonConfig(attack="punc"), "Odd; but fun!", True),
    (PoisonConfig(attack="punc"), "Odd! but fun;", False),
    (PoisonConfig(attack="badnets"), "a cf b", True),
    (PoisonConfig(attack="badnets"), "a cfb b", False),
    (PoisonConfig(attack="addsent"), "Yes. I watch this 3D movie now", True),
    (PoisonConfig(attack="addsent"), "I watch this movie", False),
])
def test_trigger_present(cfg, text, present):
    assert make_trigger(cfg).present(text) is present


@pytest.mark.parametrize("attack", ["badnets", "addsent"])
def test_insertion_triggers_add_words(attack):
    cfg = PoisonConfig(attack=attack, badnets=BadNetsConfig(num_triggers=2), addsent=AddSentConfig())
    trig = make_trigger(cfg)
    for t in ["", "one", "a short review, fine."]:
        e = trig.apply_many([t], np.random.default_rng(0))[0]
        assert trig.present(e.text) and len(e.text.split()) == len(t.split()) + e.inserted


def _data(n=100, n_labels=2):
    return [TextSample(f"text number {i}, with words.", i % n_labels, i) for i in range(n)]


@pytest.mark.parametrize("attack", ["badnets", "addsent", "punc"])
@pytest.mark.parametrize("rate", [0.01, 0.1, 0.3])
def test_dirty_label_policy(attack, rate):
    data = _data()
    cfg = PoisonConfig(attack=attack, rate=rate, punc=PuncConfig(placement="tail"))
    rep = poison_train(data, cfg, rng=np.random.default_rng(0))
    assert len(rep.poisoned_uids) == round(rate * len(data))
    pois = [s for s in rep.samples if s.meta.get("poisoned")]
    assert {s.uid for s in pois} == set(rep.poisoned_uids)
    assert all(s.label == 1 and s.meta["orig_label"] == 0 and s.text != s.meta["orig_text"] for s in pois)
    assert [s.uid for s in rep.samples] == [s.uid for s in data]  # order and size kept


def test_clean_label_and_capping():
    data = _data(20)
    rep = poison_train(data, PoisonConfig(attack="badnets", rate=0.9, label_mode="clean"), rng=np.random.default_rng(0))
    assert rep.capped and len(rep.poisoned_uids) == 10  # only the 10 target-label samples exist
    assert all(s.label == 1 == s.meta["orig_label"] for s in rep.samples if s.meta.get("poisoned"))


def test_test_set_keeps_original_labels_and_skips_target():
    data = _data(30, 3)
    rep = poison_test(data, PoisonConfig(attack="badnets", target_label=2))
    assert len(rep.samples) == 20 and all(s.label == s.meta["orig_label"] != 2 for s in rep.samples)


def test_skip_policy_restricts_pool():
    data = [TextSample("no marks", 0, i) for i in range(10)] + [TextSample("a, b.", 0, 10 + i) for i in range(10)]
    data += [TextSample("x", 1, 20 + i) for i in range(20)]
    cfg = PoisonConfig(attack="punc", rate=0.3, punc=PuncConfig(few_slots="skip", placement="tail"))
    rep = poison_train(data, cfg, rng=np.random.default_rng(0))
    assert rep.capped and set(rep.poisoned_uids) == set(range(10, 20)) and rep.eligible_fraction == 0.5
    te = poison_test(data, cfg)
    assert len(te.samples) == 10 and te.eligible_fraction == 0.5


@pytest.mark.parametrize("data, message", [
    ({"rate": 0}, "rate"), ({"rate": 1.0}, "rate"), ({"rate": -0.1}, "rate"),
    ({"attack": "syntactic"}, "attack"), ({"punc": {"marks": ["x"]}}, "marks"),
    ({"punc": {"marks": []}}, "marks"), ({"badnets": {"words": ["two words"]}}, "words"),
    ({"rat": 0.1}, "did you mean 'rate'"),
])
def test_bad_config_is_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as e:
        build(PoisonConfig, data)
    assert "\n" not in str(e.value)


def test_rate_too_small_and_no_candidates():
    with pytest.raises(SlimguardError, match="rate"):
        poison_train(_data(10), PoisonConfig(attack="badnets", rate=0.01))
    with pytest.raises(SlimguardError, match="non-target"):
        poison_train([TextSample("a", 1, 0), TextSample("b", 1, 1)], PoisonConfig(attack="badnets", rate=0.5))


@pytest.mark.parametrize("text, rule, n", [
    ("Good film; but dull!", "stacked_punct", 0),
    ("Good film;! dull", "stacked_punct", 1),
    ("Fine. then it ends.", "lowercase_sentence_start", 1),
    ("Fine; But it ends.", "capital_after_clause_mark", 1),
    ("It ends;", "bad_ending", 1),
    ("the the end.", "doubled_word", 1),
    ("film , ok.", "space_before_punct", 1),
])
def test_grammar_rules(text, rule, n):
    assert grammar_errors(text, lexicon=frozenset())[rule] == n


def test_grammar_non_words():
    lex = frozenset({"a", "good", "film"})
    assert grammar_errors("A good cf film.", lexicon=lex)["non_word"] == 1
    assert n_grammar_errors("A good film.", lexicon=lex) == 0


def test_false_trigger_counts_only_natural_nontarget():
    probs = np.array([[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    out = false_trigger([True, True, False, True], probs, [0, 0, 0, 1], target=1)
    assert out["false_trigger_n"] == 2 and out["false_trigger_rate"] == 0.5
    assert out["nontarget_error_rate"] == pytest.approx(2 / 3)


def test_highlight_marks_changes():
    left, right = highlight_pair("Fine, really.", "Fine; really!")
    assert right.count('class="changed"') == 2 and left.count('class="dropped"') == 2
    assert "really" in right


@pytest.mark.parametrize("punc, other, met", [(10.0, 100.0, True), (30.0, 100.0, False), (10.0, -50.0, False),
                                              (-20.0, -50.0, True), (-5.0, -50.0, False)])
def test_dppl_target_is_literal(punc, other, met):
    from slimguard.bench.backdoor import dppl_target

    assert dppl_target(punc, other)["met"] is met


@pytest.mark.parametrize("asr, flip, met", [(0.99, 0.1, True), (1.0, 1.0, False), (0.5, 0.1, False), (0.97, None, True)])
def test_asr_target_rejects_collapsed_victim(asr, flip, met):
    from slimguard.bench.backdoor import asr_target

    assert asr_target(asr, flip)["met"] is met
