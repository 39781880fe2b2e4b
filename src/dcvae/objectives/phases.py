"""The objective of each phase of a generator iteration, for each variant of paper Table 1.

A generator iteration (released code) is: `d_steps` discriminator steps on fresh real batches, then on the last
batch an adversarial update of encoder and decoder, then a contrastive update of encoder, decoder and the
discriminator's trunk and contrastive heads. Which terms each variant has:

    variant          D step   E/G step                      contrastive step
    vae              -        pixel MSE + KL (Eq. 1)        -
    vaegan           GAN      D-feature MSE + GAN + KL      -        (Eq. 3-5)
    vae-contrastive  -        -                             InfoNCE + KL
    dcvae            GAN      GAN + KL                      InfoNCE + KL            (Eq. 9)

Each function returns (loss, stats) where stats are detached scalars for logging.

With several processes each holds a slice of the global batch and the loop averages gradients over processes: a
term that is a mean over the batch then comes out as one process with the whole batch would compute it, but a term
summed over the batch (the released code's KL, the Bernoulli likelihood) would shrink by the number of processes,
weakening the KL against the mean-reduced GAN and contrastive terms. `processes` restores the global sum.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ObjectiveConfig
from ..networks import Networks
from . import losses
from .noise import BatchNoise


@dataclass(frozen=True)
class Terms:
    gan: bool
    contrastive: bool
    reconstruction: str  # "pixel" | "feature" | ""


TERMS = {
    "vae": Terms(gan=False, contrastive=False, reconstruction="pixel"),
    "vaegan": Terms(gan=True, contrastive=False, reconstruction="feature"),
    "vae-contrastive": Terms(gan=False, contrastive=True, reconstruction=""),
    "dcvae": Terms(gan=True, contrastive=True, reconstruction=""),
}


def _encode_decode(nets: Networks, x: torch.Tensor, noise: BatchNoise
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mu, logvar = nets.encoder(x)
    eps = noise.normal(*mu.shape, dtype=mu.dtype)
    return nets.decoder(losses.reparameterize(mu, logvar, eps)), mu, logvar


def _kl_term(mu: torch.Tensor, logvar: torch.Tensor, obj: ObjectiveConfig, processes: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL's share of the loss (summed over this process's batch, times `processes`: see the module docstring)
    and the KL per image, detached, for logging."""
    kl = losses.kl_divergence(mu.float(), logvar.float())
    return obj.kl_weight * processes * kl, kl.detach() / len(mu)


def discriminator_phase(nets: Networks, x: torch.Tensor, obj: ObjectiveConfig, noise: BatchNoise,
                        reconstruction_graph: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Set-level loss for D on real x [B, C, H, W], prior samples (B of them) and reconstructions of x.

    The fakes are made without a graph: the D update needs no gradient of the encoder or decoder. The released code
    does not detach the reconstruction, so its backward also computes encoder and decoder gradients, which the next
    step zeroes unused; `reconstruction_graph=True` does the same (the reference path of speed comparisons and
    tests: the D update is identical).
    """
    with torch.set_grad_enabled(reconstruction_graph):
        x_rec, _, _ = _encode_decode(nets, x, noise)
    with torch.no_grad():
        x_fake = nets.decoder(noise.normal(len(x), nets.encoder.latent_dim, dtype=x.dtype))
    real, fake, rec = (nets.discriminator(v)["logit"].float() for v in (x, x_fake, x_rec))
    loss = losses.gan_discriminator_loss(real, fake, rec, obj.gan_loss)
    return loss, {"loss/d": loss.detach(), "d/real": real.mean().detach(), "d/fake": fake.mean().detach(),
                  "d/rec": rec.mean().detach()}


def generator_phase(nets: Networks, x: torch.Tensor, obj: ObjectiveConfig, terms: Terms, noise: BatchNoise,
                    sample_batch_size: int, processes: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Encoder/decoder update: KL, plus the variant's reconstruction and GAN terms. `processes`: how many hold a
    slice of the global batch (batch-summed terms are scaled by it; see the module docstring)."""
    x_rec, mu, logvar = _encode_decode(nets, x, noise)
    loss, kl_per_image = _kl_term(mu, logvar, obj, processes)
    stats = {"kl": kl_per_image}
    if terms.reconstruction == "pixel":
        squared_error = losses.pixel_reconstruction_loss(x.float(), x_rec.float())
        if obj.pixel_likelihood == "bernoulli":
            rec = losses.bernoulli_reconstruction_loss(x, x_rec)
            stats["loss/bernoulli"] = rec.detach() / len(x)        # nats per image
            rec = processes * rec
        else:
            rec = squared_error
        loss = loss + obj.reconstruction_weight * rec
        stats["loss/pixel"] = squared_error.detach()              # logged for either likelihood: comparable
    if terms.gan or terms.reconstruction == "feature":
        d_rec = nets.discriminator(x_rec)
    if terms.gan:
        x_fake = nets.decoder(noise.normal(sample_batch_size, nets.encoder.latent_dim, dtype=x.dtype))
        g = losses.gan_generator_loss(nets.discriminator(x_fake)["logit"].float(), d_rec["logit"].float(),
                                      obj.gan_loss)
        loss = loss + g
        stats["loss/g"] = g.detach()
    if terms.reconstruction == "feature":
        with torch.no_grad():
            feature_real = nets.discriminator(x)["feature"]
        rec = losses.feature_reconstruction_loss(feature_real.float(), d_rec["feature"].float())
        loss = loss + obj.reconstruction_weight * rec
        stats["loss/feature"] = rec.detach()
    return loss, stats


def contrastive_phase(nets: Networks, momentum_discriminator: nn.Module, queues: nn.ModuleDict, x: torch.Tensor,
                      obj: ObjectiveConfig, noise: BatchNoise, patch_on: bool, processes: int = 1
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Instance-level loss (Eq. 8): InfoNCE on each contrastive layer (deep supervision) and, once `patch_on`,
    on one random 1x1xC location of `obj.patch_layer` (local patch, Sec. 4.2); plus KL.

    Queries are the reconstructions through the live D, keys the inputs through the momentum D. `processes`: as in
    `generator_phase`. Returns (loss, stats, keys to enqueue {queue name: [B, d]}).
    """
    layers = tuple(obj.contrastive_layers)
    maps = (obj.patch_layer,) if patch_on else ()
    with torch.no_grad():
        keys = momentum_discriminator(x, layers, maps)
    x_rec, mu, logvar = _encode_decode(nets, x, noise)
    queries = nets.discriminator(x_rec, layers, maps)
    loss, kl_per_image = _kl_term(mu, logvar, obj, processes)
    stats = {"kl": kl_per_image}
    weights = obj.contrastive_weights or [1.0 / len(layers)] * len(layers)
    new_keys = {}
    for name, weight in zip(layers, weights):
        nce, accuracy = losses.info_nce(queries[name], keys[name], queues[name].keys, obj.temperature)
        loss = loss + weight * nce
        stats[f"loss/nce_{name}"], stats[f"acc/{name}"] = nce.detach(), accuracy
        new_keys[name] = keys[name]
    if patch_on:
        q_map, k_map = queries["map:" + obj.patch_layer], keys["map:" + obj.patch_layer]
        where = noise.integers(q_map.shape[2] * q_map.shape[3], len(x))   # one location per image
        k_patch = losses.gather_patches(k_map, where)
        nce, accuracy = losses.info_nce(losses.gather_patches(q_map, where), k_patch, queues["patch"].keys,
                                        obj.temperature)
        loss = loss + obj.patch_weight * nce
        stats["loss/nce_patch"], stats["acc/patch"] = nce.detach(), accuracy
        new_keys["patch"] = k_patch
    return loss, stats, new_keys
