"""A static check, before any build, that TensorRT can parse every op of an ONNX graph.

Tables from onnx-tensorrt's `docs/operators.md` (TensorRT 10.x / 11.x parser) and the
TensorRT DLA support matrix. An op the parser lacks for a target is an error naming the
nodes and the fix; an op DLA lacks is a note: with GPU fallback that layer runs on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

# Ops the TensorRT 10.x/11.x ONNX parser imports (operators.md "Supported: Y").
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

# Ops added to the parser after 10.0: (major, minor) of the first release that parses them.
ADDED_IN = {"DeformConv": (10, 1)}

# Ops TensorRT runs in FP32/FP16 only (no INT8 kernels): fine in mixed precision, but
# quantising around them buys nothing.
NO_INT8 = frozenset({"DeformConv", "InstanceNormalization"})

# Layers DLA (Orin/Xavier) runs; the rest fall back to the GPU when fallback is allowed.
DLA_OPS = frozenset("""
Conv ConvTranspose Gemm MatMul BatchNormalization Relu LeakyRelu Sigmoid Tanh Clip AveragePool MaxPool
GlobalAveragePool GlobalMaxPool Add Sub Mul Div Max Min Pow Equal Greater Less LRN Concat Resize Abs Sin
Cos Atan Slice Softmax Reshape Transpose Flatten Squeeze Unsqueeze QuantizeLinear DequantizeLinear
""".split())

TARGETS = {"TensorRT 10.3 (JetPack 6)": (10, 3), "TensorRT 10.x": (10, 15), "TensorRT 11.x": (11, 0)}

FIXES = {"DeformConv": "export a model trained with the deformable branch off "
                       "(--set model.deform_branch=false, as the edge preset does)"}


@dataclass
class OpProblem:
    op: str
    nodes: list[str]
    targets: list[str]

    def describe(self) -> str:
        fix = FIXES.get(self.op, "replace the op in the model or pick a newer TensorRT")
        return (f"{self.op} ({len(self.nodes)} nodes, e.g. {self.nodes[0]}) is not supported by "
                f"{', '.join(self.targets)}: {fix}")


@dataclass
class OpReport:
    unsupported: list[OpProblem] = field(default_factory=list)
    dla_fallback: dict[str, int] = field(default_factory=dict)   # op -> node count on the GPU
    int8_in_fp: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unsupported

    def lines(self) -> list[str]:
        out = [p.describe() for p in self.unsupported]
        if self.dla_fallback:
            out.append("DLA: these ops fall back to the GPU: " +
                       ", ".join(f"{op} x{n}" for op, n in sorted(self.dla_fallback.items())))
        return out


def check_ops(proto: onnx.ModelProto, targets: dict[str, tuple[int, int]] = TARGETS,
              dla: bool = False) -> OpReport:
    by_op: dict[str, list[str]] = {}
    for node in proto.graph.node:
        by_op.setdefault(node.op_type, []).append(node.name or node.output[0])
    report = OpReport()
    for op, nodes in sorted(by_op.items()):
        failing = [name for name, version in targets.items()
                   if op not in PARSER_OPS or version < ADDED_IN.get(op, (0, 0))]
        if failing:
            report.unsupported.append(OpProblem(op, nodes, failing))
        if dla and op not in DLA_OPS:
            report.dla_fallback[op] = len(nodes)
        if op in NO_INT8:
            report.int8_in_fp[op] = len(nodes)
    return report
