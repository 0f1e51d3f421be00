"""The main job end to end: `fogreid demo --quick` on a fresh folder, then its report."""

import json
import subprocess
import time

import pytest


@pytest.mark.timeout(1200)  # about 2 minutes alone on 2 cores; generous for a loaded CI machine
def test_quick_demo_end_to_end(fogreid_cmd, tmp_path):
    out = tmp_path / "demo"
    tic = time.perf_counter()
    run = subprocess.run(fogreid_cmd + ["demo", "--out", str(out), "--quick"], capture_output=True, text=True)
    first = time.perf_counter() - tic
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())

    # Accuracy: far above chance on identities never seen in training, and the same for every artifact.
    data = json.loads((out / "data" / "fogreid_synth.json").read_text())
    test_ids = data["identities"]["syn"] - round(data["identities"]["syn"] * data["config"]["train_fraction"])
    chance = 1 / test_ids
    accuracy = summary["accuracy"]
    assert accuracy["pytorch"]["syn"]["mAP"] > 3 * chance and accuracy["pytorch"]["real"]["mAP"] > 3 * chance
    assert abs(accuracy["onnx"]["syn"]["mAP"] - accuracy["pytorch"]["syn"]["mAP"]) < 1e-3
    assert accuracy["pytorch"]["syn"]["psnr"] > 10
    # The whole-frame head was trained (`--mode frames`) and scored on held-out generated frames.
    tuning = summary["frames_tuning"]
    assert summary["checkpoint"].endswith("frames/best.pt") and tuning["downscale"] == 4
    assert tuning["tuned"]["psnr"] > tuning["tuned"]["psnr_foggy"]

    # Every artifact validated against PyTorch: FP32 passes; INT8's retrieval stays within its
    # tolerance (its embedding cosine sits near the INT8 threshold on this small model, so its
    # verdict is reported, not asserted).
    validation = summary["validation"]
    assert set(validation) >= {"onnx", "onnx-int8"} and validation["onnx"]["verdict"] == "pass"
    assert validation["onnx-int8"]["verdict"] in ("pass", "fail")
    assert validation["onnx-int8"]["figures"]["map_drop"] <= 2.0

    # The city ran through `fogreid run` for the joint model and the ReID-only one: per-camera tracking
    # from the public detections is good, every camera's video was written, and the joint model's shows
    # the whole-frame defog view (the fog gate leaves the clear camera as it is).
    stream = summary["stream"]
    assert set(stream["models"]) == {"sjdl", "reid_only"} and stream["fog"] == [0.0, 1.5, 3.5]
    for name, run in stream["models"].items():
        assert run["figures"]["frames"] == 3 * stream["frames"] and run["figures"]["global_ids"] > 0
        assert all(run["scores"][cam]["idf1"] >= 70 for cam in stream["cameras"])
        assert 0 < run["scores"]["cross-camera"]["idf1"] <= 100 and len(run["videos"]) == 3
        assert all((out / "stream" / name / f"view_{c}.mp4").stat().st_size > 0 for c in range(3))
        assert run["defog_view"] == (name == "sjdl")
    assert summary["baseline"]["test"]["real"]["mAP"] > 2 * chance_real(data)   # the ReID-only model learnt
    assert all(s["batch1"] > 0 and s["batch8"] > 0 for s in summary["speed"].values())
    assert summary["speed"]["pytorch"]["engine8"] == "torch"
    assert {s["engine8"] for n, s in summary["speed"].items() if n != "pytorch"} <= {"onnxruntime", "openvino"}

    page = (out / "report.html").read_text()
    for section in ("Data", "Defogging", "Re-identification accuracy", "Validation against PyTorch",
                    "Speed (images/s and engine, this machine; loaded per batch, medians of interleaved rounds)",
                    "Stream", "Where the outputs are"):
        assert f"<h2>{section}</h2>" in page
    assert page.count("data:image/png;base64,") >= 30 and "CMC, synthetic fog" in page and "CMC, real-like fog" in page
    assert "defogged by a whole-frame head of their own" in page
    assert "cross-camera IDF1" in page and page.count('alt="sjdl cam') == 3 and page.count('alt="reid_only cam') == 3
    # The headline comes first: each verdict and the three figures before any section.
    assert page.index('class="headline"') < page.index("<h2>")
    assert all(f"{name} <span class" in page.split("<h2>")[0] for name in validation)

    # A second run reuses every finished step.
    tic = time.perf_counter()
    again = subprocess.run(fogreid_cmd + ["demo", "--out", str(out), "--quick"], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("up to date, reusing") == 9
    assert time.perf_counter() - tic < first / 3
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["step_seconds"] == summary["step_seconds"] and len(rerun["reused_steps"]) == 9


def chance_real(data: dict) -> float:
    """1 / the real-like split's test identities."""
    ids = data["identities"]["real"]
    return 1 / (ids - round(ids * data["config"]["train_fraction"]))
