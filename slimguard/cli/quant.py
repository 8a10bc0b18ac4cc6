"""``slimguard quant train | eval | export``: EdgeQAT quantization-aware training and export.

Light at import: torch and transformers load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, set_threads

app = typer.Typer(no_args_is_help=True)


def _command(name: str, **opts) -> str:
    parts = [f"slimguard quant {name}"] + [f"--{k.replace('_', '-')} {v}" for k, v in opts.items() if v not in (None, False)]
    return " ".join(parts)


@app.command()
def train(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
          run: Optional[str] = RunOpt,
          model: Optional[str] = typer.Option(None, "--model", "-m", help="Asset name or local transformers directory."),
          steps: Optional[int] = typer.Option(None, help="Optimizer steps (config field 'steps')."),
          w_bits: Optional[int] = typer.Option(None, help="Weight bits (qat.w_bits)."),
          a_bits: Optional[int] = typer.Option(None, help="Activation bits (qat.a_bits)."),
          kv_bits: Optional[int] = typer.Option(None, help="K/V bits (qat.kv_bits)."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run's checkpoint (same config required)."),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Quantization-aware training on long text; writes runs/<name>/ with checkpoint and held-out perplexity.

    Works unchanged under `torchrun --nproc_per_node=2 -m slimguard.cli.main quant train ...` (DDP)."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run
    from ..slim.quant.config import QuantTrainConfig

    sets = list(set_ or [])
    for k, v in (("qat.w_bits", w_bits), ("qat.a_bits", a_bits), ("qat.kv_bits", kv_bits)):
        if v is not None:
            sets.append(f"{k}={v}")
    cfg = resolve(QuantTrainConfig, config_file=config, sets=sets, model=model, steps=steps)
    name = run or f"quant-{cfg.qat.tag()}"
    cmd = _command("train", config=config, run=name, steps=steps, resume=resume)
    import os

    rank = int(os.environ.get("RANK", "0"))
    from ..core.runs import runs_root

    if resume:
        from ..core.errors import SlimguardError
        from ..slim.quant.train import CKPT

        if not (runs_root() / name / CKPT).is_file():
            raise SlimguardError(f"--resume: no checkpoint at {runs_root() / name / CKPT}; start without --resume")
    r = Run.create(name, command=cmd, config=cfg) if rank == 0 and not resume else Run((runs_root()) / name)
    from ..slim.quant.train import train as run_train

    res, _ = run_train(cfg, run=r, resume=resume)
    if rank == 0:
        ev = res.eval
        fp = res.eval_fp
        msg = f"run {r.path}: final loss {res.final_loss:.4f}"
        if ev:
            msg += f", held-out ppl {ev.ppl:.3f}" + (f" (FP {fp.ppl:.3f}), KL to FP {ev.kl_to_fp:.4f}" if fp else "")
        typer.echo(msg)


@app.command("eval")
def eval_(run_dir: Path = typer.Argument(..., help="A `quant train` run directory, or a packed .safetensors export."),
          run: Optional[str] = RunOpt,
          batches: int = typer.Option(8, help="Held-out batches to evaluate."),
          diagnostics: bool = typer.Option(False, help="Also attention-map cosine to FP and Q/K entropy per layer."),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Held-out perplexity and token KL to the FP model of a trained (converted) model."""
    set_threads(threads)
    from ..core.config import build
    from ..core.errors import SlimguardError
    from ..core.models import load_causal_lm
    from ..core.runs import Run
    from ..slim.quant.config import QuantTrainConfig
    from ..slim.quant.data import load_blocks
    from ..slim.quant.evaluate import evaluate
    from ..slim.quant.export import load_packed
    from ..slim.quant.train import load_trained

    if batches < 1:
        raise SlimguardError("--batches must be >= 1")
    if run_dir.is_file():
        model, qat = load_packed(run_dir)
        cfg = QuantTrainConfig(qat=qat)
        fp = load_causal_lm(cfg.model)
        tok = fp.tokenizer
        src = run_dir.parent
        if (src / "config.json").is_file():
            cfg = build(QuantTrainConfig, Run.open(src).config())
    else:
        model, tok, cfg = load_trained(run_dir)
        fp = load_causal_lm(cfg.model)
    blocks = load_blocks(tok, cfg.datasets, cfg.eval_dataset, seq_len=cfg.seq_len, eval_frac=cfg.eval_frac)
    ev = blocks.eval_batches(batches, cfg.batch_size)
    res = evaluate(model, ev, teacher=fp.model, diagnostics=diagnostics)
    res_fp = evaluate(fp.model, ev)
    name = run or f"{run_dir.stem if run_dir.is_file() else run_dir.name}-eval"
    r = Run.create(name, command=f"slimguard quant eval {run_dir}", config={"source": str(run_dir), "batches": batches,
                                                                           "train_config": cfg.to_dict()})
    r.save_metrics({"quantized": res.to_dict(), "fp": res_fp.to_dict(), "ppl_ratio": res.ppl / res_fp.ppl})
    typer.echo(f"{r.path}: ppl {res.ppl:.3f} vs FP {res_fp.ppl:.3f} (x{res.ppl / res_fp.ppl:.3f}), "
               f"KL to FP {res.kl_to_fp:.4f} over {res.tokens} tokens")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="A `quant train` run directory."),
           config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
           fmt: Optional[str] = typer.Option(None, "--format", help="gguf (llama.cpp) or safetensors (packed int4)."),
           out: Optional[Path] = typer.Option(None, help="Output file (default RUN_DIR/model-<fmt>.*)."),
           threads: Optional[int] = ThreadsOpt) -> None:
    """Write the trained model as GGUF (learned Q4_0 weights) or packed int4 safetensors."""
    set_threads(threads)
    from ..core.config import resolve
    from ..core.runs import Run, atomic_write_json
    from ..slim.quant.config import ExportConfig
    from ..slim.quant.export import default_template, save_packed, write_gguf
    from ..slim.quant.train import load_trained

    cfg = resolve(ExportConfig, config_file=config, sets=set_, format=fmt)
    model, _, tcfg = load_trained(run_dir)
    if cfg.format == "gguf":
        tmpl = cfg.template_gguf or default_template(tcfg.model)
        if tmpl is None:
            from ..core.errors import SlimguardError

            raise SlimguardError("export: no template GGUF for this model; pass --set template_gguf=PATH")
        path = write_gguf(model, out or run_dir / "model-q4_0.gguf", template=tmpl, embed_type=cfg.embed_type,
                          fuse_qkv=cfg.fuse_qkv)
    else:
        path = save_packed(model, tcfg.qat, out or run_dir / "model-packed.safetensors")
    run = Run.open(run_dir)
    atomic_write_json(run.path / f"export-{cfg.format}.json", {"export_config": cfg.to_dict(), "path": str(path),
                                                               "bytes": path.stat().st_size})
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
