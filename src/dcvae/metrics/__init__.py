"""Metrics: the paper's Table 1 numbers and the Table 6 linear probe.

    from dcvae.metrics.evaluate import evaluate     # FID, KID, IS, reconstruction FID, pixel, perceptual, LPIPS
    result = evaluate("runs/demo", metrics="fid,kid", n_generated=10_000)

evaluate.py streams images and records the protocol; networks.py holds the Inception and VGG-16 feature networks;
weights.py finds their weight files (argument, environment variable, cache, offline package, download);
distances.py holds the formulas; probe.py the linear probe. Nothing is imported here, so importing one of them does
not load the others.
"""
