"""Explicit INT8: a Q/DQ ONNX model (symmetric int8, per-channel weights), for TensorRT >= 10
(the only INT8 path on TensorRT 11) and ONNX Runtime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from fogreid.calibration.ranges import calibration_method
from fogreid.errors import FogreidError
from fogreid.onnx_graph import fold_and_check, save, set_metadata

# Q/DQ on the inputs of the heavy layers. Additions stay float (see nodes_to_quantize). Max pools
# are left out too: ONNX Runtime's quantiser quantises one only after a quantised input
# (onnxruntime/quantization/operators/direct_q8.py, QDQDirect8BitOp), and none follows one here
# (the stem's reads the float first conv's ReLU; the defog prior's read the image).
QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
# Quantised, these write int8 (QLinearConv, QLinearMatMul in ORT; fused int8 kernels in TensorRT).
INT8_OUTPUT_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


# The ReID head's channel attention (fogreid/model/sjdl.py, ChannelAttention), by its nodes' names.
CHANNEL_ATTENTION = "net.reid.attention"
# The defog decoders' output convs (sjdl.py): the scatter heads' maps (transmission, airlight, detail
# gain), which the inversion divides the image by, and the paper decoder's RGB image. Quantised,
# the demo model's defogged crops were 34.2 dB from PyTorch's (SSIM 0.955); with the scatter head's
# in float 53.5 dB (0.998), the embedding untouched. ONNX Runtime ran it as a float conv anyway
# (nothing re-quantises what it writes, so no QLinearConv).
DEFOG_OUTPUT_CONVS = ("net.decoder.head/", "net.decoder.to_rgb.")


def nodes_to_quantize(proto: onnx.ModelProto, keep_fp: list[str]) -> list[str]:
    """The network body's convolutions and matrix products. Additions are not quantised: a
    quantised residual addition rounds the residual stream itself to int8 at every block (its
    output and the shortcut it reads, not only the conv inputs), and the defog head's additions are
    image arithmetic (the inversion, the airlight added back, the pyramid's residual), where int8
    steps are grey levels of the defogged image. A float addition still reads the int8 output of
    a quantised conv (`read_float_inputs`), so the conv runs as an int8 kernel. Before 2026-12-06
    every addition was quantised; the demo model's INT8 budget then kept all seven residual
    additions in float (with five more layers) and its defogged crops were 31.4 dB from PyTorch's;
    with the additions float it keeps 3 layers (the downsample convs) and they are 34.2 dB (53.5
    with the decoder's output conv in float too: DEFOG_OUTPUT_CONVS).

    Kept in float besides: pre/post-processing and the L2 norm (cheap, and
    quantising `x * x` breaks the unit norm), the first conv, whose input is the raw image
    (symmetric int8 on [0, 1] pixels keeps only 7 of their 8 bits), the defog head's fixed image
    filters (`image_filters`), every layer that reads a
    ReduceMax or a Concat or writes into one (see `reads_reduce_max`, `reads_concat`,
    `feeds_concat`), the whole channel attention and the defog decoder's output conv
    (`DEFOG_OUTPUT_CONVS`).

    The attention's MLP works on 1x1 maps (a few thousand MACs), and quantised it is read
    differently by OpenVINO's CPU plugin (2026.4.1) depending on the CPU: on an AMD EPYC (AVX-512
    VNNI, no AMX) the ReID-only test model's INT8 embedding fell to cosine 0.89 on OpenVINO
    against 1.0000 on ONNX Runtime, while on an Intel Xeon with AMX both agreed (the clean-clone
    CI of 2026-12-04). Each of its pieces, cut out of the graph, computes right on both engines;
    in the whole graph its max branch's float conv shares its int8 weights with the average
    branch's quantised one. In float, both engines agree on the EPYC too."""
    body = [n for n in proto.graph.node if n.name.startswith("net.") and n.op_type in QUANTIZED_OPS]
    first_conv = next((n.name for n in body if n.op_type == "Conv"), None)
    kept = (reads_reduce_max(proto) | reads_concat(proto) | feeds_concat(proto) | image_filters(proto)
            | {n.name for n in body if n.name.startswith((CHANNEL_ATTENTION, *DEFOG_OUTPUT_CONVS))})
    return [n.name for n in body if n.name != first_conv and n.name not in keep_fp and n.name not in kept]


def image_filters(proto: onnx.ModelProto) -> set[str]:
    """The defog head's box sums: convolutions whose weights are kernels of ones built in the
    forward pass, not the network's parameters (fogreid/model/sjdl.py, `_box3`, `_pixel_count`,
    `box_mean`). They work on the image itself, whose base is then divided by the transmission (up
    to 20x): quantised, the base carried int8 steps of 1/127 of its range into the defogged image,
    for a few thousand MACs a pixel saved. Other weights built in the forward pass are slices of a
    layer's (`conv_over_parts`, the decoder's fusion conv): layers like any other, quantised, so
    their weights come out of a DequantizeLinear once the quantiser has run."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}

    def box_sum(weight: str) -> bool:
        if weight in initializers:
            return bool((numpy_helper.to_array(initializers[weight]) == 1).all())
        producer = producers.get(weight)
        return producer is None or producer.op_type != "DequantizeLinear"
    return {n.name for n in proto.graph.node if n.op_type in INT8_OUTPUT_OPS and len(n.input) > 1
            and not n.input[1].startswith("net.") and box_sum(n.input[1])}


def reads_reduce_max(proto: onnx.ModelProto) -> set[str]:
    """Nodes whose input is a ReduceMax output (the channel attention's max-pooled branch).

    A QuantizeLinear on a ReduceMax output is valid ONNX, and ONNX Runtime computes it exactly,
    but OpenVINO's CPU plugin (2026.4.1) fuses the two into one Reduce node with an int8 output
    and returns wrong maxima (values of other channels) whenever a conv reads it: the demo's
    INT8 model fell to embedding cosine 0.27 on OpenVINO against 0.996 on ONNX Runtime.
    `tests/test_engines.py::test_openvino_reduce_max_quantize_defect` rebuilds the 5-node
    reproduction. The layers after it are 1x1 convs on a 1x1 map (a few thousand MACs), so
    keeping them in float costs nothing and every engine reads the file the same way."""
    producer = {out: node.op_type for node in proto.graph.node for out in node.output}
    return {n.name for n in proto.graph.node if any(producer.get(i) == "ReduceMax" for i in n.input)}


def reads_concat(proto: onnx.ModelProto) -> set[str]:
    """Nodes whose input is a Concat output, directly or through a Relu: the defog pyramid's first
    conv (the image and the decoded image) and its fusion conv.
    (The IBN blocks' second convs and the defog decoder's fusion and reduce convs were among them
    until they lost their Concat: fogreid/model/resnet_ibn.py, `IBN._without_concat`; sjdl.py,
    `conv_over_parts`.)

    Quantised, OpenVINO's CPU plugin (2026.4.1) on an AMD EPYC (AVX-512 VNNI, no AMX) computed
    them differently from ONNX Runtime and from the Q/DQ arithmetic itself (the 5-node
    Concat -> Q -> DQ -> Conv cut from the graph: embedding cosine 0.987 between the engines,
    exact from the same tensor without the Concat), and a trained model's INT8 file failed
    validation there: defogged image 23.3 dB against 33.1 on ONNX Runtime, embedding cosine p1
    0.975 against 0.988. With these in float both engines give the same figures to the fourth
    decimal there (cosine min / p1 0.9799 / 0.9889, 33.12 dB)."""
    producer = {out: node for node in proto.graph.node for out in node.output}

    def from_concat(name: str) -> bool:
        node = producer.get(name)
        if node is not None and node.op_type == "Relu":
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "Concat"
    return {n.name for n in proto.graph.node if any(from_concat(i) for i in n.input)}


def feeds_concat(proto: onnx.ModelProto) -> set[str]:
    """Nodes whose output reaches a Concat directly or through a Relu or Resize (the defog
    pyramid's pooled convs, the decoder convs before its fusion). With the Concat's readers in
    float (`reads_concat`) nothing re-quantises what they write, and ONNX Runtime runs a conv as
    an int8 QLinearConv only between a DequantizeLinear and a QuantizeLinear: quantised, they
    would be float convs behind a Q/DQ pair, slower than plain float."""
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def reaches_concat(name: str) -> bool:
        for reader in readers.get(name, []):
            if reader.op_type == "Concat":
                return True
            if reader.op_type in ("Relu", "Resize") and any(reaches_concat(o) for o in reader.output):
                return True
        return False
    return {n.name for n in proto.graph.node if any(reaches_concat(o) for o in n.output)}


def read_float_inputs(proto: onnx.ModelProto, float_nodes: set[str], quantized: set[str] = frozenset()) -> int:
    """Let every node not quantised (`float_nodes`: layers kept in float and every other op)
    read the float tensors again, except what a quantised conv (one of `quantized` whose op is
    in INT8_OUTPUT_OPS) writes.

    ONNX Runtime's quantizer gives a tensor Q/DQ pairs for every consumer once one consumer
    is quantised (qdq_quantizer.py, `_add_qdq_pair_for_activation`), so a layer kept in float
    would still read int8-rounded inputs. Not only layers: the image after /255 is read by a
    quantised decoder conv, so the backbone's normalisation (a Sub) and the defog prior's
    ReduceMin, Slice and Div all read it rounded to int8 (7 bits of pixel, symmetric on [0, 1]);
    on the demo model the INT8 test cosine p1 stayed at 0.989 with every layer in float, and
    0.9999 once they read the float image. Rewire those inputs to the tensor before the
    QuantizeLinear and drop Q/DQ pairs nobody reads any more. A quantised conv's own output
    keeps its Q/DQ: the pair is what lets ORT run the conv as one int8 QLinearConv (and
    TensorRT fuse it), so bypassing it for a float residual Add made the conv before it run
    in float and INT8 slower than FP32 on the CPU. Returns the number of inputs rewired."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    rewired = 0
    for node in proto.graph.node:
        if node.name not in float_nodes:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                source = producer.get(q.input[0])
                if source is not None and source.name in quantized and source.op_type in INT8_OUTPUT_OPS:
                    continue
                node.input[i] = q.input[0]
                rewired += 1
    _drop_unread_qdq(proto)
    return rewired


def dedicate_qdq(proto: onnx.ModelProto) -> int:
    """Give every activation QuantizeLinear and DequantizeLinear one consumer, and each its own
    scale and zero-point initializers. Returns the number of nodes and initializers copied.

    ONNX Runtime on x86 runs a quantised conv as one QLinearConv on uint8 activations: its
    QDQS8ToU8Transformer (onnxruntime/core/optimizer/qdq_transformer/qdq_s8_to_u8.cc) turns
    our int8 Q/DQ pairs into uint8 ones only where the QuantizeLinear has exactly one output
    edge (`CheckOutputEdges(graph, node, 1)`), and a conv whose input pair stays int8 is left
    a float conv between Q/DQ (measured, ORT 1.31). A block's input feeds conv1 and the
    shortcut (the downsample conv or the residual Add), so each reader needs a pair of its
    own. The quantizer's DedicatedQDQPair gives it one, but not to the DQ after an int8
    MaxPool, and ORT's CommonSubexpressionElimination (core/optimizer/
    common_subexpression_elimination.cc) merges nodes with the same inputs, i.e. the same
    initializer names, back into one shared pair. So: one reader per Q and per DQ, and
    parameters of their own. On the demo model 16 of 35 quantised convs had stayed float
    (INT8 no faster than FP32); with this 30 of 35 fuse. Values are unchanged; TensorRT, which
    fuses Q/DQ itself, reads the same scales."""
    initializers = {init.name: init for init in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    copied = 0
    # DQs first (one per reader), then their Qs (one per DQ).
    for op in ("DequantizeLinear", "QuantizeLinear"):
        consumers: dict[str, list] = {}
        for node in proto.graph.node:
            for name in dict.fromkeys(node.input):   # a node reading a tensor twice counts once
                consumers.setdefault(name, []).append(node)
        for split in [n for n in proto.graph.node if n.op_type == op]:
            readers = consumers.get(split.output[0], [])
            if split.input[0] in initializers or split.output[0] in outputs or len(readers) < 2:
                continue
            at = list(proto.graph.node).index(split)
            for i, reader in enumerate(readers[1:], start=1):
                twin = onnx.NodeProto()
                twin.CopyFrom(split)
                twin.name, twin.output[0] = f"{split.name}/{i}", f"{split.output[0]}/{i}"
                proto.graph.node.insert(at + i, twin)
                reader.input[:] = [twin.output[0] if x == split.output[0] else x for x in reader.input]
                copied += 1
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.input[0] in initializers:
            continue   # a weight's DQ reads an initializer and has its own parameters already
        for k in range(1, len(node.input)):
            if node.input[k] in initializers:
                clone = onnx.TensorProto()
                clone.CopyFrom(initializers[node.input[k]])
                clone.name = f"{node.input[k]}/{node.name}"
                proto.graph.initializer.append(clone)
                node.input[k] = clone.name
                copied += 1
    _drop_unread_qdq(proto)   # the original parameters, now unread
    return copied


def _drop_unread_qdq(proto: onnx.ModelProto) -> None:
    outputs = {o.name for o in proto.graph.output}
    while True:
        read = {name for node in proto.graph.node for name in node.input} | outputs
        dead = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            proto.graph.node.remove(node)
    # Their scales and zero points too (ONNX Runtime warns about unused initializers).
    read = {name for node in proto.graph.node for name in node.input}
    for init in [i for i in proto.graph.initializer if i.name not in read and i.name not in outputs]:
        proto.graph.initializer.remove(init)


def _ranges_only(ranges):
    """`ranges` without the entropy / percentile histograms: the INT8 quantiser reads only each
    tensor's range (onnxruntime/quantization/qdq_quantizer.py: `tensor_data.range_value`; avg / std
    only for FP8), and writing 2048-bin histograms of every tensor to JSON cost 3 of the 4 seconds
    of each trial build in the INT8 budget search."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    kept = ("lowest", "highest", "avg", "std")
    return TensorsData(ranges.calibration_method, {
        name: TensorData(**{k: getattr(data, k) for k in kept if hasattr(data, k)}) for name, data in ranges.items()})


def quantize_qdq(onnx_path: str | Path, out_path: str | Path, ranges, method: str,
                 keep_fp: list[str] = (), metadata: dict[str, str] | None = None,
                 only: list[str] | None = None, check: bool = True) -> Path:
    """Write the Q/DQ model calibrated with `ranges` (from compute_ranges). `keep_fp` names
    nodes to leave in floating point (the layers `fogreid validate --per-layer` ranks);
    `only` quantises just those nodes (for per-layer sensitivity). `check=False` skips the
    constant folding and full ONNX check, for the throw-away trial builds of a search."""
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    proto = onnx.load(str(onnx_path), load_external_data=False)
    graph_nodes = {n.name for n in proto.graph.node}
    unknown = [n for n in keep_fp if n not in graph_nodes]
    if unknown:
        raise FogreidError(f"--keep-fp: no node named {', '.join(unknown[:5])} in {onnx_path}; "
                           f"use names printed by `fogreid validate --per-layer`")
    chosen = list(only) if only else nodes_to_quantize(proto, list(keep_fp))
    with tempfile.TemporaryDirectory(prefix="fogreid-qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(_ranges_only(ranges), cache)
        raw = Path(tmp) / "qdq.onnx"
        logging.disable(logging.WARNING)  # its advice to pre-process: BN is already folded by the exporter
        try:
            quantize_static(str(onnx_path), str(raw), calibration_data_reader=None,
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS,
                            nodes_to_quantize=chosen,
                            # An empty nodes_to_quantize means every node to ONNX Runtime
                            # (onnxruntime/quantization/base_quantizer.py, should_quantize_node):
                            # with nothing chosen, every node is excluded instead.
                            nodes_to_exclude=[] if chosen else [n.name for n in proto.graph.node],
                            per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibration_method(method), calibration_cache_path=str(cache),
                            # QuantizeBias off: ONNX Runtime would quantise biases to INT32
                            # DequantizeLinear inputs, which TensorRT's IDequantizeLayer rejects
                            # (onnx-tensorrt docs/operators.md: DequantizeLinear takes INT8, FP8,
                            # INT4; onnx/onnx-tensorrt#850). TensorRT fuses a float bias itself.
                            # DedicatedQDQPair: each consumer of a tensor gets its own Q/DQ pair
                            # (see dedicate_qdq for why that matters on the CPU).
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibTensorRangeSymmetric": True, "QuantizeBias": False,
                                           "DedicatedQDQPair": True})
        finally:
            logging.disable(logging.NOTSET)
        proto = onnx.load(str(raw))
        quantized = set(chosen)
        read_float_inputs(proto, {n.name for n in proto.graph.node if n.name not in quantized
                                  and n.op_type not in ("QuantizeLinear", "DequantizeLinear")}, quantized)
        dedicate_qdq(proto)
        if check:
            proto = fold_and_check(proto)
    if metadata:
        set_metadata(proto, metadata)
    save(proto, out_path)
    return Path(out_path)
