"""Backdoor attacks on the real assets: Rotten Tomatoes slots, SmolLM2 placement and stealth metrics."""

import numpy as np
import pytest

from slimguard.guard.backdoor.poison import PoisonConfig, PuncConfig, make_trigger, poison_test


@pytest.mark.integration
def test_rotten_tomatoes_eligible_fraction(need_asset):
    need_asset("rotten-tomatoes")
    from slimguard.core.data import load_text_dataset

    sp = load_text_dataset("rotten-tomatoes")
    rep = poison_test(sp.test, PoisonConfig(punc=PuncConfig(placement="tail", few_slots="insert")),
                      rng=np.random.default_rng(0))
    assert 0.55 < rep.eligible_fraction < 0.8  # about a third of snippets have fewer than 2 punctuation slots
    assert len(rep.samples) == rep.n_candidates  # insert policy: every non-target text carries the trigger
    trig = make_trigger(PoisonConfig())
    assert all(trig.present(s.text) for s in rep.samples)
    assert sum(trig.present(s.text) for s in sp.test) < 0.02 * len(sp.test)  # the trigger is rare in clean text


@pytest.mark.integration
@pytest.mark.slow
def test_lm_placement_and_stealth_ordering(need_asset):
    need_asset("smollm2-135m", "minilm-l6", "rotten-tomatoes")
    from slimguard.core.data import load_text_dataset
    from slimguard.guard.backdoor.metrics import stealth

    texts = ["The acting is fine, the plot is thin, and the ending drags.",
             "Funny, warm and wise: a small gem of a film.",
             "It tries hard, but the jokes fall flat, and the pacing is slow."]
    lm = make_trigger(PoisonConfig()).apply_many(texts, np.random.default_rng(0))
    assert all(e.replaced == 2 and e.inserted == 0 for e in lm)
    sp = load_text_dataset("rotten-tomatoes")
    clean = [s.text for s in sp.test if s.label == 0][:40]
    out = {}
    for atk in ("punc", "badnets", "addsent"):
        trig = make_trigger(PoisonConfig(attack=atk))
        pois = [e.text for e in trig.apply_many(clean, np.random.default_rng(0))]
        out[atk] = stealth(clean, pois, max_pairs=None)
    assert out["punc"]["delta_ppl"] < out["badnets"]["delta_ppl"] and out["punc"]["delta_ppl"] < out["addsent"]["delta_ppl"]
    assert out["punc"]["similarity"] > max(out["badnets"]["similarity"], out["addsent"]["similarity"])


@pytest.mark.integration
def test_causal_lm_victim_with_classification_head(need_asset, tmp_path):
    """A Llama-architecture victim (SmolLM2's tokenizer, tiny random weights) trains and predicts."""
    need_asset("smollm2-135m")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from slimguard.core.data import TextSample
    from slimguard.core.models import resolve_model_dir
    from slimguard.guard.backdoor.victim import VictimConfig, predict_proba, train_victim

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("smollm2-135m"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    data = [TextSample(("great fun!" if i % 2 else "dull, awful."), i % 2, i) for i in range(16)]
    res = train_victim(data, data[:4], VictimConfig(model=str(tmp_path / "lm"), freeze_layers=1, epochs=1, batch_size=8),
                       tmp_path / "victim", label_names=["neg", "pos"], progress=False)
    p = predict_proba(res.model_dir, ["great fun!", "a much longer, padded input text here."], 2)
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
