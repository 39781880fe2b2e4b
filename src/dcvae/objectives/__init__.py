"""Objectives: each loss term (losses.py), the negative queue (queue.py), and the per-phase objective of each
variant (phases.py)."""
