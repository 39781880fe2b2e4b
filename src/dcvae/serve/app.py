"""The `dcvae serve` web app: one static page (static/index.html, plain JavaScript) over a small JSON API.

The model stays in memory; every model call holds one lock, because Werkzeug serves requests on threads and a torch
module is not meant to be driven from several threads at once. The API is stateless: the page keeps the latents it
got back from /api/reconstruct and sends them to /api/interpolate and /api/edit.

    GET  /                  the page
    GET  /api/info          model, limits, conversion rules, directions, examples
    GET  /api/examples      the first images of the model's own test split (PNG data URLs)
    POST /api/reconstruct   multipart `image` (an upload) or form/JSON `example` (an index) -> input, reconstruction,
                            latent, and the conversion applied (null when the image needed none)
    GET  /api/samples       ?n=16&seed=123 -> fresh samples from the prior
    POST /api/interpolate   JSON {a: latent, b: latent, t: 0..1} -> the decoded blend
    GET  /api/directions    the attribute directions given with --direction
    POST /api/edit          JSON {latent, strengths: [one per direction]} -> the decoded edit

Errors are JSON {"error": message} with a 4xx status (5xx only for a bug); no input stops the server.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flask import Flask, jsonify, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import HTTPException

from ..data.datasets import BadImage, fit_image
from ..errors import UserError
from . import DEFAULT_EXAMPLES, DEFAULT_HOST, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_PORT

log = logging.getLogger("dcvae.serve")

MAX_SAMPLES = 64
# PIL's format names of the accepted uploads; the type is what PIL decodes, never the file name.
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
# Latents and strengths come from the page; bounds keep a hand-made request from decoding absurd values.
MAX_ABS_LATENT = 1e3
MAX_ABS_STRENGTH = 100.0


class RequestError(Exception):
    """A refused request: becomes an HTTP `status` with a JSON {"error": message} the page shows."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Direction:
    """An attribute direction loaded with `load_direction` (already checked against the model)."""

    name: str
    vector: torch.Tensor
    path: str


@dataclass
class ServeState:
    """What the app keeps in memory: the model, its lock, the directions and the example images."""

    model: Any
    directions: list[Direction] = field(default_factory=list)
    examples: torch.Tensor | None = None          # [N, C, R, R] in [-1, 1]
    example_ids: list[str] = field(default_factory=list)
    examples_note: str = ""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    lock: threading.Lock = field(default_factory=threading.Lock)


# -- images ------------------------------------------------------------------------------------------------------------
def image_from_bytes(data: bytes, channels: int, resolution: int) -> tuple[torch.Tensor, str | None]:
    """Uploaded bytes -> (float32 [channels, resolution, resolution] in [-1, 1], what was converted or None).

    The conversion is the one of dcvae's image folders (`dcvae.data.datasets.load_image`): EXIF orientation applied;
    converted to L or RGB with alpha composited onto black; shorter side resized to `resolution` (PIL bilinear);
    center crop. Raises `RequestError` (400 not an image, 415 a type that is not accepted).
    """
    if not data:
        raise RequestError("the upload is empty: choose an image file")
    try:
        # Image.MAX_IMAGE_PIXELS keeps PIL's default, so a decompression bomb raises here instead of eating memory.
        with Image.open(io.BytesIO(data)) as opened:
            kind = opened.format
            if kind not in ACCEPTED_FORMATS:
                raise RequestError(f"{kind} images are not accepted; upload PNG, JPEG, GIF, BMP or WebP", 415)
            frames = getattr(opened, "n_frames", 1)
            original = f"{kind} {opened.width}x{opened.height} {opened.mode}"
            image, steps = fit_image(opened, channels, resolution)
    except RequestError:
        raise
    except UnidentifiedImageError:
        raise RequestError("not an image: the upload could not be decoded as PNG, JPEG, GIF, BMP or WebP") from None
    except BadImage as e:   # e.g. a decompression bomb, refused from its header
        raise RequestError(f"the upload cannot be used: {e}") from None
    except Exception as e:  # decoders raise almost any exception type on a corrupt or hostile file
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise RequestError(f"not an image: the upload could not be decoded ({reason})") from None
    if frames > 1:
        steps.append(f"first of {frames} frames used")
    note = f"{original}: " + ", ".join(steps) if steps else None
    return image, note


def png_data_url(image: torch.Tensor) -> str:
    """One image [C, H, W] in [-1, 1] -> a data:image/png;base64 URL."""
    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- request parsing ---------------------------------------------------------------------------------------------------
def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestError("expected a JSON object body (Content-Type: application/json)")
    return body


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise RequestError(f"{name} must be a number in [{low:g}, {high:g}]; got {value!r}"[:300])
    return float(value)


def _latent(value: Any, name: str, latent_dim: int) -> torch.Tensor:
    if not isinstance(value, list) or len(value) != latent_dim:
        raise RequestError(f"{name} must be a list of {latent_dim} numbers (a latent from /api/reconstruct)")
    return torch.tensor([_number(v, name, -MAX_ABS_LATENT, MAX_ABS_LATENT) for v in value]).view(1, -1)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise RequestError(f"{name} must be an integer; got {text[:50]!r}") from None
    if not low <= value <= high:
        raise RequestError(f"{name} must be in {low}..{high}; got {value}")
    return value


# -- the app -----------------------------------------------------------------------------------------------------------
def create_app(state: ServeState) -> Flask:
    """The Flask app over a loaded model; `state.max_upload_bytes` bounds every request body (413 beyond)."""
    app = Flask(__name__, static_folder=str(Path(__file__).parent / "static"), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = state.max_upload_bytes
    model = state.model
    m = model.config.model
    limit_text = f"{state.max_upload_bytes / 2**20:.3g} MB"

    @app.errorhandler(RequestError)
    def _refused(e: RequestError):
        return jsonify(error=e.message), e.status

    @app.errorhandler(UserError)
    def _user_error(e: UserError):
        return jsonify(error=str(e)), 400

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if e.code == 413:
            return jsonify(error=f"the upload is too large: the limit is {limit_text} "
                                 "(dcvae serve --max-upload-mb changes it)"), 413
        return jsonify(error=f"{e.name}: {e.description}"), e.code

    @app.errorhandler(Exception)
    def _bug(e: Exception):
        log.exception("request failed")
        return jsonify(error=f"internal error ({type(e).__name__}); see the server's log"), 500

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/api/info")
    def info():
        return jsonify(
            model_id=model.model_id, latent_dim=model.latent_dim, image_channels=m.image_channels,
            resolution=m.resolution, dataset=model.config.data.dataset, max_upload_bytes=state.max_upload_bytes,
            accepted_types=list(ACCEPTED_FORMATS.values()),
            conversion=(f"uploads are converted to {'RGB' if m.image_channels == 3 else 'grayscale'} "
                        f"(alpha on black), shorter side resized to {m.resolution} (bilinear), center-cropped to "
                        f"{m.resolution}x{m.resolution}"),
            directions=[d.name for d in state.directions],
            examples=len(state.example_ids), examples_note=state.examples_note)

    @app.get("/api/examples")
    def examples():
        images = [] if state.examples is None else [png_data_url(x) for x in state.examples]
        return jsonify(examples=[{"index": i, "id": state.example_ids[i], "image": url}
                                 for i, url in enumerate(images)], note=state.examples_note)

    @app.post("/api/reconstruct")
    def reconstruct():
        note = None
        upload = request.files.get("image")
        if upload is not None:
            data = upload.read(state.max_upload_bytes + 1)
            if len(data) > state.max_upload_bytes:
                raise RequestError(f"the upload is too large: the limit is {limit_text}", 413)
            x, note = image_from_bytes(data, m.image_channels, m.resolution)
            source = upload.filename or "upload"
        else:
            body = request.get_json(silent=True) if request.is_json else request.form
            index = (body or {}).get("example")
            if index is None:
                raise RequestError("send an image file (multipart field 'image') or an example index ('example')")
            try:
                index = int(index)
            except (TypeError, ValueError):
                raise RequestError(f"example must be an integer index; got {str(index)[:50]!r}") from None
            if not 0 <= index < len(state.example_ids):
                raise RequestError(f"no example {index}: there are {len(state.example_ids)}")
            x, source = state.examples[index], state.example_ids[index]
        with state.lock, torch.no_grad():
            z = model.encode(x.unsqueeze(0))
            rec = model.decode(z)[0]
        return jsonify(source=source, conversion=note, input=png_data_url(x), reconstruction=png_data_url(rec),
                       latent=z[0].cpu().tolist())

    @app.get("/api/samples")
    def samples():
        n = _int_arg("n", 16, 1, MAX_SAMPLES)
        seed = _int_arg("seed", secrets.randbelow(2**31), 0, 2**63 - 1)
        with state.lock, torch.no_grad():
            generator = torch.Generator(device=model.device).manual_seed(seed)
            images = model.sample(n, generator=generator)
        return jsonify(seed=seed, images=[png_data_url(x) for x in images])

    @app.post("/api/interpolate")
    def interpolate():
        body = _json_body()
        za = _latent(body.get("a"), "a", model.latent_dim)
        zb = _latent(body.get("b"), "b", model.latent_dim)
        t = _number(body.get("t"), "t", 0.0, 1.0)
        with state.lock, torch.no_grad():
            image = model.decode(torch.lerp(za, zb, t))[0]
        return jsonify(t=t, image=png_data_url(image))

    @app.get("/api/directions")
    def directions():
        return jsonify(directions=[{"index": i, "name": d.name, "file": Path(d.path).name}
                                   for i, d in enumerate(state.directions)])

    @app.post("/api/edit")
    def edit():
        from ..latent import apply_directions

        body = _json_body()
        z = _latent(body.get("latent"), "latent", model.latent_dim)
        strengths = body.get("strengths")
        if not isinstance(strengths, list) or len(strengths) != len(state.directions):
            raise RequestError(f"strengths must be a list of {len(state.directions)} numbers, one per direction")
        values = [_number(s, "strength", -MAX_ABS_STRENGTH, MAX_ABS_STRENGTH) for s in strengths]
        z = apply_directions(z, [d.vector for d in state.directions], values)
        with state.lock, torch.no_grad():
            image = model.decode(z)[0]
        return jsonify(strengths=values, image=png_data_url(image))

    return app


# -- loading and serving -----------------------------------------------------------------------------------------------
def load_examples(model, count: int, split: str = "test") -> tuple[torch.Tensor | None, list[str], str]:
    """The first `count` images of the model's data set split -> (images or None, ids, note for the page).

    A data set that is not available here is no error: the page then works with uploads only.
    """
    from ..data import build_dataset

    if count <= 0:
        return None, [], "no examples (--examples 0)"
    m = model.config.model
    try:
        dataset = build_dataset(model.config.data, m.image_channels, m.resolution, split=split)
        n = min(count, len(dataset))
        images = torch.stack([dataset[i][0] for i in range(n)])
    except Exception as e:   # missing data, or a folder that moved: uploads still work
        log.warning("no example images: %s", e)
        return None, [], f"no examples: the model's data set is not available here ({e})"[:500]
    name = model.config.data.dataset
    return images, [f"{name} {split}:{i}" for i in range(n)], f"the first {n} images of {name} ({split})"


def build_state(checkpoint: str | Path, direction_paths: list[str] | None = None, *, examples: int = DEFAULT_EXAMPLES,
                max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, decoder: str = "ema",
                device: str = "cpu") -> ServeState:
    """Load the model, its directions (refusing any made for another model) and the example images."""
    from ..latent import load_direction
    from ..model import load

    if max_upload_bytes < 1:
        raise UserError(f"the upload limit must be positive; got {max_upload_bytes} bytes")
    model = load(checkpoint, decoder=decoder, device=device)
    directions = []
    for path in direction_paths or []:
        name, vector = load_direction(path, model.model_id, model.latent_dim)
        directions.append(Direction(name, vector.float().view(1, -1), str(path)))
    images, ids, note = load_examples(model, examples)
    return ServeState(model, directions, images, ids, note, max_upload_bytes)


def make_server(state: ServeState, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """A threaded Werkzeug server for the app, already bound (port 0: any free port; see `.server_port`)."""
    from werkzeug.serving import make_server as werkzeug_server

    try:
        return werkzeug_server(host, port, create_app(state), threaded=True)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port "
                        "(0 picks a free one)") from None
    except (ValueError, UnicodeError) as e:
        raise UserError(f"--host {host!r} is not an address to listen on ({e})") from None


def server_url(host: str, port: int) -> str:
    """The address to open in a browser (IPv6 literals in brackets; a wildcard address shown as loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
