"""RVSL: its losses on hand-made inputs, each training stage, and its export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fogreid.train import losses as L

from conftest import SIZE, compare


def with_grad(fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [t.grad for t in leaves]


def test_least_squares_gan_losses():
    real, fake = torch.full((2, 1, 4, 4), 0.9), torch.full((2, 1, 4, 4), 0.2)
    assert L.lsgan_discriminator(real, fake) == pytest.approx(0.5 * (0.01 + 0.04))
    assert L.lsgan_generator(fake) == pytest.approx(0.64)
    value, (grad,) = with_grad(L.lsgan_generator, fake)
    assert grad.abs().sum() > 0 and (grad < 0).all()  # pushes fakes up towards "real"


def test_translation_and_consistency():
    a, b = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.25)
    # Upstream's SmoothL1 (beta 1) on [-1, 1] pixels: an error of 0.25 is 0.5 there, costing 0.5 * 0.5**2.
    assert L.translation(a, b) == pytest.approx(0.125)
    assert L.translation(a, torch.ones(2, 3, 8, 8)) == pytest.approx(1.5)  # linear beyond beta
    assert L.embedding_consistency(torch.ones(2, 4), torch.zeros(2, 4)) == 1.0
    _, grads = with_grad(L.translation, a, b)
    assert all(g.abs().sum() > 0 for g in grads)


def test_dark_channel_monotonicity_penalises_haze_that_darkens():
    clear = torch.full((1, 3, 16, 16), 0.3)
    hazier = torch.full((1, 3, 16, 16), 0.6)
    assert L.dark_channel_monotonicity(clear, hazier, patch=5) == 0  # haze raised the dark channel: fine
    darker = torch.full((1, 3, 16, 16), 0.1)
    value, grads = with_grad(lambda c, h: L.dark_channel_monotonicity(c, h, 5), clear, darker)
    assert value == pytest.approx(0.2) and grads[1].abs().sum() > 0


def test_haze_line_colinearity():
    clear = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    airlight = torch.tensor([[0.9, 0.9, 0.9], [0.8, 0.85, 0.9]])
    t = 0.4
    on_lines = clear * t + airlight.view(2, 3, 1, 1) * (1 - t)  # the scattering model: exactly colinear
    assert L.haze_line_colinearity(on_lines, clear, airlight) == pytest.approx(0.0, abs=1e-5)
    shuffled = on_lines[:, [2, 0, 1]]
    value, grads = with_grad(lambda h, c: L.haze_line_colinearity(h, c, airlight), shuffled, clear)
    assert value > 0.05 and grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    estimated = L.estimate_airlight(on_lines)
    assert estimated.shape == (2, 3) and (estimated > 0.5).all()


def test_replay_buffer_mixes_old_and_new():
    buffer = L.ReplayBuffer(size=4, seed=0)
    first = buffer.query(torch.zeros(4, 3, 2, 2))
    assert torch.equal(first, torch.zeros(4, 3, 2, 2))  # filling up: returns the new images
    mixed = torch.cat([buffer.query(torch.ones(4, 3, 2, 2)) for _ in range(10)])
    assert (mixed.flatten(1).mean(1) == 0).any() and (mixed.flatten(1).mean(1) == 1).any()


@pytest.fixture(scope="module")
def rvsl_run(tmp_path_factory):
    """Two epochs per stage on a tiny generated set: enough for a warmup and a decay."""
    from fogreid.data.synth import SynthConfig, generate
    from fogreid.train.config import build_config
    from fogreid.train.rvsl import train_rvsl

    root = tmp_path_factory.mktemp("rvsl_data")
    generate(root, SynthConfig(ids=16, cams=3, per_cam=2, imgsz=64, seed=5), progress=False)
    out = tmp_path_factory.mktemp("rvsl")
    cfg = build_config(None, ["mode=rvsl", f"data.root={root}", "model.imgsz=[32, 32]",
                              "optim.epochs=2", "data.ids_per_batch=4", "data.instances_per_id=2",
                              "data.num_workers=0", "model.decoder_width=16", "optim.precise_bn_batches=2"])
    return out, train_rvsl(cfg, out, progress=False)


def test_rvsl_starts_from_a_trained_sjdl_network(tmp_path):
    from fogreid.errors import FogreidError
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import read_checkpoint, save_checkpoint
    from fogreid.model.config import preset
    from fogreid.train.rvsl import start_from

    sjdl = build_model(preset("edge", imgsz=SIZE, num_ids=4))
    save_checkpoint(tmp_path / "sjdl.pt", sjdl)
    rvsl = build_model(preset("edge", arch="rvsl", imgsz=SIZE, num_ids=4))
    start_from(rvsl, read_checkpoint(tmp_path / "sjdl.pt"), tmp_path / "sjdl.pt")
    backbone = sjdl.backbone.state_dict()
    assert torch.equal(rvsl.enc_hazy.conv1.weight, backbone["conv1.weight"])
    assert torch.equal(rvsl.enc_clear.layer1[0].conv1.weight, backbone["layer1.0.conv1.weight"])
    assert torch.equal(rvsl.trunk.layer4[0].conv1.weight, backbone["layer4.0.conv1.weight"])
    assert torch.equal(rvsl.trunk.bnneck.running_var, sjdl.reid.bnneck.running_var)
    assert torch.equal(rvsl.classifier.weight, sjdl.classifier.weight)
    # the encoder without SJDL's channel attention: the same pooled layer4 features
    with torch.no_grad():
        image = torch.rand(2, 3, *SIZE)
        pooled = sjdl.backbone(sjdl.normalise(image))[3].mean(dim=(2, 3))
        assert torch.allclose(rvsl.trunk(rvsl.encode(image, "hazy")[1])[0], pooled, atol=1e-5)

    wider = build_model(preset("edge", arch="rvsl", backbone="resnet34", imgsz=SIZE, num_ids=4))
    with pytest.raises(FogreidError, match="does not fit this RVSL network"):
        start_from(wider, read_checkpoint(tmp_path / "sjdl.pt"), tmp_path / "sjdl.pt")


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the 3-stage run: about a minute alone on 2 cores
def test_each_stage_trains_with_its_losses(rvsl_run):
    out, summary = rvsl_run
    synthetic = {"id", "triplet", "translation", "embedding"}
    for stage, terms in ((1, synthetic | {"adversarial"}),
                         (2, synthetic | {"cycle", "real_embedding", "colinearity", "adversarial"}),
                         (3, synthetic | {"cycle", "real_embedding", "dark_channel", "tv", "colinearity",
                                          "adversarial"})):
        row = json.loads((out / f"stage{stage}" / "history.jsonl").read_text().splitlines()[-1])
        for term in terms:
            assert row[f"train/{term}"] > 0, (stage, term)
        assert row["precise_bn_batches"] == 2
        assert (out / f"stage{stage}" / "best.pt").is_file()
    assert 0 < summary["test"]["syn"]["mAP"] <= 1 and 0 < summary["test"]["real"]["mAP"] <= 1
    from fogreid.model.checkpoint import read_checkpoint

    assert read_checkpoint(out / "best.pt")["model_config"]["arch"] == "rvsl"
    # The final model is the best stage on validation, and is that stage's best.pt.
    chosen = summary["chosen_stage"]
    assert summary["stages"][chosen]["best"]["mAP"] == max(s["best"]["mAP"] for s in summary["stages"].values())
    assert torch.equal(read_checkpoint(out / "best.pt")["model"]["trunk.bnneck.weight"],
                       read_checkpoint(out / f"stage{chosen}" / "best.pt")["model"]["trunk.bnneck.weight"])


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the 3-stage run: about a minute alone on 2 cores
def test_rvsl_lr_warms_up_at_each_stage_and_decays(rvsl_run):
    """Read from the history every stage writes: each stage starts low (a warmup at the
    handover to a fresh optimiser), reaches its peak, then decays."""
    out, _ = rvsl_run
    for stage in (1, 2, 3):
        rows = [json.loads(line) for line in (out / f"stage{stage}" / "history.jsonl").read_text().splitlines()]
        assert len(rows) == 2
        assert rows[0]["lr_start"] < 0.05 * rows[0]["lr"], stage     # warmup from x0.01
        assert rows[1]["lr"] < rows[0]["lr"], stage                   # the x0.6 step
        assert len({r["lr"] for r in rows} | {r["lr_start"] for r in rows}) >= 3


def test_rvsl_encoders_start_alike():
    from fogreid.model.build import build_model
    from fogreid.model.config import preset

    net = build_model(preset("edge", arch="rvsl", imgsz=SIZE, num_ids=4))
    hazy, clear = net.enc_hazy.state_dict(), net.enc_clear.state_dict()
    assert hazy.keys() == clear.keys() and all(torch.equal(hazy[k], clear[k]) for k in hazy)
    assert net.enc_hazy.conv1.weight.data_ptr() != net.enc_clear.conv1.weight.data_ptr()  # alike, not shared


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the 3-stage run: about a minute alone on 2 cores
def test_rvsl_checkpoint_exports_and_matches_pytorch(rvsl_run, tmp_path):
    from fogreid import onnx_graph
    from fogreid.model.fused import FusedDefogReID

    out, _ = rvsl_run
    model = FusedDefogReID.from_checkpoint(out / "best.pt")
    path = onnx_graph.export_onnx(model, tmp_path / "rvsl.onnx", onnx_graph.deploy_metadata(model.net, "x", "fp32"))
    from fogreid.calibration.images import build_calibration_set

    root = Path(rvsl_run[1]["config"]["data"]["root"])
    frames = build_calibration_set([root / "FVRID_syn" / "query_foggy"], model.imgsz, num=8,
                                   progress=False).images
    cosine, grey = compare(path, model, frames)
    assert cosine.min() >= 0.9999 and grey.max() <= 1
    assert model.embedding_dim == 512 and np.isfinite(cosine).all()


def test_rvsl_summary_counts_its_own_branches():
    from fogreid.model.build import build_model
    from fogreid.model.config import preset
    from fogreid.model.summary import summarize

    rows = {r.name: r for r in summarize(build_model(preset("edge", arch="rvsl", imgsz=SIZE, num_ids=4)))}
    assert set(rows) == {"hazy encoder (stem+layer1)", "ReID trunk (layer2-4)", "hazy->clear translator",
                         "clear side (training only)"}
    assert all(rows[n].gflops > 0 for n in ("hazy encoder (stem+layer1)", "ReID trunk (layer2-4)",
                                            "hazy->clear translator"))
    assert rows["clear side (training only)"].gflops == 0 and rows["clear side (training only)"].params > 0
