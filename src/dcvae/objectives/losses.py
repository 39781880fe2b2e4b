"""Each term of the paper's objectives as a named function, checkable against the equations.

Shapes: logits [N]; embeddings [N, d]; mu, logvar [N, latent]; images [N, C, H, W] in [-1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL[N(mu, exp(logvar)) || N(0, I)], summed over batch and latent dims (the released code's reduction).

    Closed form per dimension: 0.5 * (mu^2 + exp(logvar) - 1 - logvar).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, with eps ~ N(0, I) of mu's shape."""
    return mu + (0.5 * logvar).exp() * eps


def pixel_reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Eq. 1's -log p(x|z) up to scale and constant: the mean squared pixel error."""
    return F.mse_loss(x_rec, x)


def bernoulli_reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of a Bernoulli decoder whose means are the decoder's pixels: binary cross-entropy between x and
    x_rec, both mapped from [-1, 1] to [0, 1] (grey levels are targets as they are, the usual relaxation), summed
    over pixels and batch like `kl_divergence`, so that `kl_weight = 1` weighs the two as the ELBO does. Computed in
    float32 outside autocast (binary cross-entropy is not autocast-safe); log p is clamped at -100 (PyTorch's)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.binary_cross_entropy((x_rec.float() + 1) / 2, (x.float() + 1) / 2, reduction="sum")


def feature_reconstruction_loss(feature_real: torch.Tensor, feature_rec: torch.Tensor) -> torch.Tensor:
    """Eq. 3's ||F_D(x) - F_D(x_rec)||^2 (mean over batch and feature dims); the real features are a fixed target."""
    return F.mse_loss(feature_rec, feature_real.detach())


def gan_discriminator_loss(real: torch.Tensor, fake: torch.Tensor, rec: torch.Tensor, kind: str = "hinge"
                           ) -> torch.Tensor:
    """Set-level loss for D (Eq. 4) with prior samples and reconstructions as fakes, each weighted 1/2.

    hinge (released):  E[relu(1 - D(x))] + 1/2 E[relu(1 + D(G(z_p)))] + 1/2 E[relu(1 + D(x_rec))]
    logistic (Eq. 4):  E[softplus(-D(x))] + 1/2 E[softplus(D(G(z_p)))] + 1/2 E[softplus(D(x_rec))]
    """
    if kind == "hinge":
        return F.relu(1 - real).mean() + 0.5 * F.relu(1 + fake).mean() + 0.5 * F.relu(1 + rec).mean()
    if kind == "logistic":
        return F.softplus(-real).mean() + 0.5 * F.softplus(fake).mean() + 0.5 * F.softplus(rec).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def gan_generator_loss(fake: torch.Tensor, rec: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Set-level loss for E and G.

    hinge (released):  -(1/2 E[D(G(z_p))] + 1/2 E[D(x_rec)])
    logistic:          1/2 E[softplus(-D(G(z_p)))] + 1/2 E[softplus(-D(x_rec))]  (non-saturating form of Eq. 4)
    """
    if kind == "hinge":
        return -(0.5 * fake.mean() + 0.5 * rec.mean())
    if kind == "logistic":
        return 0.5 * F.softplus(-fake).mean() + 0.5 * F.softplus(-rec).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-level contrastive loss (Eq. 6), MoCo style.

    query [N, d]: embeddings of the reconstructions (live D); key [N, d]: of the inputs (momentum D);
    negatives [K, d]: the queue. h(x, y) is cosine similarity, so query and key are L2-normalised here; the queue
    holds normalised keys. Returns (mean cross-entropy over logits [q.k, q.queue] / T with target 0,
    top-1 accuracy in [0, 1]). Computed in float32 outside autocast: under bf16 autocast the similarities to the
    queue would be rounded to 8 significant bits (logits off by ~1e-2 at T = 0.07) while the positive's stayed exact.
    """
    with torch.autocast(query.device.type, enabled=False):
        q = F.normalize(query.float(), dim=1)
        k = F.normalize(key.float(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)
        negative = q @ negatives.float().t()
        logits = torch.cat([positive, negative], dim=1) / temperature
        target = torch.zeros(len(q), dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(dim=1) == 0).float().mean()
    return loss, accuracy.detach()


def gather_patches(feature_map: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """feature_map [N, C, H, W], locations [N] -> the 1x1xC feature at each image's location, [N, C]."""
    flat = feature_map.flatten(2)                                      # [N, C, H*W]
    index = locations.view(-1, 1, 1).expand(-1, flat.shape[1], 1)
    return flat.gather(2, index).squeeze(2)
