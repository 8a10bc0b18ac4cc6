"""The compression verbs, ``slimguard compress distill | train | run | serve``: each owns its run folder.

The CLI builds these commands from the records below (``slimguard/cli/adapter.py``); Python
users call :func:`slimguard.core.commands.execute` or the functions in this package.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ...core.commands import Flag, Input, command
from ...core.errors import SlimguardError
from ...core.runs import Run, atomic_write_text, safe_run_name
from .config import CompressConfig, DistillConfig, ServeConfig, TrainConfig


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
    from .compressor import PromptCompressor, compress
    from .render import html_words, rich_words

    if not text.strip():
        compress(text, cfg)  # the one-line empty-prompt error, before any model loads
    pc = PromptCompressor(cfg.model, device_map=cfg.device, rate_tokenizer=cfg.rate_tokenizer,
                          batch_size=cfg.batch_size, log=_notice(run))
    res = compress(text, cfg, compressor=pc)
    atomic_write_text(run.artefact("compressed.txt"), res.compressed_prompt)
    atomic_write_text(run.artefact("sections/1_kept-and-dropped-words.html"), html_words(res))
    if show:
        from rich.console import Console

        con = Console(stderr=True)
        con.print(rich_words(res))
        con.rule()
    return res.record(cfg)


def _notice(run: Run):
    """A one-off notice (the first-use ONNX export) for both the run's log and the terminal."""
    def say(msg: str) -> None:
        run.log.info(msg)
        print(msg, file=sys.stderr, flush=True)

    return say


def read_serve_inputs(cfg: ServeConfig, inputs: dict) -> dict:
    """``--load-test`` reads its prompt from ``--input`` (or stdin); plain serving reads nothing."""
    if not inputs.get("load_test"):
        if inputs.get("input_file") is not None:
            raise SlimguardError("--input is the --load-test prompt; add --load-test (or drop --input)")
        return {"load_test": False}
    return {"load_test": True, "text": read_prompt(cfg.compress, inputs)["text"]}


def _serve_summary(m: dict) -> str:
    if "load_test" in m:
        return "; ".join(f"{r['concurrency']} clients: p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms, "
                         f"{r['throughput_rps']:.2f} req/s" for r in m["load_test"])
    return f"served {m['served']} requests ({m['rejected']} refused busy, {m['failed']} failed); p50 " \
           f"{m['p50_s'] * 1000:.0f} ms, p99 {m['p99_s'] * 1000:.0f} ms"


@command("compress serve", config=ServeConfig, resumable=False,
         run_name=lambda cfg, **_: safe_run_name("compress-serve", time.strftime("%Y%m%d-%H%M%S")),
         flags=(Flag("--host", "host"), Flag("--port", "port"), Flag("--model", "compress.model"),
                Flag("--rate", "compress.rate"), Flag("--workers", "workers"), Flag("--max-requests", "max_requests")),
         inputs=(Input("--load-test", "load_test", "Start the server, measure it with a bounded local load test "
                       "(load_concurrency x load_requests requests of the --input prompt), report, stop.", type=bool),
                 Input("--input", "input_file", "The --load-test prompt (default: stdin).", type=Path, short="-i")),
         read_inputs=read_serve_inputs, summary=_serve_summary, stdout=lambda m, run: None)
def serve_command(cfg: ServeConfig, run: Run, load_test: bool = False, text: str | None = None,
                  input_file=None) -> dict:
    """Serve compression over HTTP (POST /v1/compress, JSON) with one loaded model, until Ctrl-C or --max-requests."""
    import signal
    import threading

    from .service import CompressService
    from .service import load_test as run_load_test

    svc = CompressService(cfg, log=_notice(run))
    try:
        url = svc.start()
    except OSError as e:
        svc.stop()
        raise SlimguardError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}; choose another --port") from None
    atomic_write_text(run.artefact("server.json"), json.dumps({"url": url, "pid": os.getpid(),
                                                               "precision": svc.precision}) + "\n")
    try:
        if load_test:
            levels = []
            for c in cfg.load_concurrency:
                r = run_load_test(url, [text], concurrency=c, requests=cfg.load_requests, rate=cfg.compress.rate,
                                  timeout=cfg.timeout_s)
                run.log.info("load test: %s", r)
                levels.append(r)
            return {"url": url, "precision": svc.precision, "load_test": levels, **svc.stats()}
        print(f"serving {svc.pc.path.name} ({svc.precision}) at {url}{'/v1/compress'}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        main = threading.current_thread() is threading.main_thread()
        # SIGTERM (a service manager stopping us) ends the run like Ctrl-C: status done, stats written
        previous = signal.signal(signal.SIGTERM, lambda *_: svc.done.set()) if main else None
        try:
            while not svc.done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        return {"url": url, **svc.stats()}
    finally:
        svc.stop()
