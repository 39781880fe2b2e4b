"""Configuration: one dataclass tree, named presets for the paper's experiments, `key=value` overrides.

Defaults are the authors' released code (reference-implementation.md). Every deviation is a named option whose
default is stated here. A resolved config is written as JSON beside each run and each checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

VARIANTS = ("vae", "vaegan", "vae-contrastive", "dcvae")
LABELLED_DATASETS = ("mnist", "fashion-mnist", "cifar10", "stl10")    # a train and a test split with class labels


@dataclass
class ModelConfig:
    backbone: str = "autogan32"          # autogan32 (paper, Fig. 15) | compact32 (small grayscale family) |
                                         # progressive (ProGAN, the paper's 64..512 px backbone; see `growth`)
    image_channels: int = 3              # 1 or 3
    resolution: int = 32                 # autogan32 and compact32: 32 (28x28 data is padded); progressive: the
                                         # final resolution, 4 times a power of two from 8 to 1024
    latent_dim: int = 128                # paper: 128 at 32x32
    gen_width: int = 256                 # decoder channels (AutoGAN gf)
    dis_width: int = 128                 # encoder / discriminator channels (AutoGAN df)
    contrastive_dim: int = 16            # paper 5.1
    encoder_pool: str = "sum"            # how the encoder turns the trunk's last map into its head's input:
                                         # sum (over space: AutoGAN's, released code; the compact family copies
                                         # it) | flatten (compact32 only: the 4x4 map's 4w*16 values, keeping
                                         # where each feature was found; not in the paper; see docs/design.md)
    encoder_spectral_norm: bool = True   # spectral norm on every conv and Linear of the encoder, as on the
                                         # discriminator whose architecture it shares (released code); false:
                                         # none in the encoder (32x32 backbones; the discriminator keeps it; not
                                         # in the paper; see docs/design.md)


@dataclass
class ObjectiveConfig:
    variant: str = "dcvae"               # vae (Eq. 1) | vaegan (Eq. 3-5) | vae-contrastive | dcvae (Eq. 9)
    gan_loss: str = "hinge"              # hinge (released code) | logistic (Eq. 4, non-saturating for E and G)
    kl_weight: float = 1e-6              # on the KL summed over batch and latent dims (released code)
    temperature: float = 0.07
    queue_size: int = 8096               # negatives per contrastive layer (paper: 8096; released code: 8192)
    momentum: float = 0.999              # momentum discriminator EMA, once per generator iteration
    contrastive_layers: list[str] = field(default_factory=lambda: ["b1", "final"])
    contrastive_weights: list[float] = field(default_factory=list)   # empty: equal weights summing to 1
    patch_layer: str = ""                # local-patch contrastive (Sec. 4.2) on this trunk map, e.g. "b2"; "" = off
    patch_start: int = 0                 # generator iteration from which the local-patch term is on
    patch_queue_size: int = 1024
    patch_weight: float = 0.125
    reconstruction_weight: float = 1.0   # vae: pixel MSE; vaegan: discriminator-feature MSE (not used by dcvae)
    pixel_likelihood: str = "gaussian"   # the vae's pixel term: gaussian (mean squared error: the released code's
                                         # Table 1 ablation) | bernoulli (binary cross-entropy of the pixels in
                                         # [0, 1], summed over pixels and batch as the KL is: with kl_weight=1, the
                                         # negative ELBO of Guided-VAE's MNIST VAE; not in the paper)


@dataclass
class DataConfig:
    dataset: str = "cifar10"             # mnist | fashion-mnist | cifar10 | stl10 | celeba | celebahq |
                                         # lsun_bedroom | folder
    root: str = ""                       # data root (torchvision layout) or the image folder; "" = default places
    split: str = "train"
    on_bad_image: str = "error"          # error | skip  (image folders, CelebA and CelebA-HQ)
    num_workers: int = 0


@dataclass
class TrainConfig:
    iterations: int = 125_000            # generator iterations (800 CIFAR-10 epochs at 5 D steps of 64)
    d_steps: int = 5                     # discriminator steps per generator iteration
    batch_size: int = 64                 # real images per step
    sample_batch_size: int = 128         # prior samples in the generator step
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    ema_decay: float = 0.999             # EMA of the decoder, once per generator iteration
    seed: int = 0
    mixed_precision: str = "no"          # no | bf16: autocast on a GPU, or on a CPU with AVX512-BF16 / AMX
                                         # (elsewhere float32 with a warning)
    released_d_step: bool = False        # true: the released code's D step, whose reconstruction keeps its graph,
                                         # so its backward also computes encoder and decoder gradients that no
                                         # update uses (same updates, more work); the reference of speed tests
    channels_last: bool = True           # networks and batches in the NHWC memory layout: the same math (float
                                         # rounding aside), faster convolutions and resampling on CPUs (oneDNN) and
                                         # GPUs; false: PyTorch's default NCHW, the released code's layout
    fold_resampling: bool = True         # resampling folded into the adjacent convolutions: nearest x2 + conv3x3 at
                                         # the low resolution (a 2x2 kernel per output phase), conv3x3 + avgpool2 as
                                         # a 4x4 stride-2 conv, 1x1 convs on the smaller side of a resize. The same
                                         # function with less arithmetic (docs/design.md); false: the released
                                         # code's order of operations
    compile: bool = False                # torch.compile the encoder, decoder and discriminator (inductor): for
                                         # GPUs; on this project's 2-core CPU it compiled for 72 s and then ran the
                                         # compact iteration 1.33x slower (docs/results.md)
    cuda_graphs: bool = False            # on a GPU: compile in inductor's "reduce-overhead" mode, which replays
                                         # each network's kernels as CUDA graphs (one launch instead of hundreds:
                                         # for small batches, where launches dominate); implies compile. Elsewhere
                                         # a warning and no graphs
    flush_denormal: bool = True          # CPU: treat subnormal floats (< 1.2e-38) as zero; without it small
                                         # networks ran up to 6x slower here (x86 handles subnormals in microcode)
    log_every: int = 50
    image_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0                  # evaluate the checkpoint of every N-th iteration (a multiple of
                                         # checkpoint_every) with dcvae.metrics.evaluate; 0 = off
    eval_metrics: list[str] = field(default_factory=lambda: ["fid", "kid"])   # names as `dcvae evaluate --metrics`
    eval_n: int = 1000                   # generated, reference and reconstructed images (PPL: pairs) per evaluation
    on_nonfinite: str = "rollback"       # a NaN/inf loss, gradient or weight: rollback (to the last checkpoint, with
                                         # the learning rate lowered) | stop. The authors' code continues silently.
    rollback_lr_factor: float = 0.5      # each rollback multiplies every learning rate by this
    max_rollbacks: int = 3               # the next divergence after this many rollbacks stops the run


@dataclass
class GrowthConfig:
    """Progressive growing (model.backbone=progressive only; ProGAN's schedule, Karras et al. 2018, A.1), counted
    in real images shown to the discriminator. Level l works at 4 * 2**l px: the start level is stabilised, then
    each next level is faded in over `fade_images` and stabilised over `stable_images`; the last level then trains
    until train.iterations."""
    start_resolution: int = 4
    fade_images: int = 600_000
    stable_images: int = 600_000
    # real images per D step (per process) at resolutions 4, 8, 16, ..., one per level up to model.resolution
    # (ProGAN: 16 up to 128, then 14, 6, 3); replaces train.batch_size. The G step's prior samples keep the ratio
    # train.sample_batch_size / train.batch_size. Empty: train.batch_size at every resolution.
    batch_sizes: list[int] = field(default_factory=lambda: [16, 16, 16, 16, 16, 16, 14, 6, 3])


# The sections a run may not change once trained (on resume, or when a finished run is reused): its weights and the
# data they were trained on depend on them. train.* settings may change.
FIXED_SECTIONS = ("model", "objective", "data")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        cfg = cls()
        apply_overrides(cfg, _flatten(d))
        return cfg

    @classmethod
    def completed(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A configuration dict read from a run or a checkpoint, with every setting it lacks at its default: a
        setting added after the run was made defaults to the behaviour the run was made with, so comparing the
        completed dict with a new configuration finds only real differences."""
        return cls.from_dict(saved).to_dict()

    def differences(self, saved: dict[str, Any], sections: tuple[str, ...] = FIXED_SECTIONS) -> dict[str, tuple]:
        """{"section.key": (saved value, value here)} for every setting of `sections` in which the (completed)
        configuration dict `saved` differs from this one; empty when they agree."""
        now = self.to_dict()
        diff = {}
        for section in sections:
            old = saved.get(section) if isinstance(saved.get(section), dict) else {}
            for key, value in now[section].items():
                if old.get(key) != value:
                    diff[f"{section}.{key}"] = (old.get(key), value)
        return diff

    def validate(self) -> "Config":
        m, o, d, t = self.model, self.objective, self.data, self.train
        _choice("model.backbone", m.backbone, ("autogan32", "compact32", "progressive"))
        _choice("model.image_channels", m.image_channels, (1, 3))
        progressive = m.backbone == "progressive"
        _choice("model.encoder_pool", m.encoder_pool, ("sum", "flatten"))
        if m.encoder_pool == "flatten" and m.backbone != "compact32":
            raise UserError(f"model.encoder_pool=flatten exists for the compact32 backbone only (this one is "
                            f"{m.backbone}); use model.encoder_pool=sum")
        if not m.encoder_spectral_norm and progressive:
            raise UserError("model.encoder_spectral_norm=false exists for the 32x32 backbones only: the progressive "
                            "encoder has no spectral norm to remove (equalised learning rate instead); "
                            "drop the setting")
        _choice("model.resolution", m.resolution, tuple(4 << level for level in range(1, 9)) if progressive else (32,))
        _choice("objective.variant", o.variant, VARIANTS)
        _choice("objective.gan_loss", o.gan_loss, ("hinge", "logistic"))
        _choice("objective.pixel_likelihood", o.pixel_likelihood, ("gaussian", "bernoulli"))
        if o.pixel_likelihood != "gaussian" and o.variant != "vae":
            raise UserError(f"objective.pixel_likelihood={o.pixel_likelihood} is the pixel term of the vae variant; "
                            f"variant={o.variant} has none (use --set objective.variant=vae, or drop the setting)")
        _choice("data.dataset", d.dataset, ("mnist", "fashion-mnist", "cifar10", "stl10", "celeba", "celebahq",
                                            "lsun_bedroom", "folder"))
        _choice("data.on_bad_image", d.on_bad_image, ("error", "skip"))
        _choice("train.mixed_precision", t.mixed_precision, ("no", "bf16"))
        if progressive:
            self._validate_growth()
            # the maps b1 (max/2) .. bK (4x4) that exist from the first phase on: a contrastive head needs its map
            # at every phase, so a progressive run may use b_k only where max / 2**k <= growth.start_resolution
            layers = [f"b{k}" for k in range(1, level_of(m.resolution) + 1)
                      if m.resolution >> k <= self.growth.start_resolution]
            layers.append("final")
        else:
            layers = [f"b{i}" for i in range(1, 5 if m.backbone == "autogan32" else 4)] + ["final"]
        for name in o.contrastive_layers:
            _choice("objective.contrastive_layers", name, layers)
        if not o.contrastive_layers and o.variant in ("dcvae", "vae-contrastive"):
            raise UserError("objective.contrastive_layers is empty but the variant needs a contrastive layer; "
                            f"use e.g. --set objective.contrastive_layers=b1,final (choices: {', '.join(layers)})")
        if o.contrastive_weights and len(o.contrastive_weights) != len(o.contrastive_layers):
            raise UserError(f"objective.contrastive_weights has {len(o.contrastive_weights)} values for "
                            f"{len(o.contrastive_layers)} contrastive layers; give one weight per layer or none")
        if o.patch_layer:
            _choice("objective.patch_layer", o.patch_layer, layers[:-1])
        for key, value in (("model.latent_dim", m.latent_dim), ("model.gen_width", m.gen_width),
                           ("model.dis_width", m.dis_width), ("model.contrastive_dim", m.contrastive_dim),
                           ("objective.queue_size", o.queue_size), ("objective.patch_queue_size", o.patch_queue_size),
                           ("train.iterations", t.iterations), ("train.d_steps", t.d_steps),
                           ("train.batch_size", t.batch_size), ("train.sample_batch_size", t.sample_batch_size),
                           ("train.log_every", t.log_every), ("train.image_every", t.image_every),
                           ("train.checkpoint_every", t.checkpoint_every),
                           ("train.keep_checkpoints", t.keep_checkpoints)):
            if value < 1:
                raise UserError(f"{key} must be at least 1, got {value}")
        batch = max(self.batch_sizes())
        if o.queue_size < batch or (o.patch_layer and o.patch_queue_size < batch):
            raise UserError(f"the negative queues ({o.queue_size}, patch {o.patch_queue_size}) must hold at least "
                            f"one batch ({batch}); raise objective.queue_size or lower train.batch_size")
        if len(t.betas) != 2:
            raise UserError(f"train.betas needs two values, got {t.betas}; e.g. --set train.betas=0,0.9")
        if m.backbone == "compact32" and m.gen_width < 2:
            raise UserError("model.gen_width must be at least 2 for the compact backbone")
        _choice("train.on_nonfinite", t.on_nonfinite, ("rollback", "stop"))
        if not 0 < t.rollback_lr_factor <= 1:
            raise UserError(f"train.rollback_lr_factor must be in (0, 1], got {t.rollback_lr_factor}")
        if t.max_rollbacks < 0:
            raise UserError(f"train.max_rollbacks must be 0 or more, got {t.max_rollbacks}")
        if t.eval_every < 0:
            raise UserError(f"train.eval_every must be 0 (off) or a positive number of iterations, got {t.eval_every}")
        if t.eval_every:
            if t.eval_every % t.checkpoint_every:
                raise UserError(f"train.eval_every={t.eval_every} is not a multiple of train.checkpoint_every="
                                f"{t.checkpoint_every}: periodic evaluation evaluates the checkpoint written at that "
                                f"iteration; use e.g. --set train.eval_every={t.checkpoint_every}")
            from .metrics.evaluate import parse_metrics   # torch is imported only when evaluation is on
            try:
                wanted = parse_metrics(t.eval_metrics)
            except UserError as e:
                raise UserError(f"train.eval_metrics: {e}") from None
            if "probe_error" in wanted and d.dataset not in LABELLED_DATASETS:
                raise UserError(f"train.eval_metrics has probe_error, which needs class labels, but data.dataset="
                                f"{d.dataset} has none; use it with {', '.join(LABELLED_DATASETS)}")
            if t.eval_n < 2:
                raise UserError(f"train.eval_n must be at least 2 (FID and KID need two images), got {t.eval_n}")
        return self

    def batch_sizes(self) -> list[int]:
        """Real images per D step (per process) at each level 0, 1, ... of the run: one entry (train.batch_size)
        unless the backbone grows progressively (growth.batch_sizes, or train.batch_size at every level)."""
        if self.model.backbone != "progressive":
            return [self.train.batch_size]
        levels = level_of(self.model.resolution) + 1
        return self.growth.batch_sizes[:levels] if self.growth.batch_sizes else [self.train.batch_size] * levels

    def _validate_growth(self) -> None:
        g, levels = self.growth, level_of(self.model.resolution) + 1     # 8 -> 2 levels (4, 8)
        starts = tuple(4 << level for level in range(levels))
        if g.start_resolution not in starts:
            raise UserError(f"growth.start_resolution={g.start_resolution} must be one of {starts} (4 times a power "
                            f"of two, at most model.resolution={self.model.resolution})")
        if g.fade_images < 1 or g.stable_images < 0:
            raise UserError(f"growth.fade_images ({g.fade_images}) must be at least 1 and growth.stable_images "
                            f"({g.stable_images}) at least 0")
        if g.batch_sizes and (len(g.batch_sizes) < levels or min(g.batch_sizes[:levels]) < 1):
            raise UserError(f"growth.batch_sizes={g.batch_sizes} needs one positive batch size per resolution "
                            f"{', '.join(map(str, starts))} (model.resolution={self.model.resolution}); e.g. --set "
                            f"growth.batch_sizes={','.join(['16'] * levels)}")


def level_of(resolution: int) -> int:
    """The progressive level that works at `resolution` px: 4 -> 0, 8 -> 1, ..., 512 -> 7; ValueError for a
    resolution that is not 4 times a power of two."""
    level = resolution.bit_length() - 3
    if level < 0 or 4 << level != resolution:
        raise ValueError(f"{resolution} is not 4 times a power of two")
    return level


def _choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{key}={value!r} is not one of: {', '.join(map(str, choices))}")


# Presets: the paper's experiments, as overrides of the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # Table 1 / Table 2, CIFAR-10 32x32, paper width, released-code defaults.
    "cifar10": {"data.dataset": "cifar10"},
    # Table 2, STL-10 resized to 32x32 (AutoGAN protocol), train + unlabeled.
    "stl10": {"data.dataset": "stl10", "data.split": "train+unlabeled"},
    # MNIST padded to 32x32 on the compact backbone, latent 32 (Table 6 sizes: 16/32/64): the demo's preset.
    # Tuned for a run of minutes on a CPU, so three settings differ from the released code's (which assume
    # ~125k iterations): 2 D steps per generator step instead of 5, and momentum-discriminator and decoder EMAs
    # of 0.99 instead of 0.999 (at 0.999 both would still be mostly their initial weights after ~1k iterations).
    "mnist": {"data.dataset": "mnist", "model.backbone": "compact32", "model.image_channels": 1,
              "model.latent_dim": 32, "model.gen_width": 32, "model.dis_width": 32,
              "train.d_steps": 2, "objective.momentum": 0.99, "train.ema_decay": 0.99,
              "train.iterations": 1000, "train.image_every": 200, "train.checkpoint_every": 500,
              "train.log_every": 25},
    # Fashion-MNIST padded to 32x32, compact backbone, same short-run settings as mnist.
    "fashion32": {"data.dataset": "fashion-mnist", "model.backbone": "compact32", "model.image_channels": 1,
                  "model.latent_dim": 64, "model.gen_width": 32, "model.dis_width": 32,
                  "train.d_steps": 2, "objective.momentum": 0.99, "train.ema_decay": 0.99,
                  "train.iterations": 3000, "train.image_every": 250, "train.checkpoint_every": 500,
                  "train.log_every": 25},
}


def _progressive(dataset: str, resolution: int) -> dict[str, Any]:
    """A preset of the paper's high-resolution experiments (Sec. 5, the Progressive GAN backbone): latent 512,
    ProGAN's channels, optimiser (Adam lr 1e-3, betas (0, 0.99)), one D step per G step and growing schedule.
    It trains until the growth is complete and the final resolution has had one more stabilisation phase."""
    g = GrowthConfig()
    levels = level_of(resolution) + 1
    images = [g.stable_images] + [g.fade_images + g.stable_images] * (levels - 1)
    images[-1] += g.stable_images
    iterations = sum(n // batch for n, batch in zip(images, g.batch_sizes))
    return {"data.dataset": dataset, "model.backbone": "progressive", "model.resolution": resolution,
            "model.latent_dim": 512, "model.gen_width": 512, "model.dis_width": 512,
            "objective.contrastive_layers": [f"b{levels - 1}", "final"],    # the 4x4 map (ProGAN's last) and final
            "train.lr": 1e-3, "train.betas": [0.0, 0.99], "train.d_steps": 1, "train.batch_size": 16,
            "train.sample_batch_size": 32, "train.iterations": iterations, "train.image_every": 5000,
            "train.checkpoint_every": 5000, "train.log_every": 100}


PRESETS.update({
    # Paper Tables 3-5, 7, 8 and Figures 1, 4-6, 8, 11-14: CelebA (aligned, centre-cropped), CelebA-HQ
    # (IntroVAE's 29,000 / 1,000 split) and LSUN Bedroom on the progressive backbone.
    "celeba64": _progressive("celeba", 64),
    "celeba128": _progressive("celeba", 128),
    "celebahq256": _progressive("celebahq", 256),
    "celebahq512": _progressive("celebahq", 512),
    "lsun_bedroom128": _progressive("lsun_bedroom", 128),
})


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = Config()
    apply_overrides(cfg, PRESETS[name])
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _convert(key: str, value: Any, annotation: Any) -> Any:
    """Coerce a value (from JSON/YAML, or a string from the command line) to a field's type, or explain."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} expects a list, got {value!r}; on the command line write e.g. {key}=a,b")
        return [_convert(key, v, item_type) for v in value]
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer() or isinstance(value, bool):
                raise ValueError
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{key} expects {annotation.__name__}, got {value!r}") from None
    raise AssertionError(f"unsupported annotation {annotation}")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Set dotted keys ("train.lr": "1e-4") on `cfg` in place, with type conversion and clear errors."""
    hints = {f.name: typing.get_type_hints(type(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in hints or name not in hints[section]:
            known = ", ".join(f"{s}.{n}" for s in hints for n in hints[s])
            raise UserError(f"unknown config key {key!r}; known keys: {known}")
        setattr(getattr(cfg, section), name, _convert(key, value, hints[section][name]))
    return cfg


def parse_set_arguments(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r} (e.g. --set train.lr=1e-4)")
        out[key.strip()] = value.strip()
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise UserError(f"config file {path} cannot be read as {'JSON' if path.suffix == '.json' else 'YAML'}: {e}")
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (model, objective, data, train, growth)")
    return _flatten(data)


def resolve(preset_name: str | None = None, config_file: str | None = None,
            overrides: dict[str, Any] | None = None) -> Config:
    """Preset, then file, then overrides; validated."""
    cfg = preset(preset_name) if preset_name else Config()
    if config_file:
        apply_overrides(cfg, load_config_file(config_file))
    apply_overrides(cfg, overrides or {})
    return cfg.validate()


def clone(cfg: Config) -> Config:
    return copy.deepcopy(cfg)
