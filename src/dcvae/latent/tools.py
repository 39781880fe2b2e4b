"""The math of the latent tools, independent of the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import UserError
from ..files import atomic_output, atomic_write_text

MIN_DIRECTION_EXAMPLES = 20  # paper A.2: "20 images that have the attribute and 20 images that do not"


def traverse(z: torch.Tensor, values: torch.Tensor, dims: list[int] | None = None,
             direction: torch.Tensor | None = None) -> torch.Tensor:
    """Sweeps from one latent z [d].

    With `dims`: for each dim, z with that coordinate set to each of `values` [K] -> [len(dims), K, d].
    With `direction` [d]: z + v * direction for each v of `values` -> [1, K, d].
    """
    if (dims is None) == (direction is None):
        raise UserError("traverse needs either latent dimensions or a direction (not both)")
    if direction is not None:
        return (z.unsqueeze(0) + values.view(-1, 1) * direction.unsqueeze(0)).unsqueeze(0)
    bad = [d for d in dims if not 0 <= d < z.shape[-1]]
    if bad:
        raise UserError(f"latent dimensions {bad} are out of range: this model has {z.shape[-1]} "
                        f"(0..{z.shape[-1] - 1})")
    rows = z.repeat(len(dims), len(values), 1)                        # [D, K, d]
    for i, d in enumerate(dims):
        rows[i, :, d] = values
    return rows


def attribute_direction(with_attribute: torch.Tensor, without_attribute: torch.Tensor,
                        min_examples: int = MIN_DIRECTION_EXAMPLES) -> torch.Tensor:
    """Paper A.2: mean latent of images with the attribute minus the mean of images without. [N1, d], [N2, d] -> [d]."""
    for name, group in (("with", with_attribute), ("without", without_attribute)):
        if len(group) < min_examples:
            raise UserError(f"an attribute direction needs at least {min_examples} images {name} the attribute; "
                            f"got {len(group)}: add images")
    return with_attribute.mean(0) - without_attribute.mean(0)


def apply_directions(z: torch.Tensor, directions: list[torch.Tensor], strengths: list[float]) -> torch.Tensor:
    """z [N, d] + sum_i strength_i * direction_i -> [N, d]."""
    if len(directions) != len(strengths):
        raise UserError(f"{len(directions)} directions but {len(strengths)} strengths: give one strength each")
    out = z.clone()
    for direction, strength in zip(directions, strengths):
        out = out + strength * direction.to(out)
    return out


def mix(z_a: torch.Tensor, z_b: torch.Tensor, dims: list[int] | torch.Tensor) -> torch.Tensor:
    """z_a [N, d] with the coordinates `dims` replaced by z_b's [N, d] (paper Fig. 12) -> [N, d]."""
    index = torch.as_tensor(dims, dtype=torch.long)
    if index.numel() and (index.min() < 0 or index.max() >= z_a.shape[1]):
        raise UserError(f"mixing dimensions must be in 0..{z_a.shape[1] - 1}; got {index.tolist()}")
    out = z_a.clone()
    out[:, index] = z_b[:, index].to(out)
    return out


@torch.no_grad()
def embed(model, dataset: Dataset, batch_size: int = 256) -> torch.Tensor:
    """Posterior means of every image of a data set, in order -> [N, latent_dim] float32 on the CPU."""
    return torch.cat([model.encode(x).cpu() for x, _ in DataLoader(dataset, batch_size=batch_size)])


@torch.no_grad()
def fit_aggregate_posterior(model, dataset: Dataset, n: int | None = None, batch_size: int = 256
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian with the mean and covariance of the aggregate posterior q(z) = (1/n) sum_i q(z|x_i) over the
    first n images of `dataset` (all by default): (mean [latent_dim], covariance [latent_dim, latent_dim]), float64
    on the CPU, covariance = Cov(mu) (over the n images, divided by n) + diag(mean of sigma^2), so it is positive
    definite. `model.sample(..., prior=fit)` draws from it instead of N(0, I): ex-post density estimation (Ghosh et
    al. 2020), not the paper's sampling, for a decoder whose encoder leaves the data away from N(0, I) (with the
    paper's KL weight of 1e-6, nothing holds it there)."""
    n = len(dataset) if n is None else n
    if not 2 <= n <= len(dataset):
        raise UserError(f"fitting the aggregate posterior needs 2 to {len(dataset)} images of this data set; "
                        f"got {n}")
    means, variances = [], []
    for x, _ in DataLoader(Subset(dataset, range(n)), batch_size=batch_size):
        mu, logvar = model.encoder(model.prepare_images(x))
        means.append(mu.double().cpu())
        variances.append(logvar.double().exp().cpu())
    mu, variance = torch.cat(means), torch.cat(variances)
    mean = mu.mean(0)
    centred = mu - mean
    return mean, centred.T @ centred / n + torch.diag(variance.mean(0))


def save_gif(frames: torch.Tensor, path: str | Path, milliseconds: int = 100, bounce: bool = True) -> None:
    """frames [T, C, H, W] in [-1, 1] -> an animated GIF (forth and back when `bounce`), written atomically."""
    pixels = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    images = [Image.fromarray(f.squeeze(0).numpy() if f.shape[0] == 1 else f.permute(1, 2, 0).numpy())
              for f in pixels]
    if bounce and len(images) > 2:
        images = images + images[-2:0:-1]
    with atomic_output(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=milliseconds, loop=0)


def save_direction(path: str | Path, direction: torch.Tensor, attribute: str, model_id: str,
                   n_with: int, n_without: int) -> None:
    """A reusable direction: safetensors with the vector and which model and attribute it belongs to."""
    with atomic_output(path) as tmp:
        save_file({"direction": direction.detach().float().cpu().contiguous()}, str(tmp), metadata={
            "attribute": attribute, "model_id": model_id, "latent_dim": str(direction.numel()),
            "n_with": str(n_with), "n_without": str(n_without)})


def load_direction(path: str | Path, model_id: str, latent_dim: int) -> tuple[str, torch.Tensor]:
    """(attribute name, direction [latent_dim]); refuses a file made for another model."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        direction = load_file(str(path))["direction"]
    except (SafetensorError, OSError, KeyError) as e:
        raise UserError(f"{path} is not a direction file written by dcvae edit ({e})") from None
    if meta.get("model_id") != model_id or direction.numel() != latent_dim:
        raise UserError(f"direction {path} ({meta.get('attribute', '?')}) was computed with another model "
                        f"({meta.get('model_id', '?')[:12]}, latent {direction.numel()}); this model is "
                        f"{model_id[:12]}, latent {latent_dim}: compute it again with this checkpoint")
    return meta.get("attribute", path.stem), direction


def save_latents(path: str | Path, latents: torch.Tensor, ids: list[str]) -> None:
    """latents [N, d] with their image ids: `.safetensors` (ids in the metadata) or `.npy` (+ `<name>.ids.json`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with atomic_output(path) as tmp:
            save_file({"latents": latents.contiguous()}, str(tmp), metadata={"ids": json.dumps(ids)})
    elif path.suffix == ".npy":
        atomic_write_text(path.with_suffix(".ids.json"), json.dumps(ids))
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.save(f, latents.numpy())
    else:
        raise UserError(f"latents can be written as .safetensors or .npy, not {path.suffix or 'no extension'}")


def load_latents(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """Inverse of `save_latents`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            ids = json.loads((f.metadata() or {}).get("ids", "[]"))
            return f.get_tensor("latents"), ids
    return torch.from_numpy(np.load(path, allow_pickle=False)), json.loads(path.with_suffix(".ids.json").read_text())
