"""PromptAttack: search for malicious prompt templates against a prompt-learning classifier.

One verb, one config: ``run_promptattack(PromptAttackConfig(...))`` builds the victim
classifier (benign template + verbalizer, zero/few-shot or fully trained head), runs a
strategy recipe on a small attack set drawn from the dev split, and evaluates benign and
malicious templates on a held-out test slice (accuracy, flip rate, edits, perplexity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from pydantic import Field, field_validator

from ...core.config import Config
from ...core.errors import DataError
from .templates import Template, Verbalizer, default_template, default_verbalizer, token_edits


class PromptAttackConfig(Config):
    victim: str = Field("smollm2-135m", description="Causal-LM asset/folder (next-token victim) or 'minilm-l6' (masked-LM victim with a head trained here).")
    dataset: str = Field("rotten-tomatoes", description="Labelled text dataset: rotten-tomatoes, sms-spam, or a .csv/.tsv/.jsonl file with text,label.")
    template: str | None = Field(None, description="Benign template with {x} and {answer} slots (default per dataset, e.g. '{x} It was {answer}.').")
    verbalizer: str | None = Field(None, description="Label words per class in label order: 'terrible,bad|great,good' (single-token words only).")
    setting: Literal["zeroshot", "fewshot", "full"] = Field("fewshot", description="Victim head: verbalizer only, K-shot calibrated head, or head trained on n_full examples.")
    k: int = Field(16, ge=1, le=512, description="Examples per class for the few-shot setting (16 or 32 in the benchmark).")
    n_full: int = Field(500, ge=2, description="Training examples for the 'full' setting.")
    strategy: str = Field("gradient", description="Recipe: gradient, char, word, distractor, random, or a '+' composition (distractor+gradient).")
    max_edits: int = Field(3, ge=1, le=20, description="Budget: template tokens the attack may change (token edit distance to the benign infix).")
    max_steps: int = Field(6, ge=0, description="Budget: gradient steps (forward+backward over the attack set).")
    max_queries: int = Field(60, ge=1, description="Budget: forward passes over the attack set.")
    objective: Literal["ce", "margin"] = Field("ce", description="Attack loss: true-label cross-entropy, or the margin max_other - true clipped at kappa (counts flips, not confidence).")
    kappa: float = Field(1.0, gt=0, description="Clip of the margin objective.")
    n_attack: int = Field(16, ge=1, description="Attack-set size (dev examples the benign template gets right).")
    n_test: int = Field(200, ge=1, description="Test examples for clean/attacked accuracy (first n of the seeded test split).")
    seed: int = Field(0, description="Seed for data split, K-shot draw and the search.")
    batch_size: int = Field(32, ge=1, description="Examples per forward pass.")
    ppl_model: str | None = Field("smollm2-135m", description="Causal LM that scores template perplexity (null: skip).")

    @field_validator("template")
    @classmethod
    def _template(cls, v):
        if v is not None:
            Template(v)
        return v

    @field_validator("verbalizer")
    @classmethod
    def _verbalizer(cls, v):
        if v is not None:
            Verbalizer.parse(v)
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v):
        from .strategies import compose

        compose(v)
        return v

    def benign_template(self) -> Template:
        return Template(self.template) if self.template else default_template(self.dataset)

    def label_words(self) -> Verbalizer:
        return Verbalizer.parse(self.verbalizer) if self.verbalizer else default_verbalizer(self.dataset)


@dataclass
class AttackOutcome:
    victim: str
    dataset: str
    setting: str
    k: int | None
    seed: int
    strategy: str
    benign_template: str
    malicious_template: str
    clean_acc: float
    attacked_acc: float
    flip_rate: float
    edits: int
    queries: int
    steps: int
    n_test: int
    n_attack: int
    attack_loss_benign: float
    attack_loss_malicious: float
    ppl_benign: float | None = None
    ppl_malicious: float | None = None
    trace: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def attack_set(clf, dev, n: int, batch_size: int, rng):
    """Up to n dev examples the benign template classifies correctly (the attack only sees these)."""
    pool = [dev[i] for i in rng.permutation(len(dev))[: 3 * n]]
    if not pool:
        raise DataError("the dev split is empty; the attack needs a few labelled dev examples")
    b = clf.victim.prepare([s.text for s in pool], [s.label for s in pool], [s.uid for s in pool], clf.template,
                           batch_size)
    pred = clf.predict(b)
    keep = [s for s in pool if pred[s.uid] == s.label][:n] or pool[:n]
    return keep


def search(clf, samples, *, recipe: str, max_edits: int, max_steps: int, max_queries: int, seed: int,
           batch_size: int = 32, batches=None, objective: str = "ce", kappa: float = 1.0):
    """Run a recipe; returns the final :class:`AttackState` (infix ids, loss, queries, steps, trace)."""
    import torch

    from .strategies import AttackContext, AttackState, Budget, compose

    batches = batches or clf.victim.prepare([s.text for s in samples], [s.label for s in samples], [s.uid for s in samples],
                                 clf.template, batch_size)
    benign = clf.infix_ids
    ctx = AttackContext(clf, batches, benign, Budget(max_edits, max_steps, max_queries),
                        torch.Generator().manual_seed(seed), clf.victim.candidate_mask(), objective=objective,
                        kappa=kappa)
    state = AttackState(list(benign), 0.0)
    state.loss = ctx.loss(benign)
    start = state.loss
    stages = compose(recipe)
    for i, strat in enumerate(stages):
        # each stage of a composed recipe gets an equal share of what is left of the query budget
        ctx.query_cap = state.queries + (max_queries - state.queries) // (len(stages) - i)
        state = strat.run(ctx, state)
    state.trace.insert(0, {"strategy": "benign", "loss": start, "queries": 0, "steps": 0, "edits": 0})
    return state


def run_promptattack(cfg: PromptAttackConfig, *, victim=None, ppl_lm=None, log=print) -> AttackOutcome:
    """Build the classifier, search a malicious template, evaluate both templates on the test slice."""
    import numpy as np

    from ...core.data import load_text_dataset
    from .fewshot import build_classifier
    from .metrics import accuracy, flip_rate, template_perplexity
    from .victims import load_victim

    ds = load_text_dataset(cfg.dataset, seed=cfg.seed)
    test = ds.test[: cfg.n_test]
    if not test or not ds.train:
        raise DataError(f"dataset '{cfg.dataset}' has an empty train or test split; it needs labelled examples in both")
    victim = victim or load_victim(cfg.victim)
    tmpl, verb = cfg.benign_template(), cfg.label_words()
    if verb.num_classes != ds.num_labels:
        raise DataError(f"verbalizer has {verb.num_classes} classes but dataset '{cfg.dataset}' has {ds.num_labels} "
                        f"({', '.join(ds.label_names)}); give one word list per class")
    clf = build_classifier(victim, tmpl, verb, ds.train, setting=cfg.setting, k=cfg.k, n_full=cfg.n_full,
                           seed=cfg.seed, batch_size=cfg.batch_size)
    log(f"victim {victim.name} ({cfg.setting}{'' if cfg.setting != 'fewshot' else f', K={cfg.k}'}): {clf.fit_info}")
    rng = np.random.default_rng(cfg.seed)
    shots = attack_set(clf, ds.dev, cfg.n_attack, cfg.batch_size, rng)
    state = search(clf, shots, recipe=cfg.strategy, max_edits=cfg.max_edits, max_steps=cfg.max_steps,
                   max_queries=cfg.max_queries, seed=cfg.seed, batch_size=cfg.batch_size, objective=cfg.objective,
                   kappa=cfg.kappa)
    malicious = tmpl.with_infix(victim.decode_infix(state.infix))
    tb = victim.prepare([s.text for s in test], [s.label for s in test], [s.uid for s in test], tmpl, cfg.batch_size)
    clean, attacked = clf.predict(tb), clf.predict(tb, state.infix)
    ppl = [None, None]
    if cfg.ppl_model:
        if ppl_lm is None:
            from ...core.models import LoadedModel, load_causal_lm

            ppl_lm = (LoadedModel(victim.model, victim.tokenizer, victim.name) if victim.kind == "causal"
                      and cfg.ppl_model == cfg.victim else load_causal_lm(cfg.ppl_model))
        ppl = template_perplexity(ppl_lm, [tmpl.text, malicious.text])
    return AttackOutcome(victim.name, ds.name, cfg.setting, clf.k, cfg.seed, cfg.strategy, tmpl.text, malicious.text,
                         accuracy(clean, test), accuracy(attacked, test), flip_rate(clean, attacked, test),
                         token_edits(clf.infix_ids, state.infix),
                         state.queries, state.steps, len(test), len(shots), state.trace[0]["loss"], state.loss,
                         ppl[0], ppl[1], state.trace)
