"""``slimguard bench core``: the model layer's costs, side by side.

Loading SmolLM2 from our converted safetensors folder vs. straight from the GGUF file
(what a user would do with ``gguf_file=``), and greedy decode speed. Shows why the asset
layer converts once.

    slimguard bench core --repeats 1 --threads 2   # writes benchmarks/results/core.json
"""

from __future__ import annotations

from pydantic import Field

from ..core.commands import Flag, Invocation, command
from .harness import BenchConfig


class CoreBenchConfig(BenchConfig):
    """Sizes of the model-layer benchmark."""

    repeats: int = Field(5, ge=1, description="Timed repeats (median reported).")
    threads: int = Field(2, ge=1, description="torch threads (recorded with the result).")
    new_tokens: int = Field(32, ge=1, description="Greedy decode tokens per timed repeat.")


def run(repeats: int = 5, threads: int = 2, new_tokens: int = 32, command: str | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from ..core import assets
    from ..core.models import load_causal_lm
    from . import harness

    torch.set_num_threads(threads)
    root = assets.require("smollm2-135m")
    gguf = next((root / "gguf").glob("*.gguf"))
    t_st = harness.time_it(lambda: load_causal_lm("smollm2-135m"), repeats=repeats, warmup=1)
    t_gg = harness.time_it(lambda: AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name),
                           repeats=max(3, repeats // 2), warmup=0)
    lm = load_causal_lm("smollm2-135m")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")

    def gen():
        with torch.no_grad():
            lm.model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=lm.tokenizer.pad_token_id)

    t_gen = harness.time_it(gen, repeats=repeats, warmup=1)
    rows = [
        {"method": "load safetensors folder (slimguard)", "metric": "seconds", "value": t_st.median_s},
        {"method": "load GGUF via transformers gguf_file", "metric": "seconds", "value": t_gg.median_s},
        {"method": "greedy decode, HF generate fp32", "metric": "tokens_per_s", "value": new_tokens / t_gen.median_s},
    ]
    targets = {
        "reload_seconds": harness.target(t_st.median_s, "<= 1"),
        "load_speedup_vs_gguf": harness.target(t_gg.median_s / t_st.median_s, ">= 2"),
    }
    cfg = {"repeats": repeats, "threads": threads, "new_tokens": new_tokens}
    path = harness.write_result("core", command=command or f"slimguard bench core --repeats {repeats} --threads {threads}",
                                config=cfg, rows=rows, targets=targets,
                                extra={"note": "Timings on a shared 2-core machine; medians after warm-up."})
    return {"path": str(path), "rows": rows, "targets": targets}


def _rows(m: dict, _run) -> str:
    return "\n".join(f"{r['method']:45s} {r['metric']:13s} {r['value']:.3f}" for r in m["rows"])


@command("bench core", config=CoreBenchConfig, owns_run=False,
         flags=(Flag("--repeats", "repeats"), Flag("--threads", "threads")), stdout=_rows)
def bench_core(cfg: CoreBenchConfig, call: Invocation) -> dict:
    """Model layer: safetensors reload vs GGUF load, greedy decode tokens/s."""
    return run(repeats=cfg.repeats, threads=cfg.threads, new_tokens=cfg.new_tokens, command=call.command)
