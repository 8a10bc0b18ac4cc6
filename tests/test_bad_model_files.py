"""Corrupt or truncated model files (issue 31): every loading site raises one line naming the file.

Each site gets a tiny random model saved to a temporary folder, then one of its files is broken
(cut in half, emptied, replaced by bytes that are not safetensors, or a JSON file cut short).
The loader must raise :class:`SlimguardError` whose single line names that file and says what to
do, and must leave every file as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import string
from pathlib import Path

import pytest
import torch

from slimguard.core.errors import SlimguardError

# --------------------------------------------------------------------------- tiny models, one per site

_BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits + ".,!?")


def _bert_tok(d: Path):
    from transformers import BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(_BERT_VOCAB) + "\n")
    return BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)


def _bert(d: Path, cls_name: str, **extra) -> Path:
    import transformers

    tok = _bert_tok(d)
    cfg = transformers.BertConfig(vocab_size=len(_BERT_VOCAB), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, **extra)
    torch.manual_seed(0)
    getattr(transformers, cls_name)(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def _causal_lm(d: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<unk>", "<s>", "</s>", *string.ascii_lowercase, " "])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(str(d))
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", bos_token="<s>", unk_token="<unk>").save_pretrained(str(d))
    return d


def _diffusion(d: Path) -> Path:
    from slimguard.guard.diffusion.config import UNetConfig
    from slimguard.guard.diffusion.model import DiffusionModel, build_scheduler, build_unet, save_model

    torch.manual_seed(0)
    unet = build_unet(UNetConfig(channels=[8, 16], norm_groups=4), 8, 2)
    save_model(DiffusionModel(unet, build_scheduler(10, "linear"), 2, 8, {}), d)
    return d


def _quant_run(d: Path) -> Path:
    from safetensors.torch import save_file

    from slimguard.slim.quant.train import MODEL_FILE

    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": "smollm2-135m"}))
    save_file({"w": torch.zeros(4, 4)}, str(d / MODEL_FILE))
    return d


def _packed(d: Path) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    save_file({"w": torch.zeros(4, 4)}, str(d / "model-packed.safetensors"), metadata={"format": "x"})
    return d


def _mlm_cache(d: Path) -> Path:
    # the cached head of `load_or_train_mlm("enc", steps=3, seed=0)` under SLIMGUARD_HOME=d
    _bert(d / "trained" / "enc-mlm-head-s3-seed0", "BertForMaskedLM")
    return d


def _load_causal_lm(d):
    from slimguard.core.models import load_causal_lm

    return load_causal_lm(str(d))


def _load_encoder(d):
    from slimguard.core.models import load_encoder

    return load_encoder(str(d), head="sequence")


def _load_compressor(d):
    from slimguard.slim.compress.compressor import PromptCompressor

    return PromptCompressor(str(d), rate_tokenizer="encoder")


def _load_victim(d):
    from slimguard.guard.backdoor.victim import load_victim

    return load_victim(d)


def _load_for_training(d):
    from slimguard.guard.backdoor.victim import load_for_training

    return load_for_training(str(d), ["negative", "positive"])


def _train_mlm_head(d):
    from slimguard.guard.promptattack.mlm_head import train_mlm_head

    return train_mlm_head(str(d), steps=1, batch_size=1, progress=False)


def _load_mlm_cache(d):
    from slimguard.guard.promptattack.mlm_head import load_or_train_mlm

    return load_or_train_mlm("enc", steps=3, seed=0, progress=False)


def _load_diffusion(d):
    from slimguard.guard.diffusion.model import load_model

    return load_model(d, device="cpu")


def _load_trained(d):
    from slimguard.slim.quant.train import load_trained

    return load_trained(d)


def _load_packed(d):
    from slimguard.slim.quant.export import load_packed

    return load_packed(d / "model-packed.safetensors")


# site: (builder, loader, weights file relative to the folder)
SITES = {
    "causal-lm": (_causal_lm, _load_causal_lm, "model.safetensors"),
    "encoder": (lambda d: _bert(d, "BertModel"), _load_encoder, "model.safetensors"),
    "compressor": (lambda d: _bert(d, "BertForTokenClassification", num_labels=2), _load_compressor,
                   "model.safetensors"),
    "backdoor-victim": (lambda d: _bert(d, "BertForSequenceClassification", num_labels=2), _load_victim,
                        "model.safetensors"),
    "backdoor-train": (lambda d: _bert(d, "BertModel"), _load_for_training, "model.safetensors"),
    "promptattack-mlm-encoder": (lambda d: _bert(d, "BertForMaskedLM"), _train_mlm_head, "model.safetensors"),
    "promptattack-mlm-cached": (_mlm_cache, _load_mlm_cache, "trained/enc-mlm-head-s3-seed0/model.safetensors"),
    "diffusion": (_diffusion, _load_diffusion, "unet/diffusion_pytorch_model.safetensors"),
    "quant-trained": (_quant_run, _load_trained, "qat_model.safetensors"),
    "quant-packed": (_packed, _load_packed, "model-packed.safetensors"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each site's folder, built once; cases copy it."""
    root = tmp_path_factory.mktemp("sites")
    return {name: build(root / name) for name, (build, _, _) in SITES.items()}


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def _half(b: bytes) -> bytes:
    return b[:len(b) // 2]


BREAKS = {
    "truncated": _half,
    "empty": lambda b: b"",
    "not-safetensors": lambda b: b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8,
    "header-only": lambda b: b[:8 + int.from_bytes(b[:8], "little")],  # every tensor's bytes gone
}


def _case(site, target, brk):
    return pytest.param(site, target, brk, id=f"{site}-{Path(target).name}-{brk}")


CASES = ([_case(s, SITES[s][2], "truncated") for s in SITES]
         + [_case("causal-lm", "model.safetensors", b) for b in ("empty", "not-safetensors", "header-only")]
         + [_case("quant-packed", "model-packed.safetensors", b) for b in ("empty", "not-safetensors")]
         + [_case("causal-lm", "config.json", "truncated"), _case("causal-lm", "tokenizer.json", "truncated"),
            _case("compressor", "tokenizer.json", "truncated"), _case("backdoor-victim", "config.json", "truncated"),
            _case("diffusion", "diffusion.json", "truncated"), _case("diffusion", "scheduler/scheduler_config.json",
                                                                      "truncated"),
            _case("quant-trained", "config.json", "truncated")])


@pytest.mark.parametrize("site, target, brk", CASES)
def test_broken_file_is_one_line_naming_it(saved, tmp_path, monkeypatch, site, target, brk):
    d = tmp_path / site
    shutil.copytree(saved[site], d)
    monkeypatch.setenv("SLIMGUARD_HOME", str(d))  # the cached MLM head lives there; nothing else reads it
    bad = d / target
    bad.write_bytes(BREAKS[brk](bad.read_bytes()))
    before = _snapshot(d)
    with pytest.raises(SlimguardError) as e:
        SITES[site][1](d)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(bad) in msg and ("truncated" in msg or "not valid JSON" in msg), msg
    assert "re-run" in msg or "re-fetch" in msg or "delete" in msg, msg  # it says what to do
    assert _snapshot(d) == before


@pytest.mark.parametrize("site", ["causal-lm", "compressor", "backdoor-victim", "diffusion"])
def test_intact_copies_still_load(saved, tmp_path, site):
    # the same builders and loaders, unbroken: the checks above reject the damage, not the folder
    d = tmp_path / site
    shutil.copytree(saved[site], d)
    assert SITES[site][1](d) is not None


@pytest.mark.parametrize("rel, advice", [
    ("assets/smollm2-135m/model/model.safetensors", "slimguard assets fetch smollm2-135m --force"),
    ("compressors/mine/model.safetensors", "re-run the command that wrote it"),
])
def test_advice_names_the_asset_to_refetch(tmp_path, monkeypatch, rel, advice):
    from slimguard.core.models import check_safetensors

    monkeypatch.setenv("SLIMGUARD_HOME", str(tmp_path))
    p = tmp_path / rel
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SlimguardError, match=re.escape(advice)):
        check_safetensors(p)


def test_a_bug_inside_a_load_is_not_disguised(tmp_path):
    # only file-shaped errors become one-line messages; a programming error keeps its traceback
    from slimguard.core.models import reading_model

    with pytest.raises(AttributeError):
        with reading_model(tmp_path, "model"):
            raise AttributeError("a bug")
