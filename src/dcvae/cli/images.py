"""Subcommands that turn a trained model into pictures and latents: sample, reconstruct, interpolate, traverse,
edit, mix, embed. Each loads the checkpoint, reads images or latents, calls dcvae.model / dcvae.latent, writes."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("dcvae.cli")


# -- shared arguments and inputs --------------------------------------------------------------------------------------
def _checkpoint_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("--out", default=default_out, help=f"file to write (default {default_out})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--decoder", choices=("ema", "live"), default="ema", help="EMA (default) or live decoder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")


def _image_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files or one folder (default: data set)")
    p.add_argument("--split", default="test", help="data-set split when --images is not given (default test)")


def _load(args: argparse.Namespace):
    from ..model import load
    return load(args.checkpoint, decoder=args.decoder, device=args.device)


def _output_path(path: str, overwrite: bool, suffixes: tuple[str, ...] = (".png",)) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise UserError(f"--out must end in {' or '.join(suffixes)}, got {out.name}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _input_images(model, args: argparse.Namespace, count: int):
    """Images from --images (files or a folder) or the model's data set (--split) -> ([N, C, R, R], ids)."""
    import torch
    from ..config import DataConfig
    from ..data import build_dataset
    from ..data.datasets import load_image

    m = model.config.model
    if args.images:
        paths = [Path(p) for p in args.images]
        if len(paths) == 1 and paths[0].is_dir():
            dataset = build_dataset(DataConfig(dataset="folder", root=str(paths[0])), m.image_channels, m.resolution)
            log.info("%s", dataset.description)
            n = min(count, len(dataset))
            return torch.stack([dataset[i][0] for i in range(n)]), [str(p) for p in dataset.paths[:n]]
        mode = "RGB" if m.image_channels == 3 else "grayscale"
        log.info("images converted to %s, shorter side resized to %d (bilinear, antialiased), center-cropped",
                 mode, m.resolution)
        return torch.stack([load_image(p, m.image_channels, m.resolution) for p in paths]), [str(p) for p in paths]
    dataset = build_dataset(model.config.data, m.image_channels, m.resolution, split=args.split)
    n = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(n)]), [f"{args.split}:{i}" for i in range(n)]


def _ints(text: str, name: str) -> list[int]:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise UserError(f"{name} expects integers like 0,3,5-7; got {text!r}") from None
    return out


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} expects comma-separated numbers, got {text!r}") from None


# -- commands ---------------------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    images = model.sample(args.n, truncation=args.truncation,
                          generator=torch.Generator(device=model.device).manual_seed(args.seed))
    write_image_grid(images, out, nrow=args.nrow)
    print(f"wrote {args.n} samples to {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    x, _ = _input_images(model, args, args.n)
    rec = model.reconstruct(x)
    write_image_grid(torch.stack([x.to(rec.device), rec], dim=1).flatten(0, 1), out, nrow=2 * args.per_row)
    print(f"wrote {len(x)} inputs and reconstructions (side by side) to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import make_grid
    from ..latent import save_gif
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    gif = _output_path(args.gif, args.overwrite, (".gif",)) if args.gif else None
    model = _load(args)
    x, _ = _input_images(model, args, 2 * args.pairs)
    if len(x) < 2 or len(x) % 2:
        raise UserError(f"interpolation needs pairs of images; got {len(x)}")
    frames = model.interpolate(x[0::2], x[1::2], steps=args.steps)          # [pairs, steps, C, H, W]
    write_image_grid(frames.flatten(0, 1), out, nrow=args.steps)
    if gif:
        # one animation with every pair side by side: frame t shows step t of each pair
        save_gif(torch.stack([make_grid(frames[:, t], nrow=len(frames), pad_value=-1) for t in range(args.steps)]),
                 gif)
    print(f"wrote {len(frames)} interpolation(s) of {args.steps} steps to {out}" + (f" and {gif}" if gif else ""))
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    import torch
    from ..latent import load_direction, traverse
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    lo, hi = _floats(args.range, "--range")
    values = torch.linspace(lo, hi, args.steps)
    x, _ = _input_images(model, args, 1)
    z = model.encode(x[:1])[0].cpu()
    if args.direction:
        _, direction = load_direction(args.direction, model.model_id, model.latent_dim)
        rows = traverse(z, values, direction=direction)
    else:
        rows = traverse(z, values, dims=_ints(args.dims, "--dims"))
    images = model.decode(rows.flatten(0, 1))
    write_image_grid(images, out, nrow=args.steps)
    print(f"wrote a traversal of {rows.shape[0]} row(s) x {args.steps} values in [{lo}, {hi}] to {out}")
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    import torch
    from ..latent import mix
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    x, _ = _input_images(model, args, args.n_a + args.n_b)
    if len(x) < 2:
        raise UserError("mixing needs at least two images")
    a, b = x[:args.n_a], x[args.n_a:]
    dims = _ints(args.dims, "--dims")
    za, zb = model.encode(a), model.encode(b)
    # Figure 12: the top row is B, the left column is A, each cell is A with B's chosen coordinates.
    blank = torch.full_like(a[:1], -1).to(model.device)
    rows = [torch.cat([blank, b.to(model.device)])]
    for i in range(len(a)):
        mixed = model.decode(mix(za[i:i + 1].expand(len(b), -1), zb, dims))
        rows.append(torch.cat([a[i:i + 1].to(model.device), mixed]))
    write_image_grid(torch.cat(rows), out, nrow=len(b) + 1)
    print(f"wrote a {len(a)} x {len(b)} mixing grid (dimensions {args.dims} from the top row) to {out}")
    return 0


def _attribute_latents(model, args: argparse.Namespace):
    """(latents with, latents without) of the attribute named by --class, --with/--without or --labels."""
    import torch
    from ..config import DataConfig
    from ..data import build_dataset
    from ..latent import embed

    m = model.config.model
    sources = sum(bool(s) for s in (args.class_label is not None, args.with_folder, args.labels))
    if sources != 1:
        raise UserError("say where the attribute comes from: --class K (labelled data set), --with DIR --without "
                        "DIR (two folders), or --labels FILE --images-root DIR (CelebA attribute file)")
    if args.class_label is not None:
        dataset = build_dataset(model.config.data, m.image_channels, m.resolution, split=args.split)
        if getattr(dataset, "labels", None) is None:
            raise UserError(f"{model.config.data.dataset} has no class labels; use --with/--without folders")
        labels = dataset.labels
        if args.class_label not in set(labels.tolist()):
            raise UserError(f"class {args.class_label} does not occur in the {args.split} split; "
                            f"classes are {sorted(set(labels.tolist()))}")
        picks = {}
        for name, mask in (("with", labels == args.class_label), ("without", labels != args.class_label)):
            index = mask.nonzero().flatten()[:args.examples]
            picks[name] = embed(model, torch.utils.data.Subset(dataset, index.tolist()))
        return picks["with"], picks["without"]
    if args.with_folder:
        if not args.without_folder:
            raise UserError("--with needs --without (a folder of images without the attribute)")
        groups = []
        for folder in (args.with_folder, args.without_folder):
            ds = build_dataset(DataConfig(dataset="folder", root=folder), m.image_channels, m.resolution)
            groups.append(embed(model, torch.utils.data.Subset(ds, range(min(args.examples, len(ds))))))
        return groups[0], groups[1]
    return _celeba_attribute_latents(model, args)


def _celeba_attribute_latents(model, args: argparse.Namespace):
    """CelebA's list_attr_celeba.txt: a count line, a line of attribute names, then 'file v1 v2 ...' with 1 / -1."""
    import torch
    from ..data.datasets import load_image

    if not args.images_root:
        raise UserError("--labels needs --images-root DIR, the folder that holds the files the label file names")
    try:
        lines = Path(args.labels).read_text().splitlines()
        names = lines[1].split()
    except (OSError, IndexError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the attribute file {args.labels} ({e}); expected CelebA's "
                        "list_attr_celeba.txt format") from None
    if args.attribute not in names:
        raise UserError(f"unknown attribute {args.attribute!r}; the file has: {', '.join(names)}")
    column = names.index(args.attribute)
    groups: dict[bool, list[str]] = {True: [], False: []}
    for line in lines[2:]:
        fields = line.split()
        if len(fields) == len(names) + 1 and len(groups[fields[1 + column] == "1"]) < args.examples:
            groups[fields[1 + column] == "1"].append(fields[0])
    m = model.config.model
    latents = []
    for has in (True, False):
        files = [Path(args.images_root) / f for f in groups[has]]
        x = torch.stack([load_image(f, m.image_channels, m.resolution) for f in files]) if files else \
            torch.zeros(0, m.image_channels, m.resolution, m.resolution)
        latents.append(model.encode(x) if len(x) else torch.zeros(0, model.latent_dim))
    return latents[0].cpu(), latents[1].cpu()


def cmd_edit(args: argparse.Namespace) -> int:
    import torch
    from ..latent import apply_directions, attribute_direction, load_direction, save_direction
    from ..training.run_dir import write_image_grid

    out = _output_path(args.out, args.overwrite)
    model = _load(args)
    names, directions = [], []
    for path in args.direction or []:
        name, direction = load_direction(path, model.model_id, model.latent_dim)
        names.append(name)
        directions.append(direction)
    if args.class_label is not None or args.with_folder or args.labels:
        with_z, without_z = _attribute_latents(model, args)
        direction = attribute_direction(with_z, without_z)
        name = args.attribute or (f"class={args.class_label}" if args.class_label is not None else "attribute")
        if args.save_direction:
            path = _output_path(args.save_direction, args.overwrite, (".safetensors",))
            save_direction(path, direction, name, model.model_id, len(with_z), len(without_z))
            print(f"saved direction {name!r} ({len(with_z)} with, {len(without_z)} without) to {path}")
        names.append(name)
        directions.append(direction)
    if not directions:
        raise UserError("nothing to apply: compute a direction (--class, --with/--without, --labels) or pass "
                        "--direction FILE")
    strengths = _floats(args.strengths, "--strengths")
    x, _ = _input_images(model, args, args.n)
    z = model.encode(x).cpu()
    # Rows: input images; columns: the input, then the summed directions at each strength.
    columns = [x.to(model.device)] + [model.decode(apply_directions(z, directions, [s] * len(directions)))
                                      for s in strengths]
    write_image_grid(torch.stack(columns, dim=1).flatten(0, 1), out, nrow=len(columns))
    print(f"wrote edits by {' + '.join(names)} at strengths {strengths} (first column: input) to {out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..config import DataConfig
    from ..data import build_dataset
    from ..latent import embed
    from ..latent.tools import save_latents

    out = Path(args.out)
    if out.suffix not in (".safetensors", ".npy"):
        raise UserError(f"--out must end in .safetensors or .npy, got {out.name}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    model = _load(args)
    m = model.config.model
    if args.images:
        dataset = build_dataset(DataConfig(dataset="folder", root=args.images), m.image_channels, m.resolution)
        ids = [str(p.relative_to(args.images)) for p in dataset.paths]
    else:
        dataset = build_dataset(model.config.data, m.image_channels, m.resolution, split=args.split)
        ids = [f"{args.split}:{i}" for i in range(len(dataset))]
    latents = embed(model, dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_latents(out, latents, ids)
    print(f"wrote {len(latents)} latents [{len(latents)}, {latents.shape[1]}] (posterior means) with ids to {out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="random samples from the prior, as a PNG grid")
    _checkpoint_arguments(p, "samples.png")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--nrow", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=None, help="clip z to [-t, t] (the authors' FID uses 1)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="inputs and their reconstructions, as a PNG grid")
    _checkpoint_arguments(p, "reconstructions.png")
    _image_arguments(p)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--per-row", type=int, default=8, help="input/reconstruction pairs per row")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("interpolate", help="linear blends between pairs of images: a PNG grid and a GIF")
    _checkpoint_arguments(p, "interpolation.png")
    _image_arguments(p)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gif", help="also write an animated GIF here")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("traverse", help="sweep single latent dimensions (or a direction) of one image")
    _checkpoint_arguments(p, "traversal.png")
    _image_arguments(p)
    p.add_argument("--dims", default="0-7", help="latent dimensions, e.g. 0,3,5-7 (default 0-7)")
    p.add_argument("--direction", help="sweep along a saved direction instead")
    p.add_argument("--range", default="-3,3", help="from,to (default -3,3)")
    p.add_argument("--steps", type=int, default=9)
    p.set_defaults(func=cmd_traverse)

    p = sub.add_parser("edit", help="attribute directions (paper A.2) computed and/or applied")
    _checkpoint_arguments(p, "edit.png")
    _image_arguments(p)
    p.add_argument("--class", dest="class_label", type=int, help="attribute = this class of the labelled data set")
    p.add_argument("--with", dest="with_folder", help="folder of images with the attribute")
    p.add_argument("--without", dest="without_folder", help="folder of images without the attribute")
    p.add_argument("--labels", help="CelebA-format attribute file (list_attr_celeba.txt)")
    p.add_argument("--images-root", help="folder of the images the attribute file names")
    p.add_argument("--attribute", help="attribute name (in --labels; otherwise a label for the direction)")
    p.add_argument("--examples", type=int, default=100, help="images per side for the direction (>= 20)")
    p.add_argument("--save-direction", help="write the computed direction here (.safetensors)")
    p.add_argument("--direction", action="append", help="apply a saved direction (repeatable)")
    p.add_argument("--strengths", default="-2,-1,0,1,2", help="strengths, one grid column each")
    p.add_argument("--n", type=int, default=8, help="images to edit")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("mix", help="replace chosen latent dimensions of A with B's (paper Fig. 12)")
    _checkpoint_arguments(p, "mix.png")
    _image_arguments(p)
    p.add_argument("--dims", required=True, help="dimensions taken from B, e.g. 0-15")
    p.add_argument("--n-a", type=int, default=4, help="images A (rows)")
    p.add_argument("--n-b", type=int, default=4, help="images B (columns)")
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser("embed", help="latents (posterior means) of a data set or folder, with image ids")
    _checkpoint_arguments(p, "latents.safetensors")
    p.add_argument("--images", help="a folder of images (default: the model's data set)")
    p.add_argument("--split", default="test")
    p.set_defaults(func=cmd_embed)
