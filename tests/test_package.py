import subprocess
import sys

import fogreid


def test_import_is_light():
    code = ("import sys, fogreid, fogreid.cli; "
            "heavy = [m for m in ('torch', 'cv2', 'onnxruntime', 'tensorrt', 'onnx', 'polygraphy') "
            "if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import fogreid pulled in: {out.stdout}"


def test_help_lists_the_verbs(fogreid_cmd):
    out = subprocess.run(fogreid_cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("demo", "synth", "info"):
        assert verb in out


def test_version(fogreid_cmd):
    out = subprocess.run(fogreid_cmd + ["--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"fogreid {fogreid.__version__}"


def test_user_error_is_one_line_and_exit_2(fogreid_cmd, tmp_path):
    missing = tmp_path / "nope.pt"
    out = subprocess.run(fogreid_cmd + ["info", "--checkpoint", str(missing)], capture_output=True, text=True)
    assert out.returncode == 2
    assert str(missing) in out.stderr
    assert "Traceback" not in out.stderr


def test_info_prints_each_branch(fogreid_cmd):
    out = subprocess.run(fogreid_cmd + ["info", "--preset", "edge", "--imgsz", "64"],
                         capture_output=True, text=True, check=True).stdout
    assert "input 64x64" in out
    for branch in ("encoder", "ReID head", "defog decoder", "pyramid enhancement", "deployed total"):
        assert branch in out
