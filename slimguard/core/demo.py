"""Demo step for the shared model layer: the default causal LM answers a factual prompt."""

from __future__ import annotations

from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import torch

    from ..report.step import StepResult
    from ..report.html import esc
    from .models import load_causal_lm

    lm = load_causal_lm("smollm2-135m")
    prompt = "The capital of France is"
    ids = lm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    text = lm.tokenizer.decode(out[0], skip_special_tokens=True)
    return StepResult("Model layer (SmolLM2-135M)", [{"prompt": prompt, "continuation": text[len(prompt):].strip()}],
                      f"<p>Greedy continuation: <code>{esc(text)}</code></p>")
