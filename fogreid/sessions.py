"""The one place fogreid opens an ONNX Runtime session or compiles an OpenVINO model.
ONNX Runtime's provider rule, which every caller shares: `auto` takes the best provider that
really creates a session here (onnxruntime-gpu lists CUDA even on machines without a GPU); a
named device never falls back to another one, because figures measured on the CPU when a GPU
was asked for would be wrong without a word.

A ground-floor module: it imports nothing of fogreid but its errors, so runtime, validation,
calibration and export can all use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from fogreid.errors import EnvironmentProblem, FogreidError

ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def only_outputs(path: str | Path, outputs: list[str]) -> bytes:
    """The ONNX file cut down to the nodes that `outputs` read (onnx.utils.Extractor), serialised.
    Neither engine skips the nodes of an output nobody asked for: ONNX Runtime runs the whole
    graph whatever `run` fetches, OpenVINO computes every result. The fused graph's defog head
    works at the crop's full resolution, so a caller that needs only the embedding saves most of
    each call (docs/benchmarks.md, Streams)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    inputs = [i.name for i in model.graph.input]
    return Extractor(model).extract_model(inputs, list(outputs)).SerializeToString()


def onnxruntime_session(path: str | Path, device: str = "auto", outputs: list[str] | None = None):
    """An InferenceSession on the best provider that really works here; with `outputs`, of the
    graph cut down to them (`only_outputs`)."""
    import onnxruntime as ort

    model = str(path) if outputs is None else only_outputs(path, outputs)

    available = ort.get_available_providers()
    wanted = {"auto": list(ORT_PROVIDERS), "cpu": ["CPUExecutionProvider"],
              "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": list(ORT_PROVIDERS)}.get(device.split(":")[0])
    if wanted is None:
        raise FogreidError(f"--device {device}: choose auto, cpu, cuda or tensorrt for ONNX Runtime")
    if device != "auto" and wanted[0] not in available:
        # Never run on the CPU when a GPU was asked for: the figures would be the CPU's, silently.
        raise EnvironmentProblem(f"--device {device}: this ONNX Runtime has no {wanted[0]} (it has "
                                 f"{', '.join(available)}); install onnxruntime-gpu (README, Install) "
                                 "or use --device cpu")
    errors = []
    for first in [p for p in wanted if p in available][:None if device == "auto" else 1]:
        providers = [p for p in wanted[wanted.index(first):] if p in available]
        try:
            session = ort.InferenceSession(model, cpu_options(ort) if providers == ["CPUExecutionProvider"]
                                           else None, providers=providers)
        except Exception as exc:  # a provider whose libraries are missing fails here, not in the list
            errors.append(f"{first}: {str(exc).splitlines()[0][:160]}")
            continue
        if device == "auto" or session.get_providers()[0] == first:
            return session
        errors.append(f"{first}: fell back to {session.get_providers()[0]}")
    # A named GPU provider that is listed but cannot run here (onnxruntime-gpu on a machine without
    # the GPU or its libraries) is the machine's problem; a file that not even the CPU opens, the user's.
    machine = device != "auto" and wanted[0] != "CPUExecutionProvider"
    raise (EnvironmentProblem if machine else FogreidError)(
        f"ONNX Runtime could not open {path} on {device}: {'; '.join(errors) or 'no provider'}")


def cpu_options(ort):
    """SessionOptions of a CPU-only session: intra-op threads that sleep between ops instead of
    spinning (ONNX Runtime's default). Spinning threads take the cores from the threads that have
    work whenever the cores are shared, and `fogreid run`'s stages (decoding, detector, ReID,
    writing) share them by design: on the 2-core development VM with other jobs running (load
    average 3.6), every call of the demo's FP32 and INT8 files at batch 1 and 8 took 1.7-2.4x
    longer with spinning (docs/benchmarks.md, CPU engines)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


OPENVINO_HINT = "OpenVINO is not installed: `pip install 'fogreid[openvino]'` (x86 and ARM CPUs, Intel GPUs and NPUs)"


def openvino_model(path: str | Path, device: str = "CPU", outputs: list[str] | None = None):
    """An OpenVINO CompiledModel of an ONNX file; with `outputs`, of the model cut down to those
    results (an ov.Model of their Result nodes and the same parameters: what they do not read is
    dropped). The CPU plugin is pinned to f32: its INFERENCE_PRECISION_HINT defaults to bf16 on
    CPUs with AMX / AVX-512 BF16, which would make a second engine's reading of an FP32 or INT8
    file differ for a reason of its own."""
    return openvino_models(path, device, outputs)[0]


def openvino_models(path: str | Path, device: str = "CPU", outputs: list[str] | None = None,
                    batch: int | None = None) -> tuple:
    """(`openvino_model`'s CompiledModel, for any batch, and with `batch` a second one for calls of
    exactly `batch` rows, its batch dimension made static; else None), both made by one Core.

    Why a static batch: OpenVINO's CPU device guide says dynamic shapes "may limit internal
    runtime optimizations" (its section Dynamic Shapes, 2023 documentation). Here (OpenVINO
    2026.4.1) its CPU plugin fused the defog head's chains of element-wise ops into JIT kernels
    ("Subgraph") only when the shapes were static; with the batch dynamic they ran op by op, and
    a fresh 128 px edge model's calls took 1.22-1.24x (FP32) and 1.32-1.44x (INT8) as long at
    batch 1-16 (docs/benchmarks.md, OpenVINO at the caller's batch).

    Why one Core for both: made by a Core each (a Core per call, as fogreid made one per runner),
    a process that had run OpenVINO died later with SIGSEGV, sent by the kernel to its main
    thread during the torch training or the stream that followed (`fogreid demo --quick`, 6 of 6
    runs). A Core for the whole process instead left a `fogreid run` forked from it hanging
    (tests/test_battery.py): the child has the parent's Core but not its threads. (Or the hang
    was OpenVINO's telemetry child, found later: `import_openvino`; a Core per process was not
    tried again.)"""
    ov, core, config = _openvino_core(device)
    try:
        model = core.read_model(str(path))
        if outputs is not None:
            model = ov.Model([model.output(name).get_node() for name in outputs], model.get_parameters(),
                             model.get_friendly_name())
        any_batch = core.compile_model(model, device, config)
        if batch is None:
            return any_batch, None
        frames = model.input("frames")
        shape = frames.get_partial_shape()
        shape[0] = batch
        model.reshape({frames.get_any_name(): shape})
        return any_batch, core.compile_model(model, device, config)
    except Exception as exc:
        raise _cannot_compile(ov, path, device, exc) from None


def openvino_compiler(path: str | Path, device: str = "CPU"):
    """A function: an input shape -> the file compiled by OpenVINO with its `frames` input made
    that static shape (all its dimensions: a camera's frames keep one size; OpenVINO's CPU plugin
    fuses element-wise chains only where shapes are static, `openvino_models`). One Core, the
    file read once, for every shape asked (a Core per compiled model crashed, `openvino_models`)."""
    ov, core, config = _openvino_core(device)
    try:
        model = core.read_model(str(path))
    except Exception as exc:
        raise _cannot_compile(ov, path, device, exc) from None
    name = model.input("frames").get_any_name()

    def compile_for(shape: tuple[int, ...]):
        try:
            model.reshape({name: ov.PartialShape(list(shape))})
            return core.compile_model(model, device, config)
        except Exception as exc:
            raise _cannot_compile(ov, path, device, exc) from None

    return compile_for


def import_openvino():
    """`import openvino` without its telemetry; every fogreid import of OpenVINO goes through here.

    OpenVINO's package reports its own import to Google Analytics, unless a consent file in the
    user's home says no (openvino/tools/ovc/__init__.py: `telemetry.send_event("ov", "import",
    "general_import")`, on a worker thread). On Linux the sender forks a multiprocessing child to
    make the request (openvino_telemetry/backend/backend_ga4.py, `GA4Backend.send`), from that
    thread, while the process's other threads run. In `fogreid run` the child was once forked
    while another thread held Python's import lock and waited for it forever; it had inherited
    fogreid's SIGTERM handler, so the sender's terminate() did not end it, and multiprocessing's
    exit handler then waited for the child forever (a quick demo's stream step hung at its end;
    py-spy of the child: `GA4Backend.send` ... `_ModuleLock.acquire`). OpenVINO falls back to a
    stub that sends nothing when `openvino_telemetry` cannot be imported
    (openvino/tools/ovc/telemetry_utils.py), so fogreid makes that import fail in its own
    processes. A camera box running fogreid has no business reporting to an analytics service."""
    import sys

    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)   # None: `import openvino_telemetry` raises ImportError
    try:
        import openvino
    except ImportError:
        raise EnvironmentProblem(OPENVINO_HINT) from None
    return openvino


def _openvino_core(device: str) -> tuple:
    """(the openvino module, a Core that has `device`, its compile config: f32 on the CPU)."""
    ov = import_openvino()
    core = ov.Core()
    if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
        raise EnvironmentProblem(f"--device {device.lower()}: OpenVINO sees only "
                                 f"{', '.join(core.available_devices)} on this machine")
    return ov, core, ({"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {})


def _cannot_compile(ov, path: str | Path, device: str, exc: Exception) -> FogreidError:
    return FogreidError(f"{path}: OpenVINO {ov.get_version().split('-')[0]} cannot compile this model on "
                        f"{device} ({str(exc).strip().splitlines()[-1][:200]})")
