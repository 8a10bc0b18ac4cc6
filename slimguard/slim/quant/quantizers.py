"""LSQ and LSQ+ fake quantizers (Esser et al. 2020, "Learned Step Size Quantization";
Bhalgat et al. 2020, "LSQ+"), as used by EdgeQAT.

Weights: signed symmetric, learnable step per tensor / output channel / group of inputs,
initialised at ``2*mean|W|/sqrt(Qp)`` (LSQ) or ``max|W|/Qp`` (round-to-nearest), with the
LSQ gradient scale ``1/sqrt(numel_per_step * Qp)``. Steps are snapped to fp16 in the forward
pass (straight-through), so a group-32 int4 weight is bit-exact with llama.cpp's Q4_0 block
(fp16 scale + 32 codes in [-8, 7]).

Activations: asymmetric, learnable step and offset (LSQ+), initialised from min/max of the
first calibration batch, where signedness is detected. An optional low-bit twin serves
token-adaptive bits: tokens flagged by a mask are quantized with the twin.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``scale`` (LSQ's step-gradient normalisation)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x  # the detach trick is only identity up to rounding: keep inference bit-exact
    return (x - x * scale).detach() + x * scale


# smallest positive fp16 (subnormal): weight steps are snapped to fp16, and a step below this
# would snap to 0, making w / s infinite and every weight gradient NaN while the loss stays finite
MIN_STEP = 2.0 ** -24


def signed_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


class WeightQuantizer(nn.Module):
    """Signed symmetric LSQ for a 2-D weight ``[out, in]``."""

    def __init__(self, weight: torch.Tensor, bits: int, granularity: str, group_size: int, init: str = "lsq",
                 learn: bool = True):
        super().__init__()
        self.bits, self.granularity, self.group_size = bits, granularity, group_size
        self.qn, self.qp = signed_range(bits)
        w = self._granules(weight.detach().float())
        if init == "lsq":
            step = 2 * w.abs().mean(-1, keepdim=True) / math.sqrt(self.qp)
        else:  # round-to-nearest: the largest magnitude lands on the top level
            step = w.abs().amax(-1, keepdim=True) / self.qp
        if init == "mse":  # per-granule clipping ratio that minimises the rounding error
            best, best_err = step, None
            for r in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6):
                s = (step * r).clamp(min=MIN_STEP)
                err = ((torch.clamp(torch.round(w / s), self.qn, self.qp) * s - w) ** 2).sum(-1, keepdim=True)
                if best_err is None:
                    best_err = err
                    continue
                better = err < best_err
                best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
            step = best
        self.step = nn.Parameter(step.clamp(min=MIN_STEP), requires_grad=learn)
        self._gscale = 1.0 / math.sqrt(w.shape[-1] * self.qp)

    def _granules(self, w: torch.Tensor) -> torch.Tensor:
        """View the weight as ``[..., numel_per_step]`` so each step covers the last dim."""
        if self.granularity == "tensor":
            return w.reshape(1, 1, -1)
        if self.granularity == "channel":
            return w.reshape(w.shape[0], 1, -1)
        return w.reshape(w.shape[0], w.shape[1] // self.group_size, self.group_size)

    def effective_step(self) -> torch.Tensor:
        s = grad_scale(self.step, self._gscale).abs().clamp(min=MIN_STEP)
        # fp16 snap (straight-through) so exported fp16 scales reproduce the trained weights exactly
        return s + (s.half().float() - s).detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g = self._granules(w)
        s = self.effective_step().to(g.dtype)
        q = round_ste(torch.clamp(g / s, self.qn, self.qp))
        return (q * s).reshape(w.shape)

    @torch.no_grad()
    def codes_and_scales(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes ``[out, in]`` (int8) and fp16 scales ``[out, in/group]`` (broadcast for coarser granularity)."""
        g = self._granules(w.float())
        s = self.step.abs().clamp(min=MIN_STEP).half().float()
        q = torch.clamp(torch.round(g / s), self.qn, self.qp).to(torch.int8).reshape(w.shape)
        out, inp = w.shape
        gs = self.group_size if self.granularity == "group" else inp
        scales = s.expand(g.shape[0], g.shape[1], 1).reshape(-1)
        if self.granularity == "tensor":
            scales = scales.expand(out)
        return q, scales.reshape(out, inp // gs).half()


class LSQPlus(nn.Module):
    """Asymmetric LSQ+ activation quantizer with learnable step and offset.

    ``shape`` gives the step/offset shape (broadcast against the input), e.g. ``(1,)`` per
    tensor or ``(1, heads, 1, head_dim)`` per channel of Q/K/V.
    """

    def __init__(self, bits: int, shape: tuple[int, ...] = (1,), learn: bool = True, init: str = "mse"):
        super().__init__()
        self.bits, self.init = bits, init
        self.step = nn.Parameter(torch.ones(shape), requires_grad=learn)
        self.offset = nn.Parameter(torch.zeros(shape), requires_grad=learn)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def _range(self) -> tuple[int, int]:
        return signed_range(self.bits) if bool(self.signed) else (0, 2 ** self.bits - 1)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        per_tensor = self.step.numel() == 1
        dims = list(range(x.dim())) if per_tensor else [i for i in range(x.dim()) if self.step.shape[i] == 1]
        if per_tensor and x.numel() > 400_000:  # a strided sample is plenty for a scalar range
            x = x.flatten()[:: x.numel() // 400_000]
            dims = [0]
        lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
            torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        self.signed.fill_(bool((lo < 0).any()))
        qn, qp = self._range()
        best_lo, best_hi, best_err = lo, hi, None
        # LSQ+'s MSE init: shrink the range where that lowers the quantization error, so a few
        # outliers do not set the step for everything else ("minmax" keeps the full range)
        for r in ((1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.12, 0.07) if self.init == "mse" else (1.0,)):
            l, h = lo * r, hi * r
            s = ((h - l) / (qp - qn)).clamp(min=1e-6)
            b = l - qn * s
            err = ((torch.clamp(torch.round((x - b) / s), qn, qp) * s + b - x) ** 2).sum(dims, keepdim=True)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(err)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo, best_hi = torch.where(better, l, best_lo), torch.where(better, h, best_hi)
        step = ((best_hi - best_lo) / (qp - qn)).clamp(min=1e-6)
        self.step.copy_(step.reshape(self.step.shape))
        self.offset.copy_((best_lo - qn * step).reshape(self.step.shape))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.calibrate(x)
        qn, qp = self._range()
        numel = x.numel() // max(1, self.step.numel())
        g = 1.0 / math.sqrt(max(1, numel) * qp)
        s = grad_scale(self.step, g).abs().clamp(min=1e-8).to(x.dtype)
        b = grad_scale(self.offset, g).to(x.dtype)
        q = round_ste(torch.clamp((x - b) / s, qn, qp))
        return q * s + b


class DynQuant(nn.Module):
    """Dynamic symmetric quantizer: one absmax scale per token (or per ``group`` of its last dim),
    times a learnable clipping ratio. This is how integer runtimes quantize activations on the
    fly (llama.cpp's q8 activations, its q4_0/q8_0 KV cache with 32-wide blocks; torchao's
    dynamic int8), and unlike a static per-tensor step it survives massive activations."""

    def __init__(self, bits: int, group: int = 0, learn: bool = True):
        super().__init__()
        self.bits, self.group = bits, group
        self.qn, self.qp = signed_range(bits)
        self.clip = nn.Parameter(torch.ones(1), requires_grad=learn)
        self.register_buffer("initialized", torch.ones((), dtype=torch.bool))

    def calibrate(self, x: torch.Tensor) -> None:  # nothing to calibrate: scales come from each token
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        g = x.reshape(*shape[:-1], shape[-1] // self.group, self.group) if self.group else x.unsqueeze(-2)
        amax = g.detach().abs().amax(-1, keepdim=True).clamp(min=1e-8)
        s = self.clip.clamp(0.05, 1.0).to(x.dtype) * amax / self.qp
        q = round_ste(torch.clamp(g / s, self.qn, self.qp))
        return (q * s).reshape(shape)


class ActQuant(nn.Module):
    """One activation quantization point: an LSQ+ quantizer and an optional low-bit twin.

    ``low`` is a boolean mask broadcastable to ``x`` selecting elements (tokens) that use
    the low-bit twin; the mask is produced by token-importance scoring (or a random control).
    """

    def __init__(self, bits: int, shape: tuple[int, ...] = (1,), low_bits: int | None = None, learn: bool = True,
                 init: str = "mse", dynamic_group: int | None = None):
        super().__init__()
        if dynamic_group is not None:
            self.hi = DynQuant(bits, dynamic_group, learn)
            self.lo = DynQuant(low_bits, dynamic_group, learn) if low_bits else None
        else:
            self.hi = LSQPlus(bits, shape, learn, init)
            self.lo = LSQPlus(low_bits, shape, learn, init) if low_bits else None

    def forward(self, x: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        if not bool(self.hi.initialized):
            self.calibrate(x)
        y = self.hi(x)
        if self.lo is None or low is None:
            return y
        return torch.where(low, self.lo(x), y)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        self.hi.calibrate(x)
        if self.lo is not None:
            self.lo.calibrate(x)
