"""Bad inputs other than model files (issue 31), at the library entry points the CLI calls: each is one
:class:`SlimguardError` line naming the file or field, raised before anything is written."""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import pytest

from slimguard.core.errors import ConfigError, DataError, SlimguardError


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def _file(name: str, data: bytes):
    """A case's input: ``name`` in the test's folder, holding ``data``."""
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return make


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- compress: empty prompt, target_token


@pytest.fixture(scope="module")
def pc(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    from slimguard.slim.compress.compressor import PromptCompressor

    d = tmp_path_factory.mktemp("comp")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase + string.digits + ".,")
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    BertForTokenClassification(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, num_labels=2)).save_pretrained(d)
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(d)
    return PromptCompressor(str(d), rate_tokenizer="encoder")


@pytest.mark.parametrize("prompt", ["", "   \n\t ", [], ["", "  \n"], b"", [b" "]],
                         ids=["empty", "whitespace", "no-contexts", "blank-contexts", "empty-bytes", "blank-bytes"])
def test_empty_prompt_is_refused(pc, prompt):
    from slimguard.slim.compress.config import CompressConfig

    cfg = CompressConfig(model=str(pc.path), rate_tokenizer="encoder")
    for call in (lambda: pc.compress(prompt, cfg), lambda: pc.compress_rates(prompt, cfg, [0.5])):
        with pytest.raises(SlimguardError, match="prompt is empty") as e:
            call()
        _one_line(e)


def test_empty_prompt_fails_before_the_compressor_loads():
    from slimguard.slim.compress.compressor import compress
    from slimguard.slim.compress.config import CompressConfig

    # the model does not exist: the prompt check comes first, so the message is about the prompt
    with pytest.raises(SlimguardError, match="prompt is empty"):
        compress("  ", CompressConfig(model="/nonexistent/compressor"))


def test_some_text_among_blank_contexts_still_compresses(pc):
    from slimguard.slim.compress.config import CompressConfig

    res = pc.compress(["", "the code is 42."], CompressConfig(model=str(pc.path), rate_tokenizer="encoder"))
    assert res.compressed_prompt.strip()


def test_llmlingua_compat_keeps_its_empty_result(pc):
    # llmlingua's compress_prompt("") returns an empty prompt; existing callers rely on that
    assert pc.compress_prompt("", rate=0.5)["compressed_prompt"] == ""


@pytest.mark.parametrize("value, ok", [(-5, False), (0, False), (-2, False), (-1, True), (1, True), (40, True)])
def test_target_token_must_be_positive(value, ok):
    from slimguard.core.config import build
    from slimguard.slim.compress.config import CompressConfig

    if ok:
        assert build(CompressConfig, {"target_token": value}).target_token == value
    else:
        with pytest.raises(ConfigError, match="target_token.*>= 1") as e:
            build(CompressConfig, {"target_token": value})
        _one_line(e)


def test_target_token_through_compress_prompt(pc):
    with pytest.raises(SlimguardError, match="target_token"):
        pc.compress_prompt("the code is 42.", target_token=-5)


# --------------------------------------------------------------------------- --config


@pytest.mark.parametrize("make, match", [
    (lambda d: d, "is a folder"),
    (lambda d: _file("f.txt", b"x")(d) / "c.yaml", "cannot be read"),
    (lambda d: d / "missing.yaml", "does not exist"),
    (_file("b.yaml", b"\xff\xfe\x00"), "not UTF-8"),
    (_file("l.yaml", b"- 1\n- 2\n"), "mapping"),
    (_file("p.toml", b"a = ["), "does not parse"),
], ids=["folder", "under-a-file", "missing", "binary", "a-list", "bad-toml"])
def test_bad_config_file_is_one_line(tmp_path, make, match):
    from slimguard.core.config import load_file

    path = make(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match=match) as e:
        load_file(path)
    assert str(path) in _one_line(e)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize("name, content, match", [
    ("metrics.json", b'{"acc": 0.9', "not valid JSON"),
    ("metrics.json", b"", "not valid JSON"),
    ("config.json", b"[1, 2, 3]", "JSON list, not an object"),
    ("config.json", b'"just a string"', "JSON str, not an object"),
    ("run.json", b"\xff\xfe\x00\x01", "not valid JSON"),
    ("sections/1_words.html", b"\xff\xfe<p>", "not UTF-8|as UTF-8"),
])
def test_report_on_broken_record_names_it(tmp_path, name, content, match):
    from slimguard.report.html import render_run

    d = tmp_path / "run"
    (d / "sections").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"name": "run"}))
    (d / "metrics.json").write_text(json.dumps({"acc": 0.9}))
    (d / name).write_bytes(content)
    before = _snapshot(tmp_path)
    with pytest.raises(SlimguardError, match=match) as e:
        render_run(d)
    assert str(d / name) in _one_line(e)
    assert _snapshot(tmp_path) == before  # no report.html, nothing touched


def test_report_out_must_not_be_a_folder(tmp_path):
    from slimguard.report.html import render_run

    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "out").mkdir()
    with pytest.raises(SlimguardError, match="is a folder"):
        render_run(tmp_path, tmp_path / "out")


def test_report_still_renders_a_good_run(tmp_path):
    from slimguard.report.html import render_run

    (tmp_path / "metrics.json").write_text(json.dumps({"acc": 0.9}))
    assert "0.9" in render_run(tmp_path).read_text()


# --------------------------------------------------------------------------- assets pack --out


@pytest.mark.parametrize("make", [lambda d: d / "existing.bin", lambda d: d / "existing.bin" / "parts"],
                         ids=["out-is-a-file", "out-under-a-file"])
def test_pack_out_existing_file_writes_nothing(tmp_path, make):
    from slimguard.core.errors import AssetError
    from slimguard.core.transfer import pack

    (tmp_path / "existing.bin").write_bytes(b"keep me")
    before = _snapshot(tmp_path)
    with pytest.raises(AssetError, match="existing.bin is a file, not a folder") as e:
        pack("cl100k-base", make(tmp_path))
    _one_line(e)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- longctx context


@pytest.mark.parametrize("make, match", [
    (_file("c.txt", b""), "is empty"),
    (_file("c.txt", b" \n\n\t"), "is empty"),
    (_file("c.txt", b"\xff\xfe\xfa"), "not UTF-8"),
    (lambda d: d, "is a folder"),
    (lambda d: d / "missing.txt", "does not exist"),
], ids=["empty", "whitespace", "not-utf8", "folder", "missing"])
def test_bad_context_file_is_one_line(tmp_path, make, match):
    from slimguard.slim.kvselect import read_context

    path = make(tmp_path)
    with pytest.raises(DataError, match=match) as e:
        read_context(path)
    assert str(path) in _one_line(e)


@pytest.mark.parametrize("context, prompt, want", [
    ("an essay", "Summary:", "an essay\n\nSummary:"), ("an essay", "", "an essay"),
    ("", "Summary:", None), ("  \n", "", None),
])
def test_long_input_refuses_an_empty_context(context, prompt, want):
    from slimguard.slim.kvselect import long_input

    if want is None:
        with pytest.raises(DataError, match="context is empty"):
            long_input(context, prompt)
    else:
        assert long_input(context, prompt) == want
