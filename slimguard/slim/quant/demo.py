"""Demo step for EdgeQAT (Shen et al., 2024): SmolLM2-135M at W4A8KV4 -- round-to-nearest
vs a short EdgeQAT run, held-out perplexity, and the exported learned-Q4_0 GGUF size vs F16.
"""

from __future__ import annotations

import copy
from pathlib import Path


def demo_step(quick: bool, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ...core.config import build
    from ...core.models import load_causal_lm
    from ...report.step import StepResult
    from ...report.html import esc, figure
    from .baselines import rtn
    from .config import QATConfig, QuantTrainConfig
    from .data import load_blocks
    from .evaluate import evaluate
    from .export import default_template, write_gguf
    from .prepare import attach_recorder, convert
    from .train import train

    torch.manual_seed(0)
    lm = load_causal_lm("smollm2-135m")
    steps, seq, bs, nev = (2, 32, 2, 1) if quick else (12, 64, 2, 4)
    cfg = build(QuantTrainConfig, dict(qat=dict(w_bits=4, a_bits=8, kv_bits=4), seq_len=seq,
                                       batch_size=bs, steps=steps, warmup=1, eval_batches=nev, device="cpu",
                                       loss=dict(ce=True, kd=True, entropy=True, distribution=True)))
    blocks = load_blocks(lm.tokenizer, ["pg-essays"], "pg-essays", seq_len=seq, eval_frac=0.15)
    ev = blocks.eval_batches(nev, bs)
    teacher = attach_recorder(copy.deepcopy(lm.model))
    fp = evaluate(teacher, ev)
    base = rtn(lm.model, cfg.qat, blocks.batch(0, bs, 0))
    r_rtn = evaluate(base, ev, teacher=teacher)
    del base
    res, model = train(cfg, model=copy.deepcopy(lm.model), teacher=teacher, blocks=blocks, progress=False,
                       eval_fp=False)
    r_qat = evaluate(model, ev, teacher=teacher)
    convert(model)
    tmpl = default_template("smollm2-135m")
    sizes = {}
    if tmpl is not None and not quick:
        q = write_gguf(model, out_dir / "edgeqat-q4_0.gguf", template=tmpl)
        f = write_gguf(lm.model, out_dir / "fp16.gguf", template=tmpl, weight_type="f16")
        sizes = {"q4_0_mb": q.stat().st_size / 1e6, "f16_mb": f.stat().st_size / 1e6}
        f.unlink()
    summary = [{"metric": "held-out perplexity (W4A8KV4)", "slimguard": r_qat.ppl, "baseline": r_rtn.ppl,
                "baseline_name": "round-to-nearest", "fp": fp.ppl},
               {"metric": "token KL to FP", "slimguard": r_qat.kl_to_fp, "baseline": r_rtn.kl_to_fp,
                "baseline_name": "round-to-nearest"}]
    if sizes:
        summary.append({"metric": "GGUF MB (learned Q4_0 vs F16)", "slimguard": sizes["q4_0_mb"],
                        "baseline": sizes["f16_mb"], "baseline_name": "F16 GGUF"})
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.plot(range(1, len(res.losses) + 1), res.losses, marker="o")
    ax.set(xlabel="step", ylabel="EdgeQAT loss", title=f"{steps} QAT steps on CPU")
    html = (f"<p>EdgeQAT ({esc(cfg.qat.tag())}, CE + distillation + entropy + distribution "
            f"guidance) for only {steps} steps of {bs}x{seq} tokens; evaluation on {r_qat.tokens} held-out tokens "
            "of Paul Graham essays. The full benchmark is <code>slimguard bench quant</code>.</p>" + figure(fig))
    return StepResult("Quantization-aware training (EdgeQAT)", summary, html)
