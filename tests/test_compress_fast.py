"""LLMLingua-2 fast path and serving (issue 36, items 3-4), on tiny random BERT token classifiers.

Parity of the ONNX Runtime path (float32 and int8) with the torch float32 path, the export cache
(round trip, tamper and staleness checks), ``compress serve`` answering what ``compress run``
writes, and bad input as one-line errors in the library, the CLI and the server.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys

import numpy as np
import pytest

from slimguard.core.errors import SlimguardError

pytest.importorskip("onnxruntime")

TEXT = ("The code is 4521. Alice met Bob in Paris on Monday!\nWhat is the plan? "
        "They walked along the river, talking about books, music and the weather.\n")


def _tiny(d, *, seed: int = 0, head: bool = True, init: float = 0.02):
    """A 2-layer random BERT with a character-level WordPiece vocab; ``head=False`` saves a bare encoder."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "code", "is"] + list(chars) + \
        [f"##{c}" for c in string.ascii_lowercase + string.digits]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=2, initializer_range=init)
    (BertForTokenClassification if head else BertModel)(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("fastcomp") / "tiny")


@pytest.fixture(scope="module")
def pc(tiny_dir):
    from slimguard.slim.compress.compressor import PromptCompressor

    return PromptCompressor(str(tiny_dir), rate_tokenizer="encoder")


def _cfg(**kw):
    from slimguard.core.config import build
    from slimguard.slim.compress.config import CompressConfig

    return build(CompressConfig, {"model": "x", "rate_tokenizer": "encoder", "rate": 0.33, **kw})


# --------------------------------------------------------------------------- parity with float32


@pytest.mark.parametrize("dtype, min_agree, max_dp", [
    ("float32", 1.0, 1e-4),  # the same arithmetic: every word labelled the same
    ("int8", 0.97, 0.05),  # int8 matmuls; the real compressor's >= 0.99 is measured by `bench compress`
])
@pytest.mark.parametrize("rate", [0.5, 0.33, 0.2])
def test_onnxruntime_labels_match_torch_float32(pc, dtype, min_agree, max_dp, rate):
    text = TEXT * 40  # several 510-token chunks
    ref = pc.compress(text, _cfg(rate=rate, dtype="float32", runtime="torch"))
    fast = pc.compress(text, _cfg(rate=rate, dtype=dtype, runtime="onnxruntime"))
    assert fast.precision == f"onnxruntime/{dtype}" and ref.precision == "torch/float32"
    a, b = np.concatenate(fast.labels), np.concatenate(ref.labels)
    assert a.shape == b.shape
    assert (a == b).mean() >= min_agree
    assert np.abs(np.concatenate(fast.probs) - np.concatenate(ref.probs)).max() <= max_dp


def test_int8_scores_a_chunk_the_same_whatever_shares_the_call(pc):
    # one chunk per session.run: a context's labels never depend on the other contexts of the call
    alone = pc.compress(TEXT * 8, _cfg(dtype="int8"))
    together = pc.compress([TEXT * 8, "Completely different words, 99 of them, and more numbers 12345."], _cfg(dtype="int8"))
    assert np.array_equal(alone.labels[0], together.labels[0])
    np.testing.assert_array_equal(alone.probs[0], together.probs[0])


@pytest.mark.parametrize("dtype, runtime, threshold, ort, native_bf16, want", [
    ("auto", "auto", "exact", True, False, ("onnxruntime", "int8")),
    ("auto", "auto", "exact", False, False, ("torch", "float32")),  # no onnxruntime installed
    ("auto", "auto", "exact", False, True, ("torch", "bfloat16")),
    ("auto", "torch", "exact", True, True, ("torch", "bfloat16")),
    ("auto", "auto", "llmlingua", True, True, ("torch", "float32")),  # compat mode promises the reference's words
    ("float32", "auto", "exact", True, True, ("torch", "float32")),
    ("float32", "onnxruntime", "exact", True, False, ("onnxruntime", "float32")),
    ("int8", "auto", "llmlingua", True, False, ("onnxruntime", "int8")),
])
def test_precision_resolution(pc, monkeypatch, dtype, runtime, threshold, ort, native_bf16, want):
    from slimguard.slim.compress import fastpath

    monkeypatch.setattr(fastpath, "available", lambda: ort)
    monkeypatch.setattr(pc, "_native_bf16", native_bf16)
    assert pc.precision(_cfg(dtype=dtype, runtime=runtime, threshold=threshold)) == want


@pytest.mark.parametrize("kw, message", [
    ({"dtype": "int8", "runtime": "torch"}, "runtime=onnxruntime"),
    ({"dtype": "bfloat16", "runtime": "onnxruntime"}, "bfloat16 needs runtime=torch"),
    ({"dtype": "float16"}, "dtype"),
    ({"max_input_tokens": -1}, "max_input_tokens"),
])
def test_precision_config_errors(kw, message):
    from slimguard.core.config import build
    from slimguard.slim.compress.config import CompressConfig

    with pytest.raises(SlimguardError, match=message):
        build(CompressConfig, kw)


# --------------------------------------------------------------------------- export cache


def _record(folder):
    (rec,) = [p for p in folder.glob("int8-*.json")]
    return rec, json.loads(rec.read_text())


def _corrupt_file(rec, doc):
    p = rec.parent / doc["file"]
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _corrupt_record_hash(rec, doc):
    rec.write_text(json.dumps({**doc, "sha256": "0" * 64}))


def _foreign_file_name(rec, doc):
    rec.write_text(json.dumps({**doc, "file": "../elsewhere.onnx"}))


def _truncate_record(rec, doc):
    rec.write_text("{")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from slimguard.slim.compress import fastpath

    d = _tiny(tmp_path_factory.mktemp("export") / "comp", seed=1)
    return d, fastpath.export(d, "int8")


def test_export_round_trip(exported, monkeypatch):
    from slimguard.slim.compress import fastpath

    d, first = exported
    assert first.path.parent.parent == d.parent / ".slimguard-onnx"  # cached next to the compressor folder
    assert first.record["weights_sha256"] == fastpath.weights_hash(d)
    assert first.record["parity"]["max_abs_dp"] < 0.05
    assert first.record["parity"]["fused"].get("Attention") == 2  # ORT's fused attention, one per layer
    monkeypatch.setattr(fastpath, "_build", lambda *a, **k: pytest.fail("a verified cache hit must not rebuild"))
    again = fastpath.export(d, "int8")
    assert again.model == first.model and again.record == first.record
    sess = fastpath.session(again.model, threads=1)
    ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
    assert sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape == (1, 5, 2)


@pytest.mark.parametrize("damage", [_corrupt_file, _corrupt_record_hash, _foreign_file_name, _truncate_record])
def test_export_cache_never_loads_an_unverified_file(exported, monkeypatch, damage):
    import hashlib

    from slimguard.slim.compress import fastpath

    d, first = exported
    rec, doc = _record(first.path.parent)
    damage(rec, doc)
    builds = []
    real_build = fastpath._build
    monkeypatch.setattr(fastpath, "_build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    rebuilt = fastpath.export(d, "int8")
    assert builds == [1]  # the damaged cache was rebuilt, not loaded
    assert rebuilt.record["sha256"] == hashlib.sha256(rebuilt.model).hexdigest()
    assert fastpath._verified(rec, fastpath.weights_hash(d), fastpath.recipe("int8")) is not None


def test_new_weights_get_a_new_export(tmp_path):
    from slimguard.slim.compress import fastpath

    d = _tiny(tmp_path / "comp", seed=2)
    a = fastpath.export(d, "float32")
    _tiny(d, seed=3)  # retrained in place: same folder, other weights
    b = fastpath.export(d, "float32")
    assert a.record["weights_sha256"] != b.record["weights_sha256"] and a.path.parent != b.path.parent


def test_float32_export_that_disagrees_is_refused(tmp_path, monkeypatch):
    from slimguard.slim.compress import fastpath

    d = _tiny(tmp_path / "comp", seed=4)
    monkeypatch.setattr(fastpath, "FP32_PARITY_TOL", -1.0)  # any deviation at all now counts as a broken export
    with pytest.raises(SlimguardError, match="does not match the PyTorch model"):
        fastpath.export(d, "float32")
    assert not list((d.parent / ".slimguard-onnx").rglob("float32-*.json"))  # nothing cached


# --------------------------------------------------------------------------- bad input


def test_folder_without_token_classification_head(tmp_path):
    from slimguard.slim.compress.compressor import PromptCompressor

    d = _tiny(tmp_path / "bare", head=False)
    with pytest.raises(SlimguardError, match="no token-classification head") as e:
        PromptCompressor(str(d))
    assert "\n" not in str(e.value)


def test_head_declared_but_weights_missing(tmp_path):
    from slimguard.slim.compress.compressor import PromptCompressor

    d = _tiny(tmp_path / "bare", head=False)
    conf = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**conf, "architectures": ["BertForTokenClassification"]}))
    with pytest.raises(SlimguardError, match="no trained token-classification head"):
        PromptCompressor(str(d))


@pytest.mark.parametrize("text, kw, message", [
    ("", {}, "empty"),
    ("  \n ", {}, "empty"),
    (TEXT, {"rate": 0}, "rate"),
    (TEXT, {"rate": 1.01}, "rate"),
    (TEXT * 5, {"max_input_tokens": 50}, "max_input_tokens=50"),
])
def test_bad_input_is_one_line(pc, text, kw, message):
    with pytest.raises(SlimguardError, match=message) as e:
        pc.compress(text, _cfg(**kw))
    assert "\n" not in str(e.value)


def _cli(args, stdin="", env_root=None):
    import os

    env = {**os.environ, "SLIMGUARD_RUNS": str(env_root)} if env_root else None
    return subprocess.run([sys.executable, "-m", "slimguard.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.parametrize("args, stdin, message", [
    (["compress", "run", "--rate", "0.33"], "", "empty"),
    (["compress", "run", "--set", "max_input_tokens=3"], "a prompt of more than three tokens", "max_input_tokens=3"),
    (["compress", "run", "--model", "{bare}"], "some text", "no token-classification head"),
    (["compress", "run", "--set", "dtype=int8", "--set", "runtime=torch"], "some text", "runtime=onnxruntime"),
])
def test_cli_bad_input(tmp_path, tiny_dir, args, stdin, message):
    bare = _tiny(tmp_path / "bare", head=False)
    args = [a.format(bare=bare) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_dir)]
    r = _cli(args + ["--run", "bad"], stdin, env_root=tmp_path / "runs")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs" / "bad").exists()  # bad input leaves nothing behind


# --------------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def service(tiny_dir):
    from slimguard.slim.compress.config import CompressConfig, ServeConfig
    from slimguard.slim.compress.service import CompressService

    cfg = ServeConfig(compress=CompressConfig(model=str(tiny_dir), rate_tokenizer="encoder", max_input_tokens=4000),
                      port=0, max_queue=64, workers=2, max_body_bytes=65536)
    svc = CompressService(cfg)
    url = svc.start()
    yield svc, url
    svc.stop()


@pytest.mark.parametrize("overrides", [{}, {"rate": 0.2, "force_tokens": ["?", "\n"]}, {"target_token": 40},
                                       {"threshold": "llmlingua", "chunk_end_tokens": ["."]}])
def test_serve_returns_what_run_returns(tmp_path, tiny_dir, service, overrides):
    from slimguard.core.commands import execute
    from slimguard.slim.compress.config import CompressConfig
    from slimguard.slim.compress.service import post

    svc, url = service
    text = TEXT * 12
    cfg = CompressConfig(**{**svc.cfg.compress.model_dump(), **overrides})
    out = execute("compress run", cfg, run="r", root=tmp_path, text=text)
    code, got = post(url, {"prompt": text, **overrides})
    assert code == 200
    assert got["compressed_prompt"] == (out.path / "compressed.txt").read_text(encoding="utf-8")
    timings = ("model_s", "forward_s", "post_s")
    assert set(got) - {"compressed_prompt"} == set(out.metrics)
    assert {k: v for k, v in got.items() if k not in timings and k != "compressed_prompt"} == \
        {k: v for k, v in out.metrics.items() if k not in timings}


@pytest.mark.parametrize("payload, code, message", [
    ({"prompt": ""}, 400, "empty"),
    ({"prompt": "some text", "rate": 0}, 400, "rate"),
    ({"prompt": "some text", "rate": 1.5}, 400, "rate"),
    ({"prompt": TEXT * 200}, 400, "max_input_tokens=4000"),
    ({"prompt": "some text", "model": "/elsewhere"}, 400, "fixed by the server"),
    ({"prompt": "some text", "bogus": 1}, 400, "unknown request field 'bogus'"),
    ({"prompt": 3}, 400, "must be a string"),
    ({"text": "some text"}, 400, "no 'prompt'"),
    (["some text"], 400, "JSON object"),
])
def test_serve_bad_input(service, payload, code, message):
    from slimguard.slim.compress.service import post

    _, url = service
    got_code, body = post(url, payload)
    assert got_code == code and message in body["error"] and "\n" not in body["error"]


def test_serve_refuses_oversized_and_non_json_bodies(service):
    import http.client
    from urllib.parse import urlsplit

    svc, url = service
    u = urlsplit(url)
    for body, code in ((b"{not json", 400), (b"\xff\xfe", 400), (b" " * (svc.cfg.max_body_bytes + 1), 413)):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        c.request("POST", "/v1/compress", body=body)
        r = c.getresponse()
        assert r.status == code and "error" in json.loads(r.read())
        c.close()


def test_serve_concurrent_requests_and_bounded_queue(tiny_dir):
    import threading

    from slimguard.slim.compress.config import CompressConfig, ServeConfig
    from slimguard.slim.compress.service import CompressService, load_test

    cfg = ServeConfig(compress=CompressConfig(model=str(tiny_dir), rate_tokenizer="encoder"), port=0, max_queue=2)
    with CompressService(cfg) as svc:
        gate = threading.Event()
        real = svc.pc.compress
        svc.pc.compress = lambda *a, **k: (gate.wait(30), real(*a, **k))[1]  # hold the worker until all have queued
        url = svc.start()
        threading.Timer(1.5, gate.set).start()
        r = load_test(url, [TEXT, TEXT * 3], concurrency=6, requests=12)
    # one in the worker, two queued: the other three first requests are refused (503), the rest answered
    assert r["ok"] + r["rejected"] == 12 and r["errors"] == 0 and r["rejected"] >= 1 and r["ok"] >= 3
    assert r["p50_s"] <= r["p90_s"] <= r["p99_s"] and r["throughput_rps"] > 0
    assert svc.stats()["served"] == r["ok"] and svc.stats()["rejected"] == r["rejected"]


def test_serve_command_load_test(tmp_path, tiny_dir):
    from slimguard.core.commands import execute
    from slimguard.slim.compress.config import CompressConfig, ServeConfig

    cfg = ServeConfig(compress=CompressConfig(model=str(tiny_dir), rate_tokenizer="encoder"), port=0,
                      load_concurrency=[1, 3], load_requests=6)
    out = execute("compress serve", cfg, run="s", root=tmp_path, load_test=True, text=TEXT * 4)
    levels = out.metrics["load_test"]
    assert [lv["concurrency"] for lv in levels] == [1, 3] and all(lv["ok"] == 6 for lv in levels)
    assert json.loads((out.path / "run.json").read_text())["status"] == "done"
    assert json.loads((out.path / "server.json").read_text())["url"].startswith("http://127.0.0.1:")


def test_percentiles():
    from slimguard.slim.compress.service import percentiles

    p = percentiles([float(x) for x in range(1, 101)])
    assert p["p50_s"] == pytest.approx(50.5) and p["p90_s"] == pytest.approx(90.1) and p["p99_s"] == pytest.approx(99.01)
    assert np.isnan(percentiles([])["p50_s"])
