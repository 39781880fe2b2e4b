"""Where the linear probe of Table 6 loses its accuracy: several read-outs of the same trained encoder.

For each checkpoint, on the labelled train / test splits of its data set (MNIST for the `mnist` preset), print the
test error of
  - `mu, linear`: the Table 6 protocol (dcvae.metrics.probe: logistic regression on standardised mu, L-BFGS);
  - `mu, 5-NN`: a vote of the 5 nearest training means (standardised): what mu holds, read non-linearly;
  - `trunk, linear`: the same logistic regression on the input of the encoder's head (the trunk's last map,
    flattened or summed as the encoder does): what the 16..64 numbers of mu were projected from;
and once per data set the linear (standardised) and 5-NN (raw) read-outs of the pixels. With --json, one JSON line
per checkpoint too.

    .venv/bin/python scripts/probe_readouts.py RUN_OR_CHECKPOINT [...] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.data import DataLoader

from dcvae.data import build_dataset
from dcvae.errors import UserError
from dcvae.metrics.probe import (classification_error, encode_dataset, fit_linear_classifier,
                                 nearest_neighbour_error)
from dcvae.model import load


def linear_error(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    return classification_error(*fit_linear_classifier(train_x, train_y), test_x, test_y)


@torch.no_grad()
def head_inputs(model, dataset) -> torch.Tensor:
    """What the encoder's head reads: [N, features] (the trunk's last map, flattened or summed)."""
    encoder, out = model.encoder, []
    for x, _ in DataLoader(dataset, batch_size=500, shuffle=False):
        last = encoder.trunk(x.to(model.device).contiguous(memory_format=model.memory_format))[-1]
        out.append((last.flatten(1) if encoder.flatten else encoder.trunk.pool(last)).cpu())
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", help="append one JSON line per checkpoint to this file")
    args = parser.parse_args()
    pixel_errors: dict[tuple, dict[str, float]] = {}
    for path in args.checkpoints:
        started = time.perf_counter()
        model = load(path)
        m, d = model.config.model, model.config.data
        train_set = build_dataset(d, m.image_channels, m.resolution, split="train")
        test_set = build_dataset(d, m.image_channels, m.resolution, split="test")
        key = (d.dataset, d.root, m.image_channels, m.resolution)
        if key not in pixel_errors:
            train_px = torch.cat([x.flatten(1) for x, _ in DataLoader(train_set, batch_size=1000)])
            test_px = torch.cat([x.flatten(1) for x, _ in DataLoader(test_set, batch_size=1000)])
            train_y = torch.cat([torch.as_tensor(y) for _, y in DataLoader(train_set, batch_size=1000)])
            test_y = torch.cat([torch.as_tensor(y) for _, y in DataLoader(test_set, batch_size=1000)])
            pixel_errors[key] = {"pixels_linear": linear_error(train_px, train_y, test_px, test_y),
                                 "pixels_5nn": nearest_neighbour_error(train_px, train_y, test_px, test_y, k=5,
                                                                     standardise=False)}
            print(f"{d.dataset} {m.resolution}px: pixels linear {100 * pixel_errors[key]['pixels_linear']:.2f}%, "
                  f"pixels 5-NN {100 * pixel_errors[key]['pixels_5nn']:.2f}%", flush=True)
        train_mu, train_y = encode_dataset(model, train_set)
        test_mu, test_y = encode_dataset(model, test_set)
        train_h, test_h = head_inputs(model, train_set), head_inputs(model, test_set)
        row = {"checkpoint": str(model.checkpoint), "iteration": model.iteration,
               "variant": model.config.objective.variant, "latent_dim": m.latent_dim, "encoder_pool": m.encoder_pool,
               "mu_linear": linear_error(train_mu, train_y, test_mu, test_y),
               "mu_5nn": nearest_neighbour_error(train_mu, train_y, test_mu, test_y, k=5),
               "trunk_linear": linear_error(train_h, train_y, test_h, test_y), "trunk_features": train_h.shape[1],
               **pixel_errors[key], "seconds": round(time.perf_counter() - started, 1)}
        print(f"{row['checkpoint']} ({row['variant']}, d_z={row['latent_dim']}, iteration {row['iteration']}): "
              f"mu linear {100 * row['mu_linear']:.2f}%, mu 5-NN {100 * row['mu_5nn']:.2f}%, "
              f"trunk ({row['trunk_features']} features) linear {100 * row['trunk_linear']:.2f}% "
              f"[{row['seconds']} s]", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:   # a checkpoint that is missing, or a data set without labels
        sys.exit(f"error: {error}")
