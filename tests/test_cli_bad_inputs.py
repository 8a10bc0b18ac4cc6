"""Bad inputs end to end (issue 31): ``slimguard ...`` in a subprocess prints one ``error:`` line, exits 2,
shows no traceback, and changes no file.

One case per group (generate, compress, longctx, quant, backdoor, promptattack, diffusion, report,
assets) plus the other inputs the issue lists. The library tests (test_bad_model_files.py,
test_bad_inputs.py) cover every loading site and variant; these check that the command line
really reaches them and stays quiet.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _truncate(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[:len(b) // 2])


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
    _truncate(d / "model.safetensors")
    return d


def _bert(d: Path, head: str) -> Path:
    import transformers
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits + ".,")
    d.mkdir(parents=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=2)
    getattr(transformers, head)(cfg).save_pretrained(str(d))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))
    _truncate(d / "model.safetensors")
    return d


def _diffusion(d: Path) -> Path:
    # the layout `diffusion train` writes, with a cut-off UNet file; its header is checked before diffusers
    # is imported, so a stand-in tensor does (test_bad_model_files.py breaks a real UNet)
    from safetensors.torch import save_file

    (d / "unet").mkdir(parents=True)
    (d / "scheduler").mkdir()
    (d / "diffusion.json").write_text(json.dumps({"num_classes": 2, "image_size": 8}))
    (d / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    (d / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    save_file({"conv_in.weight": torch.zeros(8, 1, 3, 3)}, str(d / "unet" / "diffusion_pytorch_model.safetensors"))
    _truncate(d / "unet" / "diffusion_pytorch_model.safetensors")
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every bad input, built once (each command only reads them; the snapshot checks that it does)."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("bad-inputs")
    _causal_lm(d / "lm")
    _bert(d / "compressor", "BertForTokenClassification")
    _bert(d / "victim", "BertModel")
    _diffusion(d / "diffusion")
    (d / "context.txt").write_text("A long essay about gardens. " * 20)
    (d / "data.csv").write_text("text,label\n" + "".join(f"sample text {i},{i % 2}\n" for i in range(40)))
    (d / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (d / "qrun").mkdir()
    (d / "qrun" / "config.json").write_text(json.dumps({"model": "smollm2-135m"}))
    save_file({"w": torch.zeros(8, 8)}, str(d / "qrun" / "qat_model.safetensors"))
    _truncate(d / "qrun" / "qat_model.safetensors")
    (d / "run").mkdir()
    (d / "run" / "run.json").write_text(json.dumps({"name": "run"}))
    (d / "run" / "metrics.json").write_text('{"acc": 0.9, ')
    (d / "existing.bin").write_bytes(b"not a folder")
    (d / "config-folder").mkdir()
    return d


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


# (group, args with {d} for the inputs folder, stdin, text the one error line must hold, own process?)
# A process per case costs a torch + transformers import (5-20 s on two busy cores), so the cases that load a
# model share one interpreter that calls the same `main()` as `python -m slimguard.cli.main`, case after case;
# the cheap ones run as real processes of their own.
CASES = [
    ("generate", ["generate", "hello", "--model", "{d}/lm"], b"", "{d}/lm/model.safetensors is truncated", False),
    ("generate-empty", ["generate", "  ", "--model", "{d}/lm"], b"", "PROMPT is empty", True),
    ("compress", ["compress", "run", "--rate", "0.5", "--model", "{d}/compressor"], b"the code is 42.",
     "{d}/compressor/model.safetensors is truncated", False),
    ("compress-empty-prompt", ["compress", "run", "--rate", "0.5", "--model", "{d}/compressor"], b" \n ",
     "prompt is empty", False),
    ("compress-target-token", ["compress", "run", "--target-token", "-5", "--model", "{d}/compressor"], b"text",
     "target_token", True),
    ("config-is-a-folder", ["compress", "run", "--config", "{d}/config-folder"], b"text",
     "{d}/config-folder is a folder", True),
    ("longctx", ["longctx", "generate", "--model", "{d}/lm", "--context-file", "{d}/context.txt"], b"",
     "{d}/lm/model.safetensors is truncated", False),
    ("quant-eval-binary", ["quant", "eval", "{d}/binary.bin"], b"", "{d}/binary.bin is truncated or not a safetensors",
     False),
    ("quant-eval-run", ["quant", "eval", "{d}/qrun"], b"", "{d}/qrun/qat_model.safetensors is truncated", False),
    ("backdoor", ["backdoor", "attack", "--victim", "{d}/victim", "--dataset", "{d}/data.csv", "--no-progress"], b"",
     "{d}/victim/model.safetensors is truncated", False),
    ("promptattack", ["promptattack", "run", "--victim", "{d}/lm", "--dataset", "{d}/data.csv"], b"",
     "{d}/lm/model.safetensors is truncated", False),
    ("diffusion", ["diffusion", "sample", "--model", "{d}/diffusion"], b"",
     "{d}/diffusion/unet/diffusion_pytorch_model.safetensors is truncated", False),
    ("report", ["report", "{d}/run"], b"", "{d}/run/metrics.json is not valid JSON", True),
    ("assets-pack", ["assets", "pack", "cl100k-base", "--out", "{d}/existing.bin"], b"",
     "{d}/existing.bin is a file, not a folder", True),
]

# one interpreter, many commands: each case gets fresh stdin/stdout/stderr and its own SLIMGUARD_RUNS, and
# whatever escapes `main()` is printed as the traceback a real process would print
DRIVER = r"""
import io, json, os, sys, traceback
from slimguard.cli.main import main
cases_file, out_file = sys.argv[1:3]
out = []
for case in json.load(open(cases_file)):
    os.environ["SLIMGUARD_RUNS"] = case["runs"]
    sys.argv = ["slimguard", *case["args"]]
    sys.stdin = io.TextIOWrapper(io.BytesIO(case["stdin"].encode("latin-1")))
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    out.append({"code": code, "stderr": sys.stderr.getvalue()})
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
json.dump(out, open(out_file, "w"))
"""


def _env(runs: Path) -> dict:
    return dict(os.environ, SLIMGUARD_RUNS=str(runs), SLIMGUARD_THREADS="1", SLIMGUARD_DEVICE="cpu")


@pytest.fixture(scope="module")
def shared_interpreter(inputs, tmp_path_factory):
    """(exit code, stderr, files written) of every case that does not get its own process."""
    root = tmp_path_factory.mktemp("shared-runs")
    todo = [c for c in CASES if not c[4]]
    cases = [{"args": [a.format(d=inputs) for a in args], "stdin": stdin.decode("latin-1"), "runs": str(root / g)}
             for g, args, stdin, _, _ in todo]
    (root / "cases.json").write_text(json.dumps(cases))
    before = _snapshot(inputs)
    p = subprocess.run([sys.executable, "-c", DRIVER, str(root / "cases.json"), str(root / "out.json")],
                       capture_output=True, env=_env(root / "unused"), timeout=900)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr.decode()[-3000:]
    assert _snapshot(inputs) == before
    res = json.loads((root / "out.json").read_text())
    return {g: (r["code"], r["stderr"], sorted(_snapshot(root / g)) if (root / g).exists() else [])
            for (g, *_), r in zip(todo, res)}


def _own_process(inputs: Path, runs: Path, args: list[str], stdin: bytes) -> tuple[int, str, list[str]]:
    before = _snapshot(inputs)
    p = subprocess.run([sys.executable, "-m", "slimguard.cli.main", *[a.format(d=inputs) for a in args]],
                       input=stdin, capture_output=True, env=_env(runs), timeout=600)
    assert _snapshot(inputs) == before  # the inputs are untouched
    return p.returncode, p.stderr.decode(), sorted(_snapshot(runs)) if runs.exists() else []


@pytest.mark.parametrize("group, args, stdin, want, own", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(request, inputs, tmp_path, group, args, stdin, want, own):
    if own:
        code, err, written = _own_process(inputs, tmp_path / "runs", args, stdin)
    else:
        code, err, written = request.getfixturevalue("shared_interpreter")[group]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert want.format(d=inputs) in lines[0]
    # a run folder made before the input error was found is removed again (core/runs.py)
    assert written == []
