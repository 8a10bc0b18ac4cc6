"""One interface for textual backdoor defences (survey: Cheng et al., "Backdoor attacks and
countermeasures in natural language processing models", and OpenBackdoor's defender API).

A defence acts at one of two stages:

- ``pre``  (before training): it sees the poisoned *training set* and returns which samples to
  drop (BKI, CUBE); the victim is then retrained on what is kept.
- ``post`` (after training): it sees the trained victim and either *detects* poisoned inputs
  (STRIP, RAP: a suspicion score per input and a threshold), *corrects* inputs (ONION: delete
  suspicious words) or *repairs* the model (clean fine-tuning / fine-pruning).

Every defence gets the same :class:`DefenceInputs` and returns typed records; scores are
"higher = more suspicious" everywhere so the detection metrics are shared. Every defence sees
the victim's window (issue 35): predictions truncate at the victim's ``max_length`` and the
word-level defences (ONION, BKI, STRIP) work on the words inside it (:func:`visible_limits`). Each defence lives
in its own file with its config and registers its class in :data:`DEFENCES` with one
decorator (``@DEFENCES.register("onion")``); the class names its config type, so the name
maps to ``(config_type, class)`` and a config's type picks its handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from ....core.config import Config
from ....core.data import TextSample
from ....core.errors import SlimguardError
from ....core.registry import Registry

Stage = Literal["pre", "post"]
# name -> Defence subclass; filled by the defence files as the package imports them
DEFENCES: Registry[type["Defence"]] = Registry("defence", load="slimguard.guard.backdoor.defences")
DefenceName = DEFENCES.name_type()


class DefenceConfig(Config):
    """Fields every defence shares."""

    seed: int = Field(0, description="Seed for every random choice the defence makes (perturbations, subsets).")
    batch_size: int = Field(64, ge=1, le=4096, description="Batch size for victim forward passes.")
    max_eval: int | None = Field(None, ge=1, description="Evaluate on at most this many clean and this many "
                                 "poisoned test samples (seeded subset); None = all.")
    min_dev: int = Field(50, ge=2, description="Fewest clean dev samples a threshold may be calibrated on; "
                         "fewer is an error rather than a silently noisy threshold.")


@runtime_checkable
class Classifier(Protocol):
    """What a defence needs from a victim: probabilities, and (for BKI/CUBE) a representation."""

    num_labels: int

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


class HFClassifier:
    """A ``transformers`` sequence classifier as a :class:`Classifier`.

    ``embed`` is the last hidden state the classification head reads: the first token
    ([CLS]) for encoders, the last non-pad token for decoder-only models.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 64, batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.num_labels = int(model.config.num_labels)

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, batch_size: int = 64) -> "HFClassifier":
        from ..victim import _max_length_of, load_victim

        model, tok = load_victim(model_dir)
        return cls(model, tok, max_length=_max_length_of(Path(model_dir)), batch_size=batch_size)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        from ..victim import predict_proba

        return predict_proba((self.model, self.tokenizer), list(texts), self.batch_size, max_length=self.max_length)

    def visible_limits(self, texts: list[str]) -> list[int]:
        """Per text, the character where this classifier stops reading (its ``max_length`` window)."""
        from ..window import Window

        return Window(self.tokenizer, self.max_length).limits(list(texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        first = self.tokenizer.cls_token_id is not None
        self.model.eval()
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                idx = order[i:i + self.batch_size]
                enc = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                h = self.model(**enc, output_hidden_states=True).hidden_states[-1].float()
                if first:
                    e = h[:, 0]
                else:
                    last = enc["attention_mask"].sum(1) - 1
                    e = h[torch.arange(h.shape[0]), last]
                out[idx] = e.numpy()
        return out


def visible_limits(clf: Any, texts: list[str]) -> list[int]:
    """Where the victim stops reading each text; the whole text for a classifier that does not say."""
    f = getattr(clf, "visible_limits", None)
    return list(f(list(texts))) if f is not None else [len(t) for t in texts]


@dataclass
class DefenceInputs:
    """Everything a defence may use. ``train`` is the (possibly poisoned) training set,
    ``dev`` the defender's small clean set, ``test``/``test_poisoned`` the evaluation sets
    (``test_poisoned``: non-target samples carrying the trigger, labelled with their ORIGINAL label)."""

    train: list[TextSample]
    dev: list[TextSample]
    test: list[TextSample]
    test_poisoned: list[TextSample]
    target_label: int
    label_names: list[str]
    classifier: Classifier | None = None
    model_dir: Path | None = None  # the victim's folder; defences that train start from it
    victim_cfg: dict = field(default_factory=dict)  # how the victim was trained (for retraining)

    def need_classifier(self, defence: str) -> Classifier:
        if self.classifier is None:
            raise SlimguardError(f"{defence} needs the trained victim; give a run directory with model/ "
                                 "(from `slimguard backdoor attack`)")
        return self.classifier

    def need_model_dir(self, defence: str) -> Path:
        if self.model_dir is None or not (Path(self.model_dir) / "config.json").is_file():
            raise SlimguardError(f"{defence} trains from the victim's weights, but the run has no model/ folder "
                                 f"({self.model_dir}); re-run `slimguard backdoor attack` for this run")
        return Path(self.model_dir)


@dataclass
class Detection:
    """Per-input suspicion (higher = more likely poisoned), the calibrated threshold and the verdicts."""

    scores: np.ndarray
    threshold: float
    flagged: np.ndarray  # bool

    @classmethod
    def from_scores(cls, scores: np.ndarray, threshold: float) -> "Detection":
        s = np.asarray(scores, dtype=np.float64)
        return cls(s, float(threshold), s > threshold)


@dataclass
class Calibration:
    """How a threshold was chosen, kept in the run record."""

    threshold: float
    n_dev: int
    rule: str
    details: dict = field(default_factory=dict)


class Defence:
    """Base class: subclasses set ``name``/``stage`` and implement the methods for their stage.

    ``fit`` sees the inputs once (calibration, trigger-embedding training, keyword search);
    post-training detectors implement :meth:`detect`, correctors :meth:`correct`, model
    repairers :meth:`repair`; pre-training filters implement :meth:`filter_train`.
    """

    name: str = "defence"
    stage: Stage = "post"
    kind: str = "detect"  # detect | correct | repair | filter: which method carries the defence
    config_type: ClassVar[type[DefenceConfig]] = DefenceConfig  # the config that selects this defence

    def __init__(self, cfg: DefenceConfig):
        self.cfg = cfg
        self.calibration: Calibration | None = None

    def fit(self, inputs: DefenceInputs) -> "Defence":
        return self

    def detect(self, texts: list[str]) -> Detection:
        raise NotImplementedError(f"{self.name} does not detect inputs")

    def correct(self, texts: list[str]) -> list[str]:
        raise NotImplementedError(f"{self.name} does not correct inputs")

    def repair(self, inputs: DefenceInputs) -> Classifier:
        raise NotImplementedError(f"{self.name} does not repair models")

    def filter_train(self, inputs: DefenceInputs) -> Detection:
        raise NotImplementedError(f"{self.name} does not filter training data")


def need_dev(samples: list[TextSample], cfg: DefenceConfig, what: str) -> None:
    """A clear error instead of a threshold calibrated on a handful of samples."""
    if len(samples) < cfg.min_dev:
        raise SlimguardError(f"{what}: the clean dev set has {len(samples)} usable samples but calibrating a threshold "
                             f"needs at least min_dev={cfg.min_dev}; use a larger dev split or lower min_dev")


def threshold_at_frr(clean_scores: np.ndarray, frr: float) -> float:
    """The score above which at most ``frr`` of clean inputs fall (STRIP's and RAP's rule)."""
    s = np.sort(np.asarray(clean_scores, dtype=np.float64))
    if s.size == 0:
        raise SlimguardError("no clean scores to calibrate a threshold on")
    return float(np.quantile(s, 1.0 - frr, method="higher"))
