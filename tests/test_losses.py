"""Each loss term against values computed by hand or from its definition."""
import math

import torch
import torch.nn.functional as F

from dcvae.objectives import losses
from dcvae.objectives.queue import NegativeQueue


def test_kl_closed_form_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # per dim: 0.5 * (mu^2 + var - 1 - logvar)
    expected = 0.5 * ((1 + 1 - 1 - 0) + (0 + 2 - 1 - math.log(2)) + (0.25 + 1 - 1 - 0) + (4 + 1 - 1 - 0))
    assert math.isclose(float(losses.kl_divergence(mu, logvar)), expected, rel_tol=1e-6)


def test_kl_is_zero_at_prior_and_matches_torch_distributions():
    assert float(losses.kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(losses.kl_divergence(mu, logvar), torch.distributions.kl_divergence(q, p).sum(), rtol=1e-5)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5])      # relu(1 - r): 0, 0.5 -> mean 0.25
    fake = torch.tensor([-2.0, 0.0])     # relu(1 + f): 0, 1 -> mean 0.5
    rec = torch.tensor([1.0, -0.5])      # relu(1 + r): 2, 0.5 -> mean 1.25
    d = losses.gan_discriminator_loss(real, fake, rec, "hinge")
    assert math.isclose(float(d), 0.25 + 0.5 * 0.5 + 0.5 * 1.25)
    g = losses.gan_generator_loss(fake, rec, "hinge")
    assert math.isclose(float(g), -(0.5 * -1.0 + 0.5 * 0.25))


def test_logistic_losses_match_log_form_of_eq4():
    real, fake, rec = torch.randn(6), torch.randn(6), torch.randn(6)
    sig = torch.sigmoid
    d = losses.gan_discriminator_loss(real, fake, rec, "logistic")
    expected = -(sig(real).log().mean() + 0.5 * (1 - sig(fake)).log().mean() + 0.5 * (1 - sig(rec)).log().mean())
    assert torch.allclose(d, expected, atol=1e-5)
    g = losses.gan_generator_loss(fake, rec, "logistic")
    assert torch.allclose(g, -(0.5 * sig(fake).log().mean() + 0.5 * sig(rec).log().mean()), atol=1e-5)


def test_info_nce_equals_cross_entropy_over_positive_and_queue_logits():
    torch.manual_seed(0)
    q, k = torch.randn(4, 16), torch.randn(4, 16)
    queue = F.normalize(torch.randn(10, 16), dim=1)
    loss, acc = losses.info_nce(q, k, queue, temperature=0.07)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    expected = 0.0
    for i in range(4):
        logits = torch.cat([(qn[i] @ kn[i]).view(1), queue @ qn[i]]) / 0.07
        expected += -(logits[0] - torch.logsumexp(logits, 0))
    assert torch.allclose(loss, expected / 4, atol=1e-5)
    assert 0.0 <= float(acc) <= 1.0


def test_info_nce_under_bf16_autocast_keeps_float32_similarities():
    # Autocast would run the query-queue matmul in bf16 even on float32 inputs; the loss and its gradient must stay
    # those of float32 (bf16 rounding alone moves this loss by 2e-4 and its gradient by 5e-4 of the largest element).
    torch.manual_seed(0)
    q, k = torch.randn(8, 128), torch.randn(8, 128)
    queue = F.normalize(torch.randn(4096, 128), dim=1)
    q32, q16 = q.clone().requires_grad_(), q.clone().requires_grad_()
    loss32, _ = losses.info_nce(q32, k, queue)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, _ = losses.info_nce(q16, k, queue)
    loss32.backward()
    loss16.backward()
    assert loss16.dtype == torch.float32
    assert abs((loss16 - loss32).item()) < 1e-6
    assert torch.allclose(q16.grad, q32.grad, rtol=0, atol=1e-6 * float(q32.grad.abs().max()) + 1e-9)


def test_info_nce_perfect_match_has_full_accuracy_and_small_loss():
    k = torch.eye(4, 16)
    queue = -torch.eye(8, 16)  # negatives point away
    loss, acc = losses.info_nce(k * 3.0, k, queue, temperature=0.07)
    assert float(acc) == 1.0
    assert float(loss) < 1e-5


def test_queue_wraps_around_and_keeps_newest():
    queue = NegativeQueue(size=5, dim=2)
    first = torch.tensor([[1.0, 0], [0, 1], [1, 1]])
    queue.enqueue(first)
    assert int(queue.pointer) == 3
    second = torch.tensor([[2.0, 0], [0, 3], [4, 4]])   # rows 3, 4, then wraps to 0
    queue.enqueue(second)
    assert int(queue.pointer) == 1
    expected = F.normalize(torch.tensor([[4.0, 4], [0, 1], [1, 1], [2, 0], [0, 3]]), dim=1)
    assert torch.allclose(queue.keys, expected)
    queue.enqueue(torch.randn(12, 2))   # more than the queue holds: the newest 5 survive
    assert queue.keys.shape == (5, 2) and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))


def test_patch_gather_picks_the_named_location():
    fmap = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    where = torch.tensor([3, 0])   # image 0 -> (1, 1), image 1 -> (0, 0)
    patches = losses.gather_patches(fmap, where)
    assert torch.equal(patches[0], fmap[0, :, 1, 1]) and torch.equal(patches[1], fmap[1, :, 0, 0])


def test_pixel_and_feature_reconstruction():
    x = torch.zeros(2, 1, 2, 2)
    assert math.isclose(float(losses.pixel_reconstruction_loss(x, x + 0.5)), 0.25)
    real = torch.ones(3, 4, requires_grad=True)
    rec = torch.zeros(3, 4, requires_grad=True)
    loss = losses.feature_reconstruction_loss(real, rec)
    loss.backward()
    assert math.isclose(loss.item(), 1.0) and real.grad is None and rec.grad is not None


def test_bernoulli_reconstruction_by_hand():
    x = torch.tensor([[[[-1.0, 1.0, 0.0]]], [[[1.0, 1.0, -1.0]]]])        # pixels 0, 1, 0.5 | 1, 1, 0
    x_rec = torch.tensor([[[[0.0, 0.5, 0.0]]], [[[1.0, 0.0, -0.5]]]])     # means 0.5, 0.75, 0.5 | 1, 0.5, 0.25
    # -[t log p + (1 - t) log(1 - p)] summed: ln 2 + ln(4/3) + ln 2 | 0 + ln 2 + ln(4/3)
    expected = 3 * math.log(2) + 2 * math.log(4 / 3)
    assert math.isclose(float(losses.bernoulli_reconstruction_loss(x, x_rec)), expected, rel_tol=1e-6)
    # for binary pixels it is Bernoulli's negative log-likelihood; exact 0 / 1 means cost PyTorch's clamp of 100 nats
    binary, means = (torch.rand(4, 1, 5, 5) > 0.5).float() * 2 - 1, torch.rand(4, 1, 5, 5) * 1.8 - 0.9
    nll = -torch.distributions.Bernoulli(probs=(means + 1) / 2).log_prob((binary + 1) / 2).sum()
    torch.testing.assert_close(losses.bernoulli_reconstruction_loss(binary, means), nll)
    assert math.isclose(float(losses.bernoulli_reconstruction_loss(-torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1))),
                        100.0)

