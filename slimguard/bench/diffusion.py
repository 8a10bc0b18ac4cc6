"""``slimguard bench diffusion``: BiBadDiff (Pan et al., NeurIPS 2024) on Fashion-MNIST, side by side.

Per seed: train a class-conditional DDPM on BadNets-poisoned data (or resume the run of the
same config), then measure in one run (1) the trigger ratio of target-conditioned
generations at guidance {0, 1, 2, 5} against the global poison rate and the within-class
trigger fraction, with G1 misalignment; (2) spectral-signature and activation-clustering
detection AUROC on the training set, fitted on training data vs on generations; (3) the
diffusion classifier with and without pixel-error filtering vs a CNN trained on the same
poisoned data (CACC, ASR). ``--replication`` adds the duplicated-poison ablation model.

Reduced default (16 px, 6k images, 1,000 steps, 1 seed): about 4 CPU-minutes of training plus
about 5 of measurement on one thread; on the shared, overloaded 2-core machine it took ~45 min wall.
``--full``: the whole 60k training set, 4,000 steps, 256 generations per scale, 3 seeds.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import typer


def _targets_and_rows(per_seed: list[dict], guidance: list[float]) -> tuple[list[dict], dict]:
    from .harness import mean_std, target

    rows, tg = [], {}

    def agg(key_fn):
        vals = [key_fn(s) for s in per_seed]
        if any(v != v for v in vals):  # statistics.stdev cannot take NaN (e.g. a one-class AUROC)
            return {"value": float("nan"), "std": float("nan"), "n": len(vals)}
        return mean_std(vals)

    n_imgs = per_seed[0]["amplify"]["points"][0]["n"]
    for i, w in enumerate(guidance):
        for metric in ("trigger_ratio", "pattern_ratio", "exact_ratio", "detector_pattern_agreement", "misalignment",
                       "vs_global", "vs_within_class"):
            rows.append({"method": "bibaddiff", "dataset": "fashion-mnist", "metric": metric, "guidance": w,
                         **agg(lambda s: s["amplify"]["points"][i][metric]), "n_images": n_imgs})
    for metric in ("global_rate", "within_class_fraction", "detector_heldout_accuracy", "clean_cnn_accuracy",
                   "control_trigger_ratio", "control_pattern_ratio"):
        rows.append({"method": "bibaddiff", "dataset": "fashion-mnist", "metric": metric,
                     **agg(lambda s: s["amplify"][metric])})
    for j, d in enumerate(per_seed[0]["detect"]):
        for metric in ("auroc_train", "auroc_generations"):
            rows.append({"method": f"{d['method']} (fit on {d['fit_on']})", "dataset": "fashion-mnist", "metric": metric,
                         "guidance": d.get("guidance", 2.0) if d["fit_on"] != "train" else "",
                         **agg(lambda s: s["detect"][j][metric]), "n_images": d["n_train"]})
    for j, c in enumerate(per_seed[0]["classify"]):
        for metric in ("cacc", "asr"):
            rows.append({"method": c["method"] + (f" keep={c['keep_frac']:g}" if c["method"] == "diffusion-filtered" else ""),
                         "dataset": "fashion-mnist", "metric": metric, **agg(lambda s: s["classify"][j][metric]),
                         "n_images": c["n_clean"]})
    rows.append({"method": "bibaddiff", "dataset": "fashion-mnist", "metric": "train_minutes_wall",
                 **agg(lambda s: s["train_seconds"] / 60)})
    rows.append({"method": "bibaddiff", "dataset": "fashion-mnist", "metric": "train_step_cpu_seconds",
                 **agg(lambda s: s["step_cpu_seconds"])})
    if per_seed[0].get("replication"):
        for metric in ("per_image_duplicated", "per_image_single", "per_image_clean"):
            rows.append({"method": "replication ablation", "dataset": "fashion-mnist", "metric": metric,
                         **agg(lambda s: s["replication"][metric])})

    ws = [i for i, w in enumerate(guidance) if w >= 2]
    amp = agg(lambda s: min(s["amplify"]["points"][i]["vs_within_class"] for i in ws)) if ws else {"value": None}
    tg["trigger_ratio_over_within_class_at_w>=2 (min over w)"] = target(amp["value"], ">= 1.5")
    # generations at w=2 (DetectConfig's default, fixed before any result was seen)
    for m in ("spectral", "activation-clustering"):
        for fit in ("generations", "train+generations"):
            js = [j for j, d in enumerate(per_seed[0]["detect"]) if d["method"] == m and d["fit_on"] == fit
                  and d.get("guidance", 2.0) == 2.0]
            if js:
                tg[f"detection_auroc_train_set_fit_on_{fit}_{m}"] = target(
                    agg(lambda s: s["detect"][js[0]]["auroc_train"])["value"], ">= 0.95")
    cls = {c["method"]: j for j, c in enumerate(per_seed[0]["classify"])}
    asr_ratio = agg(lambda s: s["classify"][cls["diffusion-filtered"]]["asr"] / max(s["classify"][cls["cnn"]]["asr"], 1e-9))
    tg["filtered_diffusion_asr_over_cnn_asr"] = target(asr_ratio["value"], "<= 0.5")
    gap = agg(lambda s: s["classify"][cls["cnn"]]["cacc"] - s["classify"][cls["diffusion-filtered"]]["cacc"])
    tg["cacc_gap_cnn_minus_filtered_diffusion"] = target(gap["value"], "<= 0.05")
    if all(s.get("device", "cpu") == "cpu" for s in per_seed):  # GPU wall time says nothing about 2 cores
        tg["train_minutes_wall_measured_on_loaded_machine"] = target(agg(lambda s: s["train_seconds"] / 60)["value"], "<= 20")
    tg["train_minutes_from_cpu_time_per_step"] = target(
        agg(lambda s: s["step_cpu_seconds"] * s["train_steps"] / 60)["value"], "<= 20")
    tg["seeds"] = target(float(len(per_seed)), ">= 3")
    return rows, tg


def _step_cost(tcfg, tr) -> dict:
    """Per-step cost of the configured training: wall (harness.time_it) and process CPU time.

    The CPU time is what an idle machine would take per step on one thread; on a shared,
    overloaded machine the wall time can be several times larger.
    """
    import torch

    from ..guard.diffusion.model import build_unet, to_model_space
    from .harness import time_it

    unet = build_unet(tcfg.model, tcfg.data.image_size, tr.data.num_classes)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = to_model_space(tr.poisoned.x[:tcfg.batch_size])
    y = torch.from_numpy(tr.poisoned.y[:tcfg.batch_size])
    cpu = []

    def step():
        c = time.process_time()
        t = torch.randint(0, tcfg.train_timesteps, (len(y),), generator=g)
        loss = unet(x, t, class_labels=y).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        cpu.append(time.process_time() - c)

    tm = time_it(step, repeats=5, warmup=1)
    import statistics

    return {"step_wall_seconds": tm.median_s, "step_cpu_seconds": statistics.median(cpu[1:]), "threads": tm.threads}


def _one_seed(seed: int, full: bool, replication: bool, out_dir, log) -> dict:
    import numpy as np

    from ..core.runs import Run, atomic_write_json
    from ..guard.diffusion.amplify import measure_amplification, plot_curve, replication as rep_stats
    from ..guard.diffusion.classifiers import train_cnn, train_trigger_detector
    from ..guard.diffusion.config import (AmplifyConfig, ClassifyConfig, DataConfig, DetectConfig, PoisonConfig,
                                          TrainConfig)
    from ..guard.diffusion.detect import run_detection
    from ..guard.diffusion.diffclassify import run_classification
    from ..guard.diffusion.model import image_grid, sample
    from ..guard.diffusion.poison import make_trigger
    from ..guard.diffusion.train import train_diffusion

    tcfg = TrainConfig(seed=seed, poison=PoisonConfig(seed=seed),
                       **({"data": DataConfig(n_train=None), "steps": 4000} if full else {}))
    name = f"bench-diffusion{'-full' if full else ''}-seed{seed}"
    with Run.reuse(name, command="slimguard bench diffusion", config=tcfg) as run:
        # a finished seed is kept with the config it measured, so seeds can run in separate
        # processes (--only-seed) or sessions and a final call only aggregates
        done_file = run.path / ("bench_seed" + ("-replication" if replication else "") + ".json")
        key = {"train": tcfg.to_dict(), "full": full, "replication": replication}
        if done_file.is_file():
            cached = json.loads(done_file.read_text())
            if cached.get("key") == key:
                log(f"seed {seed}: measured before ({done_file}), reusing")
                return cached["result"]
        ckpt = run.path / "checkpoint.pt"
        log(f"seed {seed}: training ({'resuming ' + str(ckpt) if ckpt.exists() else 'from scratch'})")
        tr = train_diffusion(tcfg, run.path, resume=ckpt.exists(), log=run.log)
        model, data, ps = tr.model, tr.data, tr.poisoned
        trig = make_trigger(tcfg.poison, tcfg.data.image_size)
        acfg = AmplifyConfig(seed=seed, n_samples=256 if full else 128)
        log(f"seed {seed}: classifiers")
        clean_cnn = train_cnn(data.x_train, data.y_train, data.num_classes, acfg.cnn, seed=seed)
        detector = train_trigger_detector(data.x_train, trig, acfg.cnn, seed=seed + 1)
        pois_cnn = train_cnn(ps.x, ps.y, data.num_classes, acfg.cnn, seed=seed + 2)
        t0 = time.perf_counter()
        amp = measure_amplification(model, data, ps, trig, acfg, clean_cnn=clean_cnn, detector=detector, progress=log)
        log(f"seed {seed}: amplification measured in {time.perf_counter() - t0:.0f}s")
        det = []
        for w in (2.0, 5.0):  # the config default, and the strongest-amplification end of the sweep
            dcfg = DetectConfig(seed=seed, guidance=w, n_samples=acfg.n_samples)
            res, _ = run_detection(model, data, ps, trig, dcfg, cnn=pois_cnn, generations=amp.generations[w], detector=detector)
            det += [{**d.__dict__, "guidance": w} for d in res]
        log(f"seed {seed}: detection " + ", ".join(f"{d['method']}/{d['fit_on']}/w{d['guidance']:g}={d['auroc_train']:.3f}"
                                                   for d in det))
        ccfg = ClassifyConfig(seed=seed, n_test=200 if full else 100)
        cls = run_classification(model, data, ps, trig, ccfg, cnn=pois_cnn)
        log(f"seed {seed}: classify " + ", ".join(f"{c.method} cacc={c.cacc:.3f} asr={c.asr:.3f}" for c in cls))
        out = {"seed": seed, "device": str(model.device), "train_seconds": tr.seconds, "train_steps": tr.steps, **_step_cost(tcfg, tr), "amplify": amp.to_dict(),
               "detect": det, "classify": [c.__dict__ for c in cls]}
        if seed == 0:
            plot_curve(amp, out_dir / "diffusion_amplification.png")
            image_grid([amp.generations[w][:12] for w in acfg.guidance], out_dir / "diffusion_target_generations.png",
                       row_labels=[f"w={w:g}" for w in acfg.guidance],
                       title=f"target class '{data.class_names[ps.target]}' generations")
            image_grid([ps.x[ps.poisoned][:12], data.x_train[data.y_train == ps.target][:12]],
                       out_dir / "diffusion_training_data.png", row_labels=["poisoned", "clean target"])
            import torch

            per_class = sample(model, np.repeat(np.arange(data.num_classes), 8), guidance=2.0, steps=acfg.ddim_steps,
                               generator=torch.Generator().manual_seed(seed))
            image_grid([per_class[c * 8:(c + 1) * 8] for c in range(data.num_classes)], out_dir / "diffusion_per_class.png",
                       row_labels=data.class_names, title="per-class generations, w=2")
        if replication:
            rcfg = tcfg.model_copy(update={"poison": tcfg.poison.model_copy(update={"duplicate_frac": 0.5})})
            rrun = Run.reuse(name + "-replication", command="slimguard bench diffusion --replication", config=rcfg)
            rck = rrun.path / "checkpoint.pt"
            log(f"seed {seed}: replication ablation model")
            with rrun:
                rtr = train_diffusion(rcfg, rrun.path, resume=rck.exists(), log=rrun.log)
            import torch

            gens = sample(rtr.model, [ps.target] * acfg.n_samples, guidance=2.0, steps=acfg.ddim_steps,
                          generator=torch.Generator().manual_seed(seed))
            out["replication"] = rep_stats(gens, rtr.poisoned, acfg.replication_threshold).__dict__
        atomic_write_json(done_file, {"key": key, "result": out})
        return out


def bench_diffusion(seeds: int = typer.Option(1, help="Seeds (each trains one diffusion model; 3 in --full)."),
                    full: bool = typer.Option(False, help="Full size: 60k images, 4,000 steps, 3 seeds (hours on CPU)."),
                    replication: bool = typer.Option(False, help="Also train the duplicated-poison ablation model."),
                    only_seed: Optional[list[int]] = typer.Option(None, "--only-seed", help="Measure just these seeds "
                                                                 "(kept in their run folders) and write no result; "
                                                                 "a later call without it aggregates."),
                    device: str = typer.Option("auto", help="auto (GPU if torch sees one), cpu or cuda."),
                    threads: Optional[int] = typer.Option(None, help="torch threads (default: $SLIMGUARD_THREADS or all).")) -> None:
    """BiBadDiff: trigger amplification, detection from generations, robust diffusion classifier."""
    from ..core.errors import SlimguardError
    from ..core.models import resolve_device

    try:
        os.environ["SLIMGUARD_DEVICE"] = resolve_device(device)
    except SlimguardError as e:
        raise typer.BadParameter(str(e), param_hint="--device") from None
    from ..cli.options import set_threads
    from ..guard.diffusion.config import GUIDANCE_GRID
    from .harness import result_path, write_result

    n_threads = set_threads(threads)
    if full:
        seeds = max(seeds, 3)
    out_dir = result_path("diffusion").parent  # plots go next to the result's JSON
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda s: typer.echo(f"[bench diffusion] {s}", err=True)  # noqa: E731
    if only_seed:
        for s in only_seed:
            _one_seed(s, full, replication, out_dir, log)
        return
    per_seed = [_one_seed(s, full, replication, out_dir, log) for s in range(seeds)]
    rows, tg = _targets_and_rows(per_seed, GUIDANCE_GRID)
    cmd = "slimguard bench diffusion" + (f" --seeds {seeds}" if seeds != 1 and not full else "") + \
          (" --full" if full else "") + (" --replication" if replication else "") + \
          (f" --device {os.environ['SLIMGUARD_DEVICE']}" if os.environ["SLIMGUARD_DEVICE"] != "cpu" else "")
    from ..guard.diffusion.config import TrainConfig

    note = (f"Reduced size ({'full' if full else '16 px Fashion-MNIST, 6,000-image stratified subset, 1,000 steps of batch 64'}), "
            f"BadNets 3x3 checkerboard patch, poison rate 0.05, target class 0 (T-shirt/top); {seeds} seed(s) (n in rows); "
            f"torch threads {n_threads}. "
            + (f"Models trained, sampled and scored on {os.environ['SLIMGUARD_DEVICE']} (train_minutes_wall is GPU time, "
               "so the 2-core wall-time target is not judged from it); " if os.environ["SLIMGUARD_DEVICE"] != "cpu" else
               "Timings were taken on a shared 2-core machine under heavy load from other jobs "
               "(load average ~20), so the measured wall time overstates an idle machine several-fold; ") +
            "train_minutes_from_cpu_time_per_step = median process CPU time of one training step x steps. "
            "Trigger ratio = trigger-detector CNN verdict on target-conditioned generations; its false-positive control "
            "(control_trigger_ratio, generations of another class at the largest w) and a contrast-invariant pattern "
            "check (pattern_ratio, conservative: it misses partial triggers) and the strict pixel check (exact_ratio) are "
            "reported beside it. 'within-class' = poisoned share of the target-labelled training rows. CFG follows "
            "Ho & Salimans: w=0 is the plain conditional model. Detection AUROC is on the target-class training rows "
            "(true poisoned indices), CNN-on-poisoned-data features; 'fit on generations' fits the detector to target "
            "generations, 'train+generations' to both pooled, each with the suspect side = where the generations moved; "
            "targets use w=2 (DetectConfig default, fixed beforehand), rows also give w=5. Targets for the diffusion "
            "classifier use keep_frac=0.95 (ClassifyConfig default, fixed beforehand); 0.9 and 0.99 are extra rows "
            "from the same forward passes.")
    write_result("diffusion", command=cmd, config={"train": TrainConfig().to_dict() if not full else "full", "seeds": seeds,
                                                    "guidance": GUIDANCE_GRID},
                 rows=rows, targets=tg, extra={"note": note, "per_seed": per_seed})
    for k, v in tg.items():
        typer.echo(f"{k}: {v['value']} (goal {v['goal']}, met {v['met']})")


def register(app: typer.Typer) -> None:
    app.command("diffusion")(bench_diffusion)
