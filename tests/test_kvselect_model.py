"""TokenSelect on tiny random transformers models (Llama GQA, Gemma-3 sliding + global), the
long-context task generator, and bad input."""

from __future__ import annotations

import pytest
import torch

from slimguard.core.errors import SlimguardError
from slimguard.slim.kvselect import TokenSelectConfig, disable_token_select, enable_token_select
from slimguard.slim.kvselect.tasks import Haystack, is_correct, make_samples


@pytest.fixture
def tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=32,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=512, query_pre_attn_scalar=16)
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma3"])
def test_budget_covering_context_equals_stock_model(fixture, request):
    model = request.getfixturevalue(fixture)
    ids = torch.randint(4, 128, (1, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        gen_ref = model.generate(ids, max_new_tokens=3, do_sample=False)
        rt = enable_token_select(model, TokenSelectConfig(n_init=4, k=200, n_local=64, chunk_size=32))
        out = model(ids).logits
        gen = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.equal(gen, gen_ref)
    assert rt.stats().selections == 0


@pytest.mark.parametrize("method, extra", [("tokenselect", {}), ("streaming", {}), ("h2o", {}), ("quest", {}),
                                           ("quest", {"quest_per_head": True}), ("random", {}), ("oracle", {})])
def test_every_selector_runs_generate_and_selects(tiny_llama, method, extra):
    ids = torch.randint(4, 128, (1, 120), generator=torch.Generator().manual_seed(2))
    rt = enable_token_select(tiny_llama, TokenSelectConfig(method=method, n_init=4, k=32, n_local=32, chunk_size=32,
                                                           record=True, **extra))
    with torch.no_grad():
        out = tiny_llama.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 123)
    st = rt.stats()
    assert st.selections > 0
    sel = rt.selected()
    assert set(sel) == {0, 1}
    idx = sel[0]
    assert int(idx.max()) < 123 and idx.shape[-1] <= 4 + 32 + 32
    disable_token_select(tiny_llama)
    assert tiny_llama.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("score_layers, shared", [([0], True), (None, False)])
def test_score_layers_later_layers_reuse_the_scorers_selection(tiny_llama, score_layers, shared):
    ids = torch.randint(4, 128, (1, 150), generator=torch.Generator().manual_seed(5))
    rt = enable_token_select(tiny_llama, TokenSelectConfig(n_init=4, k=16, n_local=32, chunk_size=32, record=True,
                                                           score_layers=score_layers))
    with torch.no_grad():
        tiny_llama.generate(ids, max_new_tokens=4, do_sample=False)
    sel = rt.selected()
    assert torch.equal(sel[0], sel[1]) is shared
    # a reusing layer never scores, so it never holds a Selection Cache query of its own
    assert (rt.layers[1].cached_q is None) is shared
    disable_token_select(tiny_llama)


def test_reusing_layer_counts_a_hit_exactly_when_the_shared_set_is_unchanged(tiny_llama):
    ids = torch.randint(4, 128, (1, 150), generator=torch.Generator().manual_seed(6))
    rt = enable_token_select(tiny_llama, TokenSelectConfig(n_init=4, k=16, n_local=32, chunk_size=32,
                                                           score_layers=[0], cache_threshold=1e-6))
    with torch.no_grad():
        tiny_llama.generate(ids, max_new_tokens=5, do_sample=False)
    hits = rt.stats().per_layer_hits
    assert hits[0] > 0 and hits[1] == hits[0]  # every scorer hit hands the same set on
    disable_token_select(tiny_llama)


def test_score_layers_must_be_selecting_layers(tiny_gemma3):
    with pytest.raises(SlimguardError, match=r"score_layers \[0\] are not full-attention layers.*choose from \[2\]"):
        enable_token_select(tiny_gemma3, TokenSelectConfig(score_layers=[0]))


def test_gemma_selects_only_on_global_layers(tiny_gemma3):
    rt = enable_token_select(tiny_gemma3, TokenSelectConfig(n_init=4, k=16, n_local=32, chunk_size=32))
    assert set(rt.layers) == {2}
    ids = torch.randint(4, 128, (1, 120), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = tiny_gemma3.generate(ids, max_new_tokens=2, do_sample=False)
    assert out.shape == (1, 122) and rt.stats().selections > 0


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(SlimguardError, match="unsupported architecture 'gpt2'"):
        enable_token_select(model)


class _ToyTok:
    """Whitespace tokenizer: enough to test sample construction without a real vocabulary."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split(" ") if w]
        return {"input_ids": ([0] if add_special_tokens else []) + ids}

    def decode(self, ids):
        inv = {v: k for k, v in self.vocab.items()}
        return " ".join(inv.get(i, "") for i in ids)


@pytest.mark.parametrize("task", ["passkey", "multikey", "needle"])
@pytest.mark.parametrize("depth", [0.1, 0.5, 0.9])
def test_task_samples_hit_length_and_depth(task, depth):
    text = " ".join(f"word{i % 97}." if i % 11 == 0 else f"word{i % 89}" for i in range(6000))
    hay = Haystack(_ToyTok(), [text])
    s = hay.sample(task, 1024, depth, seed=7)
    assert s.n_tokens == 1024
    lo, hi = s.needle_span
    assert abs(lo / s.n_tokens - depth) < 0.1
    needle = hay.tok.decode(s.input_ids[lo:hi])
    assert s.answer in needle
    assert is_correct(s, f" {s.answer}.") and not is_correct(s, " 0000000")
    again = hay.sample(task, 1024, depth, seed=7)
    assert again.input_ids == s.input_ids
    assert len(make_samples(hay, task, [512, 1024], [0.5], 2, seed=0)) == 4


def test_task_bad_input():
    hay = Haystack(_ToyTok(), ["a. " * 400])
    with pytest.raises(SlimguardError, match="too short"):
        hay.sample("passkey", 20, 0.5, seed=0)
    with pytest.raises(SlimguardError, match="exceeds the haystack"):
        hay.sample("passkey", 5000, 0.5, seed=0)
    with pytest.raises(SlimguardError, match="unknown long-context task"):
        hay.sample("kv", 500, 0.5, seed=0)
    with pytest.raises(SlimguardError, match="depth"):
        hay.sample("passkey", 500, 1.5, seed=0)


def test_cli_bad_input_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from slimguard.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["longctx", "generate", "--context-file", str(tmp_path / "missing.txt"), "--prompt", "x"])
    assert isinstance(res.exception, SlimguardError) and "does not exist" in str(res.exception)
    f = tmp_path / "ctx.txt"
    f.write_text("hello")
    res = runner.invoke(app, ["longctx", "generate", "--context-file", str(f), "--set", "n_local=8"])
    assert isinstance(res.exception, SlimguardError) and "n_local" in str(res.exception)


@pytest.mark.integration
def test_real_smollm2_budget_covering_equals_dense(need_asset):
    need_asset("smollm2-135m")
    from slimguard.core.models import load_causal_lm

    lm = load_causal_lm("smollm2-135m")
    ids = lm.tokenizer("The quick brown fox jumps over the lazy dog. " * 8, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = lm.model(ids).logits
        rt = enable_token_select(lm.model, TokenSelectConfig())
        out = lm.model(ids).logits
    assert torch.equal(out, ref) and rt.stats().dense_calls == 30


@pytest.mark.parametrize("trained,want", [(8192, {"k": 1024, "pool_kernel": 1}), (32768, {"k": 512, "pool_kernel": 31}),
                                          (None, {"k": 1024, "pool_kernel": 1})])
def test_defaults_scale_with_trained_window(trained, want):
    from types import SimpleNamespace

    from slimguard.slim.kvselect.config import defaults_for

    cfg = TokenSelectConfig(**defaults_for(SimpleNamespace(max_position_embeddings=trained)))
    assert {k: getattr(cfg, k) for k in want} == want and cfg.budget <= (trained or 8192) // 5 + 64
    assert cfg.score_layers is None  # every layer global: each scores its own
    assert cfg.score_dtype == "int8"


def test_defaults_share_the_first_global_layers_selection_on_interleaved_models(tiny_gemma3):
    from slimguard.slim.kvselect.config import defaults_for

    d = defaults_for(tiny_gemma3.config)
    assert d["score_layers"] == [2]
    enable_token_select(tiny_gemma3, TokenSelectConfig(**d))  # a valid scoring layer for this model


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma3"])
def test_auto_positions_read_the_models_trained_window(fixture, request):
    model = request.getfixturevalue(fixture)
    rt = enable_token_select(model, TokenSelectConfig(positions="auto"))
    want = model.config.get_text_config().max_position_embeddings
    assert want > 0 and {st.max_positions for st in rt.layers.values()} == {want}
    disable_token_select(model)
