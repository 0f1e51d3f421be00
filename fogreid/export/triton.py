"""`--format triton`: a model repository for Triton Inference Server.

    OUT/triton/
      fogreid/                       Triton's ONNX Runtime backend, GPU and CPU instance groups,
        config.pbtxt                 dynamic batching; GPU instances hand the graph to TensorRT
        1/model.onnx                 FP16: model_fp16.onnx; INT8: TensorRT 10 the FP32 graph +
        trt_cache/calibration.cache  TensorRT's own calibration table, TensorRT 11 the Q/DQ model
        fogreid.json                 which checkpoint, input size, embedding size, what is served
      fogreid_engine_fp16/           one per TensorRT engine built by this export
        config.pbtxt                 platform tensorrt_plan, batching only as the engine's profile allows
        1/model.plan

Layout and keys follow Triton's model_config.proto and the ONNX Runtime backend
(triton-inference-server/server docs/user_guide/model_configuration.md; onnxruntime_backend
README.md, "ONNX Runtime with TensorRT optimization", and src/onnxruntime.cc, which maps each
accelerator parameter to one TensorRT provider option). With `max_batch_size > 0` the dims
leave out the batch dimension.

The ONNX Runtime TensorRT provider reads the calibration table from its engine cache
folder (`trt_engine_cache_path` + `int8_calibration_table_name`), an absolute path on the
server: the config assumes the repository is mounted at `/models`, as in Triton's own
quick start (`docker run -v $PWD/triton:/models ... tritonserver --model-repository=/models`);
`write_repository(mount=...)` changes it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fogreid.calibration.trt_cache import cache_version, read_cache
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write
from fogreid.tensorrt_version import DEFAULT_TRT_VERSION

ONNX_MODEL = "fogreid"
TRT_CACHE = "trt_cache"
QUEUE_DELAY_US = 2000   # how long a request may wait for others to fill a batch (adds to latency)

# Why each served graph and precision_mode, written into config.pbtxt as comments. The backend's
# precision_mode takes one value and sets one provider option (src/onnxruntime.cc: FP16 ->
# trt_fp16_enable, INT8 -> trt_int8_enable; no other precision key, no per-layer key).
WHY = {
    ("fp16", 10): "model.onnx is model_fp16.onnx: FP16, with InstanceNorm and the embedding tail (BNNeck + L2 norm) "
                  "kept FP32 by Casts. precision_mode FP16 has TensorRT 10 build weakly typed, where nothing pins "
                  "those Casts (the backend has no per-layer precision key): the strongly typed engine-fp16 plan "
                  "is the build that guarantees them.",
    ("fp16", 11): "model.onnx is model_fp16.onnx: FP16, with InstanceNorm and the embedding tail (BNNeck + L2 norm) "
                  "kept FP32 by Casts. TensorRT 11 builds every network strongly typed and has no precision flags, "
                  "so the file's types are the engine's: no precision_mode.",
    ("int8", 10): "INT8 the implicit way (TensorRT 10 only): the FP32 graph + TensorRT's calibration table, which "
                  "holds exactly the Q/DQ model's quantised tensors and scales. precision_mode INT8 sets only "
                  "trt_int8_enable: every layer without a scale runs FP32, not FP16.",
    ("int8", 11): "model.onnx is the Q/DQ model (model_int8.onnx): TensorRT 11 has no implicit INT8 (no calibrator, "
                  "no calibration table) and builds strongly typed, so its Q/DQ nodes make the INT8 layers and the "
                  "rest runs FP32 as in the file. No precision_mode: TensorRT 11 has no precision flags.",
}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str        # Triton's enum name: TYPE_UINT8, TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension


def io_tensors(imgsz: tuple[int, int], embedding_dim: int) -> tuple[list[Tensor], list[Tensor]]:
    """The fused graph's contract (fogreid/onnx_graph.py), without the batch dimension."""
    h, w = imgsz
    return ([Tensor("frames", "TYPE_UINT8", (h, w, 3))],
            [Tensor("defogged", "TYPE_UINT8", (h, w, 3)), Tensor("embedding", "TYPE_FP32", (embedding_dim,))])


def _tensor_block(kind: str, tensors: list[Tensor], batch_dim: int | None = None) -> str:
    """`batch_dim`: for max_batch_size 0 the dims carry the batch dimension themselves."""
    def dims(t):
        return ((batch_dim,) if batch_dim is not None else ()) + t.dims

    items = ",\n".join(f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n'
                       f'    dims: [ {", ".join(map(str, dims(t)))} ]\n  }}'
                       for t in tensors)
    return f"{kind} [\n{items}\n]\n"


def _batching(batch: tuple[int, int, int]) -> str:
    preferred = sorted({batch[1], batch[2]})
    return (f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n")


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'      parameters {{ key: "{k}" value: "{v}" }}\n' for k, v in params.items())


def _comment(text: str) -> str:
    import textwrap

    return "".join(f"# {line}\n" for line in textwrap.wrap(text, 100))


def onnx_config(imgsz: tuple[int, int], embedding_dim: int, batch: tuple[int, int, int], precision: str | None,
                calibration_table: str | None, cache_path: str, workspace_bytes: int, why: str = "") -> str:
    """config.pbtxt of the ONNX Runtime model. `precision` is the TensorRT accelerator's
    precision_mode (FP16, INT8, or None: no precision flag, as on TensorRT 11); INT8 with a
    table reads TensorRT's native calibration table from `cache_path`."""
    inputs, outputs = io_tensors(imgsz, embedding_dim)
    trt = {"max_workspace_size_bytes": str(workspace_bytes), "trt_engine_cache_enable": "1",
           "trt_engine_cache_path": cache_path}
    if precision:
        trt = {"precision_mode": precision, **trt}
    if calibration_table:
        # Our table is written in TensorRT's own format (calibration/trt_cache.py), hence "native".
        trt.update(int8_calibration_table_name=calibration_table, int8_use_native_calibration_table="1")
    h, w = imgsz
    # The dynamic batcher forms batches of 1 to max_batch_size, so TensorRT's profile starts at 1.
    profile = {f"trt_profile_{name}_shapes": f"frames:{b}x{h}x{w}x3"
               for name, b in zip(("min", "opt", "max"), (1, batch[1], batch[2]), strict=True)}
    trt.update(profile)
    return (_comment(why) + f'name: "{ONNX_MODEL}"\nbackend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
            f"max_batch_size: {batch[2]}\n" + _tensor_block("input", inputs) + _tensor_block("output", outputs)
            + _batching(batch)
            + "instance_group [\n  { count: 1\n    kind: KIND_GPU },\n  { count: 1\n    kind: KIND_CPU }\n]\n"
            + "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [ {\n"
            + '      name: "tensorrt"\n' + _parameters(trt) + "    } ]\n  }\n}\n")


def plan_config(name: str, imgsz: tuple[int, int], embedding_dim: int, batch: tuple[int, int, int],
                compute_capability: str | None) -> str:
    """config.pbtxt of a TensorRT engine. A plan runs only on the compute capability that built
    it; `cc_model_filenames` records which one. It does not keep other GPUs away: for a GPU it
    does not list, Triton falls back to `default_model_filename` (tensorrt_backend
    src/model_state.cc), the same plan, which TensorRT then refuses to deserialise.

    Triton batches only within the engine's profile: the TensorRT backend rejects a batch
    outside [min, max] of the profile (src/instance_state.cc -> ValidateDimension,
    src/tensorrt_utils.cc) and the dynamic batcher forms batches of 1 to max_batch_size, so
    batching is configured only for a profile that starts at 1. Otherwise (a DLA engine's
    static B:B:B profile) max_batch_size is 0: clients send whole batches of the profile's size."""
    inputs, outputs = io_tensors(imgsz, embedding_dim)
    cc = (f'cc_model_filenames [\n  {{ key: "{compute_capability}"\n    value: "model.plan" }}\n]\n'
          if compute_capability and compute_capability != "unknown" else "")
    head = f'name: "{name}"\nplatform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n' + cc
    low, _, high = batch
    if low == 1:
        return (head + f"max_batch_size: {high}\n" + _tensor_block("input", inputs) + _tensor_block("output", outputs)
                + _batching(batch) + "instance_group [\n  { count: 1\n    kind: KIND_GPU }\n]\n")
    size = high if low == high else -1
    why = (f"The engine's profile takes batches of {low} to {high} only (a DLA engine's is static), and Triton's "
           f"dynamic batcher would send batches from 1 up, which the TensorRT backend rejects: no Triton batching "
           f"(max_batch_size 0); each request carries a whole batch of {low if low == high else f'{low} to {high}'}.")
    return (_comment(why) + head + "max_batch_size: 0\n" + _tensor_block("input", inputs, size)
            + _tensor_block("output", outputs, size) + "instance_group [\n  { count: 1\n    kind: KIND_GPU }\n]\n")


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as handle:
        shutil.copyfileobj(source, handle)


def write_repository(out: str | Path, onnx: Path, imgsz: tuple[int, int], embedding_dim: int,
                     batch: tuple[int, int, int], identity: dict, calibration_cache: Path | None = None,
                     engines: dict[str, tuple[Path, dict]] | None = None, workspace_gib: float = 4.0,
                     mount: str = "/models", trt_version: tuple[int, int, int] | None = None,
                     qdq_onnx: Path | None = None) -> dict[str, Path]:
    """Write the repository under `out`; returns {model name: its config.pbtxt}.

    `onnx` is the FP32 fused graph; a calibration cache makes the ONNX Runtime model INT8.
    `trt_version`: the TensorRT of the Triton container (default: the one the cache was written
    for, else 10.3.0). `qdq_onnx`: the Q/DQ model served on TensorRT 11 (default: calibrate's
    MODEL_int8.onnx beside the cache). `engines` maps an export format name (engine-fp16) to
    (engine file, sidecar record)."""
    from fogreid import onnx_graph

    repo = Path(out)
    configs: dict[str, Path] = {}
    int8 = calibration_cache is not None
    if trt_version is None:
        trt_version = (cache_version(read_cache(calibration_cache)[0]) if int8 else None) or DEFAULT_TRT_VERSION
    major = 11 if trt_version[0] >= 11 else 10
    model_dir = repo / ONNX_MODEL
    served, table, precision = "model_fp16.onnx", None, "FP16" if major == 10 else None
    if int8 and major == 10:
        served, table, precision = onnx.name, calibration_cache.name, "INT8"
        _copy(onnx, model_dir / "1" / "model.onnx")
        _copy(calibration_cache, model_dir / TRT_CACHE / table)
    elif int8:
        qdq = Path(qdq_onnx) if qdq_onnx else calibration_cache.parent / f"{Path(onnx).stem}_int8.onnx"
        if not qdq.is_file():
            raise FogreidError(f"{qdq}: Triton INT8 on TensorRT {'.'.join(map(str, trt_version))} serves the Q/DQ "
                               f"model (no implicit INT8 in TensorRT 11); export the onnx-int8 format with it")
        served, precision = qdq.name, None
        _copy(qdq, model_dir / "1" / "model.onnx")
    else:
        half = onnx_graph.to_fp16(onnx_graph.load(onnx))
        onnx_graph.set_metadata(half, {"precision": "fp16"})
        onnx_graph.save(half, model_dir / "1" / "model.onnx")
    text = onnx_config(imgsz, embedding_dim, batch, precision, table,
                       f"{mount.rstrip('/')}/{ONNX_MODEL}/{TRT_CACHE}", int(workspace_gib * (1 << 30)),
                       WHY[("int8" if int8 else "fp16", major)])
    with atomic_write(model_dir / "config.pbtxt", "w") as handle:
        handle.write(text)
    configs[ONNX_MODEL] = model_dir / "config.pbtxt"
    for fmt, (engine, record) in (engines or {}).items():
        name = f"{ONNX_MODEL}_{fmt.replace('-', '_')}"
        _copy(engine, repo / name / "1" / "model.plan")
        profile = tuple(record.get("batch", batch))
        with atomic_write(repo / name / "config.pbtxt", "w") as handle:
            handle.write(plan_config(name, imgsz, embedding_dim, profile, record.get("compute_capability")))
        configs[name] = repo / name / "config.pbtxt"
    with atomic_write(model_dir / "fogreid.json", "w") as handle:
        json.dump({**identity, "models": sorted(configs), "mount": mount, "served_onnx": served,
                   "tensorrt_version": ".".join(map(str, trt_version))}, handle, indent=2)
    return configs
