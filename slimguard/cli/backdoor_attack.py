"""``slimguard backdoor poison`` and ``slimguard backdoor attack`` (BadNets, AddSent, PuncAttack).

Heavy imports (torch, transformers) happen inside the commands so ``slimguard --help``
stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, console, set_threads


class AttackName(str, Enum):
    punc = "punc"
    badnets = "badnets"
    addsent = "addsent"


def _sets(sets: Optional[List[str]], **nested) -> list[str]:
    """Explicit CLI options for nested config keys go last, so they win over --set."""
    return list(sets or []) + [f"{k.replace('__', '.')}={v}" for k, v in nested.items() if v is not None]


def poison(attack: Optional[AttackName] = typer.Option(None, "--attack", "-a", help="Trigger: punc, badnets, addsent (default punc)."),
           dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="rotten-tomatoes, sms-spam, 20newsgroups or a CSV/JSONL file."),
           rate: Optional[float] = typer.Option(None, "--rate", help="Poisoned fraction of the training set, in (0, 1) (default 0.1)."),
           target: Optional[int] = typer.Option(None, "--target", help="Target label id (default 1)."),
           seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default 0)."),
           hf: bool = typer.Option(False, "--hf", help="Also save a Hugging Face DatasetDict (save_to_disk) under RUN/hf."),
           config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, run: Optional[str] = RunOpt,
           threads: Optional[int] = ThreadsOpt) -> None:
    """Write a poisoned dataset (JSONL, optionally HF datasets) to runs/NAME/ for training elsewhere."""
    from ..core.config import resolve
    from ..core.runs import Run
    from ..guard.backdoor.poisondata import PoisonDataConfig, default_name, poison_dataset

    extra = {"formats": ["jsonl", "hf"]} if hf else {}
    cfg = resolve(PoisonDataConfig, config_file=config,
                  sets=_sets(set_, poison__attack=attack.value if attack else None, poison__rate=rate,
                             poison__target_label=target), dataset=dataset, seed=seed, **extra)
    set_threads(threads)
    r = Run.create(run or default_name(cfg), command="slimguard backdoor poison", config=cfg)
    out = poison_dataset(cfg, r)
    pt = out["poison_train"]
    console().print(f"poisoned {pt['poisoned']}/{pt['n']} training samples with {cfg.poison.attack}; "
                    f"eligible fraction {out['eligible_fraction']:.3f}")
    typer.echo(str(r.path / "data"))


def attack(attack: Optional[AttackName] = typer.Option(None, "--attack", "-a", help="Trigger: punc, badnets, addsent (default punc)."),
           dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="rotten-tomatoes, sms-spam, 20newsgroups or a CSV/JSONL file."),
           rate: Optional[float] = typer.Option(None, "--rate", help="Poisoned fraction of the training set, in (0, 1) (default 0.1)."),
           target: Optional[int] = typer.Option(None, "--target", help="Target label id (default 1)."),
           seed: Optional[int] = typer.Option(None, "--seed", help="The one seed (default 0)."),
           victim: Optional[str] = typer.Option(None, "--victim", help="Victim: minilm-l6 (default), smollm2-135m or a local model directory."),
           clean_ref: bool = typer.Option(False, "--clean-ref", help="Also train a clean model and report the CACC drop."),
           resume: bool = typer.Option(False, "--resume", help="Continue training from the run's last checkpoint."),
           progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the training progress bar."),
           config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, run: Optional[str] = RunOpt,
           threads: Optional[int] = ThreadsOpt) -> None:
    """Poison, fine-tune the victim, evaluate CACC/ASR/stealth; write runs/NAME/ (model + data + metrics)."""
    from ..core.config import resolve
    from ..core.runs import Run, runs_root
    from ..guard.backdoor.attack import AttackConfig, run_attack

    cfg = resolve(AttackConfig, config_file=config,
                  sets=_sets(set_, poison__attack=attack.value if attack else None, poison__rate=rate,
                             poison__target_label=target, victim__model=victim),
                  dataset=dataset, seed=seed, clean_reference=True if clean_ref else None)
    n = set_threads(threads)
    name = run or f"attack-{cfg.poison.attack}-{Path(cfg.dataset).stem}-r{cfg.poison.rate:g}-s{cfg.seed}"
    if resume and not (runs_root() / name / "config.json").exists():
        from ..core.errors import SlimguardError

        raise SlimguardError(f"--resume: run '{name}' does not exist yet; start it without --resume")
    r = Run.create(name, command="slimguard backdoor attack", config=cfg)
    r.log.info("threads %d", n)
    m = run_attack(cfg, r, resume=resume, progress=progress)
    line = f"CACC {m['cacc']:.4f}  ASR {m['asr']:.4f} (n={m['asr_n']})  eligible {m['eligible_fraction']:.3f}"
    if "delta_ppl" in m:
        line += f"  dPPL {m['delta_ppl']:.2f}  sim {m['similarity']:.4f}  dGrammar {m['delta_grammar']:.3f}"
    if "cacc_drop" in m:
        line += f"  CACC drop {m['cacc_drop']:+.4f}"
    console().print(line + f"  [{m['seconds']['attack_total']:.0f}s attack, {m['seconds']['total']:.0f}s total]")
    typer.echo(str(r.path))


def register(app: typer.Typer) -> None:
    app.command("poison")(poison)
    app.command("attack")(attack)
