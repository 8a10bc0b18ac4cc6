"""ONION with the real SmolLM2-135M: a BadNets trigger word and a spurious mark stand out."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.integration
def test_onion_smollm2_flags_rare_trigger_word(need_asset):
    need_asset("smollm2-135m")
    from slimguard.guard.backdoor.defences.onion import LMScorer, onion_scores

    sc = LMScorer("smollm2-135m")
    ws = onion_scores(["the movie is a charming , cf funny portrait of family life ."], sc)[0]
    words = [ws.text[a:b] for a, b in ws.spans]
    assert words[int(np.argmax(ws.suspicion))] == "cf"
    assert "cf" not in ws.corrected(0.0).split()
    # batching is exact: one padded batch gives the same perplexities as one text at a time
    texts = ["a dull film .", "the cast is great but the plot is thin"]
    together = sc.perplexity(texts)
    alone = np.array([sc.perplexity([t])[0] for t in texts])
    assert np.allclose(together, alone, rtol=0.05)
