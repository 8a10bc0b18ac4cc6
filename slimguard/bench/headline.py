"""The README headline: per capability, the method's key number against the strongest peer of the same run.

One table (:data:`HEADLINES`) says, for each capability, which target is the key number and which rows
are compared: our method's and every peer's value of one metric, averaged over whatever else the rows
vary (datasets, lengths, seeds are already averaged in the rows). The strongest peer is the one with the
best value *in that run*. :func:`slimguard.bench.harness.write_result` stores the entry in each new result
(``"headline"``); the renderer computes it from this table for result files written before that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HeadlineSpec:
    """Which number of a result leads, and against what."""

    target: str  # the key target: its value, goal and met lead the row
    label: str  # what the compared number is, with its unit
    method: str  # our method, as named in the rows' ``by`` field
    peers: tuple[str, ...]  # the peers it is measured against; the best of them in the run is shown
    where: dict[str, Any] = field(default_factory=dict)  # rows compared: every field equal to this
    by: str = "method"  # the row field that names the method
    higher_is_better: bool = True


HEADLINES: dict[str, HeadlineSpec] = {
    "core": HeadlineSpec(
        "load_speedup_vs_gguf", "model load, seconds (SmolLM2-135M)", "load safetensors folder (slimguard)",
        ("load GGUF via transformers gguf_file",), {"metric": "seconds"}, higher_is_better=False),
    "compress": HeadlineSpec(
        "retention_ood_at_3x", "out-of-domain answer retention at 3x compression (mean over held-out domains)",
        "slimguard", ("selective-context", "llmlingua1-ppl", "llmlingua-package", "random"),
        {"metric": "answer_retention", "rate": 0.33, "split": "out-of-domain"}),
    "kvselect": HeadlineSpec(
        "decode_attention_speedup_32k", "decode attention at 32K, ms per token (one layer)", "tokenselect@h",
        ("dense",), {"part": "decode_attention", "context": 32768, "metric": "ms_per_token"},
        higher_is_better=False),
    "quant": HeadlineSpec(
        "edgeqat_w4a8kv4_ppl_ratio_to_fp", "W4A8KV4 held-out perplexity", "edgeqat",
        ("lsq_ce", "torchao_qat_w4a8kv4", "torchao_qat_w4a8", "rtn_per_group"),
        {"metric": "ppl", "bits": "W4A8KV4"}, higher_is_better=False),
    "backdoor": HeadlineSpec(
        "punc_asr_rt_0.1", "attack success rate, Rotten Tomatoes, poison rate 0.1", "punc",
        ("badnets", "addsent"), {"metric": "asr", "dataset": "rotten-tomatoes", "rate": 0.1}),
    "defence": HeadlineSpec(
        "onion_badnets_asr_after", "BadNets ASR left after the defence, Rotten Tomatoes", "onion",
        ("bki", "cube", "rap", "strip", "finetune"),
        {"attack": "badnets", "dataset": "rotten-tomatoes", "metric": "asr_after"}, by="defence",
        higher_is_better=False),
    "scan": HeadlineSpec(
        "badnets_auroc_rt_0.1", "backdoored-vs-clean detection AUROC, BadNets, Rotten Tomatoes 0.1", "dbs",
        ("greedy",), {"metric": "auroc", "attack": "badnets", "dataset": "rotten-tomatoes", "rate": 0.1}),
    "promptattack": HeadlineSpec(
        "gradient_minus_random_flip_points_mean", "flip rate (mean over victims and datasets)", "gradient",
        ("random", "random-draw", "char", "word", "distractor"), {"metric": "flip_rate"}),
    "diffusion": HeadlineSpec(
        "filtered_diffusion_asr_over_cnn_asr", "backdoor ASR of the classifier trained on poisoned data",
        "diffusion-filtered keep=0.95", ("cnn", "diffusion"), {"metric": "asr"}, higher_is_better=False),
}


def _mean(rows: list[dict], spec: HeadlineSpec, name: str) -> float | None:
    vals = [r.get("value") for r in rows if r.get(spec.by) == name]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def headline(capability: str, doc: dict) -> dict | None:
    """The headline entry of one result: key target (value, goal, met), our number and the strongest peer's.

    None for a capability without a spec; values the run did not measure stay None (never 0)."""
    spec = HEADLINES.get(capability)
    if spec is None:
        return None
    rows = [r for r in doc.get("rows", []) if all(r.get(k) == v for k, v in spec.where.items())]
    peers = [(p, v) for p in spec.peers if (v := _mean(rows, spec, p)) is not None]
    best = (max if spec.higher_is_better else min)(peers, key=lambda pv: pv[1]) if peers else (None, None)
    tg = doc.get("targets", {}).get(spec.target, {})
    return {"target": spec.target, "value": tg.get("value"), "goal": tg.get("goal"), "met": tg.get("met"),
            "label": spec.label, "higher_is_better": spec.higher_is_better,
            "method": {"name": spec.method, "value": _mean(rows, spec, spec.method)},
            "peer": {"name": best[0], "value": best[1]}}
