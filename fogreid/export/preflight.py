"""`fogreid check`: a pre-flight check of an ONNX artifact against a target's documented rules,
before anyone copies it to a Jetson or a server.

It reads the graph only (and, for ONNX Runtime's CPU provider, opens a session, which is the
rule itself); it cannot know what a TensorRT builder will choose at build time (tactics,
fusions, which layers DLA really takes, accuracy). Each problem is one line naming the node,
the rule and the fix. Errors make the artifact unfit for the target; warnings say what will
run slower or elsewhere (GPU fallback) than one would assume.

Sources of the rules (cited per table below):
  onnx-tensorrt docs/operators.md (TensorRT 10.x / 11.x parser: ops, types, opsets)
  TensorRT developer guide: "Working with Quantized Types" (Q/DQ types), "DLA Supported
  Layers and Restrictions", "Types and Precision" (UINT8 only at network I/O, with a Cast)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from fogreid.errors import EnvironmentProblem, FogreidError
from fogreid.sessions import openvino_model

# ---------------------------------------------------------------------------------- the rules

# Ops the TensorRT 10.x/11.x ONNX parser imports (onnx-tensorrt docs/operators.md, "Supported: Y").
PARSER_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Ops added to the parser after 10.0: the first TensorRT release that parses them.
ADDED_IN = {"DeformConv": (10, 1, 0)}

# Opsets the parsers import, by the first release of each documented range (operators.md:
# 10.0 "opset 9 to opset 20"; 10.16 and 11.1 "opset 9 to opset 24"). The 10.3 page is not
# published on its own: 10.3 is held to 10.0's range.
TRT_OPSETS = [((10, 0, 0), (9, 20)), ((10, 16, 0), (9, 24)), ((11, 0, 0), (9, 24))]

# The quantised type of a DequantizeLinear input / QuantizeLinear output (operators.md,
# DequantizeLinear: 10.0 "INT8, FP8, INT4"; 10.16 and 11.1 "INT8, FP8, FP4, INT4"), by release.
QDQ_TYPES = [((10, 0, 0), {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}),
             ((10, 16, 0), {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1})]


def _by_release(table, version):
    """The entry of the newest release in `table` that is not newer than `version`."""
    return [value for first, value in table if first <= version][-1]

# Layers DLA (Orin / Xavier) runs; the rest fall back to the GPU when fallback is allowed
# (TensorRT developer guide, "DLA Supported Layers and Restrictions").
DLA_OPS = frozenset("""
Conv ConvTranspose Gemm MatMul BatchNormalization Relu LeakyRelu Sigmoid Tanh Clip AveragePool MaxPool
GlobalAveragePool GlobalMaxPool Add Sub Mul Div Max Min Pow Equal Greater Less LRN Concat Resize Abs Sin
Cos Atan Slice Softmax Reshape Transpose Flatten Squeeze Unsqueeze QuantizeLinear DequantizeLinear
""".split())

FIXES = {"DeformConv": "export a model trained with the deformable branch off "
                       "(--set model.deform_branch=false, as the edge preset does)"}

TYPE_NAMES = {v: k for k, v in TensorProto.DataType.items()}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    trt_version: tuple[int, int, int] | None = None   # None: ONNX Runtime or OpenVINO
    dla: bool = False
    openvino: bool = False


def targets_for(trt_version: tuple[int, int, int] | None = None) -> dict[str, Target]:
    """The targets; `trt_version` pins the TensorRT release of trt10 / trt11 / dla (default: the
    oldest of each line that fogreid supports: 10.3 = JetPack 6, 11.0)."""
    v10 = trt_version if trt_version and trt_version[0] == 10 else (10, 3, 0)
    v11 = trt_version if trt_version and trt_version[0] >= 11 else (11, 0, 0)
    return {
        "trt10": Target("trt10", f"TensorRT {'.'.join(map(str, v10))}", v10),
        "trt11": Target("trt11", f"TensorRT {'.'.join(map(str, v11))}", v11),
        "dla": Target("dla", f"DLA with TensorRT {'.'.join(map(str, v10))} (JetPack 6)", v10, dla=True),
        "ort-cpu": Target("ort-cpu", "ONNX Runtime, CPU provider"),
        "ort-cuda": Target("ort-cuda", "ONNX Runtime, CUDA provider"),
        "openvino": Target("openvino", "OpenVINO, CPU plugin", openvino=True),
    }


DEFAULT_TARGETS = ("trt10", "trt11", "ort-cpu")


# ---------------------------------------------------------------------------------- results

@dataclass
class Problem:
    severity: str          # error | warning
    target: str
    rule: str
    node: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.severity}: [{self.target}] {self.node}: {self.message} (fix: {self.fix})"


@dataclass
class CheckReport:
    artifact: str
    targets: list[str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems]

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "targets": self.targets, "ok": self.ok,
                "errors": sum(p.severity == "error" for p in self.problems),
                "warnings": sum(p.severity == "warning" for p in self.problems),
                "problems": [asdict(p) for p in self.problems]}


# ---------------------------------------------------------------------------------- the check

def check_artifact(path: str | Path, targets: list[str] = DEFAULT_TARGETS,
                   trt_version: tuple[int, int, int] | None = None, cache: str | Path | None = None) -> CheckReport:
    """`cache`: the TensorRT calibration cache to hold a Q/DQ model against (default: the
    calibration.cache beside it, if any); see `_check_cache`."""
    path = Path(path)
    known = targets_for(trt_version)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise FogreidError(f"--target {', '.join(unknown)}: choose from {', '.join(known)}")
    if not path.is_file():
        raise FogreidError(f"{path}: file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FogreidError(f"{path}: not an ONNX model ({next(iter(str(exc).splitlines()), '')[:120]}); "
                           f"`fogreid check` takes the .onnx files that `fogreid export` writes") from None
    report = CheckReport(path.name, list(targets))
    missing = _missing_external_data(proto, path)
    typed = _infer_types(proto)
    for name in targets:
        target = known[name]

        def add(sev, rule, node, msg, fix, target_name=name):  # this turn's name, bound when defined
            report.problems.append(Problem(sev, target_name, rule, node, msg, fix))

        for node, file in missing:
            add("error", "external-data", node, f"weights stored in {file}, which is not beside the model",
                "copy the .onnx.data file with the .onnx, or re-export (fogreid writes one self-contained file)")
        if target.trt_version is not None:
            _check_tensorrt(proto, typed, target, add)
        elif target.openvino:
            _check_openvino(path, proto, add)
        else:
            _check_onnxruntime(path, proto, target, add, skip_session=bool(missing))
    cache = Path(cache) if cache is not None else path.parent / "calibration.cache"
    if cache.is_file() and any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        _check_cache(proto, cache, lambda *args: report.problems.append(Problem("error", "cache", *args)))
    return report


def _check_cache(proto, cache: Path, add) -> None:
    """The calibration cache must quantise what the Q/DQ model quantises, with the same scales.
    Implicit INT8 (TensorRT 10, DLA, Triton's INT8 table) runs a layer in INT8 whenever its tensors
    have scales, so a cache that holds more (the budget's float layers, the embedding tail) or other
    scales builds an engine that is not the validated Q/DQ model."""
    from fogreid.calibration.trt_cache import cache_mismatches, read_cache

    _, scales = read_cache(cache)
    problems = cache_mismatches(proto, scales)
    if problems:
        add("trt-cache", cache.name, f"disagrees with the Q/DQ model on {len(problems)} tensor(s), e.g. "
            + "; ".join(problems[:3]), "rewrite both from one calibration: `fogreid export` (or `fogreid calibrate`) "
            "writes the cache from the Q/DQ model it writes")


def _missing_external_data(proto: onnx.ModelProto, path: Path) -> list[tuple[str, str]]:
    missing = []
    for tensor in proto.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            if not (path.parent / location).is_file():
                missing.append((tensor.name, location))
    return missing


def _infer_types(proto: onnx.ModelProto) -> dict[str, int]:
    """tensor name -> element type, from the graph and ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:
        inferred = proto
    graph = inferred.graph
    types = {t.name: t.type.tensor_type.elem_type
             for t in [*graph.input, *graph.output, *graph.value_info] if t.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"


def _check_tensorrt(proto, typed, target: Target, add) -> None:
    version = target.trt_version
    low, high = _by_release(TRT_OPSETS, version)
    qdq_types = _by_release(QDQ_TYPES, version)
    opset = _opset(proto)
    if not low <= opset <= high:
        add("error", "opset", "model", f"opset {opset}; the {target.description} parser imports opsets {low}-{high}",
            f"re-export at an opset in {low}-{high}")

    graph_inputs = {i.name for i in proto.graph.input}
    graph_outputs = {o.name for o in proto.graph.output}
    zero_points = {t.name: t for t in proto.graph.initializer}
    ops = Counter()
    for node in proto.graph.node:
        name = _node_name(node)
        ops[node.op_type] += 1
        if node.domain not in ("", "ai.onnx"):
            add("error", "op", name,
                f"{node.domain}::{node.op_type} is not a standard ONNX op; TensorRT needs a plugin",
                "export without custom-domain ops (no onnxruntime contrib ops)")
            continue
        if node.op_type not in PARSER_OPS:
            add("error", "op", name, f"{node.op_type} is not imported by the TensorRT ONNX parser",
                FIXES.get(node.op_type, "replace the op in the model"))
        elif version < ADDED_IN.get(node.op_type, (0, 0, 0)):
            first = ".".join(map(str, ADDED_IN[node.op_type]))
            add("error", "op-version", name, f"{node.op_type} is parsed from TensorRT {first} on, not by "
                f"{target.description}", FIXES.get(node.op_type, f"use TensorRT >= {first}"))
        # Q/DQ: only the types TensorRT's Q/DQ layers take, symmetric (zero point 0).
        if node.op_type == "DequantizeLinear":
            quantised = typed.get(node.input[0])
            if quantised is not None and quantised not in qdq_types:
                add("error", "qdq-type", name, f"DequantizeLinear of a {TYPE_NAMES.get(quantised, quantised)} tensor; "
                    f"TensorRT's IDequantizeLayer takes {_type_list(qdq_types)} only",
                    "keep biases in float when quantising (onnxruntime quantize_static "
                    "extra_options QuantizeBias=False), as fogreid export does")
        if node.op_type == "QuantizeLinear" and node.input[0] not in zero_points:
            # NvInfer.h (IQuantizeLayer): "Activations cannot be quantized per-channel."
            scale = zero_points.get(node.input[1])
            if scale is not None and len(scale.dims) > 0 and max(scale.dims) > 1:
                add("error", "qdq-per-channel", name, "per-channel quantisation of an activation; TensorRT "
                    "quantises activations per tensor only", "quantise activations per tensor (per_channel "
                    "applies to weights only)")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = zero_points.get(node.input[2])
            if zp is not None:
                zp_type = zp.data_type
                if node.op_type == "QuantizeLinear" and zp_type not in qdq_types:
                    add("error", "qdq-type", name, f"QuantizeLinear to {TYPE_NAMES.get(zp_type, zp_type)}; TensorRT "
                        f"quantises to {_type_list(qdq_types)} only",
                        "quantise activations and weights as signed INT8 (QuantType.QInt8)")
                # operators.md: "x_zero_point must be zero" / "y_zero_point must be 0".
                if zp_type in qdq_types and np.any(numpy_helper.to_array(zp).astype(np.float32) != 0):
                    add("error", "qdq-zero-point", name, "non-zero zero point; TensorRT supports "
                        "symmetric quantisation only", "quantise symmetrically (ActivationSymmetric, WeightSymmetric)")
        if node.op_type == "InstanceNormalization" and typed.get(node.input[0]) == TensorProto.FLOAT16:
            add("warning", "fp16-instancenorm", name, "InstanceNormalization in FP16: its variance loses precision "
                "(microsoft/onnxruntime#10079)", "keep InstanceNormalization in FP32 (fogreid's FP16 export does)")
        # UINT8 lives only at the network's edges, through a Cast (operators.md: "UINT8 is only
        # supported as network input or output tensor types"; NvInferRuntimeBase.h kUINT8).
        for tensor in list(node.input) + list(node.output):
            if typed.get(tensor) == TensorProto.UINT8 and tensor not in graph_inputs | graph_outputs:
                if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    continue  # reported above as a Q/DQ type
                add("error", "uint8", name, f"UINT8 tensor {tensor!r} inside the network; TensorRT allows UINT8 "
                    "only as a network input or output, cast to or from float", "keep uint8 at the graph's "
                    "input/output and cast there (fogreid's fused graph does)")
                break
        if node.op_type != "Cast" and any(t in graph_inputs and typed.get(t) == TensorProto.UINT8 for t in node.input):
            add("error", "uint8", name, f"{node.op_type} reads the UINT8 network input directly; TensorRT needs a "
                "Cast to float first", "cast the uint8 input to float as the first op")
        if node.op_type != "Cast" and any(t in graph_outputs and typed.get(t) == TensorProto.UINT8
                                          for t in node.output):
            add("error", "uint8", name, f"{node.op_type} writes the UINT8 network output; TensorRT needs a Cast "
                "from float", "end the graph with a Cast to uint8")
        if typed.get(node.output[0] if node.output else "") == TensorProto.DOUBLE:
            add("error", "dtype", name, "float64 tensor; TensorRT has no DOUBLE type", "export in float32")

    if target.dla:
        _check_dla(proto, typed, ops, add)


def _check_dla(proto, typed, ops: Counter, add) -> None:
    for tensor in proto.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
        if any(i > 0 for i in dynamic):
            add("error", "dla-static", tensor.name, f"dynamic dimensions {dynamic} of input {tensor.name!r}; DLA "
                "runs static shapes only", "export at a fixed input size (--imgsz H W)")
        elif dynamic:
            add("warning", "dla-static", tensor.name, "dynamic batch; DLA needs a static profile (min = opt = max)",
                "build with one batch size: fogreid export --dla-core K --batch B (trtexec_trt10.sh does)")
    for op, count in sorted(ops.items()):
        if op not in DLA_OPS and op not in ("Cast", "Constant", "Identity", "Shape"):
            add("warning", "dla-layer", op, f"{count} {op} node(s) DLA does not run: they fall back to the GPU",
                FIXES.get(op, "accept the GPU fallback, or replace the op for a DLA-only build"))
    # "DLA Supported Layers and Restrictions": every layer runs FP16 or INT8; "DLA does not
    # support dynamic dimensions, so the profile's min, max, and opt values must be equal".
    if not any(t == TensorProto.FLOAT16 for t in typed.values()) and "QuantizeLinear" not in ops:
        add("warning", "dla-precision", "model", "an FP32 graph; DLA runs FP16 and INT8 only",
            "build weakly typed with --fp16 (and --int8 + the calibration cache), as trtexec_trt10.sh does")


def _check_onnxruntime(path: Path, proto, target: Target, add, skip_session: bool) -> None:
    import onnxruntime as ort

    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx", "com.microsoft")})
    for domain in custom:
        add("error", "op", domain, f"ops of domain {domain!r}, which ONNX Runtime does not know",
            "export without custom ops")
    if target.name == "ort-cpu" and not skip_session:
        # The rule is the runtime itself: ONNX Runtime is installed here, so open the graph.
        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            add("error", "session", "model", f"ONNX Runtime {ort.__version__} cannot open it: "
                f"{str(exc).splitlines()[0][:200]}", "re-export with `fogreid export`, or upgrade onnxruntime")
    if target.name == "ort-cuda":
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
            add("warning", "ort-cuda-int8", "model", "Q/DQ INT8 on the CUDA provider runs the quantised layers in "
                "float (Q/DQ are simulated)", "for INT8 speed on NVIDIA GPUs use TensorRT (or ORT's TensorRT provider)")


def _check_openvino(path: Path, proto, add) -> None:
    """OpenVINO reads the ONNX itself; its rules are its ONNX frontend and CPU plugin, so the
    check compiles the model (as `fogreid validate --backend openvino` would), plus one rule
    found by hand: a QuantizeLinear on a ReduceMax output is fused by the CPU plugin into a
    Reduce node that returns other channels' maxima (OpenVINO 2026.4.1; reproduced in 5 nodes
    by tests/test_engines.py::test_openvino_reduce_max_quantize_defect)."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        source = producer.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if source is not None and source.op_type == "ReduceMax":
            add("error", "reduce-max-qdq", _node_name(node), f"quantises the output of ReduceMax {_node_name(source)}, "
                "which OpenVINO's CPU plugin computes wrongly once fused", "re-export with `fogreid export` (it keeps "
                "the layers after a ReduceMax in float)")
    try:
        openvino_model(path, "CPU")   # compiled as `--backend openvino` compiles it
    except EnvironmentProblem as exc:
        add("error", "installed", "model", str(exc), "pip install 'fogreid[openvino]'")
    except FogreidError as exc:
        add("error", "compile", "model", str(exc).split(": ", 1)[-1], "re-export with `fogreid export`, or upgrade "
            "openvino")


def _type_list(types: set[int]) -> str:
    return ", ".join(sorted(TYPE_NAMES.get(t, str(t)) for t in types))
