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
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats
    from fogreid.onnx_graph import read_metadata
    from fogreid.validate.compare import validate

    ckpt, _ = trained
    result = export(ckpt, parse_formats("onnx-int8"), tmp_path, ExportOptions(
        calib_images=_calib_dirs(synth_root), calib_num=96, data_root=str(synth_root)))
    printed = capsys.readouterr().out
    assert "minmax (keeps every activation's full range" in printed      # the method, and why
    assert "INT8 budget: embedding cosine p1" in printed
    meta = read_metadata(result.files["onnx-int8"])
    assert float(meta["int8_budget_reached"]) >= float(meta["int8_budget_cosine_p1"]) == 0.99
    report = json.loads(result.manifest.read_text())["calibration"]
    assert report["int8_budget"]["float_layers"] < report["int8_budget"]["body_layers"]
    outcome = validate(ckpt, result.files["onnx-int8"], data_root=str(synth_root))
    assert outcome.precision == "int8"
    assert outcome.passed, [c.describe() for c in outcome.checks if not c.passed]
    assert outcome.figures["map_drop"] <= 1.0


@pytest.mark.slow
def test_budget_search_keeps_part_of_the_body_in_float_and_meets_it(trained, synth_root, tmp_path):
    from fogreid.calibration.images import build_calibration_set
    from fogreid.calibration.ranges import compute_ranges
    from fogreid.model.fused import FusedDefogReID
    from fogreid.onnx_graph import deploy_metadata, export_onnx
    from fogreid.validate.per_layer import choose_float_layers

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

    from conftest import foggy_frames, run_onnx
    from fogreid.calibration.calibrate_onnx import calibrate

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
