"""The compression verbs, ``slimguard compress distill | train | run``: each owns its run folder.

The CLI builds these commands from the records below (``slimguard/cli/adapter.py``); Python
users call :func:`slimguard.core.commands.execute` or the functions in this package.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ...core.commands import Flag, Input, command
from ...core.errors import SlimguardError
from ...core.runs import Run, atomic_write_text, safe_run_name
from .config import CompressConfig, DistillConfig, TrainConfig


@command("compress distill", config=DistillConfig, run_name=lambda cfg: f"compress-distill-{cfg.signal}",
         flags=(Flag("--signal", "signal"), Flag("--teacher", "teacher"), Flag("--endpoint", "endpoint"),
                Flag("--max-chunks", "max_chunks")),
         summary=lambda m: (f"dataset: {m['dataset']} ({m['n_kept']}/{m['n_labelled']} chunks kept, "
                            f"{100 * m['keep_fraction']:.1f}% words labelled keep)"))
def distill_command(cfg: DistillConfig, run: Run) -> dict:
    """Label 512-token chunks of long text with keep/drop word labels (a `datasets` dataset)."""
    from .distill import distill

    res = distill(cfg, run.path, resume=run.resumed, progress=run.progress)
    run.log.info("dataset %s: %d/%d chunks kept", res.path, res.n_kept, res.n_labelled)
    return {"dataset": str(res.path), "n_labelled": res.n_labelled, "n_kept": res.n_kept,
            "keep_fraction": res.keep_fraction, "mean_variation_rate": res.mean_variation_rate,
            "mean_alignment_gap": res.mean_alignment_gap}


@command("compress train", config=TrainConfig, run_name=lambda cfg: "compress-train",
         flags=(Flag("--data", "data"), Flag("--out", "out"), Flag("--steps", "steps")),
         summary=lambda m: (f"compressor: {m['model_dir']} (eval token accuracy {m['eval_accuracy']:.3f}, "
                            f"keep-F1 {m['eval_f1_keep']:.3f})"))
def train_command(cfg: TrainConfig, run: Run) -> dict:
    """Fine-tune MiniLM as a keep/drop token classifier; saves a transformers/llmlingua-loadable directory."""
    from .compressor import compressors_dir
    from .train import train

    target = Path(cfg.out).expanduser() if cfg.out else compressors_dir() / run.path.name
    res = train(cfg, target, ckpt_dir=run.path / "checkpoint", resume=run.resumed, progress=run.progress, log=run.log)
    return {"steps": res.steps, "train_loss": res.train_loss, "eval_accuracy": res.eval_accuracy,
            "eval_f1_keep": res.eval_f1_keep, "eval_keep_fraction": res.eval_keep_fraction,
            "n_train_windows": res.n_train_windows, "n_eval_windows": res.n_eval_windows, "model_dir": str(res.out)}


def read_prompt(cfg: CompressConfig, inputs: dict) -> dict:
    """The prompt from ``--input FILE`` or stdin, as UTF-8 text (CLI edge)."""
    path = inputs.get("input_file")
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise SlimguardError(f"cannot read --input {path}: {e.strerror}") from None
    else:
        if sys.stdin.isatty():
            raise SlimguardError("no prompt: pipe text in (`slimguard compress run --rate 0.33 < prompt.txt`) "
                                 "or use --input")
        raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SlimguardError(f"the prompt{f' in {path}' if path else ''} is not valid UTF-8 text; "
                             "re-encode it as UTF-8") from None
    return {"text": text, "show": bool(inputs.get("show"))}


def _compress_summary(m: dict) -> str:
    return (f"{m['origin_tokens']} -> {m['compressed_tokens']} {m['rate_tokenizer']} tokens (rate {m['achieved_rate']:.3f}, "
            f"{m['ratio']:.2f}x; model {m['model_s'] * 1000:.0f} ms, post-processing {m['post_s'] * 1000:.1f} ms)")


@command("compress run", config=CompressConfig, resumable=False,
         run_name=lambda cfg, **_: safe_run_name("compress-run", time.strftime("%Y%m%d-%H%M%S")),
         flags=(Flag("--rate", "rate"), Flag("--target-token", "target_token"), Flag("--model", "model"),
                Flag("--force", "force_tokens", help="Force token kept (repeatable), e.g. '?'.")),
         inputs=(Input("--input", "input_file", "Read the prompt from a file instead of stdin.", type=Path, short="-i"),
                 Input("--show", "show", "Print the original with kept/dropped words coloured (stderr).", type=bool)),
         read_inputs=read_prompt, summary=_compress_summary,
         stdout=lambda m, run: (run.path / "compressed.txt").read_text(encoding="utf-8"))
def run_command(cfg: CompressConfig, run: Run, text: str, show: bool = False, input_file=None) -> dict:
    """Compress a prompt read from stdin (or --input); prints the compressed prompt, writes the run."""
    from .compressor import compress
    from .render import html_words, rich_words

    res = compress(text, cfg)
    atomic_write_text(run.artefact("compressed.txt"), res.compressed_prompt)
    atomic_write_text(run.artefact("sections/1_kept-and-dropped-words.html"), html_words(res))
    if show:
        from rich.console import Console

        con = Console(stderr=True)
        con.print(rich_words(res))
        con.rule()
    return {"origin_tokens": res.origin_tokens, "compressed_tokens": res.compressed_tokens, "achieved_rate": res.rate,
            "requested_rate": cfg.rate, "ratio": res.ratio, "rate_tokenizer": res.rate_tokenizer,
            "model_s": res.model_s, "post_s": res.post_s}
