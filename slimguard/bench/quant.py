"""``slimguard bench quant``: EdgeQAT (Shen et al., 2024) vs RTN PTQ, LSQ-only QAT, ablations,
token-adaptive vs random-token control and torchao's QAT, on SmolLM2-135M; ``--speed`` runs
the exported GGUF in llama.cpp against F16/F32 GGUFs of the same model.

Every QAT variant gets the same data, optimizer, step budget and seeds. The default is a
reduced budget for 2 CPU cores; ``--full`` is the paper-sized run (meant for a GPU).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ..core.commands import Flag, Invocation, command
from ..core.errors import SlimguardError
from ..slim.quant.config import QuantTrainConfig
from ..slim.quant.variants import VARIANTS, VariantName
from .harness import BenchConfig

BITS = {"W8A8": dict(w_bits=8, a_bits=8), "W4A8": dict(w_bits=4, a_bits=8),
        "W4A8KV4": dict(w_bits=4, a_bits=8, kv_bits=4), "W4A4": dict(w_bits=4, a_bits=4)}
BitsName = Literal[tuple(BITS)]  # type: ignore[valid-type]


class QuantBenchConfig(BenchConfig):
    """The QAT grid (bits x variants x seeds) and the budget every run of it trains at (``train``)."""

    full: bool = Field(False, description=(
        "Paper-sized budget: every bit setting and variant, 300 steps x 8 x 128 tokens, 3 seeds, 16 held-out "
        "batches, on the GPU when there is one (use a GPU). A preset: --set still overrides each of its values."))
    train: QuantTrainConfig = Field(default_factory=QuantTrainConfig, description=(
        "Training and evaluation of every QAT run: the `quant train` config (bench sizes: train.steps=5, "
        "train.seq_len=64, train.batch_size=2, train.eval_batches=3, train.device=cpu). The grid sets train.qat, "
        "train.loss, train.seed, train.warmup (steps/10) and train.checkpoint_every per run; llama.cpp speed always "
        "runs on the CPU."))
    bits: list[BitsName] = Field(default_factory=lambda: ["W4A8KV4"], description=f"Bit settings from {list(BITS)}.")
    variants: list[VariantName] = Field(
        default_factory=lambda: ["lsq_ce", "edgeqat", "edgeqat_adaptive", "edgeqat_adaptive_random"],
        description="Trained QAT variants (names registered in slim/quant/variants.py; --full: every one).")
    torchao: bool = Field(True, description="Include torchao's QAT at the same budget: its own W4A8 linears and, at "
                                           "W4A8KV4, the same plus a fixed q4_0-style KV fake-quant (same bits).")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Training seeds (mean +- std over them).")
    speed: bool = Field(False, description="Also run llama.cpp speed (needs llama-cpp-python).")
    speed_tokens: int = Field(32, description="Decode tokens per timing repeat.")
    speed_prompt: int = Field(128, description="Prompt tokens for the prefill timing (decode is timed after them).")
    speed_passes: int = Field(3, ge=1, description=(
        "Whole llama.cpp timing passes, one after another; each speed ratio is taken within a pass (files timed "
        "round-robin) and the median over passes is reported (a shared CPU's Q4_0/F16 ratio drifts between passes)."))
    speed_contexts: list[int] = Field(default_factory=lambda: [1024, 4096],
                                      description="Further context lengths at which decode is timed (the KV cache "
                                                  "type matters most there).")
    speed_only: bool = Field(False, description="Skip training; time the EdgeQAT model saved by the last full run "
                                                "(runs/bench-<result>/) and merge the speed rows into <result>.json.")
    result: str = Field("quant", pattern="^[a-z0-9][a-z0-9_-]*$", description=(
        "Result name: 'quant' writes the canonical benchmarks/results/quant.json (and quant_diagnostics.png); any "
        "other name is a study, benchmarks/results/quant/NAME.json and NAME_diagnostics.png (a leading 'quant-' "
        "dropped). runs/bench-NAME/ keeps the EdgeQAT model --set speed_only=true times. A longer run keeps its own "
        "file instead of replacing the canonical one."))
    purpose: Optional[str] = Field(None, description=(
        "One line saying what a study measures (stored as its `purpose`; default: 'study: ' + the command)."))
    jobs: int = Field(1, ge=0, le=64, description=(
        "Training runs at once, each in its own worker process (a GPU holds several of these small runs, which are "
        "bound by kernel launches more than by the GPU). 0: as many as the GPU's free memory holds at ~10 GiB a "
        "run, at most 6 (one on the CPU); --full sets 0. Every finished run is cached under "
        "runs/bench-NAME/grid/, so an interrupted grid resumes where it stopped, with jobs=1 too."))
    checkpoint_every: int = Field(0, ge=0, description=(
        "Checkpoint each trained run every this many steps under runs/bench-NAME/grid/ (0: never), so a killed "
        "run resumes mid-way; --full sets 50. The checkpoint goes once the run is cached."))
    run_only: list[str] = Field(default_factory=list, description=(
        "Train and cache only these BITS/ROW/SEED runs (e.g. W4A8KV4/edgeqat/0), then stop without writing a result: "
        "what jobs=N gives each worker."))

    DEFAULTS = {"train": dict(steps=5, seq_len=64, batch_size=2, eval_batches=3, device="cpu")}
    FULL = dict(bits=list(BITS), variants=list(VARIANTS), seeds=[0, 1, 2], checkpoint_every=50, jobs=0,
                train=dict(steps=300, seq_len=128, batch_size=8, eval_batches=16, device="auto"))
    # the flat keys of results written before `train` was nested (their commands say --set steps=40)
    MOVED = {k: f"train.{k}" for k in ("model", "steps", "seq_len", "batch_size", "eval_batches", "lr", "datasets",
                                       "device")}
    GRID = {"train": {"qat": "choose bits=[...] and variants=[...]", "loss": "choose variants=[...]",
                      "seed": "use seeds=[...]", "warmup": "it is train.steps / 10",
                      "checkpoint_every": "use the benchmark's checkpoint_every"}}


PACKED = "edgeqat_w4a8kv4.safetensors"
RETIMED = " Re-timed by --set speed_only=true, replacing any earlier speed figures in this note: "
FULL = QuantBenchConfig.FULL


def torchao_rows(bits: str) -> list[tuple[int | None, str]]:
    """(K/V bits, row name) of the torchao QAT rows trained at ``bits``. torchao's own recipe quantizes only the
    linears; our A8 also fake-quantizes K and V (at ``kv_bits``, else ``a_bits``), so next to it runs the same
    recipe with a fixed per-token absmax K/V fake-quant at our K/V bits trained through, which is EdgeQAT's
    own bit budget for the cache. torchao has no 4-bit-activation recipe, so W4A4 has no row."""
    b = BITS[bits]
    if b["a_bits"] != 8:
        return []
    own = f"torchao_qat_w{b['w_bits']}a8"
    kv = b.get("kv_bits", b["a_bits"])
    return [(None, own), (kv, f"{own}kv{kv}")]


# Bump when training or evaluation changes what a finished run would give, so cached runs are not reused.
GRID_REVISION = 1


# GPU memory one worker took on an H100 (SmolLM2-135M, 8 x 128 tokens, teacher + student + Adam): 7.5-10 GB;
# 6 workers gave ~2.6x the throughput of one, 12 ran out of memory
RUN_GPU_BYTES = 10 << 30
MAX_AUTO_JOBS = 6


def auto_jobs(device: str, free_bytes: int | None) -> int:
    """``jobs=0``: workers that fit the GPU's free memory (at most MAX_AUTO_JOBS); one on the CPU."""
    if device == "cpu" or not free_bytes:
        return 1
    return max(1, min(MAX_AUTO_JOBS, free_bytes // RUN_GPU_BYTES))


def grid_rows(bc: QuantBenchConfig, bits: str) -> list[str]:
    """The trained rows at ``bits``, in result order: the variants, then torchao's QAT rows."""
    return list(bc.variants) + ([name for _, name in torchao_rows(bits)] if bc.torchao else [])


def parse_run(item: str) -> tuple[str, str, int]:
    """``BITS/ROW/SEED`` -> its parts, with a one-line error naming the entry."""
    from ..core.errors import ConfigError

    parts = item.split("/")
    ok = len(parts) == 3 and parts[0] in BITS and parts[2].lstrip("-").isdigit() and (
        parts[1] in VARIANTS or parts[1] in [n for _, n in torchao_rows(parts[0])])
    if not ok:
        raise ConfigError(f"run_only entry '{item}' is not BITS/ROW/SEED with BITS in {list(BITS)} and ROW a variant "
                          f"or torchao row trained at those bits")
    return parts[0], parts[1], int(parts[2])


def grid_dir(bc: QuantBenchConfig) -> Path:
    from ..core.runs import runs_root

    return runs_root() / f"bench-{bc.result}" / "grid"


def run_key(bc: QuantBenchConfig, bits: str, row: str, seed: int) -> str:
    """A finished run's cache file name: what it trained and evaluated, and where (CPU and GPU kernels differ)."""
    import hashlib
    import json

    spec = dict(model=bc.train.model, bits=bits, row=row, seed=seed, steps=bc.train.steps, seq_len=bc.train.seq_len,
                batch_size=bc.train.batch_size, eval_batches=bc.train.eval_batches, lr=bc.train.lr, datasets=list(bc.train.datasets),
                device=bc.train.device.split(":")[0], revision=GRID_REVISION)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{bits}-{row}-s{seed}-{digest}.json"


def _grid_run(bc, bits: str, row: str, seed: int, fp, teacher, blocks, ev, dev) -> dict:
    """One trained row and seed: its held-out ppl and KL to FP (and diagnostics for EdgeQAT's first seed), from the
    grid cache when this exact run finished before, else trained, evaluated and cached (atomically)."""
    import json

    from ..core.runs import atomic_write_json
    from ..slim.quant.baselines import torchao_qat
    from ..slim.quant.evaluate import evaluate
    from ..slim.quant.train import train

    path = grid_dir(bc) / run_key(bc, bits, row, seed)
    if path.is_file():
        return json.loads(path.read_text())
    if row in VARIANTS:
        cfg = _train_cfg(bc, bits, row, seed)
        run = None
        if bc.checkpoint_every:
            from ..core.runs import Run
            from ..slim.quant.train import CKPT

            cfg = cfg.model_copy(update={"checkpoint_every": bc.checkpoint_every})
            run = Run(path.with_suffix(""))
        _, model = train(cfg, model=copy.deepcopy(fp), teacher=teacher, blocks=blocks, progress=False, eval_fp=False,
                         run=run, resume=run is not None and (run.path / CKPT).is_file())
        first = row == "edgeqat" and seed == bc.seeds[0]
        r = evaluate(model, ev, teacher=teacher, diagnostics=first, device=dev)
        if first and bits == "W4A8KV4":
            import shutil

            from ..slim.quant.export import save_packed
            from ..slim.quant.prepare import convert

            convert(model.cpu())
            # this run's own copy (what --speed exports when the run is reused), and the result's latest one, which
            # --set speed_only=true re-times
            own = save_packed(model, cfg.qat, path.with_suffix(".safetensors"))
            shutil.copyfile(own, path.parent.parent / PACKED)
    else:
        kv = dict((name, k) for k, name in torchao_rows(bits))[row]
        cfg = _train_cfg(bc, bits, "lsq_ce", seed)
        model, _ = torchao_qat(fp, cfg, blocks, w_bits=BITS[bits]["w_bits"], a_bits=8, kv_bits=kv)
        r = evaluate(model, ev, teacher=teacher, device=dev)
    out = {"ppl": r.ppl, "kl": r.kl_to_fp, "bits": bits, "row": row, "seed": seed}
    if r.attn_cos:
        out["diag"] = {"attn_cos": r.attn_cos, "qk_entropy": r.qk_entropy}
    del model
    atomic_write_json(path, out)
    if row in VARIANTS and bc.checkpoint_every:
        (path.with_suffix("") / CKPT).unlink(missing_ok=True)  # ~1.6 GB, no longer needed once the run is cached
    return out


def _run_workers(bc: QuantBenchConfig, threads: int, log) -> None:
    """Train the grid's uncached runs in ``bc.jobs`` worker processes (each a ``run_only`` share, dealt round-robin
    in grid order), then return; the caller reads every run from the cache."""
    import subprocess
    import sys

    from ..core.errors import SlimguardError
    from ..core.runs import atomic_write_json

    paths = ((f"{b}/{row}/{s}", grid_dir(bc) / run_key(bc, b, row, s))
             for b in bc.bits for row in grid_rows(bc, b) for s in bc.seeds)
    missing = {item: path for item, path in paths if not path.is_file()}  # item -> the cache file it will write
    todo = list(missing)
    if not todo:
        return
    n = min(bc.jobs, len(todo))
    shares = [todo[i::n] for i in range(n)]
    procs = []
    for i, share in enumerate(shares):
        cfg_path = grid_dir(bc) / f"worker-{i}.json"
        atomic_write_json(cfg_path, {**bc.to_dict(), "run_only": share, "jobs": 1, "speed": False})
        logf = (grid_dir(bc) / f"worker-{i}.log").open("w")
        cmd = [sys.executable, "-m", "slimguard.cli.main", "bench", "quant", "--config", str(cfg_path),
               "--threads", str(max(1, threads))]
        procs.append((subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT), logf, i))
    log(f"{len(todo)} runs in {n} workers (logs: {grid_dir(bc)}/worker-*.log)")
    done_before = -1
    while any(p.poll() is None for p, _, _ in procs):
        done = sum(path.is_file() for path in missing.values())
        if done != done_before:
            log(f"  {done}/{len(todo)} runs cached")
            done_before = done
        time.sleep(5)
    failed = [i for p, f, i in procs if (f.close() or p.returncode) != 0]
    if failed:
        raise SlimguardError(f"grid worker(s) {failed} failed; see {grid_dir(bc)}/worker-{failed[0]}.log "
                             f"(finished runs stay cached: run the same command again to resume)")


def _train_cfg(bc: QuantBenchConfig, bits: str, variant: str, seed: int) -> QuantTrainConfig:
    """The `quant train` config of one grid run: the bench's ``train`` with the variant's recipe at ``bits``."""
    from ..core.config import build

    recipe = VARIANTS.get(variant)()
    # qat and loss are the recipe's on the library defaults (not merged into bc.train's, which the grid owns)
    return build(QuantTrainConfig, {**bc.train.to_dict(), "qat": {**BITS[bits], **recipe.qat}, "loss": recipe.loss,
                                    "seed": seed, "warmup": max(1, bc.train.steps // 10), "checkpoint_every": 10 ** 6})


def run_bench(bc: QuantBenchConfig, command: str, threads: int, log=print) -> Path:
    import torch

    from ..bench import harness
    from ..core.models import load_causal_lm
    from ..slim.quant.baselines import rtn
    from ..slim.quant.config import QATConfig
    from ..slim.quant.data import load_blocks
    from ..slim.quant.evaluate import evaluate

    from ..core.models import resolve_device

    t_start = time.perf_counter()
    dev = resolve_device(bc.train.device)
    for item in bc.run_only:
        parse_run(item)  # a malformed entry fails before the model loads
    bc = bc.model_copy(update={"train": bc.train.model_copy(update={"device": dev})})
    lm = load_causal_lm(bc.train.model, device=dev)
    fp = lm.model
    if bc.speed_only:
        return _speed_only(bc, lm, command, threads, log)
    blocks = load_blocks(lm.tokenizer, bc.train.datasets, bc.train.eval_dataset, seq_len=bc.train.seq_len,
                         eval_frac=bc.train.eval_frac)
    ev = blocks.eval_batches(bc.train.eval_batches, bc.train.batch_size)
    calib = blocks.batch(0, bc.train.batch_size, 0)
    from ..slim.quant.prepare import attach_recorder

    teacher = attach_recorder(copy.deepcopy(fp))  # fp itself stays pristine: every variant copies it
    if bc.run_only:  # a worker of --set jobs=N: train and cache its share of the grid, nothing else
        for item in bc.run_only:
            bits, row, seed = parse_run(item)
            _grid_run(bc, bits, row, seed, fp, teacher, blocks, ev, dev)
            log(f"cached {item}")
        return grid_dir(bc)
    if bc.jobs == 0:
        free = torch.cuda.mem_get_info(torch.device(dev))[0] if dev.startswith("cuda") else None
        bc = bc.model_copy(update={"jobs": auto_jobs(dev, free)})
        log(f"jobs=0: {bc.jobs} worker(s)")
    if bc.jobs > 1:
        _run_workers(bc, threads, log)
    fp_res = evaluate(teacher, ev, teacher=teacher, diagnostics=True, device=dev)
    rows: list[dict] = [dict(method="fp", bits="FP32", metric="ppl", value=fp_res.ppl, std=0.0, n=1)]
    diag: dict[str, dict] = {"fp": {"attn_cos": fp_res.attn_cos, "qk_entropy": fp_res.qk_entropy}}
    log(f"fp ppl {fp_res.ppl:.3f} ({fp_res.tokens} held-out tokens)")
    results: dict[tuple[str, str], dict] = {}
    trained_for_export = None

    def add(method, bits, vals: list, kls: list, extra=None):
        ms, ks = harness.mean_std(vals), harness.mean_std(kls)
        results[(method, bits)] = {"ppl": ms["value"], "kl": ks["value"]}
        rows.append(dict(method=method, bits=bits, metric="ppl", **ms, ratio_to_fp=ms["value"] / fp_res.ppl))
        rows.append(dict(method=method, bits=bits, metric="kl_to_fp", **ks))
        log(f"{bits:8s} {method:24s} ppl {ms['value']:.3f} +- {ms['std']:.3f}  KL {ks['value']:.4f}"
            f"  [{time.perf_counter() - t_start:.0f}s]")

    for bits in bc.bits:
        for gran, name in (("tensor", "rtn_per_tensor"), ("group", "rtn_per_group")):
            m = rtn(fp, QATConfig(**BITS[bits], granularity=gran), calib)
            r = evaluate(m, ev, teacher=teacher, diagnostics=name == "rtn_per_group", device=dev)
            add(name, bits, [r.ppl], [r.kl_to_fp])
            if name == "rtn_per_group":
                diag[f"rtn_per_group {bits}"] = {"attn_cos": r.attn_cos, "qk_entropy": r.qk_entropy}
            del m
        for control in ("sink", "random"):  # equal average bits, no training: isolates the token choice
            m = rtn(fp, QATConfig(**BITS[bits], token_adaptive=True, adaptive_control=control), calib)
            r = evaluate(m, ev, teacher=teacher, device=dev)
            add(f"rtn_adaptive_{control}", bits, [r.ppl], [r.kl_to_fp])
        for row in grid_rows(bc, bits):
            vals, kls = [], []
            for seed in bc.seeds:
                got = _grid_run(bc, bits, row, seed, fp, teacher, blocks, ev, dev)
                if got.get("diag"):
                    diag[f"edgeqat {bits}"] = got["diag"]
                vals.append(got["ppl"])
                kls.append(got["kl"])
            add(row, bits, vals, kls)

    speed = None
    if bc.speed:
        packed = grid_dir(bc) / run_key(bc, "W4A8KV4", "edgeqat", bc.seeds[0]).replace(".json", ".safetensors")
        if packed.is_file():  # this grid's first-seed EdgeQAT W4A8KV4 model, trained now or by an earlier run
            from ..slim.quant.export import load_packed

            trained_for_export, _ = load_packed(packed)
        try:
            speed = _speed(bc, lm, fp, trained_for_export, threads, log, windows=_windows(ev))
        except SlimguardError as e:  # llama-cpp-python is optional: keep the QAT results
            log(f"speed skipped: {e}")
    targets = _targets(bc, results, fp_res.ppl, speed)
    _plot(diag, harness.artefact_path("quant", bc.result, "_diagnostics.png"))
    if speed:
        rows += speed["rows"]
    on_gpu = bc.train.device != "cpu"
    note = (f"{'GPU (' + bc.train.device + ')' if on_gpu else 'Reduced CPU'} budget: {bc.train.steps} steps x {bc.train.batch_size} x "
            f"{bc.train.seq_len} tokens per variant, {len(bc.seeds)} seed(s), {fp_res.tokens} held-out tokens (Paul Graham "
            f"essays; training on {', '.join(bc.train.datasets)})"
            + (". QAT trains on the essays the held-out blocks come from (other essays), so perplexity can fall "
               "below FP's" if "pg-essays" in bc.train.datasets else "")
            + "; KL to the FP model is the fidelity measure, and each row's std over seeds says which differences "
              "are noise. "
            + _speed_note(speed)
            + "The FP model's weights already passed through Q4_1 (the only SmolLM2 weights in a registry). torchao QAT "
              "quantizes only the linears; each torchao_qat_w*a8kv* row adds a fixed per-token K/V fake-quant (32-wide "
              "absmax blocks, q4_0-style at 4 bits) at the K/V bits EdgeQAT uses, kept on during its training, and the "
              "torchao targets compare against the W4A8KV4 one.")
    return harness.write_result("quant", name=bc.result, purpose=bc.purpose, command=command, config=bc.to_dict(),
                                rows=rows, targets=targets,
                                extra={"note": note, "diagnostics": diag, "speed": speed,
                                       "seconds": time.perf_counter() - t_start})


def _targets(bc, res: dict, fp_ppl: float, speed: dict | None) -> dict:
    from ..bench import harness

    t = {}
    b = "W4A8KV4"
    e = res.get(("edgeqat", b), {}).get("ppl")
    rt = res.get(("rtn_per_group", b), {}).get("ppl")
    t["edgeqat_w4a8kv4_ppl_ratio_to_fp"] = harness.target(e / fp_ppl if e else None, "<= 1.10")
    gap = (rt - e) / (rt - fp_ppl) if (e and rt and rt > fp_ppl) else None
    t["edgeqat_w4a8kv4_rtn_gap_closed"] = harness.target(gap, ">= 0.60")
    lsq = res.get(("lsq_ce", b), {}).get("ppl")
    t["edgeqat_vs_lsq_ce_ppl_ratio"] = harness.target(lsq / e if (lsq and e) else None, ">= 1.0")
    # torchao at the same bits (its linears + fixed KV4) when the run has it; older runs only had W4A8 linears
    ao_name = "torchao_qat_w4a8kv4" if ("torchao_qat_w4a8kv4", b) in res else "torchao_qat_w4a8"
    ao = res.get((ao_name, b), {}).get("ppl")
    t["edgeqat_vs_torchao_qat_ppl_ratio"] = harness.target(ao / e if (ao and e) else None, ">= 1.0")
    ad, rnd = res.get(("edgeqat_adaptive", b), {}).get("ppl"), res.get(("edgeqat_adaptive_random", b), {}).get("ppl")
    t["token_adaptive_vs_random_ppl_ratio"] = harness.target(rnd / ad if (rnd and ad) else None, ">= 1.0")
    # fidelity to the FP model, next to perplexity: CE-only training can lower held-out perplexity by adapting to
    # the essays' domain while drifting from the model it quantizes; KL to FP is what distillation optimises
    ek = res.get(("edgeqat", b), {}).get("kl")
    for other, name in (("lsq_ce", "lsq_ce"), (ao_name, "torchao_qat")):
        ok = res.get((other, b), {}).get("kl")
        t[f"edgeqat_vs_{name}_kl_ratio"] = harness.target(ok / ek if (ok and ek) else None, ">= 1.0")
    adk, rndk = res.get(("edgeqat_adaptive", b), {}).get("kl"), res.get(("edgeqat_adaptive_random", b), {}).get("kl")
    t["token_adaptive_vs_random_kl_ratio"] = harness.target(rndk / adk if (rndk and adk) else None, ">= 1.0")
    sp = (speed or {}).get("summary", {})
    t["gguf_decode_speedup_vs_f16"] = harness.target(sp.get("decode_speedup_vs_f16"), ">= 2.4")
    t["gguf_size_ratio_vs_f16"] = harness.target(sp.get("size_ratio_vs_f16"), ">= 3.5")
    # the same learned weights, run in whichever exported file and KV-cache type decodes fastest (named in the
    # speed summary's `fastest_quantized`); the headline above stays the W4A8KV4 file with its q4_0 cache
    t["gguf_decode_speedup_vs_f16_fastest"] = harness.target(sp.get("decode_speedup_vs_f16_fastest"), ">= 2.4")
    t["gguf_size_ratio_vs_f16_all_q4_0"] = harness.target(sp.get("size_ratio_vs_f16_all_q4_0"), ">= 3.5")
    # "smaller" by llama.cpp's own model size (weight tensors only), next to the file ratios above: every GGUF of
    # the model carries the same vocabulary and merges, which pull the file ratio toward 1
    t["gguf_model_size_ratio_vs_f16"] = harness.target(sp.get("model_size_ratio_vs_f16"), ">= 3.5")
    t["gguf_model_size_ratio_vs_f16_all_q4_0"] = harness.target(sp.get("model_size_ratio_vs_f16_all_q4_0"), ">= 3.5")
    return t


def _speed_note(speed: dict | None) -> str:
    """Where the llama.cpp rows come from: when, threads, machine load, and whether they were cached."""
    if not speed:
        return ""
    sm = speed.get("summary", {})
    return (f"llama.cpp rows measured {speed.get('measured')} ({sm.get('threads')} threads, load average "
            f"{sm.get('load_average', float('nan')):.1f}) on {speed.get('quantized_model_source')}"
            + (f"; taken from {speed['from_cache']} because llama-cpp-python was not importable in this process"
               if speed.get("from_cache") else "") + ". "
            + ("All GGUFs stay loaded and are timed round-robin, one repeat of each per round. "
               if speed.get("timing") == "round-robin" else "")
            + (f"Speed ratios are medians over {speed['passes']} whole timing passes, each ratio taken within its pass "
               f"(headline decode vs F16 per pass: {', '.join(f'{x:.2f}x' for x in sm['decode_speedup_vs_f16_per_pass'])}; "
               f"fastest: {', '.join(f'{x:.2f}x' for x in sm['decode_speedup_vs_f16_fastest_per_pass'])}). "
               if speed.get("passes", 1) > 1 and "decode_speedup_vs_f16_per_pass" in sm else "")
            + (f"Decode is timed after {speed['prompt_tokens']} prompt tokens (the headline) and after "
               f"{', '.join(map(str, speed['contexts']))} tokens; " if speed.get("contexts") else "")
            + (f"llama_cpp_ppl is each GGUF's perplexity inside llama.cpp on the same {sm['eval_tokens']} held-out "
               f"tokens as the torch rows (F16 GGUF {sm['ppl_f16']:.2f}). " if sm.get("ppl_f16") else ""))


def _speed_only(bc, lm, command: str, threads: int, log) -> Path:
    import json

    from ..bench import harness
    from ..core.errors import SlimguardError
    from ..core.runs import runs_root
    from ..slim.quant.export import load_packed

    packed = runs_root() / f"bench-{bc.result}" / PACKED
    res_path = harness.result_path("quant", bc.result)
    if not packed.is_file() or not res_path.is_file():
        raise SlimguardError(f"--set speed_only=true needs a previous `slimguard bench quant` run ({packed} and "
                             f"{res_path}); run it first")
    trained, _ = load_packed(packed)
    doc = json.loads(res_path.read_text())
    # the held-out blocks of the run being re-timed, so llama.cpp's perplexity reads the same tokens as its torch rows
    # (results written before `train` was nested keep these keys at the top of their config)
    old = doc.get("config", {})
    old = old.get("train", old) if isinstance(old.get("train"), dict) else old
    split = {k: old[k] for k in ("datasets", "eval_dataset", "eval_frac", "seq_len", "batch_size", "eval_batches")
             if k in old}
    speed = _speed(bc, lm, lm.model, trained, threads, log, source=f"the EdgeQAT model saved in {packed}",
                   windows=_heldout_windows(bc.model_copy(update={"train": bc.train.model_copy(update=split)}), lm))
    rows = [r for r in doc["rows"] if not str(r.get("method", "")).startswith("llama.cpp")] + speed["rows"]
    res: dict = {}
    for r in doc["rows"]:
        if r.get("metric") in ("ppl", "kl_to_fp"):
            res.setdefault((r["method"], r["bits"]), {})["ppl" if r["metric"] == "ppl" else "kl"] = r["value"]
    fp_ppl = res.get(("fp", "FP32"), {}).get("ppl")
    targets = _targets(bc, res, fp_ppl, speed)
    extra = {k: v for k, v in doc.items() if k in ("note", "diagnostics", "seconds")}
    # a later re-timing replaces the previous one instead of piling up after it
    extra["note"] = extra.get("note", "").split(RETIMED)[0] + RETIMED + _speed_note(speed)
    extra["speed"] = speed
    # a re-timed study keeps the purpose it was given (a --set purpose=... on the re-timing replaces it)
    return harness.write_result("quant", name=bc.result, purpose=bc.purpose or doc.get("purpose"),
                                command=f"{doc['command'].split(' && ')[0]} && {command}",
                                config=doc["config"], rows=rows, targets=targets, extra=extra)


def _heldout_windows(bc, lm) -> list[list[int]]:
    """The held-out blocks a full run evaluates on (same split, sequence length and count)."""
    from ..slim.quant.data import load_blocks

    blocks = load_blocks(lm.tokenizer, bc.train.datasets, bc.train.eval_dataset, seq_len=bc.train.seq_len,
                         eval_frac=bc.train.eval_frac)
    return _windows(blocks.eval_batches(bc.train.eval_batches, bc.train.batch_size))


def _windows(batches) -> list[list[int]]:
    """The torch evaluation's held-out blocks as token lists, for perplexity inside llama.cpp."""
    return [row.tolist() for b in batches for row in b]


def _speed(bc, lm, fp, trained, threads: int, log, windows: list[list[int]] | None = None,
           source: str = "the EdgeQAT W4A8KV4 model of the benchmark run that measured them") -> dict | None:
    from ..slim.quant.speed import llama_cpp_speed

    return llama_cpp_speed(bc.train.model, fp, trained, threads=threads, prompt_tokens=bc.speed_prompt,
                           decode_tokens=bc.speed_tokens, contexts=tuple(bc.speed_contexts), eval_windows=windows,
                           log=log, source=source, result=bc.result, passes=bc.speed_passes)


def _plot(diag: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, d in diag.items():
        if d.get("attn_cos"):
            axes[0].plot(d["attn_cos"], label=name)
        if d.get("qk_entropy"):
            axes[1].plot(d["qk_entropy"], label=name)
    axes[0].set(title="attention-map cosine to FP", xlabel="layer")
    axes[1].set(title="Q/K Gaussian entropy term (sum log(1+var))", xlabel="layer")
    for a in axes:
        a.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@command("bench quant", config=QuantBenchConfig, owns_run=False,
         flags=(Flag("--speed", "speed"), Flag("--full", "full")), stdout=lambda m, _run: m["path"])
def bench_quant(cfg: QuantBenchConfig, call: Invocation) -> dict:
    """EdgeQAT vs RTN / LSQ / torchao QAT (perplexity, KL) and llama.cpp speed -> benchmarks/results/quant.json."""
    import torch

    # variants and bits: the config checks them (the variant registry, BITS)
    return {"path": str(run_bench(cfg, call.command, torch.get_num_threads(), log=call.log))}
