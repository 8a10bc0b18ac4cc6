"""``slimguard backdoor defend``: apply ONION, STRIP, RAP, BKI, CUBE or clean fine-tuning to an
attack run directory and write a defence run record (heavy imports inside the command)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .options import ConfigOpt, SetOpt, ThreadsOpt, console, set_threads


class DefenceName(str, Enum):
    onion = "onion"
    strip = "strip"
    rap = "rap"
    bki = "bki"
    cube = "cube"
    finetune = "finetune"


def defend(defence: DefenceName = typer.Option(..., "--defence", "-d", help="onion, strip, rap, bki, cube or finetune."),
           run: str = typer.Option(..., "--run", help="Attack run directory (runs/NAME or a path) from `slimguard backdoor attack`."),
           out: Optional[str] = typer.Option(None, "--out", help="Name of the defence run under runs/ (default defend-DEFENCE-RUN)."),
           max_eval: Optional[int] = typer.Option(None, "--max-eval", help="Evaluate on at most N clean and N poisoned test samples."),
           seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the defence's random choices (default 0)."),
           config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
           threads: Optional[int] = ThreadsOpt) -> None:
    """Defend an attacked model/dataset; report CACC and ASR before/after plus detection or filtering metrics."""
    from ..core.config import resolve
    from ..core.errors import SlimguardError
    from ..core.runs import runs_root
    from ..guard.backdoor.defences import config_for, defend_run

    cfg = resolve(config_for(defence.value), config_file=config, sets=set_, max_eval=max_eval, seed=seed)
    src = Path(run)
    if not src.is_dir() and (runs_root() / run).is_dir():
        src = runs_root() / run
    if not src.is_dir():
        raise SlimguardError(f"--run {run}: no such run directory; run `slimguard backdoor attack --run NAME` first")
    set_threads(threads)
    r, rep = defend_run(src, cfg, run_name=out, command=f"slimguard backdoor defend --defence {defence.value} --run {run}")
    c = console()
    c.print(f"{rep.defence} ({rep.stage}-training, {rep.kind}) on {src.name}: "
            f"CACC {rep.cacc_before:.4f} -> {rep.cacc_after:.4f}, ASR {rep.asr_before:.4f} -> {rep.asr_after:.4f} "
            f"(n={rep.n_clean} clean, {rep.n_poisoned} poisoned)")
    if rep.detection:
        d = rep.detection
        c.print(f"detection: AUROC {d['auroc']:.3f}  precision {d['precision']:.3f}  recall {d['recall']:.3f}  "
                f"FRR {d['frr']:.3f}  FAR {d['far']:.3f}")
    if rep.filtering:
        f = rep.filtering
        c.print(f"filtering: poison removed {f['poison_removed']:.3f}, clean removed {f['clean_removed']:.3f}, kept {f['n_kept']}")
    typer.echo(str(r.path))


def register(app: typer.Typer) -> None:
    app.command("defend")(defend)
