"""LLMLingua-2 pipeline: distillation (local + OpenAI-compatible endpoint on loopback), training with resume,
loading by transformers and by the llmlingua package, cl100k offline, and the CLI."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

import numpy as np
import pytest

from slimguard.slim.compress.config import DistillConfig, TrainConfig


def _tiny_bert(d):
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars) + [f"##{c}" for c in string.ascii_lowercase]
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    BertForTokenClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=64, num_labels=2)).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, need_asset_module):
    """A 2-layer random Llama with SmolLM2's tokenizer (and chat template), saved as a local model dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from slimguard.core.models import resolve_model_dir

    d = tmp_path_factory.mktemp("tinyteacher")
    tok = AutoTokenizer.from_pretrained(resolve_model_dir("smollm2-135m"))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
                     ).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def need_asset_module():
    from slimguard.core import assets

    missing = [n for n in ("smollm2-135m", "pg-essays", "cl100k-base") if not assets.get(n).is_cached()]
    if missing:
        pytest.skip(f"assets not cached: {missing}; run `slimguard assets fetch {' '.join(missing)}`")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from slimguard.core.data import load_long_texts

    d = tmp_path_factory.mktemp("corpus")
    for i, doc in enumerate(load_long_texts("pg-essays")[:3]):
        (d / f"{i}.txt").write_text(doc[:3000], encoding="utf-8")
    return d


@pytest.mark.integration
def test_endpoint_serves_the_local_model(tiny_teacher):
    """A real HTTP server on loopback serving the local model answers exactly like the model itself."""
    from slimguard.slim.compress.distill import EndpointTeacher, LocalTeacher
    from slimguard.slim.compress.serve import start_server

    local = LocalTeacher(str(tiny_teacher), "Shorten:", 12)
    srv, url = start_server(local)
    try:
        texts = ["The code for the vault is 48213.", "Alice met Bob in Paris."]
        assert EndpointTeacher(url, "local", "Shorten:", 12).compress(texts) == local.compress(texts)
    finally:
        srv.shutdown()


@pytest.mark.integration
def test_distill_self_info(tmp_path, tiny_teacher, corpus):
    from datasets import load_from_disk

    from slimguard.slim.compress.distill import distill

    cfg = DistillConfig(signal="self-info", teacher=str(tiny_teacher), sources=[str(corpus)], holdout_docs=1,
                        chunk_tokens=96, max_chunks=3, batch_size=2)
    res = distill(cfg, tmp_path, progress=False)
    ds = load_from_disk(str(res.path))
    prov = json.loads((res.path / "provenance.json").read_text())
    assert prov["signal"] == "self-info" and len(ds) == 3
    assert all(len(r["labels"]) == len(r["starts"]) for r in ds)
    assert np.mean(np.concatenate([r["labels"] for r in ds])) == pytest.approx(0.4, abs=0.05)


@pytest.mark.integration
@pytest.mark.slow
def test_distill_teacher_through_endpoint_with_smollm2(tmp_path, corpus):
    """The full teacher path: SmolLM2 served over loopback HTTP, outputs aligned, filtered, saved."""
    from datasets import load_from_disk

    from slimguard.slim.compress.distill import LocalTeacher, distill
    from slimguard.slim.compress.serve import start_server

    srv, url = start_server(LocalTeacher("smollm2-135m", DistillConfig().instruction, 48))
    try:
        cfg = DistillConfig(signal="teacher", endpoint=url, sources=[str(corpus)], holdout_docs=1, chunk_tokens=128,
                            max_chunks=2, max_new_tokens=48, filter_variation=0.0, filter_gap=0.0)
        res = distill(cfg, tmp_path, progress=False)
    finally:
        srv.shutdown()
    prov = json.loads((res.path / "provenance.json").read_text())
    assert prov["teacher"].startswith(f"endpoint {url}") and len(load_from_disk(str(res.path))) >= 1


def test_endpoint_unreachable_is_one_line_error():
    from slimguard.core.errors import SlimguardError
    from slimguard.slim.compress.distill import EndpointTeacher

    with pytest.raises(SlimguardError, match="unreachable"):
        EndpointTeacher("http://127.0.0.1:9/v1", "m", "x", 8, timeout=2).compress(["hello"])


@pytest.mark.parametrize("bad, key", [({"endpoint": "ftp://x"}, "endpoint"), ({"self_info_keep": 0}, "self_info_keep"),
                                      ({"signal": "oracle"}, "signal"), ({"chunk_tokens": 5}, "chunk_tokens")])
def test_distill_config_validation(bad, key):
    from slimguard.core.config import build
    from slimguard.core.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        build(DistillConfig, bad)


def _toy_dataset(path):
    from datasets import Dataset

    from slimguard.slim.compress.align import split_words

    recs = []
    rng = np.random.default_rng(0)
    for i in range(6):
        text = " ".join(rng.choice(["alpha", "beta", "code", "1234", "the", "a", "of", "zeta"], 40)) + "."
        w = split_words(text)
        recs.append({"text": text, "starts": w.starts.tolist(), "ends": w.ends.tolist(), "signal": "self-info",
                     "labels": [int(x not in ("the", "a", "of")) for x in w.words]})
    Dataset.from_list(recs).save_to_disk(str(path / "dataset"))
    return path


def test_train_resume_and_load(tmp_path):
    from transformers import AutoModelForTokenClassification

    from slimguard.slim.compress.compressor import PromptCompressor
    from slimguard.slim.compress.train import train

    base = _tiny_bert(tmp_path / "base")
    data = _toy_dataset(tmp_path / "data")
    cfg = TrainConfig(data=[str(data)], base=str(base), steps=2, batch_size=2, max_len=32, save_every=1, warmup=1,
                      eval_frac=0.2)
    ck = tmp_path / "ck"
    # a resume must use the run's own config (steps shape the learning-rate decay), so the first call stops early
    r1 = train(cfg.model_copy(update={"steps": 3}), tmp_path / "out", ckpt_dir=ck, progress=False, stop_at=2)
    assert r1.steps == 2 and (tmp_path / "out" / "model.safetensors").exists()
    r2 = train(cfg.model_copy(update={"steps": 3}), tmp_path / "out", ckpt_dir=ck, resume=True, progress=False)
    assert r2.steps == 3
    m = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "out"))
    assert m.config.num_labels == 2 and m.config.id2label[1] == "keep"
    out = PromptCompressor(str(tmp_path / "out"), rate_tokenizer="encoder").compress_prompt("the code is 1234 .", rate=0.5)
    assert out["compressed_prompt"]


def _weights(d):
    from safetensors.numpy import load_file

    return load_file(str(d / "model.safetensors"))


@pytest.mark.parametrize("steps, save_every, stop", [(4, 1, 1), (4, 2, 3), (5, 2, 4)])
def test_train_resume_is_exact(tmp_path, steps, save_every, stop):
    # dropout (global torch RNG) and the shuffled window order (a generator and a place in it) both carry over
    from slimguard.slim.compress.train import train

    cfg = TrainConfig(data=[str(_toy_dataset(tmp_path / "data"))], base=str(_tiny_bert(tmp_path / "base")), steps=steps,
                      batch_size=2, max_len=32, save_every=save_every, warmup=1, eval_frac=0.2)
    full = train(cfg, tmp_path / "full", ckpt_dir=tmp_path / "ck_full", progress=False)
    ck = tmp_path / "ck"
    train(cfg, tmp_path / "cut", ckpt_dir=ck, progress=False, stop_at=stop)
    stale = ck / ".state.pt.k1ll3d_x"  # what a SIGKILL during a checkpoint write leaves
    stale.write_bytes(b"partial")
    res = train(cfg, tmp_path / "cut", ckpt_dir=ck, resume=True, progress=False)
    assert not stale.exists()
    assert res.steps == full.steps == steps and res.train_loss == full.train_loss
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change, field", [({"lr": 1e-3}, "lr"), ({"steps": 3}, "steps"), ({"seed": 1}, "seed"),
                                           ({"data": "a symlink"}, "data")])
def test_train_resume_refuses_another_runs_checkpoint(tmp_path, change, field):
    # before the shared checkpoint module, compress resumed any state.pt it found
    from slimguard.core.errors import SlimguardError
    from slimguard.slim.compress.train import train

    data = _toy_dataset(tmp_path / "data")
    cfg = TrainConfig(data=[str(data)], base=str(_tiny_bert(tmp_path / "base")), steps=2, batch_size=2, max_len=32,
                      save_every=1, warmup=1, eval_frac=0.2)
    train(cfg, tmp_path / "out", ckpt_dir=tmp_path / "ck", progress=False)
    if "data" in change:  # the same dataset under another path is another run's input as far as resume knows
        (tmp_path / "elsewhere").symlink_to(data, target_is_directory=True)
        change = {"data": [str(tmp_path / "elsewhere")]}
    other = cfg.model_copy(update=change)
    with pytest.raises(SlimguardError, match=rf"different config \(fields: {field}\)"):
        train(other, tmp_path / "out", ckpt_dir=tmp_path / "ck", resume=True, progress=False)


@pytest.mark.integration
def test_cl100k_offline_and_llmlingua_package_loads_our_directory(tmp_path, need_asset_module):
    pytest.importorskip("llmlingua")
    from slimguard.bench.compress import load_llmlingua
    from slimguard.slim.compress.compressor import PromptCompressor
    from slimguard.slim.compress.tokcount import Cl100kCounter

    from slimguard.core.models import load_encoder

    c = Cl100kCounter()
    assert c.count("hello world") == 2
    enc = load_encoder("minilm-l6", head="token")  # real uncased WordPiece vocab, random head
    d = tmp_path / "comp"
    enc.model.save_pretrained(str(d))
    enc.tokenizer.save_pretrained(str(d))
    ours = PromptCompressor(str(d))
    peer = load_llmlingua(d)
    text = "alpha beta gamma delta. the code is 1234 and the key is blue. " * 3
    ref = peer.compress_prompt(text, rate=0.5)
    mine = ours.compress_prompt(text, rate=0.5, threshold="llmlingua", chunk_end_tokens=["."])
    words = lambda s: _norm(s, ours.tokenizer)  # noqa: E731  (llmlingua re-joins lower-cased WordPieces)
    assert words(ref["compressed_prompt"]) == words(mine["compressed_prompt"])
    assert ref["origin_tokens"] == mine["origin_tokens"]


def _norm(text, tok):
    from slimguard.bench.compress import _norm_words

    return _norm_words(text, tok)


def _cli(*args, stdin: bytes = b""):
    env = dict(os.environ, SLIMGUARD_THREADS="1")
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", "compress", *args], input=stdin,
                          capture_output=True, env=env, timeout=600)


@pytest.mark.parametrize("args, stdin, message", [
    (["run", "--rate", "1.5"], b"text", "rate"),
    (["run", "--rate", "0"], b"text", "rate"),
    (["run", "--rate", "0.5", "--set", "rat=0.3"], b"text", "did you mean 'rate'"),
    (["run", "--rate", "0.5", "--model", "/nonexistent/x"], b"text", "no trained compressor"),
])
def test_cli_bad_input_one_line(args, stdin, message):
    p = _cli(*args, stdin=stdin)
    err = p.stderr.decode()
    assert p.returncode == 2 and message in err and "Traceback" not in err


def test_cli_run_writes_run_dir(tmp_path):
    d = _tiny_bert(tmp_path / "comp")
    env_runs = tmp_path / "runs"
    env = dict(os.environ, SLIMGUARD_THREADS="1", SLIMGUARD_RUNS=str(env_runs))
    p = subprocess.run([sys.executable, "-m", "slimguard.cli.main", "compress", "run", "--rate", "0.5", "--model",
                        str(d), "--set", "rate_tokenizer=encoder", "--show"], input=b"the code is 1234. key is blue.",
                       capture_output=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    assert p.stdout.decode().strip()
    (run_dir,) = env_runs.glob("compress-run-*")  # one-shot runs are named by their start time
    m = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < m["achieved_rate"] <= 1
    assert (run_dir / "sections").is_dir()
    assert p.stdout.decode() == (run_dir / "compressed.txt").read_text() + "\n"
    bad = subprocess.run([sys.executable, "-m", "slimguard.cli.main", "compress", "run", "--rate", "0.5", "--model",
                          str(d)], input=b"\xff\xfe\xfa", capture_output=True, env=env, timeout=600)
    assert bad.returncode == 2 and "UTF-8" in bad.stderr.decode()
