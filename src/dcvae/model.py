"""The trained model for inference: `dcvae.load(path)` -> DCVAE with encode / decode / sample / reconstruct /
interpolate. Images are float tensors [N, C, 32, 32] in [-1, 1]; latents are [N, latent_dim]."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import Config
from .errors import UserError
from .networks import build_networks, memory_format, set_fold_resampling
from .training.checkpoint import (load_config_dict, load_module_weights, load_weights, read_manifest,
                                  resolve_checkpoint)


class DCVAE(nn.Module):
    """Encoder q(z|x) and decoder f(z) of a trained DC-VAE (the EMA decoder unless asked otherwise)."""

    def __init__(self, config: Config, encoder: nn.Module, decoder: nn.Module, model_id: str = ""):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.model_id = model_id  # SHA-256 of the checkpoint's model.safetensors: what latent-space files belong to
        self.checkpoint: Path | None = None     # the verified checkpoint folder it was loaded from, and its iteration
        self.iteration: int | None = None
        # the training layout (train.channels_last) is also the faster one for inference; outputs are returned in
        # the default layout, so that callers can .view() them
        self.memory_format = memory_format(config.train.channels_last)
        self.to(memory_format=self.memory_format)
        set_fold_resampling(self, config.train.fold_resampling)

    @property
    def latent_dim(self) -> int:
        return self.config.model.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1], checked against the model's shape, on its device in float32 and its
        memory format: what the encoder takes."""
        m = self.config.model
        expected = (m.image_channels, m.resolution, m.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise UserError(f"images must be [N, {', '.join(map(str, expected))}] in [-1, 1]; got {tuple(x.shape)}")
        return x.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """x [N, C, H, W] in [-1, 1] -> latent [N, latent_dim]: the posterior mean, or a sample of q(z|x)."""
        mu, logvar = self.encoder(self.prepare_images(x))
        if not sample:
            return mu
        return mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator, device=mu.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, latent_dim] -> images [N, C, H, W] in [-1, 1] (the progressive decoder's output is linear, as
        ProGAN's, and clipped here; H = W is the decoder's current resolution, below model.resolution for a
        checkpoint saved before its growth ended)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UserError(f"latents must be [N, {self.latent_dim}]; got {tuple(z.shape)}")
        return self.decoder(z.to(self.device, torch.float32)).clamp(-1, 1).contiguous()

    @torch.no_grad()
    def sample_latents(self, n: int, truncation: float | None = None, generator: torch.Generator | None = None,
                       prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """n latents [n, latent_dim]: z ~ N(0, I) (the paper's prior), or, given `prior` = (mean [latent_dim],
        covariance [latent_dim, latent_dim]) such as `dcvae.latent.fit_aggregate_posterior` returns,
        z = mean + L eps with L the covariance's Cholesky factor and eps ~ N(0, I). `truncation` t clips eps to
        [-t, t]: for N(0, I), z itself (the authors' FID code clips to [-1, 1])."""
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        if truncation is not None:
            eps = eps.clamp(-truncation, truncation)
        if prior is None:
            return eps
        mean, covariance = prior
        d = self.latent_dim
        if tuple(mean.shape) != (d,) or tuple(covariance.shape) != (d, d):
            raise UserError(f"a prior for this model is (mean [{d}], covariance [{d}, {d}]); got "
                            f"({list(mean.shape)}, {list(covariance.shape)})")
        try:
            scale = torch.linalg.cholesky(covariance.double()).to(self.device, torch.float32)
        except torch.linalg.LinAlgError:
            raise UserError("the prior's covariance is not positive definite; pass a symmetric positive-definite "
                            "matrix (fit_aggregate_posterior's always is)") from None
        return mean.to(self.device, torch.float32) + eps @ scale.T

    @torch.no_grad()
    def sample(self, n: int, truncation: float | None = None, generator: torch.Generator | None = None,
               prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """n images [n, C, H, W] in [-1, 1], decoded from `sample_latents(n, truncation, generator, prior)`."""
        return self.decode(self.sample_latents(n, truncation, generator, prior))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """Decode the encoding of x (its posterior mean by default): [N, C, H, W] -> [N, C, H, W]."""
        return self.decode(self.encode(x, sample, generator))

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Evenly spaced linear blends between two images (through their latents) or two latents.

        a, b: [N, C, H, W] images or [N, latent_dim] latents -> [N, steps, C, H, W]; step 0 decodes a, the last b.
        """
        if steps < 2:
            raise UserError(f"interpolation needs at least 2 steps, got {steps}")
        za = a if a.dim() == 2 else self.encode(a)
        zb = b if b.dim() == 2 else self.encode(b)
        w = torch.linspace(0, 1, steps, device=self.device).view(1, steps, 1)
        z = torch.lerp(za.to(self.device).unsqueeze(1), zb.to(self.device).unsqueeze(1), w)
        return self.decode(z.flatten(0, 1)).unflatten(0, (len(za), steps))

    @classmethod
    def load(cls, path: str | Path, decoder: str = "ema", device: str | torch.device = "cpu") -> "DCVAE":
        """From a checkpoint folder, a run folder (its newest valid checkpoint) or a checkpoints/ folder.

        decoder: "ema" (the averaged weights the paper evaluates) or "live".
        """
        if decoder not in ("ema", "live"):
            raise UserError(f"decoder must be 'ema' or 'live', got {decoder!r}")
        folder = resolve_checkpoint(path)
        manifest = read_manifest(folder)
        config = Config.from_dict(load_config_dict(folder))
        weights = load_weights(folder)
        nets = build_networks(config.model)
        load_module_weights(nets.encoder, weights, "encoder", folder)
        load_module_weights(nets.decoder, weights, "decoder_ema" if decoder == "ema" else "decoder", folder)
        model = cls(config, nets.encoder, nets.decoder, manifest["sha256"]["model.safetensors"])
        model.checkpoint, model.iteration = folder, manifest.get("iteration")
        return model.to(device).eval()


def load(path: str | Path, decoder: str = "ema", device: str | torch.device = "cpu") -> DCVAE:
    """Load a trained model for inference; see `DCVAE.load`."""
    return DCVAE.load(path, decoder, device)
