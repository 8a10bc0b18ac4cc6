"""The quantization verbs, ``slimguard quant train | eval | export`` (EdgeQAT): each owns its run folder.

``quant train`` runs unchanged under ``torchrun --nproc_per_node=N -m slimguard.cli.main quant train``
(DDP): rank 0 owns the run folder, the other ranks write into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field

from ...core.commands import Flag, command
from ...core.config import Config, build
from ...core.errors import SlimguardError
from ...core.runs import Run, atomic_write_json, safe_run_name
from .config import ExportConfig, QuantTrainConfig


def _train_summary(m: dict) -> str:
    msg = f"final loss {m['final_loss']:.4f}"
    ev, fp = m.get("eval"), m.get("eval_fp")
    if ev:
        msg += f", held-out ppl {ev['ppl']:.3f}"
        if fp:
            msg += f" (FP {fp['ppl']:.3f}), KL to FP {ev['kl_to_fp']:.4f}"
    return msg


@command("quant train", config=QuantTrainConfig, run_name=lambda cfg: f"quant-{cfg.qat.tag()}",
         flags=(Flag("--model", "model", "-m"), Flag("--steps", "steps"), Flag("--w-bits", "qat.w_bits"),
                Flag("--a-bits", "qat.a_bits"), Flag("--kv-bits", "qat.kv_bits")),
         summary=_train_summary)
def train_command(cfg: QuantTrainConfig, run: Run) -> dict | None:
    """Quantization-aware training on long text; writes the checkpoint, the model and held-out perplexity."""
    from .train import CKPT, train

    if run.resumed and not (run.path / CKPT).is_file():
        raise SlimguardError(f"--resume: no checkpoint at {run.path / CKPT}; start without --resume")
    train(cfg, run=run, resume=run.resumed, progress=run.progress)
    return None  # the trainer wrote metrics.json (rank 0 under DDP)


class EvalConfig(Config):
    """``slimguard quant eval``: held-out perplexity and KL to the FP model of a trained or exported model."""

    source: str = Field(..., description="A `quant train` run directory, or a packed .safetensors export.")
    batches: int = Field(8, ge=1, description="Held-out batches to evaluate.")
    diagnostics: bool = Field(False, description="Also attention-map cosine to FP and Q/K entropy per layer.")


def _load_source(source: Path):
    """(model, tokenizer, train config, fp model) of a train run or a packed export."""
    from ...core.models import load_causal_lm
    from .export import load_packed
    from .train import load_trained

    if not source.exists():
        raise SlimguardError(f"{source} does not exist; give a `quant train` run directory or a packed .safetensors file")
    if source.is_file():
        model, qat = load_packed(source)
        cfg = QuantTrainConfig(qat=qat)
        for name in ("train_config.json", "config.json"):  # the export run records the training config
            p = source.parent / name
            if p.is_file():
                try:
                    cfg = build(QuantTrainConfig, Run.open(source.parent).config() if name == "config.json"
                                else __import__("json").loads(p.read_text()))
                    break
                except SlimguardError:
                    continue
        fp = load_causal_lm(cfg.model)
        return model, fp.tokenizer, cfg, fp
    model, tok, cfg = load_trained(source)
    return model, tok, cfg, load_causal_lm(cfg.model)


@command("quant eval", config=EvalConfig, resumable=False,
         run_name=lambda cfg: safe_run_name(f"{Path(cfg.source).stem if Path(cfg.source).suffix else Path(cfg.source).name}",
                                            "eval"),
         flags=(Flag("source", "source", positional=True, help="A `quant train` run directory, or a packed "
                                                               ".safetensors export."),
                Flag("--batches", "batches"), Flag("--diagnostics", "diagnostics")),
         summary=lambda m: (f"ppl {m['quantized']['ppl']:.3f} vs FP {m['fp']['ppl']:.3f} (x{m['ppl_ratio']:.3f}), "
                            f"KL to FP {m['quantized']['kl_to_fp']:.4f} over {m['quantized']['tokens']} tokens"))
def eval_command(cfg: EvalConfig, run: Run) -> dict:
    """Held-out perplexity and token KL to the FP model of a trained (converted) model."""
    from .data import load_blocks
    from .evaluate import evaluate

    model, tok, tcfg, fp = _load_source(Path(cfg.source))
    atomic_write_json(run.path / "train_config.json", tcfg.to_dict())
    blocks = load_blocks(tok, tcfg.datasets, tcfg.eval_dataset, seq_len=tcfg.seq_len, eval_frac=tcfg.eval_frac)
    ev = blocks.eval_batches(cfg.batches, tcfg.batch_size)
    res = evaluate(model, ev, teacher=fp.model, diagnostics=cfg.diagnostics)
    res_fp = evaluate(fp.model, ev)
    return {"quantized": res.to_dict(), "fp": res_fp.to_dict(), "ppl_ratio": res.ppl / res_fp.ppl}


class ExportRunConfig(ExportConfig):
    """``slimguard quant export``: the export settings plus the trained run they read."""

    source: str = Field(..., description="A `quant train` run directory.")
    out: Optional[str] = Field(None, description="Output file (default: model-q4_0.gguf or model-packed.safetensors "
                                                 "in this export's run folder).")


@command("quant export", config=ExportRunConfig, resumable=False,
         run_name=lambda cfg: safe_run_name(Path(cfg.source).name, "export", cfg.format),
         flags=(Flag("source", "source", positional=True, help="A `quant train` run directory."),
                Flag("--format", "format"), Flag("--out", "out")),
         summary=lambda m: f"wrote {m['path']} ({m['bytes'] / 1e6:.1f} MB)", stdout=lambda m, run: m["path"])
def export_command(cfg: ExportRunConfig, run: Run) -> dict:
    """Write the trained model as GGUF (learned Q4_0 weights) or packed int4 safetensors."""
    from .export import default_template, save_packed, write_gguf
    from .train import load_trained

    src = Path(cfg.source)
    if not src.is_dir():
        raise SlimguardError(f"{src} does not exist or is not a `quant train` run directory")
    model, _, tcfg = load_trained(src)
    atomic_write_json(run.path / "train_config.json", tcfg.to_dict())
    if cfg.format == "gguf":
        tmpl = cfg.template_gguf or default_template(tcfg.model)
        if tmpl is None:
            raise SlimguardError("export: no template GGUF for this model; pass --set template_gguf=PATH")
        path = write_gguf(model, Path(cfg.out) if cfg.out else run.path / "model-q4_0.gguf", template=tmpl,
                          embed_type=cfg.embed_type, fuse_qkv=cfg.fuse_qkv)
    else:
        path = save_packed(model, tcfg.qat, Path(cfg.out) if cfg.out else run.path / "model-packed.safetensors")
    return {"source": str(src), "path": str(path), "bytes": path.stat().st_size}
