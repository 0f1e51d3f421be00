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
