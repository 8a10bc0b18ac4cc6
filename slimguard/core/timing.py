"""Wall-clock timing and machine description, shared by the library and the benchmarks.

Timings here are what a result reports (median of repeats after warm-up, with the torch
thread count recorded); ``slimguard.bench.harness`` re-exports them. They live in ``core`` so
that library code (``slim.quant.speed``, the demo steps) can time things without importing
``bench``, which sits above the library.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def machine() -> dict:
    """CPU model, core count, GPU, torch and Python versions, torch threads: what a timing depends on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__.split("+")[0],
            "threads": torch.get_num_threads(), "python": platform.python_version()}


@dataclass
class Timing:
    median_s: float
    times_s: list[float]
    threads: int

    def to_dict(self) -> dict:
        return {"median_s": self.median_s, "times_s": self.times_s, "threads": self.threads}


def time_it(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, threads: int | None = None,
            sync: Callable[[], None] | None = None, before: Callable[[], None] | None = None) -> Timing:
    """Median wall time of ``fn`` after warm-up, with the torch thread count fixed and recorded.

    ``before`` runs untimed ahead of every timed call (e.g. to evict the CPU caches)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(max(1, repeats)):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), times, torch.get_num_threads())


def time_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 9, warmup: int = 1,
                     before: Callable[[], None] | None = None,
                     sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Median wall time of each of ``fns``, timed round-robin (one call of each per round), so a
    machine whose speed drifts during the run slows every contender alike instead of whichever
    happened to be timed then. ``before`` runs untimed ahead of every timed call; ``sync`` (e.g.
    ``torch.cuda.synchronize``) closes every call, so asynchronous GPU work is counted where it ran."""
    import torch

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            if before:
                before()
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - t0)
    return {k: Timing(statistics.median(v), v, torch.get_num_threads()) for k, v in times.items()}
