"""The long-context verb, ``slimguard longctx generate``: read a long context with TokenSelect
(Wu et al., 2024) KV selection, stream the answer and record the selection statistics.

Example (CPU)::

    slimguard longctx generate --model smollm2-135m --context-file essay.txt --prompt "Summary:" --set k=512
"""

from __future__ import annotations

import time
from pydantic import Field

from ...core.commands import Flag, command
from ...core.config import build
from ...core.runs import Run, safe_run_name
from .config import TokenSelectConfig, defaults_for
from .context import long_input, read_context


class GenerateConfig(TokenSelectConfig):
    """``slimguard longctx generate``: a model, a long context and a question, read with KV selection.

    Budget fields left unset (n_init, k, n_local, pool_kernel, score_dtype, score_layers) take the
    defaults scaled to the model (:func:`defaults_for`); anything set explicitly wins."""

    model: str = Field("smollm2-135m", description="Asset name or local transformers directory.")
    context_file: str = Field(..., description="UTF-8 text file read as the long context.")
    prompt: str = Field("", description="Text appended after the context (the question).")
    max_new_tokens: int = Field(32, ge=1, description="Tokens to generate (greedy).")


def scaled_to(cfg: GenerateConfig, model_config) -> GenerateConfig:
    """``cfg`` with the budget fields the user did not set taken from :func:`defaults_for`."""
    return build(type(cfg), {**defaults_for(model_config), **cfg.model_dump(exclude_unset=True)})


def _summary(m: dict) -> str:
    return (f"selection: {m['selections']} selections over {m['selecting_layers']} layers, Selection Cache hit rate "
            f"{m['cache_hit_rate']:.2f}, {m['dense_calls']} dense calls, {m['seconds']:.1f}s "
            f"({m['context_tokens']} context tokens, method={m['method']}, budget={m['budget']})")


@command("longctx generate", config=GenerateConfig, resumable=False,
         run_name=lambda cfg: safe_run_name("longctx-generate", time.strftime("%Y%m%d-%H%M%S")),
         flags=(Flag("--model", "model", "-m"), Flag("--context-file", "context_file"), Flag("--prompt", "prompt"),
                Flag("--max-new-tokens", "max_new_tokens"), Flag("--method", "method"), Flag("--k", "k")),
         summary=_summary, stdout=lambda m, run: None)
def generate_command(cfg: GenerateConfig, run: Run) -> dict:
    """Read CONTEXT_FILE + PROMPT with token-level KV selection; stream the answer and print selection stats."""
    text = read_context(cfg.context_file)
    import torch
    from transformers import TextStreamer

    from ...core.models import load_causal_lm
    from .attention import enable_token_select

    lm = load_causal_lm(cfg.model)
    cfg = scaled_to(cfg, lm.model.config)
    run.save_config(cfg)  # the budget actually used
    rt = enable_token_select(lm.model, cfg)
    ids = lm.tokenizer(long_input(text, cfg.prompt), return_tensors="pt")["input_ids"]
    run.log.info("%d context tokens, method=%s, budget=%d (n_init=%d, k=%d, n_local=%d), pool_kernel=%s, "
                 "scoring layers %s (%s keys), %d threads", ids.shape[1], cfg.method, cfg.budget, cfg.n_init, cfg.k,
                 cfg.n_local, cfg.pool_kernel, cfg.score_layers or "all", cfg.score_dtype or "cache dtype",
                 torch.get_num_threads())
    streamer = TextStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens,
                                do_sample=False, streamer=streamer, pad_token_id=lm.tokenizer.pad_token_id)
    dt = time.perf_counter() - t0
    st = rt.stats()
    return {"context_tokens": int(ids.shape[1]), "new_tokens": int(out.shape[1] - ids.shape[1]), "seconds": dt,
            "selections": st.selections, "cache_hits": st.cache_hits, "cache_hit_rate": st.hit_rate,
            "dense_calls": st.dense_calls, "selecting_layers": len(rt.layers), "method": cfg.method,
            "budget": cfg.budget, "answer": lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True),
            "model": cfg.model, "context_file": cfg.context_file, "prompt": cfg.prompt}
