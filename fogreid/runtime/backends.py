"""Inference backends behind one interface, as Polygraphy runners.

  TorchRunner   a PyTorch checkpoint (FusedDefogReID), on CPU or CUDA
  OnnxrtRunner  an ONNX file in ONNX Runtime, with the TensorRT, CUDA or CPU provider:
                the first that actually creates a session, not the first in the list
                (onnxruntime-gpu lists CUDA even on machines without a GPU)
  OpenVinoRunner the same ONNX file in OpenVINO (`fogreid[openvino]`), on its CPU, GPU or NPU
                plugin: a second, independent reading of every artifact (Q/DQ pairs become
                FakeQuantize and run through OpenVINO's own low-precision kernels)
  TrtRunner     a TensorRT engine (named tensors, execute_async_v3, buffers reused),
                wrapped in ProfileBatchRunner: a batch above the engine's profile is split
                into chunks the profile takes, one below it is refused

`load_deployed(path)` wraps the right one in `DeployedModel`: one call from a uint8 batch of
crops to (defogged, embeddings) (`embedding_only`: (None, embeddings), the ONNX engines running
only the nodes the embedding reads; `defogged_only`: (defogged, None), likewise); with backend
`auto`, an ONNX file on the CPU runs on the engine measured faster at load time, ONNX Runtime or
an installed OpenVINO (auto_engine.py).
Validation feeds the same runners to Polygraphy's Comparator, so what is validated is what runs.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from fogreid._deprecated import renamed
from fogreid.errors import FogreidError
from fogreid.sessions import onnxruntime_session, openvino_models

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class TorchRunner(BaseRunner):
    """A FusedDefogReID (or a callable returning one) as a Polygraphy runner."""

    def __init__(self, model, device: str = "cpu", name: str | None = None) -> None:
        super().__init__(name=name, prefix="torch-runner")
        self._model, self.device = model, device

    def activate_impl(self) -> None:
        model = self._model() if callable(self._model) and not hasattr(self._model, "forward") else self._model
        self.model = model.to(self.device).eval()

    def get_input_metadata_impl(self):
        h, w = self.model.imgsz
        return TensorMetadata().add("frames", np.uint8, (-1, h, w, 3))

    def infer_impl(self, feed_dict):
        import torch

        frames = torch.from_numpy(np.ascontiguousarray(feed_dict["frames"])).to(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            defogged, embedding = self.model(frames)
            outputs = OrderedDict(defogged=defogged.cpu().numpy(), embedding=embedding.float().cpu().numpy())
        self.inference_time = time.perf_counter() - start
        return outputs

    def deactivate_impl(self) -> None:
        del self.model


BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


def artifact_kind(path: str | Path, backend: str = "auto") -> str:
    path = Path(path)
    if backend != "auto":
        if backend not in BACKENDS:
            raise FogreidError(f"--backend {backend}: choose auto, {', '.join(BACKENDS)}")
        if backend in ("onnxruntime", "openvino") and path.suffix.lower() != ".onnx":
            raise FogreidError(f"--backend {backend} runs ONNX files, and {path} is not one: pass the .onnx "
                               f"that `fogreid export` wrote")
        return backend
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise FogreidError(f"{path}: cannot tell the backend from the suffix {suffix!r}; expected .pt (checkpoint), "
                       f".onnx or {'/'.join(ENGINE_SUFFIXES)} (TensorRT engine), or pass --backend")


def engines_for(path: str | Path) -> list[str]:
    """Every installed engine that runs this artifact: an ONNX file on ONNX Runtime and, where it
    is installed, OpenVINO (a second, independent reading of the same file)."""
    kind = artifact_kind(path)
    if kind != "onnxruntime":
        return [kind]
    import importlib.util

    return ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


def make_runner(path: str | Path, backend: str = "auto", device: str = "auto", embedding_only: bool = False,
                defogged_only: bool = False, batch: int | None = None) -> BaseRunner:
    """The runner of `path` on `backend`. `embedding_only` (`defogged_only`): ONNX Runtime and
    OpenVINO open the graph cut down to its embedding (its defogged image;
    fogreid.sessions.only_outputs); a checkpoint or a TensorRT engine still computes both outputs
    (DeployedModel drops the other). `batch`: the caller's usual batch size, which OpenVINO also
    compiles for (OpenVinoRunner); the other backends take it as a hint they do not need."""
    if embedding_only and defogged_only:
        raise ValueError("embedding_only or defogged_only, not both")
    from fogreid.file_kinds import expect

    path = Path(path)
    expect(path, "", "model")
    kind = artifact_kind(path, backend)
    if kind == "torch":
        from fogreid.devices import pick_device
        from fogreid.model.fused import FusedDefogReID

        torch_device = pick_device("auto" if device in ("auto", "tensorrt") else device)
        return TorchRunner(lambda: FusedDefogReID.from_checkpoint(path, map_location=torch_device),
                           str(torch_device), name=f"torch:{path.name}")
    if kind in ("onnxruntime", "openvino"):
        from fogreid.onnx_graph import check_reid_io, load

        check_reid_io(load(path, load_weights=False), path)  # a clear error for graphs not exported by fogreid
    outputs = ["embedding"] if embedding_only else ["defogged"] if defogged_only else None
    if kind == "openvino":
        return OpenVinoRunner(path, openvino_device(device), name=f"openvino:{path.name}", outputs=outputs,
                              batch=batch)
    if kind == "onnxruntime":
        from polygraphy.backend.onnxrt import OnnxrtRunner

        class NumpyOnnxrtRunner(OnnxrtRunner):
            # OnnxrtRunner.infer_impl asks whether any input is a torch tensor, which imports torch (seconds)
            # on the first call; fogreid feeds numpy only, so run the session directly.
            def infer_impl(self, feed_dict):
                start = time.perf_counter()
                outputs = self.sess.run(None, dict(feed_dict))
                self.inference_time = time.perf_counter() - start
                return OrderedDict((node.name, out) for node, out in zip(self.sess.get_outputs(), outputs, strict=True))

        return NumpyOnnxrtRunner(onnxruntime_session(path, device, outputs), name=f"onnxruntime:{path.name}")
    return tensorrt_runner(path)


def openvino_device(device: str) -> str:
    """fogreid's --device to an OpenVINO device name. `auto` is the CPU plugin, not OpenVINO's
    AUTO, which may pick a GPU or NPU whose precision hints differ from run to run; GPU/NPU
    names (GPU, GPU.1, NPU) pass through."""
    name = device.upper()
    if name in ("AUTO", "CPU"):
        return "CPU"
    if name.split(".")[0] in ("GPU", "NPU"):
        return name
    raise FogreidError(f"--device {device}: OpenVINO takes auto, cpu, gpu, gpu.N or npu")


class OpenVinoRunner(BaseRunner):
    """An ONNX file compiled by OpenVINO. It reads the graph itself (uint8 NHWC input, Q/DQ
    pairs as FakeQuantize), so agreeing with ONNX Runtime is evidence about the file, not
    about one engine (compiled by fogreid.sessions.openvino_models, f32 on the CPU).

    With `batch` (the caller's batch size: `fogreid run --batch`, validation's batches, a
    benchmark's), the file is compiled twice: for exactly `batch` rows, which OpenVINO runs
    1.2-1.4x faster than a dynamic batch (fogreid.sessions.openvino_models), and for any batch. A
    call of `batch` rows runs on the first, any other on the second (in chunks of `batch` it ran
    from 1.2x faster to 1.25x slower, by file: docs/benchmarks.md, OpenVINO at the caller's
    batch); both are compiled at load, so no call waits for a compile. The cost is memory: the
    second compiled model (28 MiB for a 128 px INT8 file, 81 MiB for its FP32 file)."""

    def __init__(self, path: str | Path, device: str = "CPU", name: str | None = None,
                 outputs: list[str] | None = None, batch: int | None = None) -> None:
        super().__init__(name=name, prefix="openvino-runner")
        self.path, self.device, self.outputs, self.batch = Path(path), device, outputs, batch
        # A CompiledModel's call runs on its one infer request: a second thread's call while it
        # runs raised "Infer Request is busy" (tests/test_auto_engine.py); callers take turns.
        self._lock = threading.Lock()

    def activate_impl(self) -> None:
        self.compiled, self.compiled_at_batch = openvino_models(self.path, self.device, self.outputs, self.batch)
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for port in self.compiled.inputs:
            shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
            meta.add(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()), shape)
        return meta

    def infer_impl(self, feed_dict):
        (rows,) = feed_dict.values()   # fogreid's graphs have one input, "frames"
        compiled = self.compiled_at_batch if len(rows) == self.batch else self.compiled
        with self._lock:
            start = time.perf_counter()
            results = compiled(dict(feed_dict))
            self.inference_time = time.perf_counter() - start
        # By position: each compiled model has its own output ports.
        return OrderedDict((name, results[i]) for i, name in enumerate(self.output_names))

    def deactivate_impl(self) -> None:
        del self.compiled, self.compiled_at_batch


def tensorrt_runner(path: Path) -> BaseRunner:
    try:
        import tensorrt  # noqa: F401
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError:
        from fogreid.tensorrt_version import INSTALL_HINT

        raise FogreidError(f"cannot run {path}: {INSTALL_HINT}") from None
    engine = EngineFromBytes(BytesFromPath(str(path)))


    def load_engine():
        try:
            return engine()
        except Exception as exc:
            raise FogreidError(f"{path}: TensorRT cannot deserialize this engine ({exc}). It is truncated, or was "
                               f"built by another TensorRT version or GPU (see {path.with_suffix('.json')}); "
                               f"rebuild it on this machine with `fogreid export` or trtexec_trt<major>.sh") from None
    inner = TrtRunner(load_engine, name=f"tensorrt:{path.name}")
    return ProfileBatchRunner(inner, lambda: engine_batch_range(inner.engine), name=f"tensorrt:{path.name}")


def engine_batch_range(engine, tensor: str = "frames", profile: int = 0) -> tuple[int, int]:
    """(min, max) batch of the engine's optimisation profile: ICudaEngine.get_tensor_profile_shape
    returns [min, opt, max] dims (TensorRT python/docstrings/infer/pyCoreDoc.h, 10.x)."""
    low, _, high = engine.get_tensor_profile_shape(tensor, profile)
    return int(low[0]), int(high[0])


def split_batch(n: int, low: int, high: int, what: str = "the engine") -> list[int]:
    """Chunk sizes for a batch of n rows on a profile that takes low..high rows per call: as
    few calls as possible, sizes as even as possible, every one inside the profile."""
    if n < low:
        raise FogreidError(f"{what} takes batches of {low} to {high} crops (its optimisation profile) and got {n}: "
                           f"pass at least {low} crops, or rebuild it with --batch 1:OPT:MAX")
    calls = -(-n // high)
    base, extra = divmod(n, calls)
    if base < low:
        raise FogreidError(f"{what} takes batches of {low} to {high} crops and {n} crops cannot be split into such "
                           f"batches: pass a multiple of {low}, or rebuild with --batch 1:OPT:MAX")
    return [base + 1] * extra + [base] * (calls - extra)


class ProfileBatchRunner(BaseRunner):
    """Wraps a runner whose engine takes only batches of low..high rows (a TensorRT
    optimisation profile): larger batches are split into calls the profile takes and the
    outputs concatenated; smaller ones are refused with a FogreidError instead of
    Polygraphy's raw exception. `batch_range()` is read once the runner is active."""

    def __init__(self, runner: BaseRunner, batch_range, name: str | None = None) -> None:
        super().__init__(name=name or runner.name, prefix="profile-runner")
        self.runner, self._batch_range = runner, batch_range
        self.low = self.high = None

    def activate_impl(self) -> None:
        self.runner.activate()
        self.low, self.high = self._batch_range()

    def get_input_metadata_impl(self):
        return self.runner.get_input_metadata(use_numpy_dtypes=False)

    def infer_impl(self, feed_dict):
        n = len(next(iter(feed_dict.values())))
        sizes = split_batch(n, self.low, self.high, self.name)
        start, chunks, self.inference_time = 0, [], 0.0
        for size in sizes:
            part = {k: np.ascontiguousarray(v[start:start + size]) for k, v in feed_dict.items()}
            # Copy: a runner may hand back views of buffers it reuses on the next call.
            chunks.append({k: np.array(v) for k, v in self.runner.infer(part, check_inputs=False).items()})
            self.inference_time += self.runner.inference_time or 0.0
            start += size
        return OrderedDict((k, np.concatenate([c[k] for c in chunks])) for k in chunks[0])

    def deactivate_impl(self) -> None:
        self.runner.deactivate()


class DeployedModel:
    """One call from uint8 crops (B, H, W, 3) BGR to (defogged (B, H, W, 3) uint8, embeddings (B, D));
    `embedding_only` (the runner was made so): (None, embeddings); `defogged_only`: (defogged, None)."""

    def __init__(self, runner: BaseRunner, path: str | Path | None = None, embedding_only: bool = False,
                 defogged_only: bool = False) -> None:
        self.runner, self.path, self.embedding_only, self.defogged_only = runner, path, embedding_only, defogged_only
        runner.activate()
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        if "frames" not in meta:
            runner.deactivate()
            raise FogreidError(f"{runner.name}: the model has no 'frames' input; export it with `fogreid export`")
        shape = meta["frames"].shape
        self.imgsz = (int(shape[1]), int(shape[2]))   # (height, width) of the crops it takes
        self.name = runner.name
        self.choice: str | None = None   # how `--backend auto` chose this engine, when it measured (auto_engine)

    @property
    def input_size(self) -> tuple[int, int]:
        """Deprecated: `imgsz`."""
        renamed("DeployedModel.input_size", "DeployedModel.imgsz")
        return self.imgsz

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        h, w = self.imgsz
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
            raise FogreidError(f"{self.name}: expected uint8 crops (B, {h}, {w}, 3) BGR, got "
                               f"{frames.dtype} {frames.shape}; resize with fogreid.data.image_io.resize_for_model")
        n = len(frames)
        low, high = getattr(self.runner, "low", None) or 1, getattr(self.runner, "high", None)
        padded = max(n, low) if low != high else -(-n // low) * low
        if padded > n:
            # An engine whose profile starts above 1 (a static DLA batch) takes `low` rows or a
            # multiple: pad with copies of the last crop and drop their outputs.
            frames = np.concatenate([frames, np.repeat(frames[-1:], padded - n, axis=0)])
        outputs = self.runner.infer({"frames": np.ascontiguousarray(frames)}, check_inputs=False)
        if self.defogged_only:
            return np.array(outputs["defogged"])[:n], None
        embedding = np.array(outputs["embedding"], dtype=np.float32)[:n]
        finite = np.isfinite(embedding).all(axis=1)
        if not finite.all():  # never passed on: NaN scores match nothing and break the events' JSON
            raise FogreidError(f"{self.path or self.name}: the model returned NaN or infinite embeddings for "
                               f"{int((~finite).sum())} of {n} crops; it is damaged or overflows at this precision: "
                               f"export it again (and `fogreid validate` it)")
        return None if self.embedding_only else np.array(outputs["defogged"])[:n], embedding

    def close(self) -> None:
        if self.runner.is_active:
            self.runner.deactivate()

    def __enter__(self) -> "DeployedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_deployed(path: str | Path, backend: str = "auto", device: str = "auto", batch: int | None = None,
                  probe=None, embedding_only: bool = False, defogged_only: bool = False) -> DeployedModel:
    """A deployed artifact (a .pt checkpoint, an .onnx file or a TensorRT engine) as a DeployedModel.
    With backend `auto`, an .onnx file on the CPU runs on the engine measured fastest here at
    `batch` crops a call (default 1) among ONNX Runtime and, if installed, OpenVINO
    (fogreid.runtime.auto_engine; `probe` replaces its timing function). `embedding_only`: for a
    caller that never looks at the defogged crop (DeployedModel returns None for it); on ONNX
    Runtime and OpenVINO only the embedding's part of the graph runs, a fraction of the call;
    `defogged_only`, the same for a caller that never looks at the embedding (None for it)."""
    model = DeployedModel(make_runner(path, backend, device, embedding_only, defogged_only, batch), path,
                          embedding_only, defogged_only)
    if backend != "auto":
        return model
    from fogreid.runtime.auto_engine import fastest_cpu_engine

    def open_openvino():
        return DeployedModel(make_runner(path, "openvino", "cpu", embedding_only, defogged_only, batch), path,
                             embedding_only, defogged_only)

    return fastest_cpu_engine(model, path, open_openvino, device, batch, probe)


def load_model(path: str | Path, backend: str = "auto", device: str = "auto", batch: int | None = None
               ) -> DeployedModel:
    """Deprecated: `load_deployed` (fogreid.model.load_network reads a checkpoint into a network)."""
    renamed("fogreid.runtime.load_model", "fogreid.runtime.load_deployed")
    return load_deployed(path, backend, device, batch)
