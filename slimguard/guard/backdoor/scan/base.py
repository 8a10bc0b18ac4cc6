"""Model-level backdoor scanning: the shared config, the method registry and the typed records.

The user holds a fine-tuned classifier and a handful of clean samples, not the training data
(the survey's "model inspection" family; TrojAI gave 20 clean samples per model). For every
candidate target label a scanner *inverts* a short token sequence that flips clean samples of
the other labels to that label; a model is flagged when the easiest flip is far easier than a
clean model allows. Each inversion method lives in its own file with its config (a subclass of
:class:`ScanConfig`) and registers its class in :data:`SCANNERS` with one decorator; the config's
type picks the method. The decision threshold is part of each method's config: it was fitted
on clean models only (``slimguard bench scan --calibrate``) and is the same for every attack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from ....core.config import Config
from ....core.registry import Registry

if TYPE_CHECKING:  # heavy: torch
    from .model import InversionModel

# name -> Scanner subclass; the method files fill it as the package imports them
SCANNERS: Registry[type["Scanner"]] = Registry("scan method", load="slimguard.guard.backdoor.scan.methods")
ScanMethodName = SCANNERS.name_type()
Position = Literal["start", "middle", "end", "punct"]


class MethodConfig(Config):
    """Fields every method's own config has: its decision threshold."""

    threshold: float = Field(0.5, description="Anomaly score above which a model is called backdoored; fitted on "
                             "clean models only (`slimguard bench scan --calibrate`, see docs/scan.md).")


class ScanPolicy(Config):
    """Fields every scan shares: the clean samples, where triggers go, how results are reported.

    :class:`~.config.ScanConfig` adds ``method`` and one sub-config per registered method under its
    name (``dbs.steps``, ``dbs.threshold``)."""

    method: ScanMethodName = Field("dbs", description="Inversion method: a registered scan method (dbs, or the "
                                   "greedy random-token baseline).")
    n_clean: int = Field(20, ge=2, le=2000, description="Clean samples the triggers are inverted on, in all, "
                         "balanced over labels (TrojAI gave 20 per model); a target label's trigger uses those of "
                         "the other labels.")
    n_holdout: int = Field(200, ge=0, le=20000, description="Further clean samples (never seen by the inversion) on "
                           "which the inverted trigger's attack success rate is measured (0 = skip).")
    positions: list[Position] = Field(["start"], min_length=1, description=(
        "Where the trigger goes: start (after [CLS]/BOS), middle, end (before [SEP]/at the end), punct (written "
        "OVER the sample's punctuation tokens, the rest inserted at the end: PuncAttack's replacement). Each "
        "position is one more inversion per label; DBS's reference tries two (near the start, mid-text)."))
    trigger_len: int = Field(10, ge=1, le=32, description="Trigger tokens inverted per option (DBS reference: 10).")
    max_length: int | None = Field(None, ge=8, le=512, description="Tokens per stamped input (None: the victim's own "
                                   "max_length from its folder plus trigger_len, else 128).")
    reference: str | None = Field(None, description="A benign reference classifier of the same task and tokenizer "
                                  "(folder or run): DBS's margin keeps triggers that flip it too (sentiment words) "
                                  "out. None: no margin.")
    quantize: Literal["none", "int8", "w4a8"] = Field("none", description=(
        "Scan the model as it would ship after slimming: int8 = torch's dynamic int8 PTQ (inverted through its "
        "dequantized float twin, judged on the int8 model), w4a8 = the quant package's 4-bit weights / 8-bit "
        "activations (fake-quant, post-training). The model folder is never changed."))
    batch_size: int = Field(64, ge=1, le=1024, description="Batch size for held-out ASR and prediction.")
    seed: int = Field(0, description="Seed of the clean-sample choice and of every random draw of the method.")
    top_k: int = Field(5, ge=1, le=32, description="Inverted trigger tokens reported per label (ranked by how much "
                       "removing each one raises the loss).")

    @model_validator(mode="after")
    def _positions(self):
        if len(set(self.positions)) != len(self.positions):
            raise ValueError(f"positions repeat a value: {self.positions}")
        return self

    def method_config(self) -> MethodConfig:
        """The chosen method's settings (its defaults for a method registered after this class was built)."""
        if self.method in type(self).model_fields:
            return getattr(self, self.method)
        return SCANNERS.get(self.method).config_type()

    @property
    def threshold(self) -> float:
        return self.method_config().threshold


@dataclass
class Inversion:
    """The best trigger found for one (target label, position) option."""

    target: int
    position: str
    token_ids: list[int]
    tokens: list[str]
    text: str
    loss: float          # CE to the target of the discrete trigger on the inversion samples (the judged model)
    flip_rate: float     # share of the inversion samples it flips to the target
    relaxed_loss: float | None = None  # the method's own best (near one-hot) loss, if it keeps one
    steps: int = 0
    queries: int = 0     # forward passes of the inversion batch the search used
    rollbacks: int = 0
    seconds: float = 0.0


@dataclass
class LabelScan:
    """Per candidate target label: the best option and what its trigger does on held-out samples."""

    target: int
    name: str
    best: Inversion
    options: list[Inversion]
    top_tokens: list[str]
    holdout_asr: float | None
    holdout_n: int
    score: float


@dataclass
class ScanResult:
    """What `slimguard backdoor scan` answers for one model."""

    method: str
    verdict: Literal["backdoored", "clean"]
    score: float
    threshold: float
    suspected_target: int
    suspected_target_name: str
    top_tokens: list[str]
    trigger: str
    asr: float | None
    labels: list[LabelScan]
    n_clean: int
    n_holdout: int
    seconds: float
    statistic: str
    cpu_seconds: float = 0.0  # process CPU time: comparable across machine loads, unlike wall time
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Scanner:
    """Base class: a method inverts one trigger for a (target label, position) option.

    ``invert`` gets the opened model (stamped batches, relaxed and discrete forward passes),
    the clean samples it may use (token ids and their source labels) and returns the best
    :class:`Inversion` it found; the shared driver in :mod:`.scan` does the rest (options,
    held-out ASR, top tokens, decision).
    """

    name: str = "scanner"
    title: str = "scanner"
    config_type: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def invert(self, model: "InversionModel", batch, target: int, *, generator, progress=None) -> Inversion:
        raise NotImplementedError


def discrete_inversion(model: "InversionModel", batch, target: int, token_ids) -> Inversion:
    """Score a discrete trigger (real token ids in the slots) on the judged model: loss and flip rate."""
    import torch
    import torch.nn.functional as F

    logits = model.discrete_logits(batch, torch.as_tensor(token_ids))
    tgt = torch.full((batch.size,), target, dtype=torch.long)
    ids = [int(i) for i in token_ids]
    return Inversion(target=target, position=batch.position, token_ids=ids, tokens=model.tokens(ids),
                     text=model.text(ids), loss=float(F.cross_entropy(logits, tgt)),
                     flip_rate=float((logits.argmax(1) == target).float().mean()))
