import math

import pytest
import torch

from fogreid.train import losses as L


def grad_of(loss_fn, x):
    x = x.clone().requires_grad_(True)
    value = loss_fn(x)
    value.backward()
    return value.detach(), x.grad


def test_cross_entropy_and_smoothing():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    labels = torch.tensor([0, 1])
    plain = L.cross_entropy(logits, labels)
    assert plain == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)
    assert L.cross_entropy(logits, labels, label_smoothing=0.1) > plain  # smoothing penalises overconfidence
    value, grad = grad_of(lambda x: L.cross_entropy(x, labels, 0.1), logits)
    assert grad.abs().sum() > 0


def test_batch_hard_triplet_by_hand():
    features = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 3.0: farthest positive 2 (to 5), nearest negative 2 (to 1): 2 - 2 + 0.3; others 0
    value, grad = grad_of(lambda x: L.batch_hard_triplet(x, labels, margin=0.3), features)
    assert value == pytest.approx(0.3 / 4, abs=1e-5)
    assert grad.abs().sum() > 0
    only_one_id = L.batch_hard_triplet(features, torch.zeros(4, dtype=torch.long))
    assert only_one_id == 0  # no negatives: no triplets, no NaN


def test_restoration_losses():
    out, clear = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), 0.25)
    assert L.restoration(out, clear, "l1") == pytest.approx(0.25)
    assert L.restoration(out, clear, "mse") == pytest.approx(0.0625)
    with pytest.raises(ValueError):
        L.restoration(out, clear, "l2")
    # Every image of the batch counts, not only the first (an upstream bug).
    out2 = out.clone()
    out2[1] = 0.25
    assert L.restoration(out2, clear) == pytest.approx(0.125)
    value, grad = grad_of(lambda x: L.restoration(x, clear), out)
    assert (grad[1] != 0).all()


def test_ssim_loss():
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert L.ssim_loss(image, image) == pytest.approx(0.0, abs=1e-5)
    value, grad = grad_of(lambda x: L.ssim_loss(x, image), image * 0.5)
    assert value > 0.1 and grad.abs().sum() > 0


def test_dark_channel_prior_lowers_the_dark_channel():
    hazy = torch.ones(2, 3, 16, 16) * torch.tensor([0.4, 0.6, 0.9]).view(1, 3, 1, 1)
    assert L.dark_channel_loss(hazy, patch=5) == pytest.approx(0.4)
    dark_pixel = hazy.clone()
    dark_pixel[:, :, 8, 8] = 0.0
    channel = L.dark_channel(dark_pixel, patch=5)
    assert channel[0, 0, 8, 8] == 0 and channel[0, 0, 6, 6] == 0 and channel[0, 0, 0, 0] == pytest.approx(0.4)
    value, grad = grad_of(lambda x: L.dark_channel_loss(x, 5), hazy)
    assert grad[:, 0].abs().sum() > 0 and grad[:, 1:].abs().sum() == 0  # only the darkest channel
    stepped = hazy - 0.5 * grad
    assert L.dark_channel_loss(stepped, 5) < value  # a gradient step lowers the dark channel


def test_total_variation():
    board = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)) % 2
    board = board.float().expand(1, 3, 8, 8)
    assert L.total_variation(board) == pytest.approx(2.0)
    assert L.total_variation(torch.full((1, 3, 8, 8), 0.3)) == 0
    value, grad = grad_of(L.total_variation, board)
    assert grad.abs().sum() > 0
    assert L.total_variation(board - 0.01 * grad) < value


def _hazy_scene():
    """A clear scene under the scattering model: t = 0.5, grey airlight 0.9."""
    clear = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5
    return clear, clear * 0.5 + 0.9 * 0.5


def _step_lowers_dark_channel(prior, image):
    """One gradient step on `prior(image)` lowers the image's mean dark channel."""
    image = image.clone().requires_grad_(True)
    value = prior(image)
    value.backward()
    assert value > 0
    stepped = (image - 0.1 * image.grad / image.grad.abs().max()).detach()
    return L.dark_channel(stepped, 15).mean() < L.dark_channel(image.detach(), 15).mean()


def test_every_prior_with_its_default_weight_lowers_the_dark_channel():
    """The sign the priors must keep (upstream's RVSL dark-channel loss had it backwards)."""
    from fogreid.train.config import build_config

    loss = build_config(None).loss
    clear, hazy = _hazy_scene()
    assert loss.dark_channel_weight > 0 and loss.tv_weight > 0
    # SJDL's real-batch priors on its defogged output.
    assert _step_lowers_dark_channel(lambda x: loss.dark_channel_weight * L.dark_channel_loss(x, 15)
                                     + loss.tv_weight * L.total_variation(x), hazy)
    # RVSL stage 3: the priors on the hazy->clear translation of a real foggy image.
    w3 = loss.rvsl_stage3.priors
    assert w3 > 0
    assert _step_lowers_dark_channel(lambda x: w3 * (0.5 * L.dark_channel_loss(x, 15) + 2 * L.total_variation(x)
                                                     + 0.05 * L.haze_line_colinearity(hazy, x)), hazy)
    # RVSL stage 2: monotonicity keeps the clear image's dark channel below its hazy translation's.
    w2 = loss.rvsl_stage2.priors
    assert w2 > 0
    darker_haze = clear * 0.5  # a "hazy" translation darker than its clear source: penalised
    assert _step_lowers_dark_channel(lambda x: w2 * L.dark_channel_monotonicity(x, darker_haze), clear)
