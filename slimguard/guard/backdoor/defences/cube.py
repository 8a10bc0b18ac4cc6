"""CUBE (Cui et al., NeurIPS 2022 Datasets & Benchmarks, "A Unified Evaluation of Textual
Backdoor Learning: Frameworks and Benchmarks"): poisoned samples form their own cluster in
the representation space of a model fine-tuned on the poisoned data.

The training set is embedded with the fine-tuned victim (the run's model, trained on that
data), reduced with UMAP and clustered with HDBSCAN (scikit-learn's). For each label the
largest cluster of samples carrying that label is kept; samples of that label that fall in
any other cluster (or in HDBSCAN's noise) are dropped, and the victim is retrained.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ....core.errors import SlimguardError
from .base import DEFENCES, Calibration, Defence, DefenceConfig, DefenceInputs, Detection


class CubeConfig(DefenceConfig):
    """CUBE: UMAP + HDBSCAN over the victim's embeddings (pre-training, filters the training set)."""

    n_components: int = Field(2, ge=2, le=64, description="UMAP output dimensions (the reference uses 2).")
    n_neighbors: int = Field(100, ge=2, description="UMAP neighbourhood size.")
    min_dist: float = Field(0.5, ge=0, le=1, description="UMAP min_dist.")
    min_cluster_frac: float = Field(0.01, gt=0, lt=1, description="HDBSCAN min_cluster_size as a fraction of the training set.")
    drop_noise: bool = Field(False, description="Also drop HDBSCAN noise points of each label (the reference keeps "
                             "only the dominant cluster; noise is often clean and dropping it costs data).")


@DEFENCES.register("cube")
class Cube(Defence):
    name, stage, kind, config_type = "cube", "pre", "filter", CubeConfig

    def __init__(self, cfg: CubeConfig):
        super().__init__(cfg)
        self.cfg: CubeConfig = cfg
        self.points: np.ndarray | None = None
        self.clusters: np.ndarray | None = None

    def cluster(self, emb: np.ndarray) -> np.ndarray:
        import warnings

        from sklearn.cluster import HDBSCAN

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap

            red = umap.UMAP(n_neighbors=min(self.cfg.n_neighbors, len(emb) - 1), min_dist=self.cfg.min_dist,
                            n_components=self.cfg.n_components, random_state=self.cfg.seed, n_jobs=1)
            self.points = red.fit_transform(emb)
        size = max(5, int(round(self.cfg.min_cluster_frac * len(emb))))
        return HDBSCAN(min_cluster_size=size).fit_predict(self.points)

    def filter_train(self, inputs: DefenceInputs) -> Detection:
        clf = inputs.need_classifier("cube")
        train = inputs.train
        if len(train) < 20:
            raise SlimguardError(f"cube: the training set has {len(train)} samples; clustering needs at least 20")
        emb = clf.embed([s.text for s in train])
        lab = np.array([s.label for s in train])
        cl = self.clusters = self.cluster(emb)
        flagged = np.zeros(len(train), dtype=bool)
        kept: dict[int, int] = {}
        for y in np.unique(lab):
            own = lab == y
            ids, counts = np.unique(cl[own & (cl >= 0)], return_counts=True)
            if ids.size == 0:  # all noise for this label: nothing to compare, keep everything
                continue
            main = int(ids[counts.argmax()])
            kept[int(y)] = main
            flagged |= own & (cl != main) & ((cl >= 0) | self.cfg.drop_noise)
        self.calibration = Calibration(0.5, 0, "keep each label's dominant cluster",
                                       {"n_clusters": int(cl.max() + 1), "noise": int((cl < 0).sum()),
                                        "kept_cluster_per_label": kept})
        return Detection.from_scores(flagged.astype(float), 0.5)
