"""Export and calibration on the CPU with ONNX Runtime: every artifact against PyTorch."""

import json
import subprocess

import numpy as np
import onnx
import pytest

from fogreid import onnx_graph
from fogreid.calibration.calibrate_onnx import calibrate
from fogreid.calibration.images import build_calibration_set
from fogreid.calibration.ranges import compute_ranges
from fogreid.calibration.trt_cache import read_cache, write_cache
from fogreid.errors import FogreidError
from fogreid.export.formats import FORMATS, parse_batch, parse_formats
from fogreid.export.preflight import check_artifact
from fogreid.fileio import sha256_file
from fogreid.model.fused import FusedDefogReID
from fogreid.tensorrt_version import version_tag

from conftest import SIZE, compare, foggy_frames, make_checkpoint, run_onnx


@pytest.mark.parametrize("variant", [dict(backbone="resnet18", ibn=True), dict(backbone="resnet34", deform_branch=True),
                                     dict(backbone="resnet50", deform_branch=True, branch_channels=128)],
                         ids=["r18-ibn", "r34-deform", "r50-deform"])
def test_each_backbone_exports_and_matches_pytorch(variant, synth_root, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", synth_root, **variant)
    model = FusedDefogReID.from_checkpoint(ckpt)
    path = onnx_graph.export_onnx(model, tmp_path / "m.onnx", onnx_graph.deploy_metadata(model.net, "x", "fp32"))
    frames = foggy_frames(synth_root, 5)
    for batch in (frames[:1], frames):  # dynamic batch
        cosine, grey = compare(path, model, batch)
        assert cosine.min() >= 0.9999 and grey.max() <= 1
    has_deform = any(n.op_type == "DeformConv" for n in onnx.load(str(path)).graph.node)
    assert has_deform == model.net.config.deform_branch


def test_fp32_and_fp16_match_pytorch(exported, synth_root):
    ckpt, result = exported
    model, frames = FusedDefogReID.from_checkpoint(ckpt), foggy_frames(synth_root)
    cosine, grey = compare(result.files["onnx"], model, frames)
    assert cosine.min() >= 0.9999 and grey.max() <= 1
    cosine, grey = compare(result.files["onnx-fp16"], model, frames)
    assert cosine.min() >= 0.999 and grey.mean() < 0.5
    half = onnx.load(str(result.files["onnx-fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)


def test_int8_qdq_matches_pytorch_on_the_cpu_provider(exported, synth_root):
    ckpt, result = exported
    model, frames = FusedDefogReID.from_checkpoint(ckpt), foggy_frames(synth_root)
    cosine, grey = compare(result.files["onnx-int8"], model, frames)
    print(f"\nINT8 Q/DQ vs PyTorch: cosine min {cosine.min():.4f} mean {cosine.mean():.4f}, "
          f"grey levels mean {grey.mean():.2f} max {grey.max()}")
    assert cosine.min() >= 0.98
    graph = onnx.load(str(result.files["onnx-int8"])).graph
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert quantized_inputs, "no Q/DQ nodes"
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert first_conv.input[0] not in quantized_inputs, "the raw image input stays in float"
    assert not any(n.name.startswith(("preprocess", "postprocess", "graph")) and n.op_type == "QuantizeLinear"
                   for n in graph.node)


def test_metadata_and_manifest(exported):
    ckpt, result = exported
    meta = onnx_graph.read_metadata(result.files["onnx"])
    assert meta["input_size"] == "64,64" and meta["embedding_dim"] == "512" and meta["precision"] == "fp32"
    assert meta["checkpoint_sha256"] == sha256_file(ckpt)
    assert onnx_graph.read_metadata(result.files["onnx-int8"])["precision"] == "int8"
    manifest = json.loads(result.manifest.read_text())
    assert manifest["files"]["onnx-int8"] == "model_int8.onnx"
    names = [n.name for n in onnx.load(str(result.files["onnx"])).graph.node]
    assert any(n.startswith("net.backbone.layer4") for n in names), "nodes are named after modules"


def test_tensorrt_cache_is_tensorrt_format(exported):
    _, result = exported
    header, scales = read_cache(result.files["calibration-cache"])
    assert header == "TRT-100300-EntropyCalibration2"
    graph = onnx.load(str(result.files["onnx"])).graph
    tensors = {o for n in graph.node for o in n.output}
    assert scales and set(scales) <= tensors
    assert all(0 < s < 1e4 for s in scales.values())
    assert "embedding" not in scales or scales["embedding"] <= 1.01 / 127  # a unit vector


def test_cache_round_trip_and_version_tags(tmp_path):
    assert version_tag((10, 3, 0)) == "100300" and version_tag((8, 6, 1)) == "8601"
    path = write_cache(tmp_path / "c.cache", {"a": 0.5, "b/c:0": 1 / 127, "dead": 0.0}, (10, 8, 0))
    header, scales = read_cache(path)
    assert header == "TRT-100800-EntropyCalibration2" and scales == pytest.approx({"a": 0.5, "b/c:0": 1 / 127})
    assert path.read_text().splitlines()[1] == "a: 3f000000"
    (tmp_path / "bad.cache").write_text("calibration.cache of ONNX Runtime\n")
    with pytest.raises(FogreidError, match="not a TensorRT calibration cache"):
        read_cache(tmp_path / "bad.cache")


def test_calibration_methods_give_different_ranges(exported, synth_root):
    _, result = exported
    calib = build_calibration_set([synth_root / "FVRID_syn" / "train_foggy"], SIZE, num=16, progress=False)
    ranges = {m: compute_ranges(result.files["onnx"], calib, m, num_bins=512)
              for m in ("entropy", "percentile", "minmax")}
    def amax(method, key):
        low, high = ranges[method][key].range_value
        return float(np.max(np.abs(np.concatenate([np.ravel(low), np.ravel(high)]))))

    # A tensor that does not depend on the image (the detail split's pixel counts) has one range
    # whatever the calibrator: left out, found as those whose range is the same on other images.
    other = build_calibration_set([synth_root / "FVRID_real" / "train_foggy"], SIZE, num=16, progress=False)
    ranges["minmax-other"] = compute_ranges(result.files["onnx"], other, "minmax")
    common = [k for k in ranges["minmax"].keys() if amax("minmax", k) > 0
              and abs(amax("minmax", k) - amax("minmax-other", k)) > 1e-6 * amax("minmax", k)]
    assert len(common) > 20

    for a, b in (("entropy", "minmax"), ("percentile", "minmax"), ("entropy", "percentile")):
        differ = sum(abs(amax(a, k) - amax(b, k)) > 1e-6 * max(amax(b, k), 1e-9) for k in common)
        assert differ > len(common) // 3, f"{a} and {b} gave the same ranges ({differ} of {len(common)} differ)"
    assert all(amax("percentile", k) <= amax("minmax", k) + 1e-6 for k in common)


def test_calibration_refuses_bad_sets(exported, synth_root, tmp_path):
    _, result = exported
    onnx_path = result.files["onnx"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FogreidError, match="no images"):
        calibrate(onnx_path, [tmp_path / "empty"], tmp_path, progress=False)
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted((synth_root / "FVRID_syn" / "train_foggy").iterdir())[:5]:
        (few / p.name).write_bytes(p.read_bytes())
    with pytest.raises(FogreidError, match="only 5 images.*at least 16"):
        calibrate(onnx_path, [few], tmp_path, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in sorted((synth_root / "FVRID_syn" / "train_foggy").iterdir())[:20]:
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "00001_c001_000009_0.jpg").write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(FogreidError, match="00001_c001_000009_0.jpg"):
        calibrate(onnx_path, [broken], tmp_path, num=64, progress=False)
    with pytest.raises(FogreidError, match="test query/gallery identities"):
        calibrate(onnx_path, [synth_root / "FVRID_syn" / "gallery_foggy"], tmp_path, data_root=synth_root,
                  progress=False)
    with pytest.raises(FogreidError, match="--keep-fp: no node named nope"):
        calibrate(onnx_path, [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, keep_fp=["nope"], progress=False)


def test_keep_fp_leaves_named_nodes_unquantized(exported, synth_root, tmp_path):
    _, result = exported
    graph = onnx.load(str(result.files["onnx"])).graph
    keep = [n.name for n in graph.node if n.name.startswith("net.backbone.layer4") and n.op_type == "Conv"]
    out = calibrate(result.files["onnx"], [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, num=32,
                    keep_fp=keep, progress=False)
    qgraph = onnx.load(str(out.qdq_onnx)).graph
    dq_outputs = {n.output[0] for n in qgraph.node if n.op_type == "DequantizeLinear"}
    kept = [n for n in qgraph.node if n.name in keep]
    # Their weights stay float (an input tensor shared with a quantized consumer is quantized once for all).
    assert kept and all(n.input[1] not in dq_outputs for n in kept)
    quantized = [n for n in qgraph.node if n.op_type == "Conv" and n.input[1] in dq_outputs]
    assert quantized and not {n.name for n in quantized} & set(keep)


def test_op_check_names_unsupported_ops_and_dla_fallback(tmp_path, synth_root):
    ckpt = make_checkpoint(tmp_path / "d.pt", synth_root, deform_branch=True)
    model = FusedDefogReID.from_checkpoint(ckpt)
    path = onnx_graph.export_onnx(model, tmp_path / "d.onnx", onnx_graph.deploy_metadata(model.net, "x", "fp32"))
    assert check_artifact(path, ["trt10", "trt11"]).ok   # 10.3 and 11.x parse DeformConv (added in 10.1)
    old = check_artifact(path, ["trt10"], trt_version=(10, 0, 1))
    assert not old.ok and any("DeformConv" in line and "deform_branch=false" in line for line in old.lines())
    dla = check_artifact(path, ["dla"])
    fallback = {p.node for p in dla.problems if p.rule == "dla-layer"}
    assert {"DeformConv", "InstanceNormalization"} <= fallback


def test_format_and_batch_parsing():
    assert [f.name for f in parse_formats("onnx, engine-int8")] == ["onnx", "engine-int8"]
    with pytest.raises(FogreidError, match="did you mean onnx-int8"):
        parse_formats("onnx-int9")
    assert parse_batch("1:8:32") == (1, 8, 32) and parse_batch("4") == (1, 4, 4) and parse_batch(None) == (1, 8, 32)
    assert parse_batch("4", dla=True) == (4, 4, 4)
    with pytest.raises(FogreidError, match="--dla-core needs one batch size"):
        parse_batch(None, dla=True)
    with pytest.raises(FogreidError, match="MIN:OPT:MAX"):
        parse_batch("8:1:4")
    assert set(FORMATS) == {"onnx", "onnx-fp16", "onnx-int8", "engine-fp16", "engine-int8", "triton", "deepstream"}


def test_export_cli_errors(fogreid_cmd, tmp_path, exported):
    ckpt, _ = exported
    run = subprocess.run(fogreid_cmd + ["export", "--checkpoint", str(ckpt), "--format", "onnx-int8", "--out",
                                        str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and "--calib-images" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(fogreid_cmd + ["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--checkpoint" in run.stderr and "none.pt: not found" in run.stderr
    not_fogreid = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])])), str(not_fogreid))
    run = subprocess.run(fogreid_cmd + ["calibrate", "--onnx", str(not_fogreid), "--images", str(tmp_path),
                                        "--out", str(tmp_path / "int8")], capture_output=True, text=True)
    assert run.returncode == 2 and "no input named 'frames'" in run.stderr


def test_reid_only_checkpoint_exports_passes_the_check_and_passes_frames_through(fogreid_cmd, synth_root, tmp_path):
    """A `--mode reid` model has no defog head: its `defogged` output is the input frames, made in
    the graph (Cast, not an Identity on the uint8 input, which TensorRT cannot build), and the
    export runs the TensorRT pre-flight check like any other. Checked on both engines."""
    import torch

    from fogreid.sessions import openvino_model

    ckpt = make_checkpoint(tmp_path / "reid.pt", synth_root, defog=False)
    out = tmp_path / "artifacts"
    calib = synth_root / "FVRID_syn" / "train_foggy"
    run = subprocess.run(fogreid_cmd + ["export", "--checkpoint", str(ckpt), "--format", "onnx,onnx-int8",
                                        "--out", str(out), "--calib-images", str(calib), "--calib-num", "64",
                                        "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for target in ("trt10", "trt11", "openvino"):
        check = subprocess.run(fogreid_cmd + ["check", str(out / "model.onnx"), str(out / "model_int8.onnx"),
                                              "--target", target], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    graph = onnx.load(str(out / "model.onnx")).graph
    assert not any(n.op_type == "Identity" and "frames" in n.input for n in graph.node)

    model, frames = FusedDefogReID.from_checkpoint(ckpt), foggy_frames(synth_root, 8)
    with torch.no_grad():
        _, want = model(torch.from_numpy(frames))
    for name, floor in (("model.onnx", 0.9999), ("model_int8.onnx", 0.98)):
        compiled = openvino_model(out / name)
        engines = {"onnxruntime": run_onnx(out / name, frames),
                   "openvino": [compiled(frames)[o] for o in compiled.outputs]}
        for engine, (defogged, embedding) in engines.items():
            assert np.array_equal(defogged, frames), f"{name} on {engine}: frames not passed through"
            cosine = (embedding * want.numpy()).sum(axis=1)
            assert cosine.min() >= floor, f"{name} on {engine}: cosine {cosine.min():.4f}"
