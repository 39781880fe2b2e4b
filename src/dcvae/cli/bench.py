"""`dcvae bench` (also `make bench`): training and inference speed on this machine, in one run."""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from ..errors import UserError

CASES = ("paper32", "paper32-released", "compact", "progressive")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="speed: generator iterations (paper width, released D step, compact, progressive) and inference",
        description="Time one generator iteration of each case (5 D steps of 64 then the G and contrastive steps at "
                    "paper width; the same with the released code's D step, whose extra backward no update uses, "
                    "in its NCHW layout; the compact MNIST network; the progressive backbone fully grown), count "
                    "its FLOPs, measure the matmul peak in the same process, and report images/s, utilisation and "
                    "peak memory; then sampling, encoding and Inception throughput. Each case runs in its own "
                    "process.")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, default all: {','.join(CASES)}")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16 (autocast); default fp32")
    p.add_argument("--layout", default="channels_last",
                   help="comma-separated memory layouts: channels_last (the default of training), nchw; the released "
                        "D step case always runs in NCHW, as the released code")
    p.add_argument("--resampling", default="folded",
                   help="comma-separated: folded (the default of training: up- and downsampling folded into the "
                        "adjacent convolutions; train.fold_resampling), plain (resample and convolve separately); "
                        "the released D step case always runs plain")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every case's networks (the untimed warm-up iteration compiles); a missing "
                        "backend falls back to eager mode with a message")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="compile in reduce-overhead mode, which replays the networks as CUDA graphs (train.cuda_graphs;"
                        " on a GPU: on a CPU the cases run without graphs and say so)")
    p.add_argument("--batch-size", default="",
                   help="comma-separated real images per D step for the 32x32 cases, each measured (default: the "
                        "preset's, 64); e.g. 64,256 on a GPU")
    p.add_argument("--iterations", type=int, default=1, help="timed iterations per case, after a warm-up (default 1)")
    p.add_argument("--progressive-preset", default="celeba64", help="preset of the progressive case (default celeba64)")
    p.add_argument("--progressive-batch", type=int, default=4,
                   help="real images per D step of the progressive case (default 4: the preset's 16 takes minutes "
                        "per iteration on a CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-inference", action="store_true", help="skip the sampling / encoding / Inception throughput")
    p.add_argument("--inception", metavar="PATH", help="Inception TorchScript for the feature throughput")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as markdown")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json / --markdown files")
    p.set_defaults(func=run)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _cases(args: argparse.Namespace, device: str):
    from ..experiments.bench import Case
    names = _comma_list(args.cases)
    unknown = sorted(set(names) - set(CASES))
    if unknown or not names:
        raise UserError(f"--cases: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CASES)}")
    precisions = _comma_list(args.precision)
    if not precisions or set(precisions) - {"fp32", "bf16"}:
        raise UserError(f"--precision takes fp32 and/or bf16, got {args.precision!r}")
    layouts = _comma_list(args.layout)
    if not layouts or set(layouts) - {"channels_last", "nchw"}:
        raise UserError(f"--layout takes channels_last and/or nchw, got {args.layout!r}")
    resamplings = _comma_list(args.resampling)
    if not resamplings or set(resamplings) - {"folded", "plain"}:
        raise UserError(f"--resampling takes folded and/or plain, got {args.resampling!r}")
    try:
        batches: list[int | None] = [int(b) for b in _comma_list(args.batch_size)] or [None]
    except ValueError:
        raise UserError(f"--batch-size takes comma-separated whole numbers, got {args.batch_size!r}") from None
    if args.iterations < 1 or args.progressive_batch < 1 or any(b is not None and b < 1 for b in batches):
        raise UserError("--iterations, --batch-size and --progressive-batch must be at least 1")
    compiled = ", CUDA graphs" if args.cuda_graphs else ", compiled" if args.compile else ""
    cases = []
    for precision in precisions:
        shared = dict(precision=precision, compile=args.compile, cuda_graphs=args.cuda_graphs, device=device)
        precision_suffix = "" if precision == "fp32" else f", {precision}"
        for layout, resampling in itertools.product(layouts, resamplings):
            layout_suffix = ("" if layout == "channels_last" else ", NCHW") + ("" if resampling == "folded"
                                                                                 else ", plain resampling")
            for name in names:
                # (label, preset, real images per D step or None for the preset's) of each measurement
                if name == "progressive":
                    runs = [(f"progressive ({args.progressive_preset}, batch {args.progressive_batch})",
                             args.progressive_preset, args.progressive_batch)]
                else:
                    label, preset_name = {"paper32": ("paper32", "cifar10"), "compact": ("compact (mnist)", "mnist"),
                                          "paper32-released": ("paper32, released D step", "cifar10")}[name]
                    runs = [(label + (f", batch {b}" if b else ""), preset_name, b) for b in batches]
                reference = name == "paper32-released"
                if reference and (layout, resampling) != (layouts[0], resamplings[0]):
                    continue                 # the released code's layout and order whatever was asked: once
                for label, preset_name, batch in runs:
                    suffix = precision_suffix + ("" if reference else layout_suffix) + compiled
                    cases.append(Case(label + suffix, preset_name, batch, reference=reference,
                                      channels_last=layout == "channels_last",
                                      fold_resampling=resampling == "folded", **shared))
    return cases


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import preset
    from ..experiments.bench import machine, markdown, measure_inference, run_cases
    from ..files import atomic_write_text
    from ..training.loop import cpu_has_bf16

    for path in (args.json, args.markdown):
        if path and Path(path).exists() and not args.overwrite:
            raise UserError(f"{path} already exists; choose another path or pass --overwrite")
    preset(args.progressive_preset)      # an unknown preset is reported before anything runs
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench: --device {device} asked for, but this machine has no GPU: falling back to the CPU")
        device = "cpu"
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UserError(f"--device must be cpu or cuda[:N], got {device!r}")
    if args.cuda_graphs and device == "cpu":
        print("bench: --cuda-graphs needs a GPU: the cases run without CUDA graphs")
        args.cuda_graphs = False
    cases = _cases(args, device)
    if device == "cpu" and "bf16" in args.precision and not cpu_has_bf16():
        print("bench: this CPU has no native bf16 (AVX512-BF16 / AMX): the bf16 cases run emulated, slowly")
    rows = run_cases(cases, args.iterations)
    inference = [] if args.no_inference else measure_inference(device, inception=args.inception)
    text = markdown(rows, inference)
    print(text)
    result = {"machine": machine(), "threads": rows[0]["threads"] if rows else torch.get_num_threads(),
              "iterations": rows, "inference": inference}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    return 0
