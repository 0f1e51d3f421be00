"""benchmarks/gpu_check.py, the one-call GPU check, run here on its CPU code paths: every path
gives a row, a failing cell (the CUDA graph on a machine without CUDA) is a row and not the end
of the run, and the deadline skips cells and says which."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", *args], capture_output=True,
                          text=True, timeout=300)


def test_quick_cpu_run_covers_every_path():
    run = gpu_check()
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "roofline: bf16 matmul" in out and "GFLOPs per image" in out
    rows = [line for line in out.splitlines() if line.startswith("edge 32px ")]
    for path in ("train FP32", "train AMP BF16", "eager FP32", "eager BF16", "BF16 channels_last",
                 "BF16 channels_last torch.compile"):
        measured = [r for r in rows if r[22:68].strip() == path and "FAILED" not in r]   # the path column
        assert len(measured) == (1 if path.startswith("train") else 2), (path, out)
    for row in rows:
        if "FAILED" not in row and "train" not in row:
            assert float(row[103:112]) > 0.99, row    # the cosine column: vs eager FP32 on the same frames
    graph = [r for r in rows if "CUDA graph" in r]     # eager and compiled, replayed
    assert len(graph) == 4 and all("FAILED" in r for r in graph)      # no CUDA here: a row, not a crash
    assert "skipped (out of time): nothing" in out and "not a measurement" in out


def test_deadline_skips_and_lists_what_it_skipped():
    run = gpu_check("--budget", "0.5")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "skipped (out of time): edge: everything" in run.stdout
