"""One artifact, the same answer on every engine that runs here: ONNX Runtime and OpenVINO
read each exported file independently, and `fogreid validate` tables them side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fogreid.errors import FogreidError

from conftest import foggy_frames


def reduce_max_quantize_conv(quantize: bool) -> onnx.ModelProto:
    """The channel attention's max branch as OpenVINO mis-computes it: ReduceMax -> Q/DQ -> Conv
    (int8 weights). Without `quantize` the conv reads the float maxima (fogreid's INT8 graphs)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ReduceMax", ["x", "axes"], ["maxima"], keepdims=1),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["maxima_dq" if quantize else "maxima", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(rng.integers(-127, 128, (32, 64, 1, 1)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(32, 1e-3, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(32, np.int8), "wz")]
    if quantize:
        nodes[1:1] = [helper.make_node("QuantizeLinear", ["maxima", "s", "z"], ["maxima_q"]),
                      helper.make_node("DequantizeLinear", ["maxima_q", "s", "z"], ["maxima_dq"])]
        inits += [numpy_helper.from_array(np.array(0.035, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
    graph = helper.make_graph(nodes, "reduce_max_quantize_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_both(path, feed):
    import onnxruntime as ort

    from fogreid.sessions import import_openvino

    ov = import_openvino()

    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return expected, compiled(feed)[compiled.output(0)]


def test_openvino_reduce_max_quantize_defect(tmp_path):
    """Why fogreid never quantises what a ReduceMax writes (calibration/qdq.py, reads_reduce_max).
    ONNX Runtime computes the Q/DQ form exactly (checked against NumPy); OpenVINO 2026.4's CPU
    plugin returned maxima of other channels for it. The float form agrees on both engines."""
    x = np.random.default_rng(1).uniform(0, 4, (4, 64, 2, 2)).astype(np.float32)
    quantized, plain = tmp_path / "quantized.onnx", tmp_path / "plain.onnx"
    onnx.save(reduce_max_quantize_conv(True), str(quantized))
    onnx.save(reduce_max_quantize_conv(False), str(plain))
    weights = np.random.default_rng(0).integers(-127, 128, (32, 64)).astype(np.float32) * np.float32(1e-3)
    maxima = np.clip(np.rint(x.max(axis=(2, 3)) / 0.035), -128, 127) * np.float32(0.035)
    expected_ort, got_ov = run_both(quantized, {"x": x})
    assert np.allclose(expected_ort.reshape(4, 32), maxima @ weights.T, atol=1e-4)
    error = np.abs(got_ov - expected_ort).max() / np.abs(expected_ort).max()
    print(f"\nOpenVINO on ReduceMax -> Q/DQ -> Conv: relative max error {error:.3f} vs ONNX Runtime")
    expected, got = run_both(plain, {"x": x})
    assert np.allclose(expected.reshape(4, 32), x.max(axis=(2, 3)) @ weights.T, atol=1e-4)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4)


def ibn_after_dequantize(zero_first: bool) -> onnx.ModelProto:
    """An IBN block as the INT8 graph has it out of training (resnet_ibn.IBN._without_concat): the
    previous conv's int8 output (Q/DQ), scaled per channel, instance-normalised and added to its
    batch-norm half. `zero_first`: the batch-norm channels zeroed before the instance norm instead
    of given weight 0 in it (the same numbers in exact arithmetic)."""
    channels = 8
    on_bn = np.array([0] * 4 + [1] * 4, np.float32)
    scale = np.array([1, 1, 1, 1, 0.7, 1.3, 0.9, 2.0], np.float32)
    per_channel = {"scale": scale, "on_bn": on_bn, **({"scale_in": scale * (1 - on_bn)} if zero_first else {})}
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.linspace(-1, 1, channels).astype(np.float32), "bias"),
             numpy_helper.from_array(np.ones(channels, np.float32) if zero_first else 1 - on_bn, "weight"),
             *(numpy_helper.from_array(v.reshape(1, -1, 1, 1), name) for name, v in per_channel.items())]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Mul", ["d", "scale"], ["u"]),
             *([helper.make_node("Mul", ["d", "scale_in"], ["u_in"])] if zero_first else []),
             helper.make_node("InstanceNormalization", ["u_in" if zero_first else "u", "weight", "bias"],
                              ["normalised"]),
             helper.make_node("Mul", ["u", "on_bn"], ["kept"]),
             helper.make_node("Add", ["normalised", "kept"], ["y"])]
    graph = helper.make_graph(nodes, "ibn_after_dequantize",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, channels, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_openvino_instance_norm_of_a_zeroed_channel_after_dequantize(tmp_path):
    """Why IBN's batch-norm channels get weight 0 in the instance norm instead of being zeroed
    before it. ONNX Runtime computes both forms as NumPy does; OpenVINO 2026.4's CPU plugin, given
    a per-channel scale of 0 between a DequantizeLinear and an instance norm, normalised those
    channels as if unscaled (a max error of 3.2 on outputs up to 11.6). The form fogreid exports
    agrees on both engines."""
    x = (np.random.default_rng(0).normal(size=(2, 8, 16, 16)) * 2).astype(np.float32)
    d = np.clip(np.rint(x / 0.05), -128, 127).astype(np.float32) * np.float32(0.05)
    scale = np.array([1, 1, 1, 1, 0.7, 1.3, 0.9, 2.0], np.float32).reshape(1, -1, 1, 1)
    u = d * scale
    mean, var = u.mean(axis=(2, 3), keepdims=True), u.var(axis=(2, 3), keepdims=True)
    bias = np.linspace(-1, 1, 8).astype(np.float32).reshape(1, -1, 1, 1)
    want = np.where(np.arange(8).reshape(1, -1, 1, 1) < 4, (u - mean) / np.sqrt(var + 1e-5), u) + bias
    for zero_first in (True, False):
        path = tmp_path / f"ibn_{zero_first}.onnx"
        onnx.save(ibn_after_dequantize(zero_first), str(path))
        expected, got = run_both(path, {"x": x})
        assert np.allclose(expected, want, atol=1e-4), zero_first
        error = np.abs(got - expected).max()
        print(f"\nOpenVINO, IBN after Q/DQ, {'zeroed first' if zero_first else 'weight 0'}: max error {error:.3f}")
        if not zero_first:
            assert error < 1e-4


def test_int8_graph_never_quantizes_a_reduce_max(exported):
    _, result = exported
    graph = onnx.load(str(result.files["onnx-int8"])).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert "ReduceMax" in producer.values()     # the edge model has the max-pooled attention branch
    assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) == "ReduceMax"]


def test_openvino_backend_matches_onnxruntime_on_every_onnx(exported, synth_root):
    from fogreid.runtime.backends import load_deployed

    _, result = exported
    frames = foggy_frames(synth_root, 16)
    for name, min_cosine in (("onnx", 0.9999), ("onnx-fp16", 0.999), ("onnx-int8", 0.99)):
        with load_deployed(result.files[name], backend="onnxruntime") as ort_model, \
                load_deployed(result.files[name], backend="openvino") as ov_model:
            assert ov_model.name.startswith("openvino:")
            ort_img, ort_emb = ort_model(frames)
            ov_img, ov_emb = ov_model(frames)
        cosine = (ort_emb * ov_emb).sum(axis=1)
        assert cosine.min() >= min_cosine, (name, cosine.min())
        assert ov_img.dtype == np.uint8 and np.abs(ov_img.astype(int) - ort_img.astype(int)).mean() < 1.0, name


def test_openvino_compiles_the_callers_batch_and_answers_every_size_alike(exported, synth_root):
    """With `batch`, OpenVINO compiles the file for exactly that many rows as well as for any
    (fogreid.sessions.openvino_models): a call of 4 at batch 4 runs on the first, one of 11 on the
    second, and both must give what the dynamic batch alone gives, row for row (the static kernels
    may round a last bit differently: the demo's INT8 embeddings moved by at most 0.0018)."""
    from fogreid.runtime.backends import load_deployed

    _, result = exported
    frames = foggy_frames(synth_root, 11)
    for name in ("onnx", "onnx-int8"):
        with load_deployed(result.files[name], backend="openvino", batch=4) as at_four, \
                load_deployed(result.files[name], backend="openvino") as any_batch, \
                load_deployed(result.files[name], backend="openvino", batch=4, embedding_only=True) as cut:
            static = at_four.runner.compiled_at_batch.inputs[0].get_partial_shape()
            assert static.is_static and static[0].get_length() == 4, (name, static)
            assert any_batch.runner.compiled_at_batch is None
            assert any_batch.runner.compiled.inputs[0].get_partial_shape()[0].is_dynamic
            ref_img, ref_emb = any_batch(frames)
            four_img, four_emb = at_four(frames[:4])
            img, emb = at_four(frames)
            _, cut_emb = cut(frames[:4])
        assert four_emb.shape == (4, ref_emb.shape[1]) and emb.shape == ref_emb.shape
        for got_img, got_emb in ((four_img, four_emb), (img, emb)):
            rows = len(got_emb)
            assert np.abs(got_emb - ref_emb[:rows]).max() <= 0.005, (name, rows)
            assert np.abs(got_img.astype(int) - ref_img[:rows].astype(int)).max() <= 2, (name, rows)
        assert np.abs(cut_emb - ref_emb[:4]).max() <= 0.005, name


def test_openvino_device_names_and_wrong_file():
    from fogreid.runtime.backends import artifact_kind, openvino_device

    assert openvino_device("auto") == "CPU" and openvino_device("gpu.1") == "GPU.1" and openvino_device("npu") == "NPU"
    with pytest.raises(FogreidError, match="OpenVINO takes auto, cpu, gpu"):
        openvino_device("cuda:0")
    with pytest.raises(FogreidError, match="runs ONNX files"):
        artifact_kind("model.engine", "openvino")


def test_validate_tables_every_artifact_on_every_engine(fogreid_cmd, exported, synth_root, tmp_path):
    ckpt, result = exported
    run = subprocess.run(fogreid_cmd + ["validate", "--checkpoint", str(ckpt), "--model", str(result.files["onnx"]),
                                        str(result.files["onnx-int8"]), "--images",
                                        str(synth_root / "FVRID_syn" / "query_foggy"), "--limit", "48",
                                        "--report", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["artifact"], r["engine"]): r for r in report["table"]}
    assert set(rows) == {("model.onnx", "onnxruntime"), ("model.onnx", "openvino"),
                         ("model_int8.onnx", "onnxruntime"), ("model_int8.onnx", "openvino")}
    assert report["verdict"] == "pass" and all(r["verdict"] == "pass" for r in rows.values())
    assert rows[("model.onnx", "openvino")]["cosine_min"] >= 0.9999
    header = next(line for line in run.stdout.splitlines() if line.startswith("artifact"))
    assert "engine" in header and "cos p1" in header and "verdict" in header
    assert "Every artifact on every engine" in (tmp_path / "r.html").read_text()


def test_validate_backend_that_cannot_read_the_file_is_refused(fogreid_cmd, exported, synth_root):
    ckpt, result = exported
    run = subprocess.run(fogreid_cmd + ["validate", "--checkpoint", str(ckpt), "--model", str(result.files["onnx"]),
                                        "--backend", "tensorrt",
                                        "--images", str(synth_root / "FVRID_syn" / "query_foggy")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "none of these runs" in run.stderr and "Traceback" not in run.stderr


def test_bench_and_doctor_know_openvino(fogreid_cmd, exported):
    _, result = exported
    run = subprocess.run(fogreid_cmd + ["bench", "--model", str(result.files["onnx-int8"]), "--backend", "openvino",
                                        "--batch", "1,2", "--seconds", "0.2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "openvino:model_int8.onnx" in run.stdout
    # One load per batch size (OpenVINO compiles the file for each), one row each, one header.
    assert [line.split()[0] for line in run.stdout.splitlines() if line.rstrip().endswith("  openvino")] == ["1", "2"]
    assert run.stdout.count("openvino:model_int8.onnx") == 1
    doctor = subprocess.run(fogreid_cmd + ["doctor"], capture_output=True, text=True)
    assert any(line.startswith("openvino") and "CPU" in line for line in doctor.stdout.splitlines()), doctor.stdout


def test_every_onnxruntime_session_refuses_a_device_it_does_not_have(exported):
    """One provider rule for every session fogreid opens (fogreid/sessions.py): the whole-frame
    defogger used to fall back to the CPU when CUDA was asked for."""
    import onnxruntime as ort

    from fogreid.errors import EnvironmentProblem
    from fogreid.runtime.frame_defog import FrameDefogger

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider")
    _, result = exported
    with pytest.raises(EnvironmentProblem, match="--device cuda: this ONNX Runtime has no CUDAExecutionProvider"):
        FrameDefogger(result.files["onnx-defog-frame"], "cuda")
    assert FrameDefogger(result.files["onnx-defog-frame"], "cpu").session.get_providers() == ["CPUExecutionProvider"]



def test_a_listed_gpu_provider_that_cannot_run_is_the_machines_problem(exported, monkeypatch, tmp_path):
    """onnxruntime-gpu lists CUDA on machines without a GPU, and a session asked for it then runs
    on the CPU (ONNX Runtime warns and drops the provider): fogreid refuses that with exit 1, an
    environment problem; a file that not even the CPU opens stays the user's mistake (exit 2).
    Only the provider list is made to say CUDA; the session is ONNX Runtime's own."""
    import onnxruntime as ort

    from fogreid.errors import EnvironmentProblem, FogreidError
    from fogreid.sessions import onnxruntime_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider")
    _, result = exported
    listed = ["CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with pytest.raises(EnvironmentProblem, match="could not open .* on cuda: CUDAExecutionProvider: fell back to CPU"):
        onnxruntime_session(result.files["onnx"], "cuda")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(FogreidError, match="could not open .* on cpu") as refused:
        onnxruntime_session(broken, "cpu")
    assert refused.value.exit_code == 2

def test_check_target_openvino_passes_every_exported_file_and_flags_the_defect(fogreid_cmd, exported, tmp_path):
    _, result = exported
    files = sorted({str(p) for p in result.files.values() if str(p).endswith(".onnx")})
    assert len(files) >= 4    # model, model_fp16, model_int8, model_defog_frame
    run = subprocess.run(fogreid_cmd + ["check", *files, "--target", "openvino"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("ok for openvino") == len(files)
    onnx.save(reduce_max_quantize_conv(True), str(tmp_path / "reduce_max_qdq.onnx"))
    run = subprocess.run(fogreid_cmd + ["check", str(tmp_path / "reduce_max_qdq.onnx"), "--target", "openvino"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "[openvino]" in run.stderr and "quantises the output of ReduceMax" in run.stderr


def test_int8_graph_keeps_the_channel_attention_and_concat_readers_in_float(exported):
    """What OpenVINO read differently on an AMD EPYC (calibration/qdq.py, nodes_to_quantize
    and reads_concat): the attention MLP and every layer reading a Concat (directly or through a
    ReLU) read no DequantizeLinear output, so every engine and every CPU computes them alike."""
    _, result = exported
    graph = onnx.load(str(result.files["onnx-int8"])).graph
    producer = {o: n for n in graph.node for o in n.output}
    attention = [n for n in graph.node if n.name.startswith("net.reid.attention")]
    assert len([n for n in attention if n.op_type == "Conv"]) == 4    # two branches through a 2-layer MLP
    assert not [(n.name, i) for n in attention for i in n.input
                if i in producer and producer[i].op_type == "DequantizeLinear"]

    def after_concat(name):
        node = producer.get(name)
        node = producer.get(node.input[0]) if node is not None and node.op_type == "Relu" else node
        return node is not None and node.op_type == "Concat"
    readers = [n for n in graph.node if n.op_type == "Conv" and any(after_concat(i) for i in n.input)]
    assert readers and not [n.name for n in readers if any(
        i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input[:1])]
    # The rest of the body is still INT8.
    assert sum(1 for n in graph.node if n.op_type == "Conv"
               and n.input[0] in producer and producer[n.input[0]].op_type == "DequantizeLinear") >= 8


def test_onnx_files_benchmark_times_each_file_on_the_engine(exported, tmp_path):
    """benchmarks/onnx_files.py (an export before and after a change, FP32 against INT8) prints a
    row per file with the ratio to the first, and refuses an argument that is no LABEL=FILE."""
    import sys

    _, result = exported
    script = Path(__file__).parent.parent / "benchmarks" / "onnx_files.py"
    for engine in ("onnxruntime", "openvino"):
        run = subprocess.run([sys.executable, str(script), "--engine", engine, "--rounds", "2", "--seconds", "0.05",
                              "--batch", "2", f"fp32={result.files['onnx']}", f"int8={result.files['onnx-int8']}"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith(("| fp32", "| int8"))]
        assert [r[1].strip() for r in rows] == ["fp32", "int8"] and rows[0][3].strip() == "1.00x"
        assert all(float(r[2]) > 0 for r in rows)
    run = subprocess.run([sys.executable, str(script), "--engine", "onnxruntime", str(tmp_path / "missing.onnx")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "give LABEL=FILE" in run.stderr


def test_openvino_is_imported_without_its_telemetry():
    """`import openvino` reports itself to Google Analytics from a multiprocessing child forked off
    a worker thread (openvino/tools/ovc/__init__.py); in `fogreid run` such a child deadlocked and
    the run never exited (fogreid/sessions.py, import_openvino). Every fogreid import of OpenVINO
    blocks `openvino_telemetry`, so OpenVINO takes its own no-op stub. A fresh interpreter: the
    block only works before OpenVINO's first import."""
    code = ("import sys\n"
            "from fogreid.runtime.doctor import _openvino\n"
            "print(_openvino().split(';')[0])\n"
            "import openvino.tools.ovc.telemetry_utils as telemetry\n"
            "print(telemetry.tm.__name__, sys.modules['openvino_telemetry'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    version, stub = done.stdout.strip().splitlines()
    assert version[:4].isdigit() and stub == "openvino.tools.ovc.telemetry_stub None"
