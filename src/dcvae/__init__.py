"""dcvae: the Dual Contradistinctive Generative Autoencoder (Parmar, Li, Lee, Tu, CVPR 2021).

    import dcvae
    model = dcvae.load("runs/demo")          # newest checkpoint of a run
    x_rec = model.reconstruct(x)             # x: [N, C, 32, 32] in [-1, 1]
"""
from .config import Config, preset, resolve
from .errors import UserError
from .model import DCVAE, load

__version__ = "0.1.0"
__all__ = ["Config", "DCVAE", "UserError", "load", "preset", "resolve", "__version__"]
