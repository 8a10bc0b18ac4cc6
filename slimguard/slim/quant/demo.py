"""Demo step for EdgeQAT (Shen et al., 2024): SmolLM2-135M at W4A8KV4 -- round-to-nearest vs a short
EdgeQAT run, with held-out KL to the float model and perplexity measured while it trains, on the essays
it trains on (held-out documents) and on dialogue it never sees, and the exported learned-Q4_0 GGUF
size vs F16.

Why the out-of-domain text: QAT updates the weights on Paul Graham essays, so on held-out essays it can
read *below* the float model's perplexity (it adapts to the genre, as any fine-tuning would); on Friends
transcripts that adaptation does not help, and the KL to the float model is the measure of how much
quantization still costs.
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
    from ...report.html import esc, figure, table
    from ...report.step import StepResult, SummaryRow
    from .baselines import rtn
    from .config import QuantTrainConfig
    from .data import load_blocks
    from .evaluate import evaluate
    from .export import default_template, write_gguf
    from .prepare import attach_recorder, convert
    from .train import train

    torch.manual_seed(0)
    lm = load_causal_lm("smollm2-135m")
    steps, every, seq, bs, nev = (6, 2, 64, 2, 2) if quick else (20, 4, 64, 2, 4)
    cfg = build(QuantTrainConfig, dict(qat=dict(w_bits=4, a_bits=8, kv_bits=4), seq_len=seq,
                                       batch_size=bs, steps=steps, warmup=1, eval_batches=nev, device="cpu",
                                       loss=dict(ce=True, kd=True, entropy=True, distribution=True)))
    blocks = load_blocks(lm.tokenizer, ["pg-essays"], "pg-essays", seq_len=seq, eval_frac=0.15)
    other = load_blocks(lm.tokenizer, ["friends"], "friends", seq_len=seq, eval_frac=0.15)
    ev, ev_ood = blocks.eval_batches(nev, bs), other.eval_batches(nev, bs)
    teacher = attach_recorder(copy.deepcopy(lm.model))
    fp, fp_ood = evaluate(teacher, ev), evaluate(teacher, ev_ood)
    base = rtn(lm.model, cfg.qat, blocks.batch(0, bs, 0))
    r_rtn, r_rtn_ood = evaluate(base, ev, teacher=teacher), evaluate(base, ev_ood, teacher=teacher)
    del base
    curve = []

    def on_step(step, model):
        if step % every == 0 or step == steps:  # step 0: quantizers initialised, no update yet
            r, o = evaluate(model, ev, teacher=teacher), evaluate(model, ev_ood, teacher=teacher)
            curve.append({"step": step, "KL essays": r.kl_to_fp, "ppl essays": r.ppl, "KL Friends": o.kl_to_fp,
                          "ppl Friends": o.ppl})

    student = copy.deepcopy(lm.model)
    res, model = train(cfg, model=student, teacher=teacher, blocks=blocks, progress=False, do_eval=False,
                       on_step=on_step)
    r_qat, r_qat_ood = evaluate(model, ev, teacher=teacher), evaluate(model, ev_ood, teacher=teacher)
    convert(model)
    tmpl = default_template("smollm2-135m")
    sizes = {}
    if tmpl is not None and not quick:
        q = write_gguf(model, out_dir / "edgeqat-q4_0.gguf", template=tmpl)
        f = write_gguf(lm.model, out_dir / "fp16.gguf", template=tmpl, weight_type="f16")
        sizes = {"q4_0_mb": q.stat().st_size / 1e6, "f16_mb": f.stat().st_size / 1e6}
        f.unlink()
    n_tok = r_qat.tokens
    summary = [
        SummaryRow("held-out KL to the float model, essays (nats/token)", round(r_qat.kl_to_fp, 4), n=n_tok,
                   baseline=round(r_rtn.kl_to_fp, 4),
                   baseline_name="round-to-nearest W4A8KV4 (per-group), same tokens"),
        SummaryRow("held-out KL to the float model, Friends (never trained on)", round(r_qat_ood.kl_to_fp, 4),
                   n=r_qat_ood.tokens, baseline=round(r_rtn_ood.kl_to_fp, 4),
                   baseline_name="round-to-nearest W4A8KV4, same tokens"),
        SummaryRow("held-out perplexity, essays", round(r_qat.ppl, 2), n=n_tok, baseline=round(r_rtn.ppl, 2),
                   baseline_name="round-to-nearest W4A8KV4"),
        SummaryRow("held-out perplexity, essays, vs float", round(r_qat.ppl, 2), n=n_tok, baseline=round(fp.ppl, 2),
                   baseline_name="float model (reads lower after QAT: see the note)"),
        SummaryRow("perplexity on Friends (never trained on), vs float", round(r_qat_ood.ppl, 2), n=r_qat_ood.tokens,
                   baseline=round(fp_ood.ppl, 2), baseline_name="float model, same tokens"),
    ]
    if sizes:
        summary.append(SummaryRow("GGUF file MB (learned Q4_0 weights)", round(sizes["q4_0_mb"], 1),
                                  baseline=round(sizes["f16_mb"], 1), baseline_name="F16 GGUF of the float model",
                                  n="1 file"))
    start = curve[0] if curve else None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    xs = [c["step"] for c in curve]
    a1.plot(xs, [c["KL essays"] for c in curve], "o-", label="EdgeQAT, essays (held out)")
    a1.plot(xs, [c["KL Friends"] for c in curve], "s-", label="EdgeQAT, Friends (never trained on)")
    a1.axhline(r_rtn.kl_to_fp, color="tab:blue", ls=":", label="round-to-nearest, essays")
    a1.axhline(r_rtn_ood.kl_to_fp, color="tab:orange", ls=":", label="round-to-nearest, Friends")
    a1.set(xlabel="QAT step", ylabel="KL to float model (nats/token)", title="quantization error while training")
    a1.legend(fontsize=7)
    a2.plot(xs, [c["ppl essays"] for c in curve], "o-", label="EdgeQAT, essays")
    a2.plot(xs, [c["ppl Friends"] for c in curve], "s-", label="EdgeQAT, Friends")
    a2.axhline(fp.ppl, color="tab:blue", ls="--", label="float model, essays")
    a2.axhline(fp_ood.ppl, color="tab:orange", ls="--", label="float model, Friends")
    a2.set(xlabel="QAT step", ylabel="held-out perplexity", title="perplexity while training")
    a2.legend(fontsize=7)
    fig.tight_layout()
    below = r_qat.ppl < fp.ppl
    note = (f"<p><b>Why EdgeQAT can read below the float model here:</b> QAT also updates the weights, on Paul "
            f"Graham essays, and the essay perplexity is measured on held-out essays of the same author: the "
            f"quantized model adapts to the genre (essays {r_qat.ppl:.1f} vs float {fp.ppl:.1f}). On Friends "
            f"transcripts, which QAT never sees, it reads {r_qat_ood.ppl:.1f} vs float {fp_ood.ppl:.1f}. The KL to "
            f"the float model is the honest measure of what quantization still costs: "
            f"{r_qat.kl_to_fp:.3f} nats/token after QAT vs {r_rtn.kl_to_fp:.3f} for round-to-nearest.</p>")
    html = (f"<p>EdgeQAT ({esc(cfg.qat.tag())}: CE + distillation + entropy + distribution guidance) for {steps} "
            f"steps of {bs}x{seq} tokens on CPU; held-out KL and perplexity every {every} steps on {n_tok} tokens of "
            f"held-out essays and {r_qat_ood.tokens} tokens of Friends transcripts.</p>" + figure(fig) + note
            + table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()} for c in curve]))
    kl_first = start["KL essays"] if start else float("nan")
    return StepResult(
        "Quantization-aware training (EdgeQAT)", summary, html,
        goal="Quantization-aware training should bring a W4A8KV4 model (4-bit weights, 8-bit activations, 4-bit KV "
             "cache) closer to the float model than round-to-nearest at the same bits.",
        shows=(f"After {steps} QAT steps the held-out KL to the float model is {r_qat.kl_to_fp:.3f} nats/token "
               f"(at step {start['step'] if start else 0}: {kl_first:.3f}) against {r_rtn.kl_to_fp:.3f} for "
               f"round-to-nearest; on text it never trained on, {r_qat_ood.kl_to_fp:.3f} against "
               f"{r_rtn_ood.kl_to_fp:.3f}." + (" Its essay perplexity reads below the float model's because QAT "
                                               "adapts the weights to the essays (note below)." if below else "")),
        caveat=(f"{steps} steps on {steps * bs * seq} training tokens is a smoke-scale run; the canonical benchmark "
                "compares EdgeQAT with LSQ, distillation-only and torchao QAT over three seeds."),
        canonical=("quant",),
        featured=("edgeqat_w4a8kv4_ppl_ratio_to_fp", "edgeqat_w4a8kv4_rtn_gap_closed", "gguf_size_ratio_vs_f16"))
