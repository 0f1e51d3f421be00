"""Whole-frame defog for `fogreid run --defog-view frame`: the defog-frame graph
(model_defog_frame.onnx, written by `fogreid export --format onnx` beside model.onnx), one uint8
BGR frame of any size in, its defogged frame out, on ONNX Runtime or OpenVINO.

OpenVINO compiles the graph for each frame size it meets, every dimension static (a camera keeps
its size): its CPU plugin fuses the graph's chains of element-wise ops only where shapes are
static, and at 640x480 the demo's graph compiled so took 36.0 ms a frame against ONNX Runtime's
39.3 and 82.7 with the size left dynamic (docs/benchmarks.md, OpenVINO at the caller's batch);
34.8 against 38.6 on another idle morning, but 112 against 59 with a test suite on the same two
cores. So `--backend auto` measures both on the first frame, as it does for the crop graph
(fogreid/runtime/auto_engine.py), and checks its choice again on the run's own frames."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.runtime.auto_engine import cpu_choice_open, measured_choice
from fogreid.sessions import onnxruntime_session, openvino_compiler

FRAME_GRAPH = "model_defog_frame.onnx"  # fogreid.export.frame_graph.FILE (runtime does not import export)
ENGINES = ("onnxruntime", "openvino")


def find_frame_graph(model: str | Path) -> Path:
    """The defog-frame graph given, or the one beside a fused graph / engine."""
    model = Path(model)
    candidate = model if model.name == FRAME_GRAPH else model.with_name(FRAME_GRAPH)
    if not candidate.is_file():
        raise FogreidError(f"--defog-view frame needs the whole-frame defog graph {candidate}: export it with "
                           f"`fogreid export --checkpoint CKPT --format onnx --out {model.parent}` "
                           f"(models with a scatter or detail defog head), or pass it with --defog-model")
    return candidate


class OnnxRuntimeFrames:
    """The graph in ONNX Runtime: (B, H, W, 3) uint8 frames -> their defogged frames."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: str) -> None:
        self.session = onnxruntime_session(path, device)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"frames": frames})[0]

    def close(self) -> None:
        pass


class OpenVinoFrames:
    """The graph compiled by OpenVINO for each input shape it is called with (compiled at the
    first call of a shape: a camera's first frame waits for it)."""

    name = "openvino"

    def __init__(self, path: Path, device: str = "CPU") -> None:
        self.compile = openvino_compiler(path, device)
        self.compiled: dict[tuple[int, ...], object] = {}
        # A CompiledModel's call runs on its one infer request: callers take turns (OpenVinoRunner).
        self._lock = threading.Lock()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        with self._lock:
            if frames.shape not in self.compiled:
                self.compiled[frames.shape] = self.compile(frames.shape)
            compiled = self.compiled[frames.shape]
            return compiled({"frames": frames})[compiled.outputs[0]]

    def close(self) -> None:
        self.compiled.clear()


class FrameDefogger:
    """Callable: uint8 (H, W, 3) BGR frame -> its defogged uint8 (H, W, 3) BGR frame.
    `backend`: onnxruntime, openvino, or auto (ONNX Runtime on a GPU; on the CPU the faster of
    the two where OpenVINO is installed, measured on the first frame); `choice` says which."""

    def __init__(self, path: str | Path, device: str = "auto", backend: str = "onnxruntime") -> None:
        from fogreid.onnx_graph import read_metadata

        path = Path(path)
        meta = read_metadata(path)
        if meta.get("graph") != "defog-frame":
            raise FogreidError(f"{path}: not a whole-frame defog graph (metadata graph={meta.get('graph')!r}); "
                               f"use the {FRAME_GRAPH} that `fogreid export --format onnx` writes")
        if backend not in (*ENGINES, "auto"):
            raise FogreidError(f"--backend {backend}: the whole-frame defog graph runs on {', '.join(ENGINES)} "
                               f"or auto")
        self.path = path
        # Graphs written before these keys ran the network on the whole frame, from 32 px (MIN_SIDE).
        self.downscale = int(meta["downscale"]) if meta.get("downscale", "").isdigit() else 1
        self.min_side = int(meta["min_side"]) if meta.get("min_side", "").isdigit() else 32
        self.probe_pending = False   # auto on the CPU, until the first frame: OpenVINO timed against ONNX Runtime
        if backend == "openvino":
            from fogreid.runtime.backends import openvino_device

            self.engine = OpenVinoFrames(path, openvino_device(device))
            return
        self.engine = OnnxRuntimeFrames(path, device)
        self.probe_pending = backend == "auto" and cpu_choice_open(self.engine.session, device)

    @property
    def choice(self) -> str:
        """The engine that runs the frames, or auto's line saying which and why."""
        return getattr(self.engine, "choice", self.engine.name)

    @property
    def session(self):
        """ONNX Runtime's session, where it runs the graph."""
        return getattr(getattr(self.engine, "engines", {}).get("onnxruntime", self.engine), "session", None)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if min(frame.shape[:2]) < self.min_side:
            raise FogreidError(f"{self.path}: a {frame.shape[1]}x{frame.shape[0]} frame is smaller than this whole-"
                               f"frame defog graph takes ({self.min_side} px a side); export it with a smaller "
                               f"--frame-downscale, or drop --defog-view frame for this source")
        frames = np.ascontiguousarray(frame)[None]
        if self.probe_pending:
            self._choose(frames)
        return self.engine(frames)[0]

    def _choose(self, frames: np.ndarray) -> None:
        """`auto` on the CPU: both engines timed on this frame, the faster kept, checked again on the
        run's own frames (AutoBackend); OpenVINO unable to compile the graph leaves ONNX Runtime."""
        import sys

        self.probe_pending = False
        try:
            self.engine = measured_choice({"onnxruntime": self.engine, "openvino": OpenVinoFrames(self.path)}, frames,
                                          " (whole frames)")
        except FogreidError as exc:   # EnvironmentProblem too
            print(f"backend auto (whole frames): onnxruntime (OpenVINO cannot run {self.path.name}: {exc})",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self.engine.close()
