"""``slimguard promptattack run | train-mlm-head``: malicious prompt templates (PromptAttack)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .options import ConfigOpt, RunOpt, SetOpt, ThreadsOpt, set_threads

app = typer.Typer(no_args_is_help=True)


def templates_html(out) -> str:
    """Benign vs malicious template side by side, with the accuracy drop."""
    from ..report.html import esc, table

    cells = (f"<table><tr><th>benign template</th><th>malicious template</th></tr><tr>"
             f"<td><code>{esc(out.benign_template)}</code></td><td><code class=changed>{esc(out.malicious_template)}"
             f"</code></td></tr></table>")
    rows = [{"metric": "accuracy", "benign": out.clean_acc, "malicious": out.attacked_acc,
             "drop": out.clean_acc - out.attacked_acc},
            {"metric": "template perplexity", "benign": out.ppl_benign if out.ppl_benign is not None else "",
             "malicious": out.ppl_malicious if out.ppl_malicious is not None else "", "drop": ""}]
    info = (f"<p>victim <b>{esc(out.victim)}</b> ({esc(out.setting)}{'' if out.k is None else f', K={out.k}'}), "
            f"dataset {esc(out.dataset)}, n_test={out.n_test}, strategy <b>{esc(out.strategy)}</b>: flip rate "
            f"{out.flip_rate:.3f}, {out.edits} template tokens changed, {out.queries} queries, {out.steps} gradient steps."
            "</p>")
    return cells + table(rows) + info


@app.command()
def run(victim: Optional[str] = typer.Option(None, "--victim", "-v", help="smollm2-135m (causal LM) or minilm-l6 (masked LM + head trained here)."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="rotten-tomatoes, sms-spam or a text,label file."),
        strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="gradient, char, word, distractor, random, or a+b."),
        setting: Optional[str] = typer.Option(None, "--setting", help="zeroshot, fewshot or full."),
        k: Optional[int] = typer.Option(None, "--k", help="Examples per class (fewshot)."),
        n_test: Optional[int] = typer.Option(None, "--n-test", help="Test examples to evaluate."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        config: Optional[str] = ConfigOpt, sets: Optional[List[str]] = SetOpt, run_name: Optional[str] = RunOpt,
        threads: Optional[int] = ThreadsOpt) -> None:
    """Search a malicious template against a prompt-based classifier; writes runs/<name>/ and a report."""
    from ..core.config import resolve
    from ..guard.promptattack.attack import PromptAttackConfig

    cfg = resolve(PromptAttackConfig, config_file=config, sets=sets, victim=victim, dataset=dataset,
                  strategy=strategy, setting=setting, k=k, n_test=n_test, seed=seed)
    set_threads(threads)
    from ..core.runs import Run, atomic_write_text
    from ..guard.promptattack.attack import run_promptattack
    from ..report.html import render_run
    from .options import console

    con = console()
    name = run_name or f"promptattack-{cfg.victim.replace('/', '_')}-{cfg.dataset}-{cfg.strategy}-s{cfg.seed}"
    r = Run.create(name, command="slimguard promptattack run", config=cfg)
    out = run_promptattack(cfg, log=lambda m: (con.print(m), r.log.info(m)))
    metrics = out.to_dict()
    metrics["accuracy_drop"] = out.clean_acc - out.attacked_acc
    r.save_metrics(metrics)
    atomic_write_text(r.artefact("sections/10_templates.html"), templates_html(out))
    report = render_run(r.path)
    typer.echo(f"benign    {out.benign_template!r}  acc {out.clean_acc:.3f}")
    typer.echo(f"malicious {out.malicious_template!r}  acc {out.attacked_acc:.3f}  flip {out.flip_rate:.3f}  "
               f"edits {out.edits}  queries {out.queries}  steps {out.steps}  (n_test={out.n_test})")
    typer.echo(f"run: {r.path}  report: {report}")


@app.command("train-mlm-head")
def train_mlm_head(encoder: str = typer.Option("minilm-l6", help="Encoder asset or BERT folder."),
                   steps: int = typer.Option(60, help="Training steps (batch 32)."),
                   seed: int = typer.Option(0), retrain: bool = typer.Option(False, help="Retrain even if cached."),
                   threads: Optional[int] = ThreadsOpt) -> None:
    """Train (or load) the masked-LM head the masked-LM victim needs; prints its held-out accuracy."""
    set_threads(threads)
    from ..guard.promptattack.mlm_head import load_or_train_mlm, mlm_record

    load_or_train_mlm(encoder, steps=steps, seed=seed, retrain=retrain)
    typer.echo(mlm_record(encoder, steps=steps, seed=seed))
