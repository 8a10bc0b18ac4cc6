"""The prompt-template attack verbs (PromptAttack): ``slimguard promptattack run`` owns its run folder;
``train-mlm-head`` fills the masked-LM head cache the masked-LM victim reads."""

from __future__ import annotations

import sys

from pydantic import Field

from ...core.commands import Flag, Invocation, command
from ...core.config import Config
from ...core.runs import Run, atomic_write_text, safe_run_name
from .attack import PromptAttackConfig


def templates_html(out) -> str:
    """Benign vs malicious template side by side, with the accuracy drop."""
    from ...report.html import esc, table

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


def _summary(m: dict) -> str:
    return (f"benign    {m['benign_template']!r}  acc {m['clean_acc']:.3f}\n"
            f"malicious {m['malicious_template']!r}  acc {m['attacked_acc']:.3f}  flip {m['flip_rate']:.3f}  "
            f"edits {m['edits']}  queries {m['queries']}  steps {m['steps']}  (n_test={m['n_test']})")


@command("promptattack run", config=PromptAttackConfig, resumable=False,
         run_name=lambda cfg: safe_run_name("promptattack", cfg.victim, cfg.dataset, cfg.strategy, f"s{cfg.seed}"),
         flags=(Flag("--victim", "victim", "-v"), Flag("--dataset", "dataset", "-d"), Flag("--strategy", "strategy", "-s"),
                Flag("--setting", "setting"), Flag("--k", "k"), Flag("--n-test", "n_test"), Flag("--seed", "seed")),
         summary=_summary)
def run_command(cfg: PromptAttackConfig, run: Run) -> dict:
    """Search a malicious template against a prompt-based classifier; writes the run and its report."""
    from ...report.html import render_run
    from .attack import run_promptattack

    def log(msg: str) -> None:
        run.log.info(msg)
        if run.progress:
            print(msg, file=sys.stderr, flush=True)

    out = run_promptattack(cfg, log=log)
    metrics = out.to_dict()
    metrics["accuracy_drop"] = out.clean_acc - out.attacked_acc
    run.save_metrics(metrics)
    atomic_write_text(run.artefact("sections/10_templates.html"), templates_html(out))
    render_run(run.path)
    return metrics


class MLMHeadConfig(Config):
    """``slimguard promptattack train-mlm-head``: the masked-LM head the masked-LM victim needs."""

    encoder: str = Field("minilm-l6", description="Encoder asset or BERT folder.")
    steps: int = Field(60, ge=1, description="Training steps (batch 32).")
    seed: int = Field(0, description="Seed of the masking and batch order.")
    retrain: bool = Field(False, description="Retrain even if a head of these settings is cached.")


@command("promptattack train-mlm-head", config=MLMHeadConfig, owns_run=False,
         flags=(Flag("--encoder", "encoder"), Flag("--steps", "steps"), Flag("--seed", "seed"),
                Flag("--retrain", "retrain")),
         stdout=lambda m, _run: str(m))
def train_mlm_head_command(cfg: MLMHeadConfig, call: Invocation) -> dict:
    """Train (or load) the masked-LM head the masked-LM victim needs; prints its held-out accuracy."""
    from .mlm_head import load_or_train_mlm, mlm_record

    # the head is a cache under the slimguard home shared by every run that reads the masked-LM victim, not a run
    load_or_train_mlm(cfg.encoder, steps=cfg.steps, seed=cfg.seed, retrain=cfg.retrain, progress=call.progress)
    return mlm_record(cfg.encoder, steps=cfg.steps, seed=cfg.seed)
