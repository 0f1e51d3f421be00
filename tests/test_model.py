import pytest
import torch
from torch import nn

from fogreid.errors import FogreidError
from fogreid.model.build import build_model
from fogreid.model.config import ModelConfig, preset
from fogreid.model.fused import FusedDefogReID
from fogreid.model.resnet_ibn import IBN, ResNetIBN, load_imagenet_weights
from fogreid.model.summary import summarize

VARIANTS = [
    dict(backbone="resnet18", ibn=True, deform_branch=False),
    dict(backbone="resnet18", ibn=False, deform_branch=True),
    dict(backbone="resnet34", ibn=True, deform_branch=True),
    dict(backbone="resnet50", ibn=True, deform_branch=True),
    dict(backbone="resnet50", ibn=False, deform_branch=False, channel_attention=False),
]
EXPECTED_DIM = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_shapes_and_ranges(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(imgsz=(64, 64), num_ids=5, num_ids_real=3, **variant)
    net = build_model(cfg).train()
    out = net(torch.rand(4, 3, 64, 64))
    dim = EXPECTED_DIM[cfg.backbone] + (cfg.branch_channels if cfg.deform_branch else 0)
    assert net.embedding_dim == dim
    assert out.global_feat.shape == out.bn_feat.shape == (4, dim)
    assert out.coarse.shape == out.defogged.shape == (4, 3, 64, 64)
    assert 0 <= out.defogged.min() and out.defogged.max() <= 1
    assert net.classifier(out.bn_feat).shape == (4, 5)
    assert net.classifier_real(out.bn_feat).shape == (4, 3)
    assert all(torch.isfinite(t).all() for t in out)
    n_ibn = sum(isinstance(m, IBN) for m in net.backbone.modules())
    assert (n_ibn > 0) == cfg.ibn
    assert not any(isinstance(m, IBN) for m in net.backbone.layer4.modules()), "IBN-a stops before layer4"


def test_bnneck_bias_is_frozen():
    net = build_model(preset("edge", imgsz=(64, 64)))
    assert not net.reid.bnneck.bias.requires_grad


def test_imgsz_must_fit_the_stride():
    with pytest.raises(FogreidError, match="multiples of 32"):
        ModelConfig(imgsz=(100, 100))


def _fused(**overrides):
    torch.manual_seed(0)
    return FusedDefogReID(build_model(preset("edge", imgsz=(64, 64), **overrides)))


def test_fused_uint8_contract():
    model = _fused()
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        defogged, embedding = model(frames)
        # The same computation by hand: BGR uint8 NHWC -> RGB float NCHW in [0, 1].
        rgb = frames[..., [2, 1, 0]].permute(0, 3, 1, 2).float() / 255
        out = model.net(rgb)
    assert defogged.dtype == torch.uint8 and defogged.shape == frames.shape
    assert embedding.dtype == torch.float32 and embedding.shape == (3, model.embedding_dim)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(embedding, out.bn_feat / out.bn_feat.norm(dim=1, keepdim=True))
    expected = (out.defogged.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)[..., [2, 1, 0]]
    assert torch.equal(defogged, expected)


def test_fused_channel_order_matters():
    model = _fused()
    frames = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    frames[..., 0] = 200  # blue in BGR
    rgb = model.preprocess(frames)
    assert rgb[:, 2].min() == pytest.approx(200 / 255) and rgb[:, 0].max() == 0


@pytest.mark.parametrize("bad", [torch.zeros(1, 64, 64, 3), torch.zeros(1, 32, 32, 3, dtype=torch.uint8),
                                 torch.zeros(1, 3, 64, 64, dtype=torch.uint8)])
def test_fused_rejects_wrong_input(bad):
    with pytest.raises(FogreidError, match=r"uint8 frames of shape \(B, 64, 64, 3\)"):
        _fused()(bad)


def test_reid_only_model_passes_frames_through():
    model = _fused(defog=False)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    defogged, embedding = model(frames)
    assert torch.equal(defogged, frames) and embedding.shape == (2, 512)


def test_presets_and_costs():
    paper, edge = preset("paper"), preset("edge")
    assert paper.backbone == "resnet50" and paper.deform_branch and paper.imgsz == (384, 384)
    assert edge.backbone == "resnet18" and not edge.deform_branch
    assert 128 <= edge.imgsz[0] <= 256
    rows = {r.name: r for r in summarize(build_model(paper))}
    assert 36e6 < sum(r.params for n, r in rows.items() if "training" not in n) < 40e6  # paper: ~38 M
    # The published decoder costs about as much as the encoder at full resolution ...
    assert rows["defog decoder"].gflops > 0.5 * rows["encoder (ResNet-IBN)"].gflops
    assert rows["ReID head"].gflops > 1.0  # the deformable branch is counted
    # ... the edge preset slims it.
    edge_rows = {r.name: r for r in summarize(build_model(edge))}
    assert edge_rows["defog decoder"].gflops < 0.35 * edge_rows["encoder (ResNet-IBN)"].gflops
    with pytest.raises(FogreidError, match="unknown preset"):
        preset("large")


def test_imagenet_weights_from_a_torchvision_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    for m in reference.modules():  # non-trivial norm statistics to check the IBN split
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetIBN("resnet18", ibn=True)
    load_imagenet_weights(backbone, path)
    ref = reference.state_dict()
    assert torch.equal(backbone.conv1.weight, ref["conv1.weight"])
    assert torch.equal(backbone.layer4[1].bn2.weight, ref["layer4.1.bn2.weight"])
    ibn = backbone.layer1[0].bn1
    assert torch.equal(ibn.IN.weight, ref["layer1.0.bn1.weight"][:32])
    assert torch.equal(ibn.BN.weight, ref["layer1.0.bn1.weight"][32:])
    assert torch.equal(ibn.BN.running_mean, ref["layer1.0.bn1.running_mean"][32:])


def test_imagenet_weights_errors(tmp_path, monkeypatch):
    backbone = ResNetIBN("resnet18")
    with pytest.raises(FogreidError, match="weights file not found"):
        load_imagenet_weights(backbone, tmp_path / "missing.pth")
    import torchvision

    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(FogreidError, match="do not fit backbone resnet18"):
        load_imagenet_weights(backbone, path)
    # No network: the download fails with a message that says how to proceed.
    from torchvision.models import ResNet18_Weights

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(FogreidError, match="--pretrained PATH"):
        load_imagenet_weights(backbone, "imagenet")


def test_precise_bn_changes_running_statistics_and_no_weight():
    from fogreid.model.precise_bn import batchnorm_layers, update_bn_stats

    torch.manual_seed(0)
    net = build_model(preset("edge", imgsz=(64, 64))).eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    before = [bn.running_mean.clone() for bn in batchnorm_layers(net)]
    batches = [torch.rand(4, 3, 64, 64) * 0.5 + 0.4 for _ in range(3)]
    assert update_bn_stats(net, iter(batches), num_batches=2) == 2
    assert not net.training, "the mode is restored"
    after = [bn.running_mean for bn in batchnorm_layers(net)]
    assert all(not torch.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())
    assert all(bn.momentum == 0.1 for bn in batchnorm_layers(net))


def test_block_means_are_the_pooled_means_at_any_size():
    """The enhancement's pyramid pools each scale from the one below (fogreid/model/sjdl.py,
    `block_means`): the same means as pooling the map itself, partial border cells included."""
    import torch.nn.functional as F

    from fogreid.model.sjdl import block_means

    torch.manual_seed(0)
    for shape in [(2, 8, 64, 64), (1, 3, 120, 160), (1, 2, 70, 93), (1, 1, 31, 5)]:
        x = torch.rand(shape, dtype=torch.float64)
        for got, scale in zip(block_means(x, (4, 8, 16, 32)), (4, 8, 16, 32), strict=True):
            want = F.avg_pool2d(x, scale, ceil_mode=True)
            assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-12), (shape, scale)


def test_box_mean_is_the_pooled_mean_at_any_size():
    """`box_mean` sums with convolutions over the pixel counts: the same as two average pools that
    do not count the padding, odd sizes and a window wider than the map included."""
    import torch.nn.functional as F

    from fogreid.model.sjdl import box_mean

    torch.manual_seed(0)
    for shape, radius in [((2, 1, 64, 64), 7), ((1, 3, 37, 53), 4), ((1, 1, 5, 9), 7)]:
        x = torch.rand(shape, dtype=torch.float64)
        k = 2 * radius + 1
        want = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
        want = F.avg_pool2d(want, (1, k), stride=1, padding=(0, radius), count_include_pad=False)
        assert torch.allclose(box_mean(x, radius), want, rtol=0, atol=1e-12), (shape, radius)


def test_scatter_decoder_fusion_and_reduce_convs_are_summed_per_part(tmp_path):
    """The decoder's fusion conv over the upsampled features, the encoder's fine map and the prior's
    t0, and its reduce conv over layer1 and the stem, are summed from one conv per part
    (`conv_over_parts`; ONNX Runtime's blocked-layout convs need a multiple of 16 channels, and
    INT8 files keep a conv that reads a Concat in float): the same numbers as the layers on the
    concatenations, their parameters unchanged, and the exported head's transmission computed
    without a Concat before either conv."""
    import onnx

    net = build_model(preset("edge", imgsz=(64, 64), defog_head="detail")).eval()
    decoder = net.decoder
    first = decoder.fuse[0][0]
    torch.manual_seed(0)
    x = torch.rand(2, 32, 32, 32, dtype=torch.float64)
    fine = torch.rand(2, first.in_channels - 33, 32, 32, dtype=torch.float64)
    t0 = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    decoder.double()
    want = decoder.fuse(torch.cat([x, fine, t0], dim=1))
    assert (first.in_channels - 1) % 16 == 0
    assert torch.allclose(decoder._fuse([x, fine, t0]), want, rtol=0, atol=1e-12)
    reduce_in = decoder.reduce[0][0].in_channels
    l1, stem = torch.rand(2, reduce_in // 2, 16, 16, dtype=torch.float64), torch.rand(
        2, reduce_in - reduce_in // 2, 16, 16, dtype=torch.float64)
    assert torch.allclose(decoder._reduce(l1, stem), decoder.reduce(torch.cat([l1, stem], dim=1)), rtol=0, atol=1e-12)

    class Transmission(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net.float()

        def forward(self, image):
            return self.net.defog_maps(image)[0]
    path = tmp_path / "transmission.onnx"
    torch.onnx.export(Transmission(), (torch.rand(1, 3, 64, 64),), str(path), dynamo=False)
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    # Unfolded here, the parts' weights are Slices of the layer's (fogreid export folds them).
    fusion = [n for n in graph.node if n.op_type == "Conv" and producer.get(n.input[1], n).op_type == "Slice"]
    assert len(fusion) == 3
    assert not [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in producer
                and producer[n.input[0]].op_type == "Concat"]


def test_ibn_in_eval_is_the_split_norms_without_a_concat(tmp_path):
    """Out of training, IBN is computed over all channels (instance norm of the masked input plus
    batch norm's affine map), so the exported graph has no Concat before the next conv, which INT8
    files can then quantise: the same numbers as instance norm and batch norm on the two halves,
    and no Concat in the exported block."""
    import onnx

    torch.manual_seed(0)
    ibn = IBN(64)
    with torch.no_grad():
        for p in ibn.parameters():
            p.uniform_(0.5, 1.5)
        ibn.BN.running_mean.uniform_(-1, 1)
        ibn.BN.running_var.uniform_(0.5, 2)
    ibn.eval().double()
    x = torch.randn(4, 64, 16, 16, dtype=torch.float64) * 3 + 1
    first, rest = torch.split(x, [32, 32], dim=1)
    want = torch.cat([ibn.IN(first), ibn.BN(rest)], dim=1)
    assert torch.allclose(ibn(x), want, rtol=0, atol=1e-10)
    with torch.no_grad():
        ibn.float().train()(x.float())       # training keeps the split (batch statistics, running ones updated)
    assert not torch.equal(ibn.BN.running_mean, torch.zeros(32))
    path = tmp_path / "ibn.onnx"
    torch.onnx.export(ibn.eval(), (x.float(),), str(path), dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Concat" not in ops and "InstanceNormalization" in ops
