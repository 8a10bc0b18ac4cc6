"""The scan verb: open a classifier and its clean samples, invert a trigger per target label, decide.

``scan_model(cfg, run, model=DIR_OR_RUN, data=None)`` answers for one local ``transformers``
sequence-classification folder (or a ``slimguard backdoor attack`` run, whose clean dev split
and true trigger it reads): for every label ``t``, the method of ``cfg.method`` inverts a
trigger on ``n_clean`` clean samples of the other labels at each position of ``cfg.positions``;
the option with the lowest discrete loss is that label's trigger; its tokens are ranked by how
much deleting each one raises the loss, and its attack success rate is measured on held-out clean
samples. The decision (:mod:`.decide`) compares the model's anomaly score with the method's
stored threshold. The model folder is only read: everything goes into ``run``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ....core.errors import SlimguardError
from ....core.runs import Run, atomic_write_text, runs_root, safe_run_name
from . import decide
from .base import SCANNERS, LabelScan, ScanPolicy, ScanResult, discrete_inversion

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


@dataclass
class ScanTarget:
    """What ``--model`` named: the classifier folder and, for an attack run, its clean data and true trigger."""

    model_dir: Path
    run_dir: Path | None = None
    label_names: list[str] = field(default_factory=list)
    true_trigger: dict | None = None


def resolve_target(model: str) -> ScanTarget:
    """``--model``: a classifier folder, an attack run folder, or the name of a run under the runs root."""
    if not model or not str(model).strip():
        raise SlimguardError("--model: name a sequence-classifier folder or a `slimguard backdoor attack` run")
    p = Path(model).expanduser()
    if not p.exists() and (runs_root() / model).exists():
        p = runs_root() / model
    if not p.is_dir():
        raise SlimguardError(f"--model {model}: no such model folder or run")
    if (p / "model" / "config.json").is_file():  # a run folder (backdoor attack / defend): scan its model
        return ScanTarget(p / "model", p, true_trigger=true_trigger(p))
    if not (p / "config.json").is_file():
        raise SlimguardError(f"--model {p}: no config.json; is it a transformers model folder?")
    return ScanTarget(p)


def true_trigger(run_dir: Path) -> dict | None:
    """The trigger an attack run planted (from its config.json), as text pieces; None if unknown."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        poison = cfg["poison"]
        attack = poison["attack"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sub = poison.get(attack, {}) if isinstance(poison.get(attack), dict) else {}
    if attack == "badnets":
        pieces = list(sub.get("words", ["cf", "mn", "bb", "tq"]))
    elif attack == "addsent":
        pieces = [sub.get("sentence", "I watch this 3D movie")]
    elif attack == "punc":
        pieces = list(sub.get("marks", [";", "!"]))
    else:
        return {"attack": attack, "pieces": [], "target": poison.get("target_label", 1)}
    return {"attack": attack, "pieces": pieces, "target": int(poison.get("target_label", 1))}


def check_classifier_folder(model_dir: Path) -> dict:
    """The folder's config.json, after the checks that make a scan meaningful (one line each)."""
    try:
        conf = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise SlimguardError(f"{model_dir / 'config.json'} is not valid JSON; re-save the model") from None
    archs = conf.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise SlimguardError(f"--model {model_dir}: not a sequence classifier (architectures: "
                             f"{', '.join(map(str, archs)) or 'none'}); scan needs a *ForSequenceClassification folder")
    # transformers leaves id2label out of config.json for its default of two labels
    n = len(conf.get("id2label") or {}) or int(conf.get("num_labels", 2))
    if n < 2:
        raise SlimguardError(f"--model {model_dir}: the classifier has {n} label(s); a backdoor needs at least 2")
    if not any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        raise SlimguardError(f"--model {model_dir}: no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                             "save the tokenizer with the model (tokenizer.save_pretrained)")
    return conf


def label_names_of(conf: dict) -> list[str]:
    """The label names a config.json declares (transformers' LABEL_i when it leaves them out)."""
    id2label = conf.get("id2label") or {}
    n = len(id2label) or int(conf.get("num_labels", 2))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def load_classifier(model_dir: Path):
    """(model, tokenizer, label names, the victim's max_length or None) of a checked folder."""
    from ..victim import META_FILE, load_victim

    check_classifier_folder(model_dir)
    model, tok = load_victim(model_dir)
    names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    ml = None
    if (model_dir / META_FILE).is_file():
        ml = int(json.loads((model_dir / META_FILE).read_text()).get("max_length", 0)) or None
    return model, tok, names, ml


def read_clean(target: ScanTarget, data: str | None, label_names: list[str]) -> tuple[list[str], list[int]]:
    """Clean texts and label ids: ``--data`` (CSV/TSV/JSONL with text,label) or the attack run's dev split."""
    from ....core.data import DataError, _read_user_file
    from ..records import read_splits

    if data:
        p = Path(data).expanduser()
        if not p.is_file():
            raise SlimguardError(f"--data {data}: no such file")
        try:
            texts, values, where = _read_user_file(p)
        except DataError as e:
            raise SlimguardError(str(e)) from None
        ids = []
        for v, w in zip(values, where):
            if str(v) in label_names:
                ids.append(label_names.index(str(v)))
            elif isinstance(v, int) and 0 <= v < len(label_names):
                ids.append(int(v))
            else:
                raise SlimguardError(f"--data {p}: {w}: label {v!r} is not one of the model's labels "
                                     f"({', '.join(label_names)}) nor an id 0..{len(label_names) - 1}")
        return texts, ids
    if target.run_dir is not None and (target.run_dir / "data" / "dev.jsonl").is_file():
        dev = read_splits(target.run_dir / "data", ("dev",)).splits["dev"]
        return [s.text for s in dev], [int(s.label) for s in dev]
    raise SlimguardError(f"--model {target.model_dir}: no clean samples; give --data CLEAN.csv|.jsonl (text,label)")


def _token_pieces(tok, pieces: list[str]) -> list[str]:
    out: list[str] = []
    for p in pieces:
        out += [str(t) for t in tok.tokenize(p)]
    return list(dict.fromkeys(out))


def _normal(t: str) -> str:
    from .model import token_text

    return token_text(t).strip().lower()


def rank_tokens(im, batch, inv, k: int) -> list[str]:
    """The trigger's tokens by how much deleting each one raises the loss (most important first)."""
    import torch

    L = len(inv.token_ids)
    if L == 1:
        return inv.tokens[:1]
    gains = []
    for j in range(L):
        rest = inv.token_ids[:j] + inv.token_ids[j + 1:]
        sub = im.stamp(im.encode(batch.texts, L), batch.source.tolist(), L - 1, batch.position, texts=batch.texts)
        gains.append(discrete_inversion(im, sub, inv.target, torch.tensor(rest)).loss - inv.loss)
    order = np.argsort(-np.asarray(gains), kind="stable")
    return list(dict.fromkeys(inv.tokens[i] for i in order))[:k]


def run_scan(policy: ScanPolicy, im, texts: list[str], labels: list[int], label_names: list[str], *,
             progress: bool = True, log=None) -> ScanResult:
    """Invert, rank, measure and decide for one opened model (:class:`~.model.InversionModel`)."""
    import torch
    from tqdm.auto import tqdm

    t0, c0 = time.perf_counter(), time.process_time()
    mcfg = policy.method_config()
    scanner = SCANNERS.get(policy.method)(mcfg)
    pred = im.predict(texts, policy.batch_size)
    labels_a = np.asarray(labels)
    ok = np.flatnonzero(pred == labels_a)  # clean samples the model gets right: a flip is the trigger's doing
    rng = np.random.default_rng([policy.seed, 11])
    ok = ok[rng.permutation(len(ok))]
    K = im.num_labels
    steps_per = getattr(mcfg, "steps", getattr(mcfg, "queries", 1))
    bar = tqdm(total=K * len(policy.positions) * steps_per, desc=f"scan ({policy.method})", unit="step",
               disable=not progress, leave=False)
    gen = torch.Generator().manual_seed(policy.seed)
    scans: list[LabelScan] = []
    # n_clean samples in all, balanced over labels (TrojAI: 20 per model); a target's trigger is inverted on those
    # of the other labels and measured on further clean samples of the other labels (held out)
    per_label = max(1, policy.n_clean // K)
    chosen = {c: [int(i) for i in ok if labels_a[i] == c][:per_label] for c in range(K)}
    used = {i for v in chosen.values() for i in v}
    for t in range(K):
        inv_idx = sorted(i for c, v in chosen.items() if c != t for i in v)
        hold_idx = [int(i) for i in ok if labels_a[i] != t and int(i) not in used][:policy.n_holdout]
        if len(inv_idx) < 2:
            raise SlimguardError(f"fewer than 2 clean samples of labels other than '{label_names[t]}' that the model "
                                 f"classifies correctly ({len(inv_idx)}); give more clean samples with --data")
        inv_texts = [texts[i] for i in inv_idx]
        src = [int(labels_a[i]) for i in inv_idx]
        options = []
        for pos in policy.positions:
            batch = im.stamp(im.encode(inv_texts, policy.trigger_len), src, policy.trigger_len, pos, texts=inv_texts)
            done = [0]

            def tick(step, loss, temp, _d=done):
                bar.update(1)
                _d[0] += 1
                if step % 10 == 0:
                    bar.set_postfix(label=label_names[t], pos=pos, loss=f"{loss:.3g}")

            inv = scanner.invert(im, batch, t, generator=gen, progress=tick)
            bar.update(max(0, steps_per - done[0]))
            options.append((inv, batch))
            if log:
                log.info("label %s position %s: loss %.4g flip %.2f trigger %r (%.1fs)", label_names[t], pos, inv.loss,
                         inv.flip_rate, inv.text, inv.seconds)
        best, bbatch = min(options, key=lambda ob: ob[0].loss)
        top = rank_tokens(im, bbatch, best, policy.top_k)
        asr = None
        if hold_idx:
            hb = im.stamp(im.encode([texts[i] for i in hold_idx], policy.trigger_len),
                          [int(labels_a[i]) for i in hold_idx], policy.trigger_len, best.position)
            logits = im.discrete_logits(hb, torch.tensor(best.token_ids), batch_size=policy.batch_size)
            asr = float((logits.argmax(1) == t).float().mean())
        scans.append(LabelScan(target=t, name=label_names[t], best=best, options=[o for o, _ in options],
                               top_tokens=top, holdout_asr=asr, holdout_n=len(hold_idx),
                               score=decide.label_score(best.loss)))
    bar.close()
    worst = max(scans, key=lambda s: s.score)
    return ScanResult(method=policy.method, verdict=decide.verdict(worst.score, mcfg.threshold), score=worst.score,
                      threshold=mcfg.threshold, suspected_target=worst.target, suspected_target_name=worst.name,
                      top_tokens=worst.top_tokens, trigger=worst.best.text, asr=worst.holdout_asr, labels=scans,
                      n_clean=len(used), n_holdout=worst.holdout_n,
                      seconds=time.perf_counter() - t0, statistic="-log10(min discrete trigger loss)",
                      cpu_seconds=time.process_time() - c0)


def open_model(policy: ScanPolicy, target: ScanTarget, *, model=None, tokenizer=None, judge=None):
    """An :class:`~.model.InversionModel` for ``target`` (or for an already loaded ``model``)."""
    from .model import InversionModel

    ml = policy.max_length
    if model is None:
        model, tokenizer, names, victim_ml = load_classifier(target.model_dir)
        target.label_names = names
        ml = ml or ((victim_ml + policy.trigger_len) if victim_ml else 128)
    ml = ml or 128
    if policy.quantize != "none":
        model, judge = slimmed(model, policy.quantize)
    reference = None
    if policy.reference:
        ref_target = resolve_target(policy.reference)
        ref_model, ref_tok, ref_names, _ = load_classifier(ref_target.model_dir)
        if ref_tok.get_vocab() != tokenizer.get_vocab():
            raise SlimguardError(f"reference {policy.reference}: its tokenizer differs from the scanned model's; "
                                 "the benign reference must share the vocabulary")
        if len(ref_names) != model.config.num_labels:
            raise SlimguardError(f"reference {policy.reference}: {len(ref_names)} labels, the scanned model has "
                                 f"{model.config.num_labels}")
        reference = ref_model
    return InversionModel(model, tokenizer, max_length=ml, judge=judge, reference=reference)


def slimmed(model, kind: str):
    """(model gradients flow through, model that is judged) for ``model`` slimmed by ``kind``."""
    from ....slim.quant.classifier import dequantized_twin, int8_dynamic, w4a8

    if kind == "int8":
        q = int8_dynamic(model)
        return dequantized_twin(model, q), q
    if kind == "w4a8":
        return w4a8(model), None
    raise SlimguardError(f"quantize: unknown value '{kind}'; choose none, int8 or w4a8")


def recovery(tokenizer, true: dict | None, top_tokens: list[str]) -> dict | None:
    """Whether a true trigger token is among the top inverted tokens (case and sub-word markers ignored)."""
    if not true or not true.get("pieces"):
        return None
    want = _token_pieces(tokenizer, true["pieces"])
    got = [_normal(t) for t in top_tokens]
    hit = [t for t in want if _normal(t) in got]
    return {"attack": true["attack"], "true_tokens": want, "true_target": true.get("target"),
            "recovered": bool(hit), "recovered_tokens": hit}


def scan_model(cfg: ScanPolicy, run: Run, *, model: str, data: str | None = None) -> dict:
    """The verb of ``slimguard backdoor scan``: scan, write the report section, return the metrics."""
    from .report import scan_html

    target = resolve_target(model)
    snapshot = folder_state(target.model_dir)
    # every input is checked before a model is loaded: a bad one fails fast and leaves nothing behind
    names = label_names_of(check_classifier_folder(target.model_dir))
    texts, labels = read_clean(target, data, names)
    im = open_model(cfg, target)
    run.log.info("scanning %s with %s (%d clean samples, threshold %.4g)", target.model_dir, cfg.method, len(texts),
                 cfg.threshold)
    res = run_scan(cfg, im, texts, labels, target.label_names, progress=run.progress, log=run.log)
    im.close()
    rec = recovery(im.tok, target.true_trigger, res.top_tokens)
    metrics = {**res.to_dict(), "model": str(target.model_dir), "attack_run": str(target.run_dir) if target.run_dir else None,
               "true_trigger": target.true_trigger, "recovery": rec, "data": data or ("attack run dev split" if target.run_dir else None)}
    if folder_state(target.model_dir) != snapshot:  # the promise of the command: the model folder is never written
        raise SlimguardError(f"the model folder {target.model_dir} changed during the scan; this is a bug")
    atomic_write_text(run.path / "sections" / "20_scan.html", scan_html(metrics))
    run.log.info("verdict %s score %.4g (threshold %.4g) target %s trigger %r in %.1fs", res.verdict, res.score,
                 res.threshold, res.suspected_target_name, res.trigger, res.seconds)
    return metrics


def folder_state(d: Path) -> dict:
    """Name -> (size, mtime_ns) of every file under ``d``: what the scan must leave untouched."""
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def default_name(cfg: ScanPolicy, model: str | None = None, data: str | None = None) -> str:
    stem = Path(str(model or "model").rstrip("/")).name
    if stem == "model":
        stem = Path(str(model).rstrip("/")).parent.name or "model"
    return safe_run_name("scan", cfg.method, stem)
