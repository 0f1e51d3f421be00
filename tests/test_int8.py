"""INT8 you can ship: a trained checkpoint (whose BNNeck amplifies INT8 noise, unlike a fresh
model's) exported with the default options passes its own validation; the budget search keeps
only part of the body in float and meets its budget."""

from __future__ import annotations

import json

import pytest

from conftest import SIZE


def _calib_dirs(root):
    return [str(root / "FVRID_syn" / "train_foggy"), str(root / "FVRID_real" / "train_foggy")]


@pytest.mark.slow
def test_trained_checkpoint_exported_with_defaults_passes_validation(trained, synth_root, tmp_path, capsys):
    from fogreid.calibration.defaults import DEFAULT_BUDGET
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.onnx_graph import read_metadata
    from fogreid.validate.compare import validate_many

    ckpt, _ = trained
    result = export(ckpt, parse_formats("onnx-int8"), tmp_path, ExportOptions(
        calib_images=_calib_dirs(synth_root), calib_num=96, data_root=str(synth_root)))
    printed = capsys.readouterr().out
    assert "minmax (keeps every activation's full range" in printed      # the method, and why
    assert "INT8 budget: embedding cosine p1" in printed
    meta = read_metadata(result.files["onnx-int8"])
    assert float(meta["int8_budget_reached"]) >= float(meta["int8_budget_cosine_p1"]) == DEFAULT_BUDGET
    report = json.loads(result.manifest.read_text())["calibration"]
    assert report["int8_budget"]["float_layers"] < report["int8_budget"]["body_layers"]
    # The same file on both engines that run here: OpenVINO reads the Q/DQ pairs itself.
    outcomes = validate_many(ckpt, [(result.files["onnx-int8"], "onnxruntime"),
                                    (result.files["onnx-int8"], "openvino")], data_root=str(synth_root))
    for outcome in outcomes:
        assert outcome.precision == "int8"
        assert outcome.passed, (outcome.backend, [c.describe() for c in outcome.checks if not c.passed])
        assert outcome.figures["map_drop"] <= 1.0 and outcome.figures["cosine_p1"] >= 0.98


@pytest.mark.slow
def test_budget_search_keeps_part_of_the_body_in_float_and_meets_it(trained, synth_root, tmp_path):
    from fogreid.calibration.images import build_calibration_set
    from fogreid.calibration.per_layer import choose_float_layers
    from fogreid.calibration.ranges import compute_ranges
    from fogreid.model.fused import FusedDefogReID
    from fogreid.onnx_graph import deploy_metadata, export_onnx

    ckpt, _ = trained
    model = FusedDefogReID.from_checkpoint(ckpt)
    fp32 = export_onnx(model, tmp_path / "model.onnx", deploy_metadata(model.net, "", "fp32"))
    calib = build_calibration_set(_calib_dirs(synth_root), SIZE, num=80, progress=False)
    held_out = calib.images[48:]
    calib.images = calib.images[:48]
    ranges = compute_ranges(fp32, calib, "minmax")
    everything = choose_float_layers(fp32, ranges, "minmax", held_out, budget=0.01, progress=False)
    assert everything.keep_fp == [] and everything.met
    # Halve the all-INT8 error: some layers must go to float, not the whole body.
    budget = 1 - (1 - everything.all_int8_cosine_p1) / 2
    chosen = choose_float_layers(fp32, ranges, "minmax", held_out, budget=budget, progress=False)
    assert chosen.met and chosen.cosine_p1 >= budget
    assert 0 < len(chosen.keep_fp) < chosen.body_layers
    assert max(step["cosine_p1"] for step in chosen.steps) >= round(budget, 5) - 1e-5


def test_layers_kept_in_float_read_float_inputs(exported, synth_root, tmp_path):
    import onnx

    from fogreid.calibration.calibrate_onnx import calibrate

    from conftest import foggy_frames, run_onnx

    _, result = exported
    graph = onnx.load(str(result.files["onnx"])).graph
    keep = [n.name for n in graph.node if n.name.startswith("net.backbone.layer4") and n.op_type in ("Conv", "Add")]
    out = calibrate(result.files["onnx"], [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, num=32,
                    keep_fp=keep, progress=False, budget=None)
    qgraph = onnx.load(str(out.qdq_onnx)).graph
    producer = {o: n.op_type for n in qgraph.node for o in n.output}
    kept = [n for n in qgraph.node if n.name in keep]
    assert len(kept) == len(keep)
    assert all(producer.get(name) != "DequantizeLinear" for n in kept for name in n.input)
    # Q/DQ pairs that only a float layer read are gone with their scales; the rest still runs.
    assert all(any(o in {i for m in qgraph.node for i in m.input} for o in n.output)
               for n in qgraph.node if n.op_type == "QuantizeLinear")
    assert run_onnx(out.qdq_onnx, foggy_frames(synth_root, 4))[1].shape[0] == 4


def test_float_nodes_read_int8_only_where_a_quantised_conv_writes_it(exported, synth_root, tmp_path):
    """ONNX Runtime's quantiser points every reader of a quantised tensor at its Q/DQ pair. Before
    the rewiring covered every float node (not only the body's convs and Adds), the image itself
    (after /255, read by a decoder conv) was rounded to int8 for the backbone's normalisation and
    the whole defog prior: 7 bits of pixel feeding every layer, and the demo model's INT8 test
    cosine p1 stuck at 0.989 with the whole body in float."""
    import onnx

    from fogreid.calibration.calibrate_onnx import calibrate
    from fogreid.calibration.qdq import INT8_OUTPUT_OPS

    from conftest import foggy_frames, run_onnx

    _, result = exported
    out = calibrate(result.files["onnx"], [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, num=32,
                    progress=False, budget=None)
    graph = onnx.load(str(out.qdq_onnx)).graph
    producer = {o: n for n in graph.node for o in n.output}
    quantized_writer = {"QuantizeLinear", "DequantizeLinear", *INT8_OUTPUT_OPS}
    preprocess = [n for n in graph.node if n.name.startswith("preprocess/")]
    assert preprocess and not any(producer.get(n.input[0]) in preprocess
                                  for n in graph.node if n.op_type == "QuantizeLinear")
    int8_readers = 0
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not node.name.startswith(("net.", "graph/")):
            continue
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in producer:
                continue
            source = producer.get(producer[dq.input[0]].input[0])
            # An int8 tensor is read where a quantised conv writes it (its fused int8 output) or by a
            # node quantised itself (an Add, a MaxPool): never a float tensor rounded for nothing.
            assert source is not None and (source.op_type in quantized_writer or node.op_type in ("Add", "MaxPool")
                                           or node.op_type in INT8_OUTPUT_OPS), (node.name, name)
            int8_readers += 1
    assert int8_readers > 10
    # No addition is quantised (qdq.nodes_to_quantize): the residual ones read a quantised conv's int8
    # output (so the conv stays an int8 kernel) beside a float shortcut, and nothing re-quantises
    # what an addition writes; the defog head's image arithmetic and the IBN norms' sum read float.
    def int8_sources(node):
        return [producer[producer[i].input[0]].input[0] for i in node.input
                if i in producer and producer[i].op_type == "DequantizeLinear" and producer[i].input[0] in producer]
    adds = {n.name: [producer[s].op_type for s in int8_sources(n) if s in producer]
            for n in graph.node if n.op_type == "Add" and n.name.startswith("net.")}
    residual = [name for name in adds if name.startswith("net.backbone.layer") and name.endswith("/Add")
                and ".bn" not in name]
    assert len(residual) == 8 and all(adds[name] and set(adds[name]) == {"Conv"} for name in residual)
    assert all(set(sources) <= INT8_OUTPUT_OPS for sources in adds.values())   # never a float tensor rounded
    assert not [name for name in adds if ".bn1/" in name and adds[name]]
    add_outputs = {o for n in graph.node if n.op_type == "Add" for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in add_outputs]
    # The defog decoder's output conv (its transmission, airlight and gain maps) stays float, weights
    # and inputs: the inversion divides by what it writes (qdq.DEFOG_OUTPUT_CONVS).
    head = [n for n in graph.node if n.name.startswith("net.decoder.head/")]
    assert len(head) == 1 and not [i for i in head[0].input if i in producer
                                   and producer[i].op_type == "DequantizeLinear"]
    # The defog head's box sums stay float, inputs and weights (ones kernels: the detail split's 3x3
    # blurs and pixel count, the prior's 15-pixel mean and its counts, a column and a row each), whose
    # output is divided by the transmission. The decoder's fusion conv, summed from slices of its
    # weight over the upsampled features (32 channels), the fine map (64) and the prior's t0 (1), and
    # its reduce conv, over layer1 (64) and the stem (64), are quantised like any layer: their five
    # parts read int8 inputs and int8 weights.
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer if not t.name.startswith("net.")}
    box_sums = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in constants
                and (constants[n.input[1]] == 1).all()]
    assert len(box_sums) == 7
    assert not any(producer[i].op_type == "DequantizeLinear" for n in box_sums for i in n.input if i in producer)
    parts = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in producer
             and producer[n.input[1]].input[0] in constants]
    assert sorted(constants[producer[n.input[1]].input[0]].shape[1] for n in parts) == [1, 32, 64, 64, 64]
    assert all(producer[n.input[0]].op_type == "DequantizeLinear" for n in parts)
    assert run_onnx(out.qdq_onnx, foggy_frames(synth_root, 4))[1].shape[0] == 4


def _ort_ops(path, tmp_path):
    """Op counts of the graph ONNX Runtime actually runs on this CPU (after its fusions)."""
    import collections

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_int8_convs_run_as_int8_kernels_in_onnxruntime(exported, synth_root, tmp_path):
    """Each activation Q/DQ has one consumer and parameters of its own, so ORT's common
    subexpression elimination cannot re-share them and its QLinearConv fusion takes the convs
    (before, 16 of 35 quantised convs of the demo model stayed float convs between Q/DQ). A
    residual Add kept in float reads the int8 output of the quantised conv(s) before it, so
    those still run as QLinearConv; an identity shortcut it reads is float again."""
    import onnx

    from fogreid.calibration.calibrate_onnx import calibrate

    _, result = exported
    fp32 = result.files["onnx"]
    every = calibrate(fp32, _calib_dirs(synth_root), tmp_path / "int8", num=16, progress=False, budget=None)
    graph = onnx.load(str(every.qdq_onnx)).graph
    initializers = {i.name for i in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    qdq = [n for n in graph.node
           if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in initializers]
    assert qdq and all(readers.get(n.output[0], 0) == 1 for n in qdq)
    params = [name for n in qdq for name in n.input[1:]]
    assert len(params) == len(set(params))                      # no two share a scale by name
    weight_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    quantised = sum(1 for n in graph.node if n.op_type == "Conv" and n.input[1] in weight_dq)
    fused = _ort_ops(every.qdq_onnx, tmp_path)["QLinearConv"]
    assert fused >= 0.8 * quantised, f"{fused} of {quantised} quantised convs run as QLinearConv"
    # Every conv of the residual stages, the IBN blocks' second convs included (IBN has no Concat
    # out of training: resnet_ibn.IBN._without_concat), runs as an int8 kernel.
    stages = [n.name for n in graph.node if n.op_type == "Conv" and n.name.startswith("net.backbone.layer")]
    ran = onnx.load(str(tmp_path / "ort_optimized.onnx")).graph.node
    int8_kernels = [n.name for n in ran if n.op_type == "QLinearConv"]
    assert len(stages) >= 16 and not [s for s in stages if not any(k.startswith(s) for k in int8_kernels)]

    adds = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Add" and "layer" in n.name]
    float_adds = calibrate(fp32, _calib_dirs(synth_root), tmp_path / "adds", num=16, keep_fp=adds, progress=False,
                           budget=None)
    graph = onnx.load(str(float_adds.qdq_onnx)).graph
    producer = {o: n for n in graph.node for o in n.output}
    float_inputs = 0
    for add in (n for n in graph.node if n.name in adds):
        for name in add.input:
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":   # int8 only as a conv wrote it
                assert producer[producer[dq.input[0]].input[0]].op_type == "Conv", add.name
            else:
                float_inputs += 1
    assert float_inputs >= len(adds) // 2     # the identity shortcuts
    assert _ort_ops(float_adds.qdq_onnx, tmp_path)["QLinearConv"] == fused


def test_every_layer_kept_in_float_quantises_nothing(exported, synth_root, tmp_path):
    """ONNX Runtime's quantiser reads an empty list of nodes to quantise as every node. With every
    layer kept in float (`--keep-fp` naming them all, or the budget's all-float probe of a model
    whose every layer the embedding depends on) the INT8 file had every node of the body quantised,
    the ones that OpenVINO reads wrongly included; now it quantises nothing and computes as FP32."""
    import numpy as np
    import onnx

    from fogreid.calibration.calibrate_onnx import calibrate
    from fogreid.calibration.qdq import nodes_to_quantize

    from conftest import foggy_frames, run_onnx

    _, result = exported
    fp32 = result.files["onnx"]
    layers = nodes_to_quantize(onnx.load(str(fp32)), [])
    out = calibrate(fp32, _calib_dirs(synth_root), tmp_path, num=16, keep_fp=layers, progress=False, budget=None)
    graph = onnx.load(str(out.qdq_onnx)).graph
    assert len(layers) > 20
    assert not [n.name for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    frames = foggy_frames(synth_root, 4)
    expected, got = run_onnx(fp32, frames), run_onnx(out.qdq_onnx, frames)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)
    assert np.abs(got[0].astype(int) - expected[0]).max() <= 1
