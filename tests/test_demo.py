import json
import subprocess


def test_quick_demo_writes_its_outputs(fogreid_cmd, tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(fogreid_cmd + ["demo", "--out", str(out), "--quick"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    for split in ("syn", "real"):
        scores = summary["retrieval"][split]
        assert 0 < scores["mAP"] <= 1 and scores["num_queries"] > 0
        assert (out / f"samples_{split}.jpg").stat().st_size > 0
    # A second run reuses the dataset instead of generating it again.
    again = subprocess.run(fogreid_cmd + ["demo", "--out", str(out), "--quick"], capture_output=True, text=True)
    assert again.returncode == 0 and "reusing" in again.stdout
