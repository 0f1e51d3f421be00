"""The fused deploy graph as ONNX: export, FP16 conversion, metadata.

Every ONNX file fogreid writes has one input `frames` uint8 (B, H, W, 3) BGR with a
dynamic batch, and two outputs `defogged` uint8 (B, H, W, 3) BGR and `embedding`
float32 (B, D), whatever its internal precision. Weights are stored inside the one file.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import onnx

from fogreid import __version__
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write

INPUT, OUTPUTS = "frames", ("defogged", "embedding")
OPSET = 19  # DeformConv needs opset >= 19 (torch's torch.export-based exporter)


def export_onnx(model, path: str | Path, metadata: dict[str, str], max_batch: int = 256) -> Path:
    """Export a `FusedDefogReID` to `path` (one file), fold constants and check it."""
    import torch

    h, w = model.imgsz
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, input_names=[INPUT],
                                    output_names=list(OUTPUTS), dynamic_shapes={"frames": {0: batch}},
                                    opset_version=OPSET, optimize=True, verbose=False)
    proto = program.model_proto
    name_nodes_by_module(proto)
    proto = fold_and_check(proto)
    proto.producer_name, proto.producer_version = "fogreid", __version__
    set_metadata(proto, metadata)
    save(proto, path)
    return Path(path)


def name_nodes_by_module(proto: onnx.ModelProto) -> None:
    """Name each node after the PyTorch module it came from, e.g.
    `net.backbone.layer4.1.conv2/Conv`, so TensorRT layer names, per-layer reports and
    --keep-fp lists read like the model code. Drops the exporter's per-node metadata
    (stack traces with local paths), which graph surgery would lose anyway."""
    import ast

    taken: dict[str, int] = {}
    for node in proto.graph.node:
        meta = {m.key: m.value for m in node.metadata_props}
        scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]) if "pkg.torch.onnx.name_scopes" in meta else []
        module = scopes[-2] if len(scopes) >= 2 and scopes[-2] else "graph"
        base = f"{module}/{node.op_type}"
        taken[base] = taken.get(base, 0) + 1
        node.name = base if taken[base] == 1 else f"{base}_{taken[base] - 1}"
        del node.metadata_props[:]


def fold_and_check(proto: onnx.ModelProto) -> onnx.ModelProto:
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # Polygraphy's progress notes are not the user's concern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = fold_constants(proto, num_passes=2)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    onnx.checker.check_model(proto, full_check=True)
    return proto


# Kept in FP32 inside the FP16 graph: InstanceNormalization (IBN's half-channel instance norm:
# its variance over a whole feature map loses precision in FP16, microsoft/onnxruntime#10079)
# and the embedding tail from the pooled feature on (BNNeck and L2 norm: the BNNeck scales
# small differences of a large mean by 10-200x, and the squared sum of the norm overflows
# FP16's 65504 for large features). Measured on a trained checkpoint in tests/test_export.py.
FP16_BLOCKED_OPS = ["InstanceNormalization"]
EMBEDDING_TAIL_OPS = {"BatchNormalization", "Mul", "ReduceSum", "ReduceL2", "Sqrt", "Clip", "Max", "Div",
                      "Expand", "Pow", "Flatten", "Reshape", "Squeeze", "Identity"}


def embedding_tail(proto: onnx.ModelProto, output: str = "embedding") -> list[str]:
    """Names of the nodes from the embedding output back to the pooled feature: the L2 norm
    and the BNNeck (walking producers while they are elementwise/normalisation ops)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    initializers = {t.name for t in proto.graph.initializer}
    tail, stack, seen = [], [output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type not in EMBEDDING_TAIL_OPS:
            continue
        seen.add(node.name)
        tail.append(node.name)
        stack.extend(t for t in node.input if t and t not in initializers)
    return tail


def to_fp16(proto: onnx.ModelProto, keep_fp32: bool = True) -> onnx.ModelProto:
    """FP16 weights and compute, uint8 / float32 I/O kept (what TensorRT's strongly typed
    builds and ONNX Runtime's CUDA provider want), with the numerically fragile ops in FP32
    (`keep_fp32`). ONNX Runtime's own converter, because onnxconverter-common's breaks on
    graphs that start with a uint8 Cast."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    blocked_nodes = []
    if keep_fp32:
        blocked_nodes = embedding_tail(proto) + [n.name for n in proto.graph.node if n.op_type in FP16_BLOCKED_OPS]
    if blocked_nodes:
        proto = _fence_inputs(proto, blocked_nodes)
        blocked_nodes = blocked_nodes + [f"{name}/fp32_in" for name in blocked_nodes]
        # The converter takes every float value_info for FP16, also between two blocked nodes,
        # and would cast FP32 to FP32 there under FP16 names: drop those value_infos.
        blocked = set(blocked_nodes)
        consumers: dict[str, set[str]] = {}
        for node in proto.graph.node:
            for tensor in node.input:
                consumers.setdefault(tensor, set()).add(node.name)
        inside = {out for node in proto.graph.node if node.name in blocked for out in node.output
                  if consumers.get(out) and consumers[out] <= blocked}
        keep = [v for v in proto.graph.value_info if v.name not in inside]
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=bool(blocked_nodes),
                                        op_block_list=[], node_block_list=blocked_nodes)
    half = toposort(half)  # the converter appends the Casts it inserts around blocked nodes
    onnx.checker.check_model(half, full_check=True)
    return half


def _fence_inputs(proto: onnx.ModelProto, blocked: list[str]) -> onnx.ModelProto:
    """Give every input that enters the blocked region from outside one Identity of its own
    (blocked too), and every blocked node its own copy of the initializers it reads, so ONNX
    Runtime's converter inserts at most one Cast per tensor: it names its Casts after the
    tensor and would otherwise emit duplicates when a tensor feeds two blocked inputs (the L2
    norm's `x * x`, or one constant shared by several instance norms), which breaks SSA form."""
    proto = copy.deepcopy(proto)
    names = set(blocked)
    produced_inside = {out for node in proto.graph.node if node.name in names for out in node.output}
    initializers = {t.name: t for t in proto.graph.initializer}
    fences: dict[str, str] = {}
    new_nodes, copies = [], []
    for node in proto.graph.node:
        if node.name in names:
            for i, tensor in enumerate(node.input):
                if tensor in initializers:
                    own = copy.deepcopy(initializers[tensor])
                    own.name = f"{node.name}/{i}/fp32"
                    copies.append(own)
                    node.input[i] = own.name
                    continue
                if not tensor or tensor in produced_inside:
                    continue
                if tensor not in fences:
                    fences[tensor] = f"{tensor}_fp32_fence"
                    new_nodes.append(onnx.helper.make_node("Identity", [tensor], [fences[tensor]],
                                                          name=f"{node.name}/fp32_in"))
                node.input[i] = fences[tensor]
    proto.graph.node.extend(new_nodes)
    proto.graph.initializer.extend(copies)
    return toposort(proto)


def toposort(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(proto)
    graph.cleanup().toposort()
    sorted_proto = gs.export_onnx(graph, do_type_check=False)
    sorted_proto.metadata_props.extend(proto.metadata_props)
    sorted_proto.ir_version, sorted_proto.producer_name = proto.ir_version, proto.producer_name
    sorted_proto.producer_version = proto.producer_version
    del sorted_proto.opset_import[:]
    sorted_proto.opset_import.extend(proto.opset_import)
    return sorted_proto


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    proto = load(path, load_weights=False)
    return {p.key: p.value for p in proto.metadata_props}


def deploy_metadata(net, checkpoint_sha256: str, precision: str) -> dict[str, str]:
    from dataclasses import asdict

    h, w = net.config.imgsz
    return {"fogreid_version": __version__, "precision": precision, "input": f"{INPUT}: uint8 (B,{h},{w},3) BGR",
            "input_size": f"{h},{w}", "embedding_dim": str(net.embedding_dim),
            "checkpoint_sha256": checkpoint_sha256, "model_config": json.dumps(asdict(net.config))}


def load(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    """The model, its weights checked finite (`check_finite`)."""
    from fogreid.file_kinds import expect

    path = Path(path)
    expect(path, "", "onnx", "ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:
        first = next(iter(str(exc).splitlines()), "")[:160]
        raise FogreidError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {first}); the file is cut "
                           f"short or damaged: re-export it with `fogreid export`") from None
    check_finite(proto, path)
    return proto


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def check_finite(proto: onnx.ModelProto, path: str | Path = "model") -> None:
    """Every float initializer (and Constant) of the graph is finite: a NaN weight makes every
    output NaN, and the model still loads, benchmarks and matches (NaN scores) without a word.
    Weights stored outside the file and not loaded are skipped. About 0.1 s per 100 MB."""
    import numpy as np
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in proto.graph.initializer]
    tensors += [(node.name or node.output[0], attr.t) for node in proto.graph.node if node.op_type == "Constant"
                for attr in node.attribute if attr.name == "value"]
    for name, tensor in tensors:
        if tensor.data_type not in FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # malformed tensor data: onnx.checker and the runtime say so in their words
            continue
        finite = np.isfinite(values.astype(np.float32, copy=False))
        if not finite.all():
            raise FogreidError(f"{path}: weight {name} holds {int(finite.size - finite.sum())} NaN or infinite "
                               f"value(s) of {finite.size}; the model is damaged or was exported from a broken "
                               f"checkpoint: export it again from a good one")


def imgsz(proto: onnx.ModelProto, path: str | Path = "model") -> tuple[int, int]:
    """(H, W) of the `frames` input; an error if this is not a fogreid-style graph."""
    inputs = [i for i in proto.graph.input if i.name == INPUT]
    if not inputs:
        raise FogreidError(f"{path}: no input named '{INPUT}'; fogreid expects graphs exported by "
                           f"`fogreid export` (uint8 frames in)")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[3].dim_value != 3 or not dims[1].dim_value or not dims[2].dim_value:
        raise FogreidError(f"{path}: input '{INPUT}' must be (B, H, W, 3) with fixed H and W")
    return dims[1].dim_value, dims[2].dim_value


def check_reid_io(proto: onnx.ModelProto, path: str | Path = "model") -> None:
    """The interface every verb that runs the model relies on: `frames` uint8 (B, H, W, 3) in,
    `defogged` uint8 and `embedding` float (B, D) out. A graph with the right input but other
    outputs or types is refused here, naming what differs, instead of a KeyError or a runtime's
    InvalidArgument mid-run."""
    imgsz(proto, path)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    name = onnx.TensorProto.DataType.Name
    if elem[INPUT] != onnx.TensorProto.UINT8:
        raise FogreidError(f"{path}: input '{INPUT}' is {name(elem[INPUT]).lower()}, fogreid feeds uint8 frames; "
                           f"give a model exported by `fogreid export`")
    outputs = [o.name for o in proto.graph.output]
    missing = [o for o in OUTPUTS if o not in outputs]
    if missing:
        raise FogreidError(f"{path}: no output named {' or '.join(repr(m) for m in missing)} (it has "
                           f"{', '.join(outputs) or 'none'}); fogreid needs {' and '.join(OUTPUTS)}: give a model "
                           f"exported by `fogreid export`")
    wanted = {"defogged": {onnx.TensorProto.UINT8}, "embedding": FLOAT_TYPES}
    for output in OUTPUTS:
        if elem[output] not in wanted[output]:
            kind = "uint8" if output == "defogged" else "float"
            raise FogreidError(f"{path}: output '{output}' is {name(elem[output]).lower()}, not {kind}; give a "
                               f"model exported by `fogreid export`")
    dims = next(o for o in proto.graph.output if o.name == "embedding").type.tensor_type.shape.dim
    if len(dims) != 2:
        raise FogreidError(f"{path}: output 'embedding' has {len(dims)} dimensions, not 2 (B, D); give a model "
                           f"exported by `fogreid export`")


def save(proto: onnx.ModelProto, path: str | Path) -> None:
    if proto.ByteSize() > 2_000_000_000:
        raise FogreidError("the model is over 2 GB, the limit of a single-file ONNX model")
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def float_tensor_names(proto: onnx.ModelProto) -> set[str]:
    """Names of the float32 activations (after shape inference): what INT8 calibration scales."""
    infos = list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)
    return {v.name for v in infos if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
