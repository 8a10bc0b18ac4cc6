"""Fast CPU scoring for LLMLingua-2 (Pan et al., 2024): the compressor's own weights, exported to ONNX and run by
ONNX Runtime, in float32 or with int8 dynamic quantization.

Why: on a CPU the MiniLM forward is ~99% of a compression call, so a faster pipeline around the same
PyTorch forward cannot be much faster than the ``llmlingua`` package. ONNX Runtime fuses BERT's
attention, embedding + LayerNorm, bias + GELU and residual + LayerNorm into single kernels
(``onnxruntime.transformers.optimizer``), and ``int8`` runs every encoder matmul on int8 weights (per
output channel) and int8 activations (one scale per call), which is where the time goes.

Export (once per weights and recipe): ``torch.onnx.export`` of the float32 token classifier with eager
attention (the pattern ORT's BERT fusion recognises), the ORT optimizer, then for ``int8``
``onnxruntime.quantization.quantize_dynamic`` (the classifier head stays float32). A parity check runs
the export against the PyTorch float32 model on seeded random inputs: float32 must agree to 1e-4 in
p(keep) or the export is refused; for int8 the deviation is recorded (the word-level agreement is
measured by ``slimguard bench compress`` on real prompts and by the tests).

Cache: next to the compressor folder, ``<parent>/.slimguard-onnx/<name>-<weights sha256[:16]>/`` (or
under ``$SLIMGUARD_HOME/onnx/`` when that parent is not writable). Each export is a file named by its own
sha256 plus a JSON record (recipe, weights hash, file hash, parity). A file is handed to ONNX Runtime only
when the record matches the current weights and recipe and the bytes read hash to the recorded sha256;
the bytes hashed are the bytes loaded (``InferenceSession`` gets the bytes, not the path). Anything else
is re-exported, never loaded.

Scoring runs one chunk per ``session.run`` (no padding): the int8 activation scale is computed per call,
so a chunk's probabilities never depend on which other chunks (or other users' requests, when serving)
happen to share its batch.

    >>> from slimguard.slim.compress.fastpath import RECIPE_FORMAT
    >>> RECIPE_FORMAT
    'slimguard-onnx/1'
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import SlimguardError

RECIPE_FORMAT = "slimguard-onnx/1"
OPSET = 17
FP32_PARITY_TOL = 1e-4  # max |p_onnx - p_torch| for a float32 export; exporter bugs are far above, noise far below
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")
_hash_lock = threading.Lock()
_weights_hash_memo: dict[tuple, str] = {}


def available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package its quantizer needs) can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def weights_hash(model_dir: Path) -> str:
    """sha256 over the folder's weights and config (memoised per process by path, size and mtime)."""
    files = [model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file()]
    files += sorted(p for p in model_dir.glob("model-*.safetensors") if p.is_file())
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _hash_lock:
        if key in _weights_hash_memo:
            return _weights_hash_memo[key]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + _sha256_file(p).encode())
    digest = h.hexdigest()
    with _hash_lock:
        _weights_hash_memo[key] = digest
    return digest


def recipe(dtype: str) -> dict[str, Any]:
    """What an export depends on besides the weights; its hash names the export."""
    import onnxruntime
    import torch
    import transformers

    return {"format": RECIPE_FORMAT, "dtype": dtype, "opset": OPSET, "optimizer": "bert",
            "quantization": {"weight_type": "QInt8", "per_channel": True, "reduce_range": False,
                             "ops": ["MatMul", "Attention"], "head": "float32"} if dtype == "int8" else None,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__}


def _tag(rec: dict) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir(model_dir: Path, weights: str) -> Path:
    """``<parent>/.slimguard-onnx/<name>-<weights[:16]>`` when writable, else ``$SLIMGUARD_HOME/onnx/...``."""
    model_dir = model_dir.resolve()
    leaf = f"{model_dir.name}-{weights[:16]}"
    first = model_dir.parent / ".slimguard-onnx" / leaf
    try:
        first.mkdir(parents=True, exist_ok=True)
        if os.access(first, os.W_OK):
            return first
    except OSError:
        pass
    from ...core.assets import home

    other = home() / "onnx" / leaf
    other.mkdir(parents=True, exist_ok=True)
    return other


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class Export:
    """A verified export: its bytes (already hashed) and its record."""

    model: bytes
    record: dict
    path: Path


def _verified(record_path: Path, weights: str, rec: dict) -> Export | None:
    """The export a record names, when the record is for these weights and this recipe and the file's bytes
    hash to what it recorded; None for anything else (missing, stale, foreign, tampered)."""
    try:
        doc = json.loads(record_path.read_text())
        name = doc["file"]
        path = record_path.parent / name
        if Path(name).name != name or doc.get("weights_sha256") != weights or doc.get("recipe") != rec:
            return None
        data = path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if hashlib.sha256(data).hexdigest() != doc.get("sha256"):
        return None
    return Export(data, doc, path)


def _probe_inputs(model, vocab_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded random token ids: a single sequence and a padded batch, with [CLS]/[SEP] where the model has them."""
    rng = np.random.default_rng(0)
    cfg = model.config
    lo = min(1000, max(5, vocab_size // 4))
    out = []
    for lengths in ((64,), (96, 40)):
        L = max(lengths)
        ids = np.zeros((len(lengths), L), dtype=np.int64)
        mask = np.zeros((len(lengths), L), dtype=np.int64)
        for r, n in enumerate(lengths):
            ids[r, :n] = rng.integers(lo, vocab_size, size=n)
            if getattr(cfg, "pad_token_id", None) is not None:
                ids[r, n:] = cfg.pad_token_id
            mask[r, :n] = 1
        out.append((ids, mask))
    return out


def _keep_prob(logits: np.ndarray) -> np.ndarray:
    """p(keep) = softmax(logits)[..., 1], computed stably in float64 (two labels: a logistic)."""
    z = logits[..., 1].astype(np.float64) - logits[..., 0].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def export(model_dir: Path, dtype: str, *, log=None) -> Export:
    """The verified ONNX export of the token classifier in ``model_dir`` for ``dtype`` ('float32' | 'int8'),
    exporting (seconds to a minute) when the cache holds none that verifies."""
    if dtype not in ("float32", "int8"):
        raise SlimguardError(f"onnxruntime scores in float32 or int8, not {dtype}")
    if not available():
        raise SlimguardError("dtype/runtime needs ONNX Runtime: pip install onnxruntime==1.32.0 onnx==1.23.2 "
                             "(or use runtime=torch)")
    model_dir = Path(model_dir)
    weights = weights_hash(model_dir)
    rec = recipe(dtype)
    tag = _tag(rec)
    folder = cache_dir(model_dir, weights)
    record_path = folder / f"{dtype}-{tag}.json"
    found = _verified(record_path, weights, rec)
    if found is not None:
        return found
    if log:
        log(f"exporting {model_dir} to ONNX ({dtype}; once, cached in {folder})")
    data, parity = _build(model_dir, dtype)
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{dtype}-{tag}-{digest[:16]}.onnx"
    _atomic_write_bytes(path, data)  # the file first, then the record that vouches for it
    doc = {"format": RECIPE_FORMAT, "file": path.name, "sha256": digest, "weights_sha256": weights,
           "source": str(model_dir.resolve()), "recipe": rec, "parity": parity}
    _atomic_write_bytes(record_path, (json.dumps(doc, indent=1) + "\n").encode())
    return Export(data, doc, path)


def _build(model_dir: Path, dtype: str) -> tuple[bytes, dict]:
    """Export, optimise, (quantise), and check parity against the PyTorch float32 model; returns (bytes, parity)."""
    import logging
    import warnings

    import onnx
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModelForTokenClassification

    from ...core.models import reading_model

    with reading_model(model_dir, "compressor"):
        # eager attention exports as the MatMul/Softmax pattern that ORT fuses into one Attention kernel; it is
        # also the float32 reference of the parity check (it equals the sdpa forward to ~1e-7)
        eager = AutoModelForTokenClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    ref = eager
    cfg = eager.config
    probes = _probe_inputs(eager, int(cfg.vocab_size))
    with tempfile.TemporaryDirectory(prefix="sg-onnx-") as tmp:
        raw, opt, q8 = Path(tmp) / "raw.onnx", Path(tmp) / "opt.onnx", Path(tmp) / "int8.onnx"
        ids, mask = (torch.from_numpy(a) for a in probes[1])
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(eager, (ids, mask), str(raw), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                            "logits": {0: "batch", 1: "seq"}})
        logging.disable(logging.WARNING)  # the optimizer logs each fusion it skips (e.g. tiny vocabularies)
        try:
            optimized = optimize_model(str(raw), model_type="bert", num_heads=int(cfg.num_attention_heads),
                                       hidden_size=int(cfg.hidden_size), opt_level=1)
        finally:
            logging.disable(logging.NOTSET)
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(opt))
        out = opt
        if dtype == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            graph = onnx.load(str(opt)).graph
            # the 2-label head is tiny and decides every label directly: keep it in float32
            head = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")
                    and any("classifier" in x for x in [n.name, *n.input])]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.disable(logging.WARNING)  # "consider pre-processing": shape inference we do not need
                try:
                    quantize_dynamic(str(opt), str(q8), weight_type=QuantType.QInt8, per_channel=True,
                                     nodes_to_exclude=head, op_types_to_quantize=["MatMul", "Attention"], extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                finally:
                    logging.disable(logging.NOTSET)
            out = q8
        data = out.read_bytes()
    sess = session(data, threads=1)
    devs = []
    with torch.no_grad():
        for ids, mask in probes:
            want = _keep_prob(ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy())
            got = _keep_prob(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0])
            devs.append(np.abs(got - want)[mask.astype(bool)])
    dev = np.concatenate(devs)
    parity = {"max_abs_dp": float(dev.max()), "mean_abs_dp": float(dev.mean()), "fused": fused}
    if dtype == "float32" and parity["max_abs_dp"] > FP32_PARITY_TOL:
        raise SlimguardError(f"ONNX export of {model_dir} does not match the PyTorch model (max |dp| "
                             f"{parity['max_abs_dp']:.2e} > {FP32_PARITY_TOL}); use runtime=torch")
    return data, parity


def session(data: bytes, *, threads: int):
    """An ONNX Runtime CPU session over already-verified bytes, with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between kernels: on a shared or small CPU the spinning threads steal the cores the
    # next kernel needs (and a server idles between requests)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """p(keep) per token from an ONNX Runtime session, one chunk per call; sessions per (dtype, threads)."""

    def __init__(self, model_dir: Path, *, log=None):
        self.model_dir = Path(model_dir)
        self.log = log
        self._sessions: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self.records: dict[str, dict] = {}

    def get(self, dtype: str, threads: int):
        key = (dtype, threads)
        with self._lock:
            if key not in self._sessions:
                ex = export(self.model_dir, dtype, log=self.log)
                self.records[dtype] = ex.record
                self._sessions[key] = session(ex.model, threads=threads)
            return self._sessions[key]

    def keep_probs(self, ids: np.ndarray, *, dtype: str, threads: int) -> np.ndarray:
        """p(keep) for one sequence ``ids`` (with its special tokens), float32 [len(ids)]."""
        sess = self.get(dtype, threads)
        x = ids.reshape(1, -1).astype(np.int64, copy=False)
        logits = sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0]
        return _keep_prob(logits[0]).astype(np.float32)
