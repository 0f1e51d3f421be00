"""`--format triton`: a model repository for Triton Inference Server.

    OUT/triton/
      fogreid/                       the fused ONNX on Triton's ONNX Runtime backend
        config.pbtxt                 GPU and CPU instance groups, dynamic batching; GPU instances
                                     hand the graph to TensorRT (FP16, or INT8 with our table)
        1/model.onnx
        trt_cache/calibration.cache  INT8 only: TensorRT's own calibration table
      fogreid_engine_fp16/           one per TensorRT engine built by this export
        config.pbtxt                 platform tensorrt_plan, the engine's batch profile
        1/model.plan
        fogreid.json                 which checkpoint, input size, embedding size

Layout and keys follow Triton's model_config.proto and the ONNX Runtime backend's README
(triton-inference-server/server docs/user_guide/model_configuration.md;
triton-inference-server/onnxruntime_backend README.md, "ONNX Runtime with TensorRT
optimization"). With `max_batch_size > 0` the dims leave out the batch dimension.

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

from fogreid.fileio import atomic_write

ONNX_MODEL = "fogreid"
TRT_CACHE = "trt_cache"
QUEUE_DELAY_US = 2000   # how long a request may wait for others to fill a batch (adds to latency)


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str        # Triton's enum name: TYPE_UINT8, TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension


def io_tensors(input_size: tuple[int, int], embedding_dim: int) -> tuple[list[Tensor], list[Tensor]]:
    """The fused graph's contract (fogreid/onnx_graph.py), without the batch dimension."""
    h, w = input_size
    return ([Tensor("frames", "TYPE_UINT8", (h, w, 3))],
            [Tensor("defogged", "TYPE_UINT8", (h, w, 3)), Tensor("embedding", "TYPE_FP32", (embedding_dim,))])


def _tensor_block(kind: str, tensors: list[Tensor]) -> str:
    items = ",\n".join(f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {", ".join(map(str, t.dims))} ]\n  }}'
                       for t in tensors)
    return f"{kind} [\n{items}\n]\n"


def _batching(batch: tuple[int, int, int]) -> str:
    preferred = sorted({batch[1], batch[2]})
    return (f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n")


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'      parameters {{ key: "{k}" value: "{v}" }}\n' for k, v in params.items())


def onnx_config(input_size: tuple[int, int], embedding_dim: int, batch: tuple[int, int, int], precision: str,
                calibration_table: str | None, cache_path: str, workspace_bytes: int) -> str:
    """config.pbtxt of the ONNX Runtime model. `precision` is the TensorRT accelerator's
    (FP16 or INT8); INT8 reads TensorRT's native calibration table from `cache_path`."""
    inputs, outputs = io_tensors(input_size, embedding_dim)
    trt = {"precision_mode": precision, "max_workspace_size_bytes": str(workspace_bytes),
           "trt_engine_cache_enable": "1", "trt_engine_cache_path": cache_path}
    if precision == "INT8":
        # Our table is written in TensorRT's own format (calibration/trt_cache.py), hence "native".
        trt.update(int8_calibration_table_name=calibration_table, int8_use_native_calibration_table="1")
    h, w = input_size
    profile = {f"trt_profile_{name}_shapes": f"frames:{b}x{h}x{w}x3"
               for name, b in zip(("min", "opt", "max"), batch)}
    trt.update(profile)
    return (f'name: "{ONNX_MODEL}"\nbackend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
            f"max_batch_size: {batch[2]}\n" + _tensor_block("input", inputs) + _tensor_block("output", outputs)
            + _batching(batch)
            + "instance_group [\n  { count: 1\n    kind: KIND_GPU },\n  { count: 1\n    kind: KIND_CPU }\n]\n"
            + "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [ {\n"
            + '      name: "tensorrt"\n' + _parameters(trt) + "    } ]\n  }\n}\n")


def plan_config(name: str, input_size: tuple[int, int], embedding_dim: int, batch: tuple[int, int, int],
                compute_capability: str | None) -> str:
    """config.pbtxt of a TensorRT engine. A plan runs only on the compute capability that
    built it; `cc_model_filenames` says which one, so Triton refuses other GPUs plainly."""
    inputs, outputs = io_tensors(input_size, embedding_dim)
    cc = (f'cc_model_filenames [\n  {{ key: "{compute_capability}"\n    value: "model.plan" }}\n]\n'
          if compute_capability and compute_capability != "unknown" else "")
    return (f'name: "{name}"\nplatform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n' + cc
            + f"max_batch_size: {batch[2]}\n" + _tensor_block("input", inputs) + _tensor_block("output", outputs)
            + _batching(batch) + "instance_group [\n  { count: 1\n    kind: KIND_GPU }\n]\n")


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, atomic_write(dst) as handle:
        shutil.copyfileobj(source, handle)


def write_repository(out: str | Path, onnx: Path, input_size: tuple[int, int], embedding_dim: int,
                     batch: tuple[int, int, int], identity: dict, calibration_cache: Path | None = None,
                     engines: dict[str, tuple[Path, dict]] | None = None, workspace_gib: float = 4.0,
                     mount: str = "/models") -> dict[str, Path]:
    """Write the repository under `out`; returns {model name: its config.pbtxt}.

    `engines` maps an export format name (engine-fp16) to (engine file, sidecar record)."""
    repo = Path(out)
    configs: dict[str, Path] = {}
    int8 = calibration_cache is not None
    model_dir = repo / ONNX_MODEL
    _copy(onnx, model_dir / "1" / "model.onnx")
    if int8:
        _copy(calibration_cache, model_dir / TRT_CACHE / calibration_cache.name)
    text = onnx_config(input_size, embedding_dim, batch, "INT8" if int8 else "FP16",
                       calibration_cache.name if int8 else None, f"{mount.rstrip('/')}/{ONNX_MODEL}/{TRT_CACHE}",
                       int(workspace_gib * (1 << 30)))
    with atomic_write(model_dir / "config.pbtxt", "w") as handle:
        handle.write(text)
    configs[ONNX_MODEL] = model_dir / "config.pbtxt"
    for fmt, (engine, record) in (engines or {}).items():
        name = f"{ONNX_MODEL}_{fmt.replace('-', '_')}"
        _copy(engine, repo / name / "1" / "model.plan")
        profile = tuple(record.get("batch", batch))
        with atomic_write(repo / name / "config.pbtxt", "w") as handle:
            handle.write(plan_config(name, input_size, embedding_dim, profile, record.get("compute_capability")))
        configs[name] = repo / name / "config.pbtxt"
    with atomic_write(model_dir / "fogreid.json", "w") as handle:
        json.dump({**identity, "models": sorted(configs), "mount": mount}, handle, indent=2)
    return configs
