"""Token blocks for EdgeQAT training and evaluation, from long-text assets.

Documents (not blocks) are split into train / held-out, so evaluation text is never seen
in training. The batch for step ``s`` is a pure function of ``(seed, s)``, which is what
makes ``--resume`` continue exactly and lets DDP ranks take disjoint slices of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...core.errors import DataError


@dataclass
class TokenBlocks:
    train: torch.Tensor  # [N, seq_len] int64
    heldout: torch.Tensor  # [M, seq_len]
    sources: list[str]

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rows of the global batch for ``step`` that belong to ``rank``."""
        n = self.train.shape[0]
        per_epoch = max(1, n // batch_size)
        epoch, within = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        rows = order[within * batch_size:(within + 1) * batch_size]
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} must be divisible by the number of DDP processes ({world})")
        per = batch_size // world
        return self.train[torch.as_tensor(rows[rank * per:(rank + 1) * per])]

    def eval_batches(self, n_batches: int, batch_size: int) -> list[torch.Tensor]:
        m = min(self.heldout.shape[0], n_batches * batch_size)
        return [self.heldout[i:i + batch_size] for i in range(0, m, batch_size)]


def _blocks(tokenizer, docs: list[str], seq_len: int) -> torch.Tensor:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for d in docs:
        ids += tokenizer(d, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


def load_blocks(tokenizer, datasets: list[str], eval_dataset: str, *, seq_len: int, eval_frac: float,
                split_seed: int = 0) -> TokenBlocks:
    """Train/held-out blocks; the document split uses ``split_seed`` (fixed), not the training seed,
    so runs with different training seeds are evaluated on the same text."""
    from ...core.data import load_long_texts

    train_docs, held_docs = [], []
    for name in dict.fromkeys(datasets + [eval_dataset]):
        docs = load_long_texts(name)
        if not docs:
            raise DataError(f"long-text source '{name}' holds no documents")
        order = np.random.default_rng(split_seed).permutation(len(docs))
        n_held = max(1, int(round(len(docs) * eval_frac))) if len(docs) > 1 else 0
        if name == eval_dataset:
            held_docs += [docs[i] for i in order[:n_held]]
        if name in datasets:
            train_docs += [docs[i] for i in order[n_held:]] if len(docs) > 1 else docs
    train = _blocks(tokenizer, train_docs, seq_len)
    held = _blocks(tokenizer, held_docs, seq_len)
    if train.shape[0] == 0 or held.shape[0] == 0:
        raise DataError(f"not enough text for seq_len {seq_len}: {train.shape[0]} training and {held.shape[0]} "
                        "held-out blocks; lower seq_len or add datasets")
    return TokenBlocks(train, held, list(dict.fromkeys(datasets + [eval_dataset])))
