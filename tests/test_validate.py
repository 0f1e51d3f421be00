"""fogreid validate: verdicts, figures, reports and errors on real ONNX Runtime artifacts."""

import json
import subprocess

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fogreid.errors import FogreidError
from fogreid.validate.compare import thresholds_for, validate

from conftest import make_checkpoint


def validate_cli(fogreid_cmd, *args):
    return subprocess.run(fogreid_cmd + ["validate", *map(str, args)], capture_output=True, text=True)


def test_fp32_onnx_passes_with_task_figures(fogreid_cmd, exported, synth_root, tmp_path):
    ckpt, result = exported
    # One engine named: the report is that result's own object (tests/test_engines.py: several).
    run = validate_cli(fogreid_cmd, "--checkpoint", ckpt, "--model", result.files["onnx"], "--data", synth_root,
                       "--backend", "onnxruntime", "--report", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verdict"] == "pass" and report["precision"] == "fp32"
    figures = report["figures"]
    assert figures["cosine_min"] >= 0.9999 and figures["nn_agreement"] == 1.0
    assert abs(figures["map_drop"]) < 1e-6 and figures["defog_max_grey_diff"] <= 1
    assert len(report["cmc"]["pytorch"]) == 10
    page = (tmp_path / "r.html").read_text()
    assert '<div class="verdict" id="verdict">PASS</div>' in page
    assert page.count("data:image/png;base64,") == 16  # 4 frames x (foggy, PyTorch, artifact, difference)
    assert 'aria-label="cosine histogram"' in page and 'aria-label="CMC curves"' in page


def test_perturbed_weights_fail_with_exit_1(fogreid_cmd, exported, synth_root, tmp_path):
    ckpt, result = exported
    model = onnx.load(str(result.files["onnx"]))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.ndim == 4:  # conv weights
            noisy = values + rng.normal(0, 0.3 * (values.std() + 1e-8), values.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    run = validate_cli(fogreid_cmd, "--checkpoint", ckpt, "--model", broken, "--images",
                       synth_root / "FVRID_syn" / "query_foggy", "--html", tmp_path / "broken.html")
    assert run.returncode == 1
    # Both engines read the broken file and both fail it, each named.
    for engine in ("onnxruntime", "openvino"):
        assert f"FAIL: broken.onnx on {engine}: cosine_min" in run.stderr and "(needs >= 0.9999)" in run.stderr
    assert '<div class="verdict" id="verdict">FAIL</div>' in (tmp_path / "broken.html").read_text()


def test_fp16_and_int8_pass_their_default_thresholds(exported, synth_root):
    ckpt, result = exported
    for name, precision in (("onnx-fp16", "fp16"), ("onnx-int8", "int8")):
        outcome = validate(ckpt, result.files[name], data_root=str(synth_root))
        assert outcome.precision == precision
        assert outcome.passed, [c.describe() for c in outcome.checks if not c.passed]
    assert thresholds_for("int8", ["cosine_min=0.5"]).cosine_min == 0.5
    with pytest.raises(FogreidError, match="NAME=VALUE"):
        thresholds_for("int8", ["cos=0.5"])


def test_torch_backend_against_itself(exported, synth_root):
    ckpt, _ = exported
    outcome = validate(ckpt, ckpt, images=[str(synth_root / "FVRID_real" / "query_foggy")])
    assert outcome.backend == "torch" and outcome.figures["cosine_min"] > 0.99999


def test_bad_input_is_explained(fogreid_cmd, exported, synth_root, tmp_path):
    ckpt, result = exported
    other = make_checkpoint(tmp_path / "other.pt", synth_root, backbone="resnet34")
    run = validate_cli(fogreid_cmd, "--checkpoint", other, "--model", result.files["onnx"], "--images",
                       synth_root / "FVRID_syn" / "query_foggy")
    assert run.returncode == 2 and "exported from another checkpoint" in run.stderr
    run = validate_cli(fogreid_cmd, "--checkpoint", ckpt, "--model", tmp_path / "missing.onnx", "--images", tmp_path)
    assert run.returncode == 2 and "--model" in run.stderr and "missing.onnx: not found" in run.stderr
    (tmp_path / "empty").mkdir()
    run = validate_cli(fogreid_cmd, "--checkpoint", ckpt, "--model", result.files["onnx"], "--images",
                       tmp_path / "empty")
    assert run.returncode == 2 and "no images" in run.stderr
    truncated = tmp_path / "model.engine"
    truncated.write_bytes(b"\x00" * 100)
    run = validate_cli(fogreid_cmd, "--checkpoint", ckpt, "--model", truncated, "--images", tmp_path)
    assert run.returncode == 2 and ("TensorRT" in run.stderr)
    assert "Traceback" not in run.stderr


def test_per_layer_writes_a_list_that_export_accepts(exported, synth_root, tmp_path, capsys):
    from fogreid.calibration.per_layer import rank_layers
    from fogreid.export.exporter import ExportOptions, export
    from fogreid.export.formats import parse_formats

    ckpt, result = exported
    scores = rank_layers(ckpt, result.files["onnx-int8"], [str(synth_root / "FVRID_syn" / "train_foggy")],
                         tmp_path / "keep.txt", top=2, calib_num=32, eval_num=16)
    assert len(scores) > 10 and scores[0].cosine_mean <= scores[-1].cosine_mean  # most sensitive first
    keep = [line for line in (tmp_path / "keep.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert len(keep) <= 2 and all(k in {s.node for s in scores} for k in keep)
    assert "Quantising one layer alone" in capsys.readouterr().out
    if keep:
        again = export(ckpt, parse_formats("onnx-int8"), tmp_path / "again", ExportOptions(
            calib_images=[str(synth_root / "FVRID_syn" / "train_foggy")], calib_num=32, keep_fp=keep, progress=False))
        assert json.loads(again.manifest.read_text())["calibration"]["keep_fp"] == keep
