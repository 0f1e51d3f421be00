import pytest

from fogreid.errors import FogreidError
from fogreid.train.config import build_config


def test_yaml_sets_and_flags_in_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("mode: jdl\noptim:\n  lr: 3e-4\n  milestones: [5, 8]\nmodel:\n  imgsz: [64, 64]\n")
    cfg = build_config(path, ["optim.lr=1e-3", "loss.tv_weight=0.5"], {"optim.epochs": 7, "seed": None})
    assert cfg.mode == "jdl" and cfg.optim.lr == 1e-3 and cfg.optim.epochs == 7
    assert cfg.optim.milestones == (5, 8) and cfg.loss.tv_weight == 0.5 and cfg.seed == 0
    assert cfg.model_config(10, 4).imgsz == (64, 64)


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
    with pytest.raises(FogreidError, match="nope.yaml: not found"):
        build_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(FogreidError, match="not valid YAML"):
        build_config(bad)


def test_paper_schedule_is_the_official_one_and_scales_to_short_runs():
    from fogreid.train.schedule import resolve_schedule

    # With pretrained weights, the defaults are the published solver.
    full = resolve_schedule(build_config(None).optim, pretrained=True)
    assert full.epochs == 120 and full.warmup_epochs == 10 and full.gamma == 0.6
    assert full.milestones == (20, 30, 45, 60, 75, 90, 105) and not full.notes
    assert full.lr_at(0) == pytest.approx(1e-6) and full.lr_at(10) == pytest.approx(1e-4)
    assert full.lr_at(119) == pytest.approx(1e-4 * 0.6 ** 7)

    # An 8-epoch run: the warmup (10 epochs at full length) no longer eats the whole run.
    short = resolve_schedule(build_config(None, ["optim.epochs=8"]).optim)
    assert short.warmup_epochs == 1 and short.milestones[0] >= 1 and short.milestones[-1] < 8
    assert max(short.lr_at(e / 10) for e in range(80)) == pytest.approx(1e-3)  # the peak is reached
    assert any("scaled to 8" in n for n in short.notes)

    long_steps = resolve_schedule(build_config(None, ["optim.schedule=long-steps"]).optim)
    assert long_steps.milestones == (40, 70, 100)


def test_default_lr_follows_from_pretrained_weights_and_an_explicit_lr_wins():
    from fogreid.train.schedule import resolve_schedule

    optim = build_config(None).optim
    assert optim.lr is None
    scratch, pretrained = resolve_schedule(optim), resolve_schedule(optim, pretrained=True)
    assert scratch.lr == pytest.approx(1e-3) and pretrained.lr == pytest.approx(1e-4)
    assert "from scratch" in scratch.describe() and "pretrained" in pretrained.describe()
    given = resolve_schedule(build_config(None, ["optim.lr=3e-4"]).optim, pretrained=True)
    assert given.lr == pytest.approx(3e-4) and "optim.lr" in given.describe()


def test_explicit_schedule_that_cannot_act_is_reported():
    from fogreid.train.schedule import resolve_schedule

    sched = resolve_schedule(build_config(None, ["optim.epochs=5", "optim.warmup_epochs=10",
                                                 "optim.milestones=[3, 40]"]).optim)
    assert sched.warmup_epochs == 10 and sched.milestones == (3, 40)
    assert any("never reaches its peak" in n for n in sched.notes)
    assert any("[40]" in n and "never apply" in n for n in sched.notes)
    with pytest.raises(FogreidError, match="optim.schedule"):
        build_config(None, ["optim.schedule=cosine"])


def test_official_defaults():
    cfg = build_config(None)
    # SJDL priors: upstream's 1e-5 x per-image pixel sums, as per-pixel means at 384 px.
    assert cfg.loss.dark_channel_weight == pytest.approx(1e-5 * 384 * 384, rel=0.01)
    assert cfg.loss.tv_weight == pytest.approx(1e-5 * 3 * 384 * 384, rel=0.01)
    s1, s2, s3 = cfg.loss.rvsl_stage1, cfg.loss.rvsl_stage2, cfg.loss.rvsl_stage3
    assert (s1.reid, s1.translation, s1.embedding, s1.adversarial) == (1, 0.5, 0.5, 0.5)
    for later in (s2, s3):
        assert (later.reid, later.translation, later.cycle, later.priors) == (10, 100, 100, 0.01)
        assert later.real_embedding == 1
    # Nested per-stage weights take --set overrides like any other setting.
    assert build_config(None, ["loss.rvsl_stage3.cycle=50"]).loss.rvsl_stage3.cycle == 50


def test_paper_preset_is_stride_2_and_paper_s1_is_not():
    from fogreid.model.config import preset

    assert preset("paper").last_stride == 2 and preset("paper-s1").last_stride == 1
    assert preset("paper-s1").backbone == preset("paper").backbone == "resnet50"
