"""The TensorRT path, checked against TensorRT's, trtexec's and Polygraphy's documented rules.

TensorRT cannot be installed on these machines (REFERENCE.md §9), so what it would do is
checked here by its rules: the Q/DQ types its parser takes, the options each trtexec major
version parses, its calibration cache header, what Polygraphy's Calibrator hands it, the
DLA restrictions, and the batch limits of an engine's optimisation profile.
"""

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fogreid import onnx_graph
from fogreid.calibration.trt_cache import cache_version, check_cache_for, read_cache, write_cache
from fogreid.errors import FogreidError
from fogreid.export.exporter import ExportOptions, check_options, export
from fogreid.export.formats import parse_formats
from fogreid.export.preflight import check_artifact
from fogreid.export.tensorrt_engine import EngineSpec, recipe, tail_layers, trtexec_command, trtexec_script
from fogreid.tensorrt_version import check_dla_available, installed_tensorrt, parse_trt_version

from conftest import SIZE, compare, foggy_frames

# ------------------------------------------------------------------ 1. Q/DQ types

def test_int8_qdq_has_only_int8_quantised_tensors(exported):
    _, result = exported
    model = onnx.load(str(result.files["onnx-int8"]))
    inits = {t.name: t for t in model.graph.initializer}
    typed = {t.name: t.data_type for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert dq and q
    # Every DequantizeLinear reads an INT8 tensor: a weight initializer, or a QuantizeLinear's output.
    q_outputs = {n.output[0] for n in q}
    for node in dq:
        assert node.input[0] in q_outputs or typed[node.input[0]] == TensorProto.INT8, node.name
    # ... and every zero point is INT8 and zero (TensorRT is symmetric only).
    for node in q + dq:
        zp = inits[node.input[2]]
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), node.name
    report = check_artifact(result.files["onnx-int8"], ["trt10", "trt11", "ort-cpu"])
    assert report.ok, report.lines()


# ------------------------------------------------------------------ 2. trtexec scripts

# The options each trtexec parses (samples/common/sampleOptions.cpp: TensorRT release/10.3 and
# release/11.1). TensorRT 11 dropped every precision option ("TensorRT 11.x removes all precision
# flags (--fp16, --int8, --bf16, --fp8, --int4, --best)", and --calib); --stronglyTyped is a
# deprecated no-op there. An unknown option ends trtexec with EXIT_FAILURE (trtexec.cpp).
# --layerPrecisions / --layerOutputTypes / --precisionConstraints: 10.3's sampleOptions.cpp; none in 11.1's.
TRTEXEC_OPTIONS = {
    10: {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--memPoolSize", "--stronglyTyped",
         "--fp16", "--int8", "--best", "--calib", "--useDLACore", "--allowGPUFallback", "--timingCacheFile", "--help",
         "--layerPrecisions", "--layerOutputTypes", "--precisionConstraints"},
    11: {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--memPoolSize", "--stronglyTyped",
         "--useDLACore", "--allowGPUFallback", "--timingCacheFile", "--help"},
}

# A stand-in for trtexec that enforces those option tables (and refuses --stronglyTyped with
# --useDLACore on 10.x, where trtexec sets kFP16 for DLA), so the scripts are run as a shell would.
# Its first line is trtexec's own banner (samples/common/logging.h, defineTest + reportTestStart:
# "&&&& RUNNING TensorRT.trtexec [TensorRT v<NV_TENSORRT_VERSION>]", 11.x adds " [b<build>]"),
# printed for --help too; FAKE_TRT_NUMBER overrides the version (default X.3.0 of the major).
FAKE_TRTEXEC = r'''#!{python}
import os, sys
major = int(os.environ["FAKE_TRT_MAJOR"])
number = int(os.environ.get("FAKE_TRT_NUMBER") or major * 10000 + 300)
allowed = {allowed}[major]
print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{{number}}] # trtexec " + " ".join(sys.argv[1:]))
if "--help" in sys.argv:
    sys.exit(0)
opts = dict(a.split("=", 1) if "=" in a else (a, "") for a in sys.argv[1:])
unknown = [o for o in opts if o not in allowed]
if unknown:
    print("Unknown option: " + unknown[0], file=sys.stderr); sys.exit(1)
if major == 10 and "--stronglyTyped" in opts and "--useDLACore" in opts:
    print("strongly typed network with kFP16 set for DLA", file=sys.stderr); sys.exit(1)
for key in ("--onnx", "--calib"):
    if key in opts and not os.path.isfile(opts[key]):
        print(f"{{key}} {{opts[key]}} not found", file=sys.stderr); sys.exit(1)
with open(opts["--saveEngine"], "ab") as f:
    f.write(b"engine\n")
with open("built.log", "a") as f:
    f.write(opts["--saveEngine"] + "\n")
'''


def run_script(script, major, tmp_path, number=None):
    fake = tmp_path / f"trtexec{major}"
    fake.write_text(FAKE_TRTEXEC.format(python=sys.executable, allowed=repr(TRTEXEC_OPTIONS)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, TRTEXEC=str(fake), FAKE_TRT_MAJOR=str(major), FAKE_TRT_NUMBER=str(number or ""))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)


def test_one_trtexec_script_per_tensorrt_major(exported_trt, tmp_path):
    result, out = exported_trt
    manifest = json.loads(result.manifest.read_text())
    assert manifest["files"]["trtexec-trt10"] == "trtexec_trt10.sh"
    assert manifest["files"]["trtexec-trt11"] == "trtexec_trt11.sh"
    for major in (10, 11):
        script = out / f"trtexec_trt{major}.sh"
        text = script.read_text()
        assert f"TensorRT {major}.x" in text.splitlines()[1]
        commands = [line for line in text.splitlines() if line.startswith('"$TRTEXEC"')]
        engines = [c.split("--saveEngine=")[1].split()[0] for c in commands]
        assert sorted(engines) == ["model_fp16.engine", "model_int8.engine"]   # each written once
        if major == 11:
            assert not any(flag in c for c in commands for flag in ("--fp16", "--int8", "--calib", "--stronglyTyped"))
        assert not any("--stronglyTyped" in c and "--useDLACore" in c for c in commands)
        for f in out.glob("*.engine"):
            f.unlink()
        (out / "built.log").unlink(missing_ok=True)
        run = run_script(script, major, tmp_path)
        assert run.returncode == 0, run.stderr
        assert sorted((out / "built.log").read_text().split()) == ["model_fp16.engine", "model_int8.engine"]
        # The wrong trtexec for this script is refused before any engine is built.
        (out / "built.log").unlink()
        wrong = run_script(script, 21 - major, tmp_path)
        assert wrong.returncode == 2 and f"trtexec_trt{21 - major}.sh" in wrong.stderr
        assert not (out / "built.log").exists()


def test_dla_scripts_use_static_weakly_typed_builds(exported, synth_root, tmp_path):
    ckpt, _ = exported
    out = tmp_path / "dla"
    opts = ExportOptions(batch=(4, 4, 4), dla_core=1, calib_images=[str(synth_root / "FVRID_syn" / "train_foggy")],
                         calib_num=32, progress=False)
    result = export(ckpt, parse_formats("engine-fp16,engine-int8"), out, opts)
    ten = (out / "trtexec_trt10.sh").read_text()
    lines = [line for line in ten.splitlines() if line.startswith('"$TRTEXEC"')]
    assert len(lines) == 2 and all("--useDLACore=1" in line and "--allowGPUFallback" in line for line in lines)
    assert all("--minShapes=frames:4x64x64x3" in line and "--maxShapes=frames:4x64x64x3" in line for line in lines)
    assert not any("--stronglyTyped" in line for line in lines)
    int8 = next(line for line in lines if "model_int8.engine" in line)
    assert "--int8" in int8 and "--fp16" in int8 and "--calib=calibration.cache" in int8   # implicit: DLA's path
    eleven = (out / "trtexec_trt11.sh").read_text()
    commands11 = [line for line in eleven.splitlines() if line.startswith('"$TRTEXEC"')]
    assert "11.4.1" in eleven and not any("--calib" in c or "--int8" in c for c in commands11)
    assert run_script(out / "trtexec_trt10.sh", 10, tmp_path).returncode == 0
    assert "dla" in json.loads(result.manifest.read_text())["check"]["model.onnx"]["targets"]


def test_recipes_follow_each_tensorrt_version():
    gpu16, gpu8 = EngineSpec("fp16", (1, 8, 32), SIZE), EngineSpec("int8", (1, 8, 32), SIZE)
    implicit = EngineSpec("int8", (8, 8, 8), SIZE, dla_core=0, calibration="implicit")
    assert recipe(gpu16, 10).onnx == "onnx-fp16" and recipe(gpu16, 10).strongly_typed_flag
    assert recipe(gpu8, 11).onnx == "onnx-int8" and not recipe(gpu8, 11).strongly_typed_flag
    assert (recipe(implicit, 10).int8 and recipe(implicit, 10).calibration_cache
            and not recipe(implicit, 10).strongly_typed)
    with pytest.raises(FogreidError, match="removed in TensorRT 11"):
        recipe(implicit, 11)
    with pytest.raises(FogreidError, match="needs the embedding tail's layers"):   # never an unpinned FP16 tail
        trtexec_command("model.onnx", "m.engine", implicit, recipe(implicit, 10), "calibration.cache")
    line = trtexec_command("model.onnx", "m.engine", implicit, recipe(implicit, 10), "calibration.cache",
                           fp32_layers=["graph/Div"])
    for part in ("--int8", "--fp16", "--calib=calibration.cache", "--useDLACore=0", "--optShapes=frames:8x64x64x3"):
        assert part in line


# ------------------------------------------------------------------ 3. cache header

def test_cache_header_carries_the_target_version(exported, synth_root, tmp_path):
    assert cache_version("TRT-100300-EntropyCalibration2") == (10, 3, 0)
    assert cache_version("TRT-110100-EntropyCalibration2") == (11, 1, 0)
    assert cache_version("TRT-8601-EntropyCalibration2") == (8, 6, 1)
    ckpt, result = exported
    assert read_cache(result.files["calibration-cache"])[0] == "TRT-100300-EntropyCalibration2"   # default: JetPack 6
    from fogreid.calibration.calibrate_onnx import calibrate

    cal = calibrate(result.files["onnx"], [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, num=32,
                    trt_version=parse_trt_version("10.16"), progress=False)
    assert read_cache(cal.cache)[0] == "TRT-101600-EntropyCalibration2"
    check_cache_for(cal.cache, (10, 16, 0))
    with pytest.raises(FogreidError, match="written for TensorRT 10.16.0.*--trt-version 10.3.0"):
        check_cache_for(cal.cache, (10, 3, 0))
    with pytest.raises(FogreidError, match="--trt-version 'ten'"):
        parse_trt_version("ten")


def test_trt_version_option_reaches_the_cache(fogreid_cmd, exported, synth_root, tmp_path):
    ckpt, _ = exported
    run = subprocess.run(fogreid_cmd + ["calibrate", "--onnx", str(exported[1].files["onnx"]), "--images",
                                        str(synth_root / "FVRID_syn" / "train_foggy"), "--num", "32", "--out",
                                        str(tmp_path), "--trt-version", "11.1", "--quiet"],
                         capture_output=True, text=True)
    if installed_tensorrt() is None:
        assert run.returncode == 0, run.stderr
        assert read_cache(tmp_path / "calibration.cache")[0] == "TRT-110100-EntropyCalibration2"
    help_text = subprocess.run(fogreid_cmd + ["export", "--help"], capture_output=True, text=True).stdout
    assert "10.3.0" in help_text and "--trt-version" in help_text


# ------------------------------------------------------------------ 4. the implicit calibrator

@pytest.fixture
def polygraphy_calibrator(monkeypatch):
    """Polygraphy's own Calibrator class, importable without TensorRT. Its module evaluates
    `trt.IInt8EntropyCalibrator2` as a default argument, so a stand-in `tensorrt` module supplies
    that base class (a pybind trampoline whose __init__ takes nothing); everything the
    calibrator does in Python (metadata override, shape/dtype checks, batching) is Polygraphy's.
    The device copy needs CUDA, so it records the host arrays instead."""
    if installed_tensorrt() is None:
        stand_in = types.ModuleType("tensorrt")
        stand_in.__version__ = "10.3.0"
        for base in ("IInt8EntropyCalibrator2", "IInt8LegacyCalibrator", "IInt8Calibrator"):
            setattr(stand_in, base, type(base, (), {"__init__": lambda self: None}))
        monkeypatch.setitem(sys.modules, "tensorrt", stand_in)
    from polygraphy.backend.trt import Calibrator
    from polygraphy.backend.trt import util as trt_util

    handed = []
    monkeypatch.setattr(trt_util, "_get_array_on_gpu", lambda buf, name, buffers: handed.append(buf) or id(buf))
    return Calibrator, handed


def test_polygraphy_calibrator_takes_every_batch(polygraphy_calibrator, synth_root):
    from polygraphy.common import TensorMetadata

    from fogreid.calibration.trt_calibrator import CalibrationBatches

    Calibrator, handed = polygraphy_calibrator
    images = foggy_frames(synth_root, 40, "train")
    opt = 8
    # What CreateConfig gives the calibrator: the network input (uint8 frames) at the OPT shape
    # of the calibration profile (util.get_input_metadata_from_network(force_opt_shapes=True)).
    network_inputs = TensorMetadata().add("frames", np.uint8, (opt, *SIZE, 3))
    loader = CalibrationBatches(images, opt)
    calibrator = Calibrator(loader)
    calibrator.set_input_metadata(network_inputs)
    pointers = [calibrator.get_batch(["frames"]) for _ in range(len(images) // opt + 1)]
    assert [p is not None for p in pointers] == [True] * (len(images) // opt) + [False]
    assert loader.served == len(images) // opt == 5
    assert all(b.dtype == np.float32 and b.shape == (opt, *SIZE, 3) for b in handed)
    assert np.array_equal(handed[0], images[:opt].astype(np.float32))
    # The failure this replaces: uint8 batches of another size are dropped by get_batch
    # without a word, and TensorRT calibrates on nothing.
    handed.clear()
    old = Calibrator([{"frames": b} for b in (images[i:i + 8] for i in range(0, 40, 8))])
    old.set_input_metadata(TensorMetadata().add("frames", np.uint8, (4, *SIZE, 3)))
    assert old.get_batch(["frames"]) is None and not handed


def test_calibration_batches_refuse_too_few_images(synth_root):
    from fogreid.calibration.trt_calibrator import CalibrationBatches

    with pytest.raises(FogreidError, match="OPT batch \\(32\\).*only 24"):
        CalibrationBatches(foggy_frames(synth_root, 24, "train"), 32)


# ------------------------------------------------------------------ 6. DLA rules

def test_dla_needs_a_static_batch_and_a_tensorrt_with_dla(exported, fogreid_cmd, tmp_path):
    ckpt, _ = exported
    fmts = parse_formats("engine-fp16")
    with pytest.raises(FogreidError, match="--dla-core needs one batch size.*--batch 8"):
        check_options(fmts, ExportOptions(batch=(1, 8, 32), dla_core=0))
    assert check_options(fmts, ExportOptions(batch=(8, 8, 8), dla_core=0)) == (10, 3, 0)
    for version in ((11, 1, 0), (11, 4, 0), (10, 16, 0)):
        with pytest.raises(FogreidError, match="has no DLA"):
            check_dla_available(version)
    check_dla_available((11, 4, 1))
    check_dla_available((10, 3, 0))
    out = tmp_path / "never"
    for extra in (["--batch", "1:8:32"], ["--batch", "4", "--trt-version", "11.1"]):
        run = subprocess.run(fogreid_cmd + ["export", "--checkpoint", str(ckpt), "--format", "engine-fp16", "--out",
                                            str(out), "--dla-core", "0", *extra], capture_output=True, text=True)
        assert run.returncode == 2 and "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1
        assert not out.exists(), "refused before anything is written"


# ------------------------------------------------------------------ 7. profile batch limits

def test_profile_runner_splits_and_refuses(exported, synth_root):
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from fogreid.runtime.backends import DeployedModel, ProfileBatchRunner, onnxruntime_session, split_batch

    assert split_batch(7, 1, 4) == [4, 3] and split_batch(64, 1, 32) == [32, 32] and split_batch(16, 8, 8) == [8, 8]
    with pytest.raises(FogreidError, match="takes batches of 8 to 8.*got 3"):
        split_batch(3, 8, 8)
    with pytest.raises(FogreidError, match="multiple of 8"):
        split_batch(12, 8, 8)
    _, result = exported
    frames = foggy_frames(synth_root, 7)
    plain = OnnxrtRunner(onnxruntime_session(result.files["onnx"], "cpu"))
    with plain:
        expected = plain.infer({"frames": frames})
    # An ONNX Runtime session stands in for the engine; the limits are what a TensorRT
    # profile of 2..4 would give (engine_batch_range reads them from the engine).
    runner = ProfileBatchRunner(OnnxrtRunner(onnxruntime_session(result.files["onnx"], "cpu")), lambda: (2, 4))
    with runner:
        got = runner.infer({"frames": frames})
        np.testing.assert_array_equal(got["defogged"], expected["defogged"])
        np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-6)
        with pytest.raises(FogreidError, match="takes batches of 2 to 4"):
            runner.infer({"frames": frames[:1]})
    static = ProfileBatchRunner(OnnxrtRunner(onnxruntime_session(result.files["onnx"], "cpu")), lambda: (4, 4))
    with DeployedModel(static) as model:   # the runtime pads a static (DLA) batch and drops the padding
        defogged, embedding = model(frames[:3])
        assert defogged.shape[0] == embedding.shape[0] == 3
        np.testing.assert_allclose(embedding, expected["embedding"][:3], atol=1e-6)
        assert model(frames)[1].shape[0] == 7


# ------------------------------------------------------------------ 8. pre-flight check

def graph(nodes, inputs, outputs, inits=(), opset=19):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def save(model, path):
    onnx.save(model, str(path))
    return path


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_check_rejects_each_broken_rule(tmp_path):
    f32 = TensorProto.FLOAT
    # INT32 DequantizeLinear (a quantised bias).
    bias = numpy_helper.from_array(np.array([5, -3], dtype=np.int32), "bias_q")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    m = graph([helper.make_node("DequantizeLinear", ["bias_q", "s"], ["b"], name="bias_dq"),
               helper.make_node("Add", ["x", "b"], ["y"], name="add")],
              [vi("x", f32, [1, 2])], [vi("y", f32, [1, 2])], [bias, scale])
    lines = check_artifact(save(m, tmp_path / "int32dq.onnx"), ["trt10"]).lines()
    assert any("bias_dq" in line and "INT32" in line and "QuantizeBias=False" in line for line in lines)
    # UINT8 inside the network.
    m = graph([helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8, name="to_u8"),
               helper.make_node("Cast", ["u"], ["y"], to=f32, name="back")],
              [vi("x", f32, [1, 2])], [vi("y", f32, [1, 2])])
    assert any("to_u8" in line and "UINT8" in line for line in check_artifact(save(m, tmp_path / "u8.onnx"),
                                                                               ["trt11"]).lines())
    # A uint8 input read by something other than a Cast.
    m = graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", TensorProto.UINT8, [1, 2])],
              [vi("y", TensorProto.UINT8, [1, 2])])
    assert not check_artifact(save(m, tmp_path / "u8in.onnx"), ["trt10"]).ok
    # Dynamic spatial shape on DLA (a dynamic batch is only a warning: build a static profile).
    m = graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", f32, ["b", 3, "h", 64])],
              [vi("y", f32, ["b", 3, "h", 64])])
    dla = check_artifact(save(m, tmp_path / "dyn.onnx"), ["dla"])
    assert not dla.ok and any(p.rule == "dla-static" and p.severity == "error" for p in dla.problems)
    assert check_artifact(tmp_path / "dyn.onnx", ["trt10"]).ok
    # An op newer than the target: DeformConv before 10.1; opset newer than the parser's range.
    m = graph([helper.make_node("DeformConv", ["x", "w", "o"], ["y"], name="deform")],
              [vi("x", f32, [1, 1, 4, 4]), vi("w", f32, [1, 1, 1, 1]), vi("o", f32, [1, 2, 4, 4])],
              [vi("y", f32, [1, 1, 4, 4])])
    path = save(m, tmp_path / "deform.onnx")
    assert not check_artifact(path, ["trt10"], trt_version=(10, 0, 0)).ok
    assert check_artifact(path, ["trt10"], trt_version=(10, 3, 0)).ok
    m = graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", f32, [1])], [vi("y", f32, [1])],
              opset=22)
    assert any(p.rule == "opset" for p in check_artifact(save(m, tmp_path / "op22.onnx"), ["trt10"]).problems)
    # Per-channel activation quantisation and a non-zero zero point.
    s2 = numpy_helper.from_array(np.array([0.1, 0.2], dtype=np.float32), "s2")
    zp = numpy_helper.from_array(np.array([0, 3], dtype=np.int8), "zp")
    m = graph([helper.make_node("QuantizeLinear", ["x", "s2", "zp"], ["q"], axis=1, name="q"),
               helper.make_node("DequantizeLinear", ["q", "s2", "zp"], ["y"], axis=1, name="dq")],
              [vi("x", f32, [1, 2])], [vi("y", f32, [1, 2])], [s2, zp])
    rules = {p.rule for p in check_artifact(save(m, tmp_path / "pc.onnx"), ["trt10"]).problems}
    assert {"qdq-per-channel", "qdq-zero-point"} <= rules
    # Weights in an external file that was not copied along.
    w = numpy_helper.from_array(np.ones((2,), dtype=np.float32), "w")
    m = graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x", f32, [2])], [vi("y", f32, [2])], [w])
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    ext = check_artifact(tmp_path / "ext.onnx", ["trt10", "ort-cpu"])
    assert {p.rule for p in ext.problems} == {"external-data"} and not ext.ok


def test_check_passes_our_artifacts_and_exit_codes(exported, fogreid_cmd, tmp_path):
    _, result = exported
    paths = [str(result.files[k]) for k in ("onnx", "onnx-fp16", "onnx-int8")]
    run = subprocess.run(fogreid_cmd + ["check", *paths, "--target", "trt10", "--target", "trt11",
                                        "--target", "ort-cpu", "--target", "ort-cuda"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": ok for trt10, trt11, ort-cpu, ort-cuda") == 3
    dla = subprocess.run(fogreid_cmd + ["check", paths[0], "--target", "dla", "--json"], capture_output=True, text=True)
    report = json.loads(dla.stdout)[0]
    assert dla.returncode == 0 and report["errors"] == 0 and report["warnings"] > 0   # GPU fallback, static batch
    manifest = json.loads(result.manifest.read_text())
    assert {name: c["ok"] for name, c in manifest["check"].items()} == {
        "model.onnx": True, "model_fp16.onnx": True, "model_int8.onnx": True}
    broken = tmp_path / "u8.onnx"
    onnx.save(graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", TensorProto.UINT8, [1])],
                    [vi("y", TensorProto.UINT8, [1])]), str(broken))
    run = subprocess.run(fogreid_cmd + ["check", str(broken)], capture_output=True, text=True)
    assert run.returncode == 1 and "relu" in run.stderr and "fix:" in run.stderr
    run = subprocess.run(fogreid_cmd + ["check", str(tmp_path / "none.onnx")], capture_output=True, text=True)
    assert run.returncode == 2 and "not found" in run.stderr and "Traceback" not in run.stderr


# ------------------------------------------------------------------ 9. FP16 on a trained checkpoint

def test_fp16_keeps_fragile_ops_in_fp32_and_matches_a_trained_model(trained, synth_root, tmp_path):
    from fogreid.model.fused import FusedDefogReID

    ckpt, _ = trained
    model = FusedDefogReID.from_checkpoint(ckpt)
    path = onnx_graph.export_onnx(model, tmp_path / "m.onnx", onnx_graph.deploy_metadata(model.net, "x", "fp32"))
    proto = onnx_graph.load(path)
    half = onnx_graph.to_fp16(proto)
    onnx_graph.save(half, tmp_path / "m16.onnx")
    typed = {v.name: v.type.tensor_type.elem_type
             for v in onnx.shape_inference.infer_shapes(half).graph.value_info}
    inorm = [n for n in half.graph.node if n.op_type == "InstanceNormalization"]
    assert inorm and all(typed.get(n.output[0]) == TensorProto.FLOAT for n in inorm)
    tail = onnx_graph.embedding_tail(proto)
    assert {"BatchNormalization", "ReduceSum", "Sqrt", "Div"} <= {n.op_type for n in proto.graph.node if n.name in tail}
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    frames = np.concatenate([foggy_frames(synth_root, 24, "query"), foggy_frames(synth_root, 24, "gallery")])
    cosine, grey = compare(tmp_path / "m16.onnx", model, frames)
    print(f"\nFP16 (IN + embedding tail in FP32) vs PyTorch on a trained checkpoint: cosine min {cosine.min():.6f}")
    assert cosine.min() >= 0.999 and grey.mean() < 0.5
    assert check_artifact(tmp_path / "m16.onnx", ["trt10", "trt11", "ort-cpu"]).ok


# ------------------------------------------------------------------ a real TensorRT, where there is one

def test_tensorrt_engine_build(exported, tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on CPU-only CI); "
                                                 "engines are built on GPU machines and Jetsons")
    from fogreid.export.tensorrt_engine import build_engine

    _, result = exported
    spec = EngineSpec("fp16", (1, 4, 8), SIZE)
    record = build_engine(result.files["onnx-fp16"], tmp_path / "m.engine", spec,
                          recipe(spec, int(trt.__version__.split(".")[0])))
    assert (tmp_path / "m.engine").stat().st_size > 0 and record["tensorrt_version"] == trt.__version__


@pytest.fixture(scope="module")
def exported_trt(exported, synth_root, tmp_path_factory):
    """Both engine formats (no TensorRT here: the scripts are what is written)."""
    ckpt, _ = exported
    out = tmp_path_factory.mktemp("trt")
    opts = ExportOptions(calib_images=[str(synth_root / "FVRID_syn" / "train_foggy")], calib_num=32, progress=False)
    return export(ckpt, parse_formats("engine-fp16,engine-int8"), out, opts), out


# ------------------------------------------------------------------ issue 20: audit items 1-4, 6, 8

def test_no_recipe_builds_int8_without_qdq_or_cache_and_every_fp16_build_keeps_the_tail():
    """Every (precision, --int8-mode, DLA, TensorRT major) gives a sound recipe or a clear refusal.
    With --int8 and neither Q/DQ nor --calib, trtexec sets placeholder ranges (sampleEngines.cpp,
    release/10.3: setTensorDynamicRange(network), 2.0 / 4.0) and the engine computes garbage."""
    tail = ["net.reid.bnneck/BatchNormalization", "graph/Div"]
    for precision in ("fp16", "int8"):
        for mode in ("explicit", "implicit"):
            for dla in (None, 0):
                for major in (10, 11):
                    spec = EngineSpec(precision, (8, 8, 8) if dla is not None else (1, 8, 32), SIZE, dla_core=dla,
                                      calibration=mode)
                    case = (precision, mode, dla, major)
                    if precision == "int8" and mode == "implicit" and major == 11:
                        with pytest.raises(FogreidError, match="--int8-mode implicit.*removed in TensorRT 11"):
                            recipe(spec, major)
                        continue
                    how = recipe(spec, major)
                    line = trtexec_command({"onnx": "model.onnx", "onnx-fp16": "model_fp16.onnx",
                                            "onnx-int8": "model_int8.onnx"}[how.onnx], "m.engine", spec, how,
                                           "calibration.cache" if how.calibration_cache else None,
                                           fp32_layers=tail)
                    if precision == "int8":   # INT8 comes from the Q/DQ model or from the cache, never from nothing
                        assert (how.onnx == "onnx-int8") != how.calibration_cache, case
                        assert ("--int8" in line) == ("--calib=calibration.cache" in line), case
                    else:
                        assert not how.int8 and "--int8" not in line and "--calib" not in line, case
                    if major == 11:           # strongly typed, no precision options at all
                        assert how.strongly_typed and how.onnx != "onnx" and "--fp16" not in line, case
                        assert "--layerPrecisions" not in line and "--stronglyTyped" not in line, case
                    elif how.fp16:            # weakly typed FP16: the tail is pinned to FP32
                        assert how.fp32_tail and "--precisionConstraints=obey" in line, case
                        assert "--layerPrecisions=net.reid.bnneck/BatchNormalization:fp32,graph/Div:fp32" in line
                    else:                     # strongly typed TensorRT 10: the FP16 / Q/DQ graph's own types
                        assert how.strongly_typed_flag and how.onnx in ("onnx-fp16", "onnx-int8"), case
                    if dla is not None and major == 10:
                        assert not how.strongly_typed and how.fp16, case
    # DLA + explicit INT8 on TensorRT 10 takes the cache (it built FP16-labelled-INT8 / garbage before)
    dla_explicit = EngineSpec("int8", (4, 4, 4), SIZE, dla_core=1, calibration="explicit")
    assert recipe(dla_explicit, 10).calibration_cache
    with pytest.raises(FogreidError, match="calibration cache"):
        trtexec_command("model.onnx", "m.engine", dla_explicit, recipe(dla_explicit, 10), None)


@pytest.mark.parametrize("mode", ["explicit", "auto"])
def test_dla_explicit_int8_export_builds_from_the_cache(exported, synth_root, tmp_path, mode):
    """TensorRT 10's DLA INT8 comes from the cache whatever the mode; TensorRT 11's (>= 11.4.1)
    from the Q/DQ model, with --int8-mode auto too (auto once meant implicit there: no INT8 line)."""
    ckpt, _ = exported
    out = tmp_path / "dla8"
    opts = ExportOptions(batch=(4, 4, 4), dla_core=0, int8_mode=mode, int8_budget=None, calib_num=32,
                         calib_images=[str(synth_root / "FVRID_syn" / "train_foggy")], progress=False)
    export(ckpt, parse_formats("engine-int8"), out, opts)
    ten = [line for line in (out / "trtexec_trt10.sh").read_text().splitlines() if line.startswith('"$TRTEXEC"')]
    assert len(ten) == 1 and "--int8" in ten[0] and "--calib=calibration.cache" in ten[0]
    # Weakly typed (--fp16 --int8): the exporter pins the embedding tail on the line it writes.
    tail = tail_layers(out / "model.onnx")
    assert tail and "--precisionConstraints=obey" in ten[0]
    assert all(f"{name}:fp32" in ten[0] for name in tail)
    eleven = [line for line in (out / "trtexec_trt11.sh").read_text().splitlines() if line.startswith('"$TRTEXEC"')]
    assert len(eleven) == 1 and "--onnx=model_int8.onnx" in eleven[0] and "--calib" not in eleven[0]
    run = run_script(out / "trtexec_trt10.sh", 10, tmp_path)
    assert run.returncode == 0, run.stderr


def test_cache_holds_only_the_tensors_the_qdq_model_quantises(exported, synth_root, tmp_path):
    """Implicit INT8 runs any layer whose tensors have scales in INT8: the cache must be the Q/DQ
    model's own set (same tensors, same scales), so the budget's float layers, the network input
    and the embedding tail stay in float there too."""
    from fogreid.calibration.calibrate_onnx import calibrate
    from fogreid.calibration.trt_cache import scales_from_qdq

    _, result = exported
    fp32 = onnx.load(str(result.files["onnx"]))
    header, cache = read_cache(result.files["calibration-cache"])
    qdq = scales_from_qdq(onnx.load(str(result.files["onnx-int8"])))
    assert set(cache) == set(qdq) and all(np.isclose(cache[k], qdq[k], rtol=1e-7) for k in cache)
    tail_outputs = {o for n in fp32.graph.node if n.name in onnx_graph.embedding_tail(fp32) for o in n.output}
    assert "embedding" in tail_outputs and not tail_outputs & set(cache)
    assert not {i.name for i in fp32.graph.input} & set(cache)
    # A layer kept in float (--keep-fp): its input has no scale unless a quantised layer reads it too.
    consumers = {}
    for node in fp32.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    conv = next(n for n in fp32.graph.node if n.op_type == "Conv" and n.name.startswith("net.backbone.layer4")
                and len(consumers[n.input[0]]) == 1 and n.input[0] in cache)
    cal = calibrate(result.files["onnx"], [synth_root / "FVRID_syn" / "train_foggy"], tmp_path, num=32,
                    keep_fp=[conv.name], budget=None, progress=False)
    _, kept = read_cache(cal.cache)
    assert conv.input[0] not in kept
    assert set(kept) == set(scales_from_qdq(onnx.load(str(cal.qdq_onnx))))


def test_check_holds_the_cache_to_the_qdq_model(exported, fogreid_cmd, tmp_path):
    _, result = exported
    qdq, cache = result.files["onnx-int8"], result.files["calibration-cache"]
    assert check_artifact(qdq, ["trt10"]).ok                       # calibration.cache beside it: consistent
    header, scales = read_cache(cache)
    name = sorted(scales)[0]
    broken = {"extra.cache": {**scales, "embedding": 1 / 127},   # the L2 tail: must stay float
              "scale.cache": {**scales, name: scales[name] * 2},
              "missing.cache": {k: v for k, v in scales.items() if k != name}}
    for file, content in broken.items():
        write_cache(tmp_path / file, content)
        report = check_artifact(qdq, ["trt10"], cache=tmp_path / file)
        problems = [p for p in report.problems if p.rule == "trt-cache"]
        assert not report.ok and len(problems) == 1
        assert "disagrees with the Q/DQ model on 1 tensor" in problems[0].message
    run = subprocess.run(fogreid_cmd + ["check", str(qdq), "--target", "trt10",
                                        "--cache", str(tmp_path / "extra.cache")], capture_output=True, text=True)
    assert run.returncode == 1 and "embedding: in the cache, but the Q/DQ model does not quantise it" in run.stderr
    run = subprocess.run(fogreid_cmd + ["check", str(qdq), "--cache", str(tmp_path / "none.cache")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--cache" in run.stderr and "Traceback" not in run.stderr


def test_trtexec_script_checks_the_full_version_before_any_calib_line(tmp_path):
    """The cache header names one exact TensorRT (TRT-100300-...); a 10.x that rejects it fails the
    build on a nullptr binding, so the script stops first and says which export to run."""
    spec = EngineSpec("int8", (4, 4, 4), SIZE, dla_core=0, calibration="implicit")
    line = trtexec_command("model.onnx", "m.engine", spec, recipe(spec, 10), "calibration.cache",
                           fp32_layers=["graph/Div"])
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    write_cache(tmp_path / "calibration.cache", {"x": 0.5}, (10, 3, 0))
    script = tmp_path / "trtexec_trt10.sh"
    script.write_text(trtexec_script(10, [("engine-int8 on DLA core 0", line)]))
    assert run_script(script, 10, tmp_path, 100300).returncode == 0 and (tmp_path / "built.log").exists()
    (tmp_path / "built.log").unlink()
    for number, version in ((100700, "10.7.0"), (100301, "10.3.1")):
        run = run_script(script, 10, tmp_path, number)
        assert run.returncode == 2 and not (tmp_path / "built.log").exists(), run.stderr
        assert "written for TensorRT 10.3.0, but" in run.stderr
        assert f"fogreid export --trt-version {version}" in run.stderr
    # A TensorRT 8.6 trtexec (NV_TENSORRT_VERSION 8601) is neither script's: not "use trtexec_trt11.sh".
    for major in (10, 11):
        other = tmp_path / f"other{major}.sh"
        other.write_text(trtexec_script(major, [("engine-fp16", "trtexec --onnx=model.onnx --saveEngine=m.engine")]))
        run = run_script(other, major, tmp_path, 8601)
        assert run.returncode == 2 and "TensorRT 8.6.1" in run.stderr and "trtexec_trt" not in run.stderr


def test_weakly_typed_builds_pin_the_embedding_tail(exported, tmp_path):
    """trtexec: --layerPrecisions / --layerOutputTypes 'name:fp32,...' + --precisionConstraints=obey
    (sampleOptions.cpp, release/10.3); the names are the ONNX node names, which onnx-tensorrt gives
    the layer it makes for each node (ImporterContext::registerLayer -> getNodeName)."""
    from fogreid.export.tensorrt_engine import pin_layers, tail_layers

    _, result = exported
    fp32 = onnx.load(str(result.files["onnx"]))
    names = tail_layers(result.files["onnx"])
    assert names == onnx_graph.embedding_tail(fp32)
    by_name = {n.name: n for n in fp32.graph.node}
    assert {by_name[n].op_type for n in names} >= {"BatchNormalization", "Mul", "ReduceSum", "Sqrt", "Div"}
    assert len(by_name) == len(fp32.graph.node)   # unique node names: one layer each
    spec = EngineSpec("fp16", (4, 4, 4), SIZE, dla_core=0)
    line = trtexec_command("model.onnx", "m.engine", spec, recipe(spec, 10), fp32_layers=names)
    pinned = ",".join(f"{n}:fp32" for n in names)
    assert f"--layerPrecisions={pinned}" in line and f"--layerOutputTypes={pinned}" in line
    assert "--precisionConstraints=obey" in line
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    script = tmp_path / "trtexec_trt10.sh"
    script.write_text(trtexec_script(10, [("engine-fp16 on DLA core 0", line)]))
    assert run_script(script, 10, tmp_path).returncode == 0
    with pytest.raises(FogreidError, match="--layerPrecisions"):
        trtexec_command("model.onnx", "m.engine", spec, recipe(spec, 10), fp32_layers=["a,b"])

    # The Python build: each named layer's precision and output types set (TensorRT's ILayer API).
    class Layer:
        def __init__(self, name):
            self.name, self.num_outputs, self.precision, self.outputs = name, 1, None, {}

        def set_output_type(self, index, dtype):
            self.outputs[index] = dtype

    network = [Layer(n) for n in names] + [Layer("net.backbone.conv1/Conv")]
    pin_layers(network, names, "fp32")
    assert all(layer.precision == "fp32" and layer.outputs == {0: "fp32"} for layer in network[:-1])
    assert network[-1].precision is None
    with pytest.raises(FogreidError, match="not in the TensorRT network"):
        pin_layers(network, names + ["gone/Div"], "fp32")


def test_polygraphy_pin_guards_tensorrt_11():
    """polygraphy 0.49.22-0.49.26's CreateConfig reads ILayer.precision_is_set unguarded, absent from
    TensorRT 11.1's Python ILayer (AttributeError); 0.50.3 wraps it in try/except AttributeError."""
    import re
    from importlib.metadata import version

    from packaging.version import Version

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"polygraphy>=([0-9.]+)"', pyproject)
    assert Version(pin) >= Version("0.50.3")
    assert Version(version("polygraphy")) >= Version(pin)
