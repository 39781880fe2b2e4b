"""Latent-space tools: interpolation (and GIFs), traversals, attribute directions and edits, latent mixing,
embeddings of whole data sets, a Gaussian fitted to the aggregate posterior. Latents are [N, latent_dim] float
tensors; images [N, C, H, W] in [-1, 1]."""
from .tools import (apply_directions, attribute_direction, embed, fit_aggregate_posterior, load_direction,
                    load_latents, mix, save_direction, save_gif, save_latents, traverse)

__all__ = ["apply_directions", "attribute_direction", "embed", "fit_aggregate_posterior", "load_direction",
           "load_latents", "mix", "save_direction", "save_gif", "save_latents", "traverse"]
