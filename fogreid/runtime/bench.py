"""Timing a model call the same way everywhere: `fogreid bench`, the demo and benchmarks/."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    images_per_s: float
    p50_ms: float       # per call (one batch)
    p95_ms: float


def measure(run, frames: np.ndarray, seconds: float = 3.0, warmup: int = 3, min_calls: int = 5) -> Timing:
    """Call `run(frames)` for `seconds` after `warmup` calls; throughput and latency per call."""
    for _ in range(warmup):
        run(frames)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        tic = time.perf_counter()
        run(frames)
        times.append(time.perf_counter() - tic)
    ms = np.array(times) * 1000
    return Timing(len(frames) * len(times) / sum(times), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))
