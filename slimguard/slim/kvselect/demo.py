"""Demo step for TokenSelect (Wu et al., 2024): a real SmolLM2 reads an essay haystack with a
hidden pass key, dense vs token-level KV selection vs StreamingLLM at the same budget, plus
one-layer decode attention timing at a long context and the per-layer selection plot."""

from __future__ import annotations

import time
from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ...core.timing import time_it
    from ...core.models import load_causal_lm
    from ...report.step import StepResult
    from ...report.html import esc, figure
    from .attention import disable_token_select, enable_token_select, standalone_layer, token_select_attention
    from .config import TokenSelectConfig
    from .tasks import Haystack, is_correct

    length = 512 if quick else 1024
    methods = ["dense", "tokenselect", "streaming"] if quick else ["dense", "tokenselect", "streaming", "h2o", "quest"]
    budget = dict(n_init=16, k=64 if quick else 128, n_local=128, chunk_size=128)
    lm = load_causal_lm("smollm2-135m")
    hay = Haystack(lm.tokenizer)
    sample = hay.sample("passkey", length, 0.5, seed=11)
    ids = torch.tensor([sample.input_ids])
    rows, sel_fig = [], None
    for m in methods:
        rt = enable_token_select(lm.model, TokenSelectConfig(method=m, record=m == "tokenselect", **budget))
        t0 = time.perf_counter()
        with torch.no_grad():
            g = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                  pad_token_id=lm.tokenizer.pad_token_id)
        text = lm.tokenizer.decode(g[0, ids.shape[1]:], skip_special_tokens=True)
        rows.append({"method": m, "answer": text.strip()[:40], "correct": is_correct(sample, text),
                     "seconds": round(time.perf_counter() - t0, 1)})
        if m == "tokenselect" and rt.selected():
            fig, ax = plt.subplots(figsize=(9, 3.5))
            for layer, idx in sorted(rt.selected().items()):
                ax.scatter(idx[0, 0].numpy(), [layer] * idx.shape[-1], s=1, c="tab:blue")
            ax.axvspan(*sample.needle_span, color="tab:red", alpha=0.3, label="pass key")
            ax.set_xlabel("token position")
            ax.set_ylabel("layer")
            ax.legend(loc="upper right")
            ax.set_title(f"tokens each layer selected at the last decode step ({sample.n_tokens}-token context)")
            sel_fig = figure(fig)
        disable_token_select(lm.model)
    # one SmolLM2-shaped layer, decode attention at a long context: dense SDPA vs a Selection Cache hit / miss
    n = 8192 if quick else 32768
    inv = 1.0 / (100000 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    gen = torch.Generator().manual_seed(0)
    k, v, q = (torch.randn(1, 3, n, 64, generator=gen), torch.randn(1, 3, n, 64, generator=gen),
               torch.randn(1, 9, 1, 64, generator=gen))
    times = {}
    for name, cfg in [("dense", TokenSelectConfig(method="dense")), ("miss", TokenSelectConfig(cache_threshold=None)),
                      ("hit", TokenSelectConfig(cache_threshold=1e-6))]:
        mod, _ = standalone_layer(cfg, inv, 3)
        token_select_attention(mod, q, k[:, :, :-1], v[:, :, :-1], None, scaling=0.125)

        def step(mod=mod):
            token_select_attention(mod, q, k, v, None, scaling=0.125)  # a rolled-back step: one new key

        times[name] = time_it(step, repeats=5, warmup=1).median_s
    summary = [{"metric": f"passkey@{length} (budget {16 + budget['k'] + 128})", "slimguard": float(rows[1]["correct"]),
                "baseline": float(rows[0]["correct"]), "baseline_name": "dense"},
               {"metric": f"decode attention ms/token @{n} (miss / hit)",
                "slimguard": f"{times['miss'] * 1e3:.1f} / {times['hit'] * 1e3:.1f}",
                "baseline": round(times["dense"] * 1e3, 1), "baseline_name": "dense SDPA"}]
    from ...report.html import table

    html = (f"<p>Pass key <code>{esc(sample.answer)}</code> hidden at depth 0.5 of a {sample.n_tokens}-token Paul "
            f"Graham essay haystack; greedy answers per selector at equal budget:</p>" + table(rows)
            + (sel_fig or "") + "<p>Small models are weak long-context readers; see docs/kvselect.md for the benchmark.</p>")
    return StepResult("Long context: TokenSelect KV selection", summary, html)
