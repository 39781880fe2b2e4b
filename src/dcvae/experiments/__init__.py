"""The paper's multi-run experiments: shared run handling (runs.py), the Table 1 / Figure 3 ablation (ablation.py)
and the Figure 7 sweep over the number of negatives (negatives.py). Imported lazily by the CLI (they pull in torch).
"""
