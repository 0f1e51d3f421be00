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
* printed, one line on stderr, and kept in `choice`; `--backend onnxruntime` or
  `--backend openvino` skips the probe;
* measured again while it runs: `AutoBackend` keeps both engines loaded and, 10 s after the load
  and then at doubling intervals (up to 160 s, back to 10 s after a switch), routes a few of
  the caller's own calls to each engine in alternating blocks and moves to the other one when
  it is faster by more than MARGIN (a line on stderr each time). Once five checks in a row
  have kept the engine (about five minutes), the other one is closed and the choice is final.
  The probe sees the machine at load time with the ReID engine alone on it; once a pipeline's
  decoders and detector share the cores, or the machine's neighbours come and go, the ranking
  moves, and a choice made once would keep the slower engine for the whole run.

Its cost is the second engine's start (importing and compiling: 0.6 s for the demo's 64 px
model on the 2-core VM) and its memory until it is closed, PROBE_SECONDS once per load, and,
while running, the calls of each check that the slower engine answers. Both engines' outputs
on every exported file are checked by `fogreid validate`, which tables each file on each
engine (the demo's INT8 file: cosine min 0.9987 / 0.9988 against PyTorch), so either is a
correct answer, and a run whose calls move between them mixes embeddings that agree to that
level.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PROBE_SECONDS = 0.5   # timed rounds, after one warm-up call of each engine
ROUNDS = 3
MARGIN = 0.03         # OpenVINO must be faster than ONNX Runtime by more than this to be chosen
RECHECK_SECONDS = 10.0     # while running: the first check of the choice on live calls (AutoBackend)
RECHECK_MAX_SECONDS = 160.0
RELEASE_AFTER = 5          # checks in a row that keep the engine: the other one is closed (about 5 min)
CHECK_BLOCKS = 6           # alternating blocks of live calls per check, half on each engine
CHECK_BLOCK_SECONDS = 0.1

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


def cpu_choice_open(session, device: str) -> bool:
    """Whether `auto` chooses between the CPU engines: ONNX Runtime's `session` on its CPU
    provider, `--device` auto or cpu, and OpenVINO installed."""
    return (session is not None and device in ("auto", "cpu")
            and session.get_providers()[0] == "CPUExecutionProvider" and openvino_installed())


def measured_choice(engines: dict, frames: np.ndarray, part: str = "", probe: Probe | None = None,
                    out=None) -> "AutoBackend":
    """An `AutoBackend` of `engines` (ONNX Runtime's first), on the one measured faster on `frames`;
    the line saying so printed on stderr (or `out`)."""
    ms = (probe or time_engines)(engines, frames)
    winner = pick(ms)
    chosen = AutoBackend(engines, winner, choice_line(winner, ms, len(frames), part), part, out)
    print(chosen.choice, file=out or sys.stderr, flush=True)
    return chosen


def fastest_cpu_engine(model, path: str | Path, open_openvino: Callable[[], object], device: str = "auto",
                       batch: int | None = None, probe: Probe | None = None, out=None):
    """`model` (a DeployedModel on ONNX Runtime, as make_runner's auto gives it) or, where OpenVINO
    can run the file too (opened by `open_openvino`, which the caller passes so this module needs
    nothing from backends.py), an `AutoBackend` of both, on the one measured faster at `batch` on
    this CPU. Anything else (another backend, a GPU provider, no OpenVINO) is returned as it is."""
    from fogreid.errors import FogreidError

    if Path(path).suffix.lower() != ".onnx" or not cpu_choice_open(getattr(model.runner, "sess", None), device):
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
    part = (" (embedding only)" if getattr(model, "embedding_only", False) else
            " (defogged image only)" if getattr(model, "defogged_only", False) else "")
    try:
        return measured_choice({"onnxruntime": model, "openvino": other}, frames, part, probe, out)
    except BaseException:
        other.close()
        model.close()
        raise


class AutoBackend:
    """Both engines of `--backend auto`, each call run on the one measured faster, measured again
    on the caller's own calls while it runs. The load-time probe sees the machine for half a
    second with the model alone on it; the ranking moves afterwards (a pipeline's decoders and
    detector share the cores; on the 2-vCPU development VM, a state lasting tens of seconds took
    OpenVINO's 5-10 % lead on the demo's INT8 file to a tie and back, so one-shot choices made
    within a minute of each other disagreed: docs/benchmarks.md, CPU engines).

    A check starts at the first call RECHECK_SECONDS after the last (then the interval): the next calls go in
    CHECK_BLOCKS alternating blocks of CHECK_BLOCK_SECONDS (at least two calls each; the first
    call of a block, which wakes that engine's threads, is not timed), the other engine first.
    Each engine's median call is compared per batch size (a pipeline's calls vary in size), over
    the sizes both ran; the other engine takes over only when it is faster by more than MARGIN,
    which prints one line and updates `choice`. No call is wasted: every call of a check is one of
    the caller's, answered by whichever engine ran it (`fogreid validate` tables both engines on
    every file). A check that keeps the engine doubles the interval, up to RECHECK_MAX_SECONDS; a
    switch resets it. Both engines stay loaded until RELEASE_AFTER checks in a row have kept the
    engine (10 + 20 + 40 + 80 + 160 s: about five minutes of a steady choice); then the other one
    is closed, once no call is running on it, which gives its memory back (360 MiB for `fogreid
    run`'s two graphs at 128 px: docs/benchmarks.md, Peak memory), and the choice is final."""

    def __init__(self, engines: dict, current: str, choice: str, part: str = "", out=None) -> None:
        self.engines, self.current, self.choice, self.part, self.out = engines, current, choice, part, out
        self.switches = 0
        self.released = False               # the other engine closed: no more checks
        self._kept = 0                      # checks in a row that kept the engine
        self._running = {name: 0 for name in engines}   # calls under way, per engine
        self._interval = self._base_interval = RECHECK_SECONDS
        self._next_check = time.perf_counter() + RECHECK_SECONDS
        self._blocks: list[str] = []        # engines of the check's remaining blocks; empty: no check
        self._block_end = 0.0
        self._block_calls = 0
        self._times: dict[tuple[str, int], list[float]] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        # imgsz, path, embedding_only, runner, ...: the engine that answers now
        if name in ("engines", "current"):
            raise AttributeError(name)
        return getattr(self.engines[self.current], name)

    @property
    def name(self) -> str:
        return self.engines[self.current].name

    def __call__(self, frames: np.ndarray):
        with self._lock:
            engine, timed = self._route()
            self._running[engine] += 1
        try:
            tic = time.perf_counter()
            result = self.engines[engine](frames)
            elapsed = time.perf_counter() - tic
        finally:
            with self._lock:
                self._running[engine] -= 1
                self._close_if_released(engine)   # the last call still running on it may have ended
        if timed:
            with self._lock:
                self._times.setdefault((engine, len(frames)), []).append(elapsed)
        return result

    def _route(self) -> tuple[str, bool]:
        """(the engine for this call, whether its time counts towards the check)."""
        now = time.perf_counter()
        if not self._blocks:
            if self.released or now < self._next_check:
                return self.current, False
            other = next(name for name in self.engines if name != self.current)
            self._blocks = [other, self.current] * (CHECK_BLOCKS // 2)
            self._block_end, self._block_calls, self._times = now + CHECK_BLOCK_SECONDS, 0, {}
        elif now >= self._block_end and self._block_calls >= 2:
            self._blocks.pop(0)
            if not self._blocks:
                self._decide()
                return self.current, False
            self._block_end, self._block_calls = now + CHECK_BLOCK_SECONDS, 0
        self._block_calls += 1
        return self._blocks[0], self._block_calls > 1

    def _decide(self) -> None:
        other = next(name for name in self.engines if name != self.current)
        sizes = {n for (name, n) in self._times if name == other} & {n for (name, n) in self._times
                                                                     if name == self.current}
        ratios = [np.median(self._times[(other, n)]) / np.median(self._times[(self.current, n)]) for n in sizes]
        ratio = float(np.median(ratios)) if ratios else 1.0   # other's time over the current one's
        if ratio * (1 + MARGIN) < 1:
            size = max(sizes, key=lambda n: len(self._times[(other, n)]))
            ms = {name: float(np.median(self._times[(name, size)])) * 1000 for name in (other, self.current)}
            self.current, self.switches, self._interval = other, self.switches + 1, self._base_interval
            self._kept = 0
            self.choice = choice_line(other, ms, size, self.part).replace("[measured here;",
                                                                          "[measured again while running;")
            print(self.choice, file=self.out or sys.stderr, flush=True)
        else:
            self._interval = min(self._interval * 2, RECHECK_MAX_SECONDS)
            self._kept += 1
            if self._kept >= RELEASE_AFTER:
                self.released = True
                self._close_if_released(other)
                print(f"backend auto{self.part}: {self.current} kept by {self._kept} checks in a row; "
                      f"{other} closed", file=self.out or sys.stderr, flush=True)
        self._next_check = time.perf_counter() + self._interval

    def _close_if_released(self, name: str) -> None:
        """Close `name` once the choice is final, it is not the one chosen and no call runs on it."""
        if self.released and name != self.current and not self._running[name]:
            self.engines[name].close()

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def __enter__(self) -> "AutoBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
