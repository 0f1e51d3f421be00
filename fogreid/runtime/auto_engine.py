"""`--backend auto` for an ONNX file on the CPU: the faster installed engine, measured here.

An ONNX file runs on ONNX Runtime and, where the `openvino` extra is installed, on OpenVINO.
Which of the two is faster depends on the file's precision (OpenVINO's INT8 kernels against
ONNX Runtime's QLinearConv fusions), the batch, the CPU, both engines' versions and how busy
the cores are. On the 2-core development VM, idle, OpenVINO 2026.4 ran the demo's INT8 file
faster than a spinning ONNX Runtime 1.32 at batch 1 and 8 and lost the FP32 file at both; with
other jobs on the cores, ONNX Runtime without spinning threads (fogreid.sessions.cpu_options)
won all four; issue 24's machine had OpenVINO ahead for FP32 at batch 8 (docs/benchmarks.md,
CPU engines). A table of winners written on one machine would be a guess on the next one, so
the rule is measured where the model is loaded:

* only when the choice is open: `--backend auto`, an `.onnx` file, ONNX Runtime's session on
  its CPU provider (GPU providers, TensorRT engines and checkpoints keep their rules) and
  OpenVINO installed and able to compile the file. Otherwise auto is ONNX Runtime, as before;
* both engines are timed through `DeployedModel`, what the caller will call, at the batch the
  caller says it will use (`batch`: `fogreid run`'s `--batch`, `serve`'s `--max-batch`,
  `gallery`'s batch of 32, each of `bench`'s batches), on the same random frames, in
  interleaved rounds (each round gives each engine a block of calls, the order alternating),
  so a busy spell of a shared machine slows both alike; the median call of each is compared.
  Blocks, not single alternating calls: an engine's first call after the other's pays for
  waking its thread pool, and a running pipeline keeps to one engine;
* bounded: one warm-up call each, then ROUNDS rounds sharing PROBE_SECONDS, fewer (at least
  one) when a call of each takes longer than PROBE_SECONDS / ROUNDS;
* ONNX Runtime, the engine every `.onnx` was validated on first and the one without an
  extra, keeps the choice unless OpenVINO is faster by more than MARGIN: within it the two
  are tied, and either is >= 1 / (1 + MARGIN) of the best, above the 0.95 that issue 24 asks;
* printed, one line on stderr, and kept in `DeployedModel.choice`; `--backend onnxruntime`
  or `--backend openvino` skips the probe.

Its cost is the second engine's start (importing and compiling: 0.6 s for the demo's 64 px
model on the 2-core VM) plus PROBE_SECONDS, once per load. Both engines' outputs on every
exported file are checked by `fogreid validate`, which tables each file on each engine (the
demo's INT8 file: cosine min 0.989 on both), so either is a correct choice. The probe sees
the machine as it is at load time, with the ReID engine alone on it; once a pipeline's
decoders and detector share the cores the ranking can change (a busy machine changed it on
the development VM), which no load-time probe sees: `--backend` is the override.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PROBE_SECONDS = 0.5   # timed rounds, after one warm-up call of each engine
ROUNDS = 3
MARGIN = 0.03         # OpenVINO must be faster than ONNX Runtime by more than this to be chosen

Probe = Callable[[dict[str, Callable[[np.ndarray], object]], np.ndarray], dict[str, float]]


def openvino_installed() -> bool:
    """True where `import openvino` would work (False also when sys.modules blocks it)."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"] is not None
    return importlib.util.find_spec("openvino") is not None


def time_engines(calls: dict[str, Callable[[np.ndarray], object]], frames: np.ndarray,
                 seconds: float = PROBE_SECONDS, rounds: int = ROUNDS) -> dict[str, float]:
    """Median milliseconds per call of each callable on `frames`. One warm-up call each, then
    `rounds` rounds (fewer when one call of each takes more than `seconds` / `rounds`, at least
    one); in each, every callable runs a block of calls for its share of `seconds`, the order
    alternating from round to round. A block of short calls starts with an untimed one: the first
    call after another engine's pays for waking its own thread pool, which a caller that keeps
    to one engine does not."""
    warm = {}
    for name, call in calls.items():
        tic = time.perf_counter()
        call(frames)
        warm[name] = time.perf_counter() - tic
    rounds = max(1, min(rounds, int(seconds / max(sum(warm.values()), 1e-9))))
    share = seconds / (rounds * len(calls))
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            if warm[name] < share / 4:
                calls[name](frames)
            start = tic = time.perf_counter()
            while tic - start < share:   # at least one timed call
                calls[name](frames)
                times[name].append(time.perf_counter() - tic)
                tic = time.perf_counter()
    return {name: float(np.median(t)) * 1000 for name, t in times.items()}


def pick(ms: dict[str, float], default: str = "onnxruntime", margin: float = MARGIN) -> str:
    """The engine with the fastest median call; `default` unless another beats it by > margin."""
    best = min(ms, key=ms.__getitem__)
    return default if default in ms and ms[default] <= ms[best] * (1 + margin) else best


def choice_line(winner: str, ms: dict[str, float], batch: int, part: str = "") -> str:
    """The line that says what `auto` chose; `part` names the graph when it was cut down (a run
    that loads a file twice, cut down to each output, measures each: fogreid/cli/run.py)."""
    others = ", ".join(f"{name} ({t:.2f} ms)" for name, t in ms.items() if name != winner)
    return (f"backend auto{part}: {winner} ({ms[winner]:.2f} ms/batch of {batch}) over {others}  "
            f"[measured here; --backend to choose]")


def fastest_cpu_engine(model, path: str | Path, open_openvino: Callable[[], object], device: str = "auto",
                       batch: int | None = None, probe: Probe | None = None, out=None):
    """`model` (a DeployedModel on ONNX Runtime, as make_runner's auto gives it) or, when
    OpenVINO is measured faster at `batch` on this CPU, the same file on OpenVINO (opened by
    `open_openvino`, which the caller passes so this module needs nothing from backends.py);
    the loser is closed. Anything else (another backend, a GPU provider, no OpenVINO) is
    returned as it is."""
    from fogreid.errors import FogreidError

    session = getattr(model.runner, "sess", None)
    if (Path(path).suffix.lower() != ".onnx" or session is None or device not in ("auto", "cpu")
            or session.get_providers()[0] != "CPUExecutionProvider" or not openvino_installed()):
        return model
    try:
        other = open_openvino()
    except FogreidError as exc:  # EnvironmentProblem too: OpenVINO cannot compile it here
        model.choice = f"backend auto: onnxruntime (OpenVINO cannot run {Path(path).name}: {exc})"
        print(model.choice, file=out or sys.stderr, flush=True)
        return model
    batch = max(1, int(batch or 1))
    h, w = model.imgsz
    frames = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    engines = {"onnxruntime": model, "openvino": other}
    try:
        ms = (probe or time_engines)(engines, frames)
    except BaseException:
        other.close()
        model.close()
        raise
    winner = pick(ms)
    for name, candidate in engines.items():
        if name != winner:
            candidate.close()
    chosen = engines[winner]
    part = (" (embedding only)" if getattr(model, "embedding_only", False) else
            " (defogged image only)" if getattr(model, "defogged_only", False) else "")
    chosen.choice = choice_line(winner, ms, batch, part)
    print(chosen.choice, file=out or sys.stderr, flush=True)
    return chosen
