"""``slimguard compress ...``: LLMLingua-2 prompt compression (distill, train, run).

Thin shell over :mod:`slimguard.slim.compress`; torch and transformers load inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, console, set_threads

app = typer.Typer(no_args_is_help=True)


@app.command()
def distill(signal: Optional[str] = typer.Option(None, help="'teacher' (LLM compresses, aligned back) or 'self-info'."),
            teacher: Optional[str] = typer.Option(None, help="Local causal LM (asset name or directory)."),
            endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."),
            max_chunks: Optional[int] = typer.Option(None, help="Chunks to label."),
            resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run (same --run)."),
            config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
            run: Optional[str] = RunOpt, threads: Optional[int] = ThreadsOpt) -> None:
    """Label 512-token chunks of long text with keep/drop word labels (a `datasets` dataset)."""
    from ..core.config import resolve
    from ..core.runs import Run
    from ..slim.compress.config import DistillConfig

    cfg = resolve(DistillConfig, config_file=config, sets=set_, signal=signal, teacher=teacher, endpoint=endpoint,
                  max_chunks=max_chunks)
    set_threads(threads)
    from ..slim.compress.distill import distill as _distill

    r = Run.create(run or f"compress-distill-{cfg.signal}", command=" ".join(["slimguard"] + sys.argv[1:]), config=cfg)
    res = _distill(cfg, r.path, resume=resume)
    r.save_metrics({"n_labelled": res.n_labelled, "n_kept": res.n_kept, "keep_fraction": res.keep_fraction,
                    "mean_variation_rate": res.mean_variation_rate, "mean_alignment_gap": res.mean_alignment_gap})
    r.log.info("dataset %s: %d/%d chunks kept", res.path, res.n_kept, res.n_labelled)
    typer.echo(f"dataset: {res.path} ({res.n_kept}/{res.n_labelled} chunks kept, "
               f"{100 * res.keep_fraction:.1f}% words labelled keep)")


@app.command()
def train(data: Optional[List[str]] = typer.Option(None, "--data", help="Distilled dataset dir(s) (repeatable)."),
          out: Optional[str] = typer.Option(None, help="Model directory (default ~/.cache/slimguard/compressors/<run>)."),
          steps: Optional[int] = typer.Option(None, help="Optimiser steps."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of this run."),
          config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
          run: Optional[str] = RunOpt, threads: Optional[int] = ThreadsOpt) -> None:
    """Fine-tune MiniLM as a keep/drop token classifier; saves a transformers/llmlingua-loadable directory."""
    from ..core.config import resolve
    from ..core.runs import Run
    from ..slim.compress.config import TrainConfig

    cfg = resolve(TrainConfig, config_file=config, sets=set_, data=data or None, out=out, steps=steps)
    set_threads(threads)
    from ..slim.compress.compressor import compressors_dir
    from ..slim.compress.train import train as _train

    name = run or "compress-train"
    r = Run.create(name, command=" ".join(["slimguard"] + sys.argv[1:]), config=cfg)
    target = Path(cfg.out).expanduser() if cfg.out else compressors_dir() / name
    res = _train(cfg, target, ckpt_dir=r.path / "checkpoint", resume=resume, log=r.log)
    r.save_metrics({"steps": res.steps, "train_loss": res.train_loss, "eval_accuracy": res.eval_accuracy,
                    "eval_f1_keep": res.eval_f1_keep, "eval_keep_fraction": res.eval_keep_fraction,
                    "n_train_windows": res.n_train_windows, "n_eval_windows": res.n_eval_windows,
                    "model_dir": str(res.out)})
    typer.echo(f"compressor: {res.out} (eval token accuracy {res.eval_accuracy:.3f}, keep-F1 {res.eval_f1_keep:.3f})")


def _read_stdin() -> bytes:
    return sys.stdin.buffer.read()


@app.command("run")
def run_(rate: Optional[float] = typer.Option(None, help="Fraction of tokens to keep, in (0, 1]."),
         target_token: Optional[int] = typer.Option(None, help="Keep about this many tokens (overrides --rate)."),
         model: Optional[str] = typer.Option(None, help="Compressor directory or name (default: 'default')."),
         input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="Read the prompt from a file "
                                                   "instead of stdin."),
         force: Optional[List[str]] = typer.Option(None, "--force", help="Force token kept (repeatable), e.g. '?'."),
         show: bool = typer.Option(False, "--show", help="Print the original with kept/dropped words coloured."),
         config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
         run: Optional[str] = RunOpt, threads: Optional[int] = ThreadsOpt) -> None:
    """Compress a prompt read from stdin; prints the compressed prompt (stdout) and stats (stderr)."""
    from ..core.config import resolve
    from ..core.errors import SlimguardError
    from ..core.runs import Run
    from ..slim.compress.config import CompressConfig

    cfg = resolve(CompressConfig, config_file=config, sets=set_, rate=rate, target_token=target_token, model=model,
                  force_tokens=force or None)
    if input_file is not None:
        try:
            raw = input_file.read_bytes()
        except OSError as e:
            raise SlimguardError(f"cannot read --input {input_file}: {e.strerror}") from None
    else:
        if sys.stdin.isatty():
            raise SlimguardError("no prompt: pipe text in (`slimguard compress run --rate 0.33 < prompt.txt`) or use --input")
        raw = _read_stdin()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SlimguardError("the prompt is not valid UTF-8 text; re-encode it as UTF-8") from None
    set_threads(threads)
    from ..core.runs import atomic_write_text
    from ..slim.compress.compressor import compress
    from ..slim.compress.render import html_words, rich_words

    res = compress(text, cfg)
    stats = {"origin_tokens": res.origin_tokens, "compressed_tokens": res.compressed_tokens,
             "achieved_rate": res.rate, "requested_rate": cfg.rate, "ratio": res.ratio,
             "rate_tokenizer": res.rate_tokenizer, "model_s": res.model_s, "post_s": res.post_s}
    r = Run.create(run or "compress-run", command=" ".join(["slimguard"] + sys.argv[1:]), config=cfg)
    r.save_metrics(stats)
    atomic_write_text(r.artefact("compressed.txt"), res.compressed_prompt)
    atomic_write_text(r.artefact("sections/1_kept-and-dropped-words.html"), html_words(res))
    con = console()
    if show:
        con.print(rich_words(res))
        con.rule()
    typer.echo(res.compressed_prompt)
    con.print(f"[dim]{res.origin_tokens} -> {res.compressed_tokens} {res.rate_tokenizer} tokens "
              f"(rate {res.rate:.3f}, {res.ratio:.2f}x; model {res.model_s * 1000:.0f} ms, "
              f"post-processing {res.post_s * 1000:.1f} ms); run: {r.path}[/dim]")
