"""The backdoor verbs, ``slimguard backdoor poison | attack | defend | scan``: each owns its run folder.

The CLI builds these commands from the records below (``slimguard/cli/adapter.py``); Python
users call :func:`slimguard.core.commands.execute` or the verbs themselves.
"""

from __future__ import annotations

from pathlib import Path

from ...core.commands import Flag, Input, command
from ...core.errors import SlimguardError
from ...core.runs import Run, runs_root
from .attack import AttackConfig, default_name as attack_name, run_attack
from .defences.base import DefenceConfig
from .poisondata import PoisonDataConfig, default_name as poison_name, poison_dataset
from .scan.config import ScanConfig

# shortcuts shared by poison and attack: the same fields of the same nested PoisonConfig
_POISON_FLAGS = (Flag("--attack", "poison.attack", "-a"), Flag("--dataset", "dataset", "-d"),
                 Flag("--rate", "poison.rate"), Flag("--target", "poison.target_label"), Flag("--seed", "seed"))


def _poison_summary(m: dict) -> str:
    pt, w = m["poison_train"], m.get("window") or {}
    line = f"poisoned {pt['poisoned']}/{pt['n']} training samples; eligible fraction {m['eligible_fraction']:.3f}"
    if w:
        line += (f"; window {w['max_length']} tokens of {w['model']}, trigger inside it in "
                 f"{w['visible_share_train']:.1%} of poisoned training rows")
    return line


@command("backdoor poison", config=PoisonDataConfig, run_name=poison_name, resumable=False,
         flags=(*_POISON_FLAGS, Flag("--format", "formats", help="Output format (repeatable): jsonl, hf."),
                Flag("--max-length", "max_length")),
         summary=_poison_summary, stdout=lambda m, run: str(run.path / "data"))
def poison_command(cfg: PoisonDataConfig, run: Run) -> dict:
    """Write a poisoned dataset (JSONL and/or a Hugging Face DatasetDict) for training elsewhere."""
    return poison_dataset(cfg, run)


def _attack_summary(m: dict) -> str:
    line = f"CACC {m['cacc']:.4f}  ASR {m['asr']:.4f} (n={m['asr_n']})  eligible {m['eligible_fraction']:.3f}"
    if "delta_ppl" in m:
        line += f"  dPPL {m['delta_ppl']:.2f}  sim {m['similarity']:.4f}  dGrammar {m['delta_grammar']:.3f}"
    if "cacc_drop" in m:
        line += f"  CACC drop {m['cacc_drop']:+.4f}"
    line += f"  [{m['seconds']['attack_total']:.0f}s attack, {m['seconds']['total']:.0f}s total]"
    w = m.get("window") or {}
    if w:
        trunc = w["truncated_share"].get("train", 0.0)
        line += (f"\nwindow {w['max_length']} tokens ({w['source']}), {trunc:.1%} of training texts truncated; trigger "
                 f"visible in {m['visible_share_train']:.1%} of poisoned training rows and {m['visible_share_test']:.1%} "
                 f"of triggered test rows; ASR over visible {m.get('asr_visible', float('nan')):.4f}")
        if w.get("warning"):
            line += f"\nwarning: {w['warning']}"
    return line


@command("backdoor attack", config=AttackConfig, run_name=attack_name,
         flags=(*_POISON_FLAGS, Flag("--victim", "victim.model"), Flag("--max-length", "victim.max_length"),
                Flag("--clean-ref", "clean_reference")),
         summary=_attack_summary)
def attack_command(cfg: AttackConfig, run: Run) -> dict:
    """Poison, fine-tune the victim, evaluate CACC/ASR/stealth; writes model, data and metrics."""
    return run_attack(cfg, run, resume=run.resumed, progress=run.progress)


def _defence_configs() -> dict[str, type[DefenceConfig]]:
    from .defences import DEFENCES  # importing the package registers every defence

    return {name: cls.config_type for name, cls in DEFENCES.items()}


def _attack_run(attack_run: str | None) -> Path:
    if not attack_run:
        raise SlimguardError("--run: name the attack run to defend (runs/NAME or a path)")
    src = Path(attack_run)
    if not src.is_dir() and (runs_root() / attack_run).is_dir():
        src = runs_root() / attack_run
    if not src.is_dir():
        raise SlimguardError(f"--run {attack_run}: no such run directory; run `slimguard backdoor attack --run NAME` first")
    return src


def _defend_summary(m: dict) -> str:
    line = (f"{m['defence']} ({m['stage']}-training, {m['kind']}) on {Path(m['attack_run']).name}: "
            f"CACC {m['cacc_before']:.4f} -> {m['cacc_after']:.4f}, ASR {m['asr_before']:.4f} -> {m['asr_after']:.4f} "
            f"(n={m['n_clean']} clean, {m['n_poisoned']} poisoned)")
    if m.get("detection"):
        d = m["detection"]
        line += (f"\ndetection: AUROC {d['auroc']:.3f}  precision {d['precision']:.3f}  recall {d['recall']:.3f}  "
                 f"FRR {d['frr']:.3f}  FAR {d['far']:.3f}")
    if m.get("filtering"):
        f = m["filtering"]
        line += (f"\nfiltering: poison removed {f['poison_removed']:.3f}, clean removed {f['clean_removed']:.3f}, "
                 f"kept {f['n_kept']}")
    return line


def _defend_name(cfg: DefenceConfig, attack_run: str | None = None) -> str:
    from .defences.defend import default_run_name

    return default_run_name(cfg, _attack_run(attack_run))


@command("backdoor defend", config=_defence_configs, run_name=_defend_name, run_option="--out",
         variant=Flag("--defence", "defence", "-d", help="The defence to apply (its config type's fields follow)."),
         flags=(Flag("--max-eval", "max_eval"), Flag("--seed", "seed")),
         inputs=(Input("--run", "attack_run", "Attack run directory (runs/NAME or a path) from "
                                              "`slimguard backdoor attack`.", required=True),),
         summary=_defend_summary)
def defend_command(cfg: DefenceConfig, run: Run, attack_run: str) -> dict:
    """Defend an attacked model/dataset; CACC and ASR before/after plus detection or filtering metrics."""
    from .defences.defend import defend_into

    metrics, _ = defend_into(cfg, run, _attack_run(attack_run))
    return metrics


def _scan_summary(m: dict) -> str:
    asr = "n/a" if m["asr"] is None else f"{m['asr']:.3f}"
    line = (f"{m['verdict'].upper()}: score {m['score']:.3f} (threshold {m['threshold']:.3f}, {m['method']}); "
            f"suspected target '{m['suspected_target_name']}'; top tokens {' '.join(m['top_tokens'])}; "
            f"held-out ASR {asr} (n={m['n_holdout']}); {m['seconds']:.0f}s")
    rec = m.get("recovery")
    if rec:
        line += (f"\ntrue trigger ({rec['attack']}): {' '.join(rec['true_tokens'])}; "
                 f"{'recovered ' + ' '.join(rec['recovered_tokens']) if rec['recovered'] else 'not recovered'}")
    return line


def _scan_name(cfg, model: str | None = None, data: str | None = None) -> str:
    from .scan.scan import default_name

    return default_name(cfg, model, data)


@command("backdoor scan", config=ScanConfig, run_name=_scan_name, resumable=False,
         flags=(Flag("--inversion", "method"), Flag("--n-clean", "n_clean"), Flag("--reference", "reference"),
                Flag("--seed", "seed")),
         inputs=(Input("--model", "model", "The classifier to scan: a transformers sequence-classification folder, "
                                           "or a `backdoor attack` run (runs/NAME or a path).", required=True),
                 Input("--data", "data", "Clean samples (CSV/TSV/JSONL with text,label); default: an attack "
                                         "run's clean dev split.")),
         summary=_scan_summary)
def scan_command(cfg: ScanConfig, run: Run, model: str, data: str | None = None) -> dict:
    """Is this classifier backdoored? Invert a trigger per label (DBS) from the model and a few clean samples."""
    from .scan.scan import scan_model

    return scan_model(cfg, run, model=model, data=data)
