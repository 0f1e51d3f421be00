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


def test_a_path_that_differs_from_eager_fp32_is_never_the_best():
    """The H200 run of 2026-12-04: the paper preset replayed as a CUDA graph was the fastest cell
    and wrong (torchvision's deform_conv2d runs outside the capture; cosine 0.9977)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    assert gpu.agrees(0.99995, 1) and not gpu.agrees(0.9977, 1) and not gpu.agrees(1.0, 40)
    rows = [("paper", "eager FP32", 32, 769, 41.6, 1.0, 1.0, 8.1, "max px diff 0"),
            ("paper", "FP16 torch.compile", 32, 2219, 14.4, 2.89, 1.0, 23.4, "max px diff 1"),
            ("paper", "FP16 torch.compile + CUDA graph", 32, 2420, 13.2, 3.15, 0.9977, 25.5,
             "max px diff 1, DIFFERS from eager FP32: not counted"),
            ("paper", "train FP32", 32, 222, 144.0, None, None, None, "cell 27 s")]
    line = gpu.verdict(rows, "paper", 32, quick=False)
    assert "FP16 torch.compile, 2.89x" in line and "below the 5x goal" in line and "1 path(s) left out" in line
    assert gpu.verdict(rows, "edge", 32, quick=False) is None
