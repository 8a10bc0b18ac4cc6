"""BiBadDiff benchmark bookkeeping and detectors on synthetic features (no diffusion model)."""

import math

import numpy as np
import pytest

from slimguard.bench.diffusion import _targets_and_rows
from slimguard.guard.diffusion.amplify import replication
from slimguard.guard.diffusion.config import PoisonConfig
from slimguard.guard.diffusion.detect import auroc, detect_poison
from slimguard.guard.diffusion.poison import poison_dataset


def _seed(ratio_w2, ratio_w5, within=0.3, asr_cnn=0.9, asr_f=0.3, cacc_cnn=0.85, cacc_f=0.82):
    pts = [{"guidance": w, "n": 64, "trigger_ratio": r, "exact_ratio": r, "pattern_ratio": r,
            "detector_pattern_agreement": 1.0, "misalignment": r, "vs_global": r / 0.05,
            "vs_within_class": r / within} for w, r in [(0, 0.2), (1, 0.3), (2, ratio_w2), (5, ratio_w5)]]
    return {"train_seconds": 600.0, "train_steps": 1000, "step_cpu_seconds": 0.3, "amplify": {"points": pts, "global_rate": 0.05, "within_class_fraction": within,
                                                "detector_heldout_accuracy": 1.0, "clean_cnn_accuracy": 0.8,
                                                "control_trigger_ratio": 0.0, "control_pattern_ratio": 0.0},
            "detect": [{"method": m, "fit_on": f, "auroc_train": a, "auroc_generations": float("nan"), "n_train": 900}
                       for m, f, a in [("spectral", "train", 0.7), ("spectral", "generations", 0.97),
                                       ("activation-clustering", "train", 0.6),
                                       ("activation-clustering", "generations", 0.9)]],
            "classify": [{"method": "cnn", "keep_frac": None, "cacc": cacc_cnn, "asr": asr_cnn, "n_clean": 100},
                         {"method": "diffusion", "keep_frac": 1.0, "cacc": 0.8, "asr": 0.5, "n_clean": 100},
                         {"method": "diffusion-filtered", "keep_frac": 0.95, "cacc": cacc_f, "asr": asr_f, "n_clean": 100}]}


@pytest.mark.parametrize("seeds, amp_met, asr_met, seeds_met", [
    ([_seed(0.6, 0.5)], True, True, False),  # min over w>=2 of ratio/within = 0.5/0.3 = 1.67
    ([_seed(0.6, 0.4)] * 3, False, True, True),  # 0.4/0.3 = 1.33 at w=5
    ([_seed(0.6, 0.6, asr_f=0.6)], True, False, False),
])
def test_targets_follow_the_issue(seeds, amp_met, asr_met, seeds_met):
    rows, tg = _targets_and_rows(seeds, [0.0, 1.0, 2.0, 5.0])
    assert tg["trigger_ratio_over_within_class_at_w>=2 (min over w)"]["met"] is amp_met
    assert tg["filtered_diffusion_asr_over_cnn_asr"]["met"] is asr_met
    assert tg["seeds"]["met"] is seeds_met
    assert tg["detection_auroc_train_set_fit_on_generations_spectral"]["met"] is True
    assert tg["detection_auroc_train_set_fit_on_generations_activation-clustering"]["met"] is False
    assert tg["cacc_gap_cnn_minus_filtered_diffusion"]["value"] == pytest.approx(0.03)
    assert tg["train_minutes_wall_measured_on_loaded_machine"] == {"value": 10.0, "goal": "<= 20", "met": True}
    assert tg["train_minutes_from_cpu_time_per_step"]["value"] == pytest.approx(5.0)
    assert all(r["n"] == len(seeds) for r in rows)


def _features(n_clean, n_pois, seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n_clean + n_pois, 16))
    f[n_clean:, 0] += shift  # poison shifts one feature direction
    return f, np.r_[np.zeros(n_clean, bool), np.ones(n_pois, bool)]


@pytest.mark.parametrize("method", ["spectral", "activation-clustering"])
def test_detectors_on_training_and_on_amplified_generations(method):
    f_tr, lab = _features(300, 100)
    # generations: the trigger is amplified to a 70% majority, which breaks "minority = poison"
    f_gen, gen_lab = _features(30, 70, seed=1)
    res = detect_poison(f_tr, lab, f_gen, gen_lab, method=method)
    by = {r.fit_on: r for r in res}
    assert by["train"].auroc_train > 0.85
    assert by["generations"].auroc_train > 0.9
    assert by["generations"].auroc_generations > 0.9
    assert by["train"].n_poisoned == 100


def test_auroc_is_nan_for_one_class():
    assert math.isnan(auroc(np.arange(4.0), np.ones(4, bool)))
    assert auroc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0


def test_replication_counts_duplicated_copies():
    rng = np.random.default_rng(0)
    x = rng.random((60, 8, 8)).astype(np.float32)
    y = np.arange(60) % 3
    ps = poison_dataset(x, y, PoisonConfig(rate=0.2, target=0, duplicate_frac=0.5), 3)
    dup_src = np.unique(ps.source_index[ps.duplicated])
    gens = np.concatenate([ps.x[dup_src], ps.x[dup_src]])  # the model reproduced only duplicated images
    r = replication(gens, ps, 0.99)
    assert r.per_image_duplicated == pytest.approx(2.0)
    assert r.per_image_single == 0.0 and r.per_image_clean == 0.0


@pytest.mark.parametrize("full, seed, name", [(False, 0, "bench-diffusion-seed0"), (True, 2, "bench-diffusion-full-seed2")])
def test_seed_runs_keep_the_names_and_keys_of_the_flat_bench(full, seed, name):
    """The nested config must find the models (hours of training) and measurements cached before it existed."""
    from slimguard.bench.diffusion import DiffusionBenchConfig, _seed_configs, _seed_run
    from slimguard.guard.diffusion.config import AmplifyConfig, ClassifyConfig, DataConfig, TrainConfig

    cfg = DiffusionBenchConfig(full=full)
    old = TrainConfig(seed=seed, poison=PoisonConfig(seed=seed),
                      **({"data": DataConfig(n_train=None), "steps": 4000} if full else {}))
    assert _seed_run(cfg, seed) == (name, {"train": old.to_dict(), "full": full, "replication": False})
    _, acfg, ccfg = _seed_configs(cfg, seed)
    assert acfg == AmplifyConfig(seed=seed, n_samples=256 if full else 128)
    assert ccfg == ClassifyConfig(seed=seed, n_test=200 if full else 100)


@pytest.mark.parametrize("data", [{"train": {"steps": 50}}, {"amplify": {"n_samples": 64}}])
def test_other_settings_get_their_own_run_or_key(data):
    from slimguard.bench.diffusion import DiffusionBenchConfig, _seed_run

    name, key = _seed_run(DiffusionBenchConfig(**data), 0)
    assert (name, key) != _seed_run(DiffusionBenchConfig(), 0)
    assert name.startswith("bench-diffusion") and name.endswith("-seed0")
