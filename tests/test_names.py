"""One name per concept (issue 22): the image size is `imgsz`, the two loaders are named for what
they load, `build_model` builds every network. The old names work for one release and warn."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fogreid

ROOT = Path(fogreid.__file__).parent
OLD_SIZE_NAMES = ("input_size", "image_size")
# The deprecated aliases themselves: (file, function) pairs allowed to keep an old name.
ALIASES = {("model/fused.py", "input_size"), ("model/fused.py", "from_checkpoint"),
           ("model/checkpoint.py", "load_model"), ("runtime/backends.py", "input_size")}


def test_no_public_signature_or_field_uses_an_old_image_size_name():
    found = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                if (rel, node.name) in ALIASES:
                    continue
                args = node.args
                names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
                found += [f"{rel}:{node.lineno} {node.name}({n})" for n in names if n in OLD_SIZE_NAMES]
                if node.name in OLD_SIZE_NAMES:
                    found.append(f"{rel}:{node.lineno} def {node.name}")
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                            and item.target.id in OLD_SIZE_NAMES:
                        found.append(f"{rel}:{item.lineno} {node.name}.{item.target.id}")
    assert not found, found


def test_build_sjdl_still_builds_and_warns():
    from fogreid.model import build_model, build_sjdl, preset

    cfg = preset("edge", imgsz=(64, 64))
    with pytest.warns(DeprecationWarning, match="build_sjdl.*build_model"):
        old = build_sjdl(cfg)
    assert type(old) is type(build_model(cfg))


def test_old_loaders_and_attributes_warn(tmp_path):
    from fogreid.model import FusedDefogReID, build_model, load_model, load_network, preset, save_checkpoint
    from fogreid.runtime import load_deployed
    from fogreid.runtime import load_model as load_artifact_old

    ckpt = tmp_path / "net.pt"
    save_checkpoint(ckpt, build_model(preset("edge", imgsz=(64, 64), num_ids=4)).eval())
    assert load_network(ckpt).config.imgsz == (64, 64)
    with pytest.warns(DeprecationWarning, match="load_network"):
        assert load_model(ckpt, input_size=(96, 96)).config.imgsz == (96, 96)
    with pytest.warns(DeprecationWarning, match=r"imgsz=\.\.\."):
        fused = FusedDefogReID.from_checkpoint(ckpt, input_size=(96, 96))
    with pytest.warns(DeprecationWarning, match="FusedDefogReID.imgsz"):
        assert fused.input_size == fused.imgsz == (96, 96)
    with load_deployed(ckpt, backend="torch", device="cpu") as model:
        with pytest.warns(DeprecationWarning, match="DeployedModel.imgsz"):
            assert model.input_size == model.imgsz == (64, 64)
    with pytest.warns(DeprecationWarning, match="load_deployed"):
        load_artifact_old(ckpt, backend="torch", device="cpu").close()


def test_old_config_key_in_yaml_set_preset_and_checkpoint(tmp_path):
    import torch

    from fogreid.model import build_model, load_network, preset, save_checkpoint
    from fogreid.train.config import build_config

    path = tmp_path / "train.yaml"
    path.write_text("model:\n  input_size: [64, 64]\n")
    with pytest.warns(DeprecationWarning, match="model: input_size.*imgsz"):
        assert build_config(path).model_config(4, 0).imgsz == (64, 64)
    with pytest.warns(DeprecationWarning, match="model: input_size.*imgsz"):
        assert build_config(None, ["model.input_size=[96, 96]"]).model_config(4, 0).imgsz == (96, 96)
    with pytest.warns(DeprecationWarning, match="input_size.*imgsz"):
        assert preset("edge", input_size=(64, 64)).imgsz == (64, 64)
    with pytest.raises(fogreid.errors.FogreidError, match="both input_size and imgsz"):
        preset("edge", input_size=(64, 64), imgsz=(64, 64))

    # A checkpoint written before the rename: its model_config says input_size.
    ckpt = tmp_path / "old.pt"
    save_checkpoint(ckpt, build_model(preset("edge", imgsz=(64, 64), num_ids=4)).eval())
    state = torch.load(ckpt, weights_only=True)
    state["model_config"]["input_size"] = state["model_config"].pop("imgsz")
    torch.save(state, ckpt)
    with pytest.warns(DeprecationWarning, match="model_config: input_size.*imgsz"):
        assert load_network(ckpt).config.imgsz == (64, 64)


def test_synth_size_is_a_deprecated_alias_of_imgsz(tmp_path):
    from fogreid.data.synth import SynthConfig

    with pytest.warns(DeprecationWarning, match=r"SynthConfig\(imgsz=\.\.\.\)"):
        assert SynthConfig(size=64).imgsz == 64
    run = subprocess.run([sys.executable, "-m", "fogreid", "synth", "--out", str(tmp_path / "d"), "--ids", "4",
                          "--cams", "2", "--per-cam", "2", "--queries-per-id", "1", "--size", "32", "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "deprecated" in line]
    assert lines == ["fogreid synth: warning: --size is deprecated and will be removed in the next release; "
                     "use --imgsz"], run.stderr
    help_text = subprocess.run([sys.executable, "-m", "fogreid", "synth", "--help"], capture_output=True,
                               text=True).stdout
    assert "--imgsz" in help_text and "--size" not in help_text


def test_the_int8_budget_default_is_stated_once():
    from fogreid.calibration.defaults import DEFAULT_BUDGET
    from fogreid.cli import build_parser
    from fogreid.export.exporter import ExportOptions

    assert ExportOptions().int8_budget == DEFAULT_BUDGET
    args = build_parser().parse_args(["export", "--checkpoint", "x.pt", "--out", "o"])
    assert args.int8_budget == DEFAULT_BUDGET
    for path in (ROOT / "cli").glob("*.py"):
        assert "0.99" not in path.read_text(), path
