"""``slimguard longctx ...``: long-context generation with TokenSelect KV selection (Wu et al., 2024).

Example (CPU)::

    slimguard longctx generate --model smollm2-135m --context-file essay.txt --prompt "Summary:" --set k=512
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, console, set_threads

app = typer.Typer(no_args_is_help=True)


@app.command()
def generate(model: str = typer.Option("smollm2-135m", "--model", "-m", help="Asset name or local transformers directory."),
             context_file: Path = typer.Option(..., "--context-file", help="UTF-8 text file read as the long context."),
             prompt: str = typer.Option("", "--prompt", help="Text appended after the context (the question)."),
             max_new_tokens: int = typer.Option(32, help="Tokens to generate (greedy)."),
             method: Optional[str] = typer.Option(None, help="Selector: tokenselect (default), dense, streaming, h2o, quest, random, oracle."),
             k: Optional[int] = typer.Option(None, "--k", help="Selected middle tokens per layer."),
             config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, run: Optional[str] = RunOpt,
             threads: Optional[int] = ThreadsOpt) -> None:
    """Read CONTEXT_FILE + PROMPT with token-level KV selection; stream the answer and print selection stats."""
    import time

    from ..core.config import resolve
    from ..core.errors import SlimguardError
    from ..core.runs import Run
    from ..slim.kvselect.config import TokenSelectConfig, defaults_for

    cfg = resolve(TokenSelectConfig, config_file=config, sets=set_, method=method, k=k)
    if max_new_tokens < 1:
        raise SlimguardError("--max-new-tokens must be >= 1")
    if not context_file.is_file():
        raise SlimguardError(f"--context-file {context_file} does not exist")
    try:
        text = context_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SlimguardError(f"--context-file {context_file} is not UTF-8 text") from None
    n_threads = set_threads(threads)
    import torch
    from transformers import TextStreamer

    from ..core.models import load_causal_lm
    from ..slim.kvselect import enable_token_select

    lm = load_causal_lm(model)
    # budget scaled to the model's trained window unless the user set it (resolved once above to fail fast)
    cfg = resolve(TokenSelectConfig, config_file=config, sets=set_, method=method, k=k, base=defaults_for(lm.model.config))
    rt = enable_token_select(lm.model, cfg)
    ids = lm.tokenizer(text + ("\n\n" + prompt if prompt else ""), return_tensors="pt")["input_ids"]
    con = console()
    con.print(f"[dim]{ids.shape[1]} context tokens, method={cfg.method}, budget={cfg.budget} "
              f"(n_init={cfg.n_init}, k={cfg.k}, n_local={cfg.n_local}), pool_kernel={cfg.pool_kernel}, "
              f"scoring layers: {cfg.score_layers or 'all'} ({cfg.score_dtype or 'cache dtype'} keys), "
              f"{n_threads} threads[/dim]")
    streamer = TextStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, streamer=streamer, pad_token_id=lm.tokenizer.pad_token_id)
    dt = time.perf_counter() - t0
    st = rt.stats()
    answer = lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    metrics = {"context_tokens": int(ids.shape[1]), "new_tokens": int(out.shape[1] - ids.shape[1]), "seconds": dt,
               "selections": st.selections, "cache_hits": st.cache_hits, "cache_hit_rate": st.hit_rate,
               "dense_calls": st.dense_calls, "selecting_layers": len(rt.layers), "answer": answer}
    con.print(f"[bold]selection[/bold]: {st.selections} selections over {len(rt.layers)} layers, "
              f"Selection Cache hit rate {st.hit_rate:.2f}, {st.dense_calls} dense calls, {dt:.1f}s")
    r = Run.create(run or "longctx-generate", command="slimguard longctx generate", config=cfg)
    r.save_metrics({**metrics, "model": model, "context_file": str(context_file), "prompt": prompt})
    con.print(f"[dim]run: {r.path}[/dim]")
