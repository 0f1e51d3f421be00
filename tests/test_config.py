import pytest

from fogreid.errors import FogreidError
from fogreid.train.config import build_config


def test_yaml_sets_and_flags_in_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("mode: jdl\noptim:\n  lr: 3e-4\n  milestones: [5, 8]\nmodel:\n  input_size: [64, 64]\n")
    cfg = build_config(path, ["optim.lr=1e-3", "loss.tv_weight=0.5"], {"optim.epochs": 7, "seed": None})
    assert cfg.mode == "jdl" and cfg.optim.lr == 1e-3 and cfg.optim.epochs == 7
    assert cfg.optim.milestones == (5, 8) and cfg.loss.tv_weight == 0.5 and cfg.seed == 0
    assert cfg.model_config(10, 4).input_size == (64, 64)


@pytest.mark.parametrize("sets, message", [
    (["optim.learning_rate=1"], "unknown setting.*learning_rate"),
    (["optim.lr=fast"], "optim.lr: expected a number"),
    (["mode=dehaze"], "unknown mode"),
    (["optim.epochs=1.5"], "optim.epochs: expected int"),
    (["lr"], "expected key=value"),
    (["data.reid_input=clear"], "for --mode reid"),
])
def test_bad_settings_are_named(sets, message):
    with pytest.raises(FogreidError, match=message):
        build_config(None, sets)


def test_missing_or_broken_yaml(tmp_path):
    with pytest.raises(FogreidError, match="config file not found"):
        build_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(FogreidError, match="not valid YAML"):
        build_config(bad)
