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

from pydantic import Field

from ..core.commands import Flag, Invocation, command
from ..guard.diffusion.config import AmplifyConfig, ClassifyConfig, TrainConfig
from .harness import BenchConfig

_PER_SEED = "the benchmark seeds it per seed (use seeds=N)"


class DiffusionBenchConfig(BenchConfig):
    """Seeds, the model each seed trains (``train``) and the measurements on it (``amplify``, ``classify``)."""

    full: bool = Field(False, description=(
        "Full size: the whole 60k training set, 4,000 steps, 256 generations per scale, 200 test images, 3 seeds "
        "(hours on CPU). A preset: --set still overrides each of its values."))
    seeds: int = Field(1, ge=1, description="Seeds 0..n-1 (each trains one diffusion model).")
    replication: bool = Field(False, description="Also train the duplicated-poison ablation model.")
    only_seeds: list[int] = Field(default_factory=list, description=(
        "Measure just these seeds (kept in their run folders) and write no result; a later call without it "
        "aggregates."))
    device: str = Field("auto", description="auto (GPU if torch sees one), cpu or cuda.")
    train: TrainConfig = Field(default_factory=TrainConfig, description=(
        "The poisoned DDPM each seed trains: the `diffusion train` config (train.seed and train.poison.seed are the "
        "seed's)."))
    amplify: AmplifyConfig = Field(default_factory=AmplifyConfig, description=(
        "Trigger amplification: the `diffusion amplify` config (bench: amplify.n_samples=128; detection reuses its "
        "generations at w=2 and w=5)."))
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig, description=(
        "The diffusion classifier vs a CNN: the `diffusion classify` config."))

    DEFAULTS = {"amplify": {"n_samples": 128}, "classify": {"n_test": 100}}
    FULL = {"seeds": 3, "train": {"data": {"n_train": None}, "steps": 4000}, "amplify": {"n_samples": 256},
            "classify": {"n_test": 200}}
    GRID = {"train": {"seed": _PER_SEED, "poison.seed": _PER_SEED}, "amplify": {"seed": _PER_SEED},
            "classify": {"seed": _PER_SEED}}


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


def _seed_configs(cfg: DiffusionBenchConfig, seed: int) -> tuple[TrainConfig, AmplifyConfig, ClassifyConfig]:
    """The train, amplify and classify configs of one seed: the bench's, at that seed."""
    from ..core.config import build, merge_under

    tcfg = build(TrainConfig, merge_under(cfg.train.to_dict(), {"seed": seed, "poison": {"seed": seed}}))
    return (tcfg, cfg.amplify.model_copy(update={"seed": seed}), cfg.classify.model_copy(update={"seed": seed}))


def _seed_run(cfg: DiffusionBenchConfig, seed: int) -> tuple[str, dict]:
    """The run folder name of a seed's model and the key its cached measurement must match. The preset sizes keep
    the names and keys of runs measured before the bench had a config; any other setting gets its own run."""
    from .attack_cache import short_hash

    preset = DiffusionBenchConfig(full=cfg.full)
    own = "" if cfg.train == preset.train else f"-{short_hash(cfg.train.to_dict())}"
    name = f"bench-diffusion{'-full' if cfg.full else ''}{own}-seed{seed}"
    key = {"train": _seed_configs(cfg, seed)[0].to_dict(), "full": cfg.full, "replication": cfg.replication}
    if (cfg.amplify, cfg.classify) != (preset.amplify, preset.classify):
        key["measure"] = {"amplify": cfg.amplify.to_dict(), "classify": cfg.classify.to_dict()}
    return name, key


def _one_seed(cfg: DiffusionBenchConfig, seed: int, out_dir, log) -> dict:
    import numpy as np

    from ..core.runs import Run, atomic_write_json
    from ..guard.diffusion.amplify import measure_amplification, plot_curve, replication as rep_stats
    from ..guard.diffusion.classifiers import train_cnn, train_trigger_detector
    from ..guard.diffusion.config import DetectConfig
    from ..guard.diffusion.detect import run_detection
    from ..guard.diffusion.diffclassify import run_classification
    from ..guard.diffusion.model import image_grid, sample
    from ..guard.diffusion.poison import make_trigger
    from ..guard.diffusion.train import train_diffusion

    replication = cfg.replication
    tcfg, acfg, ccfg = _seed_configs(cfg, seed)
    name, key = _seed_run(cfg, seed)
    with Run.reuse(name, command="slimguard bench diffusion", config=tcfg) as run:
        # a finished seed is kept with the config it measured, so seeds can run in separate
        # processes (--only-seed) or sessions and a final call only aggregates
        done_file = run.path / ("bench_seed" + ("-replication" if replication else "") + ".json")
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


@command("bench diffusion", config=DiffusionBenchConfig, owns_run=False,
         flags=(Flag("--seeds", "seeds"), Flag("--full", "full"), Flag("--replication", "replication"),
                Flag("--only-seed", "only_seeds", help="Measure just this seed (repeatable; kept in its run folder) and "
                                                       "write no result; a later call without it aggregates."),
                Flag("--device", "device")),
         stdout=lambda m, _run: "\n".join(f"{k}: {v['value']} (goal {v['goal']}, met {v['met']})"
                                          for k, v in m.get("targets", {}).items()) or None)
def bench_diffusion(cfg: DiffusionBenchConfig, call: Invocation) -> dict:
    """BiBadDiff: trigger amplification, detection from generations, robust diffusion classifier."""
    import torch

    from ..core.models import resolve_device
    from .harness import result_path, write_result

    os.environ["SLIMGUARD_DEVICE"] = resolve_device(cfg.device)  # a bad --device is a one-line error naming it
    n_threads = torch.get_num_threads()
    full, seeds, replication = cfg.full, cfg.seeds, cfg.replication
    out_dir = result_path("diffusion").parent  # plots go next to the result's JSON
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda s: call.log(f"[bench diffusion] {s}")  # noqa: E731
    if cfg.only_seeds:
        for s in cfg.only_seeds:
            _one_seed(cfg, s, out_dir, log)
        return {}
    per_seed = [_one_seed(cfg, s, out_dir, log) for s in range(seeds)]
    rows, tg = _targets_and_rows(per_seed, cfg.amplify.guidance)
    cmd = call.command
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
    path = write_result("diffusion", command=cmd, config={**cfg.to_dict(), "guidance": cfg.amplify.guidance},
                        rows=rows, targets=tg, extra={"note": note, "per_seed": per_seed})
    return {"path": str(path), "targets": tg}
