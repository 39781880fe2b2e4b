"""A Table 6 run's probe curve as one JSON file: what the files under docs/results/table6-probe-curves/ hold.

From a run folder trained with `--set train.eval_metrics=probe_error`, take each periodic evaluation's probe error
(and its scaling, where the record names it) from metrics.jsonl and, from the training record logged at the same
iteration, the KL (nats per image), the contrastive top-1 accuracies (b1, final) and the images/s; add the read-out
rows that `scripts/probe_readouts.py --json` wrote, if given. Print the JSON to stdout; with --compare, also print
to stderr this curve beside the `probe_error_by_iteration` of another such file, iteration by iteration.

    .venv/bin/python scripts/probe_curve.py RUN --command "dcvae train ..." [--readouts FILE] [--max-iteration N]
        [--compare OTHER.json] > curve.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

READOUTS_SCRIPT = "OMP_NUM_THREADS=1 .venv/bin/python scripts/probe_readouts.py CHECKPOINT --json FILE"


def read_curve(run: Path, max_iteration: int | None) -> dict:
    """The run's evaluations and the training statistics logged at their iterations, keyed by str(iteration)."""
    training, probe, scaling = {}, {}, {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        it = record["iteration"]
        if max_iteration is not None and it > max_iteration:
            continue
        if record.get("event") == "evaluate" and record.get("eval/probe_error") is not None:
            probe[it] = record["eval/probe_error"]
            if "eval/probe_scaling" in record:  # records written before the field existed do not name it
                scaling[it] = record["eval/probe_scaling"]
        elif "images_per_s" in record:
            training[it] = record
    if not probe:
        sys.exit(f"probe_curve: no probe_error evaluation in {run / 'metrics.jsonl'}; "
                 "train with --set train.eval_metrics=probe_error")
    its = sorted(probe)
    logged = [it for it in its if it in training]
    return {
        "probe_error_by_iteration": {str(it): probe[it] for it in its},
        **({"probe_scaling_by_iteration": {str(it): scaling[it] for it in its if it in scaling}} if scaling else {}),
        "kl_nats_per_image": {str(it): round(training[it]["kl"], 1) for it in logged},
        "contrastive_top1_b1_final": {str(it): [round(training[it]["acc/b1"], 3), round(training[it]["acc/final"], 3)]
                                      for it in logged if "acc/b1" in training[it]},
        "images_per_s": {str(it): training[it]["images_per_s"] for it in logged},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run folder holding metrics.jsonl")
    parser.add_argument("--command", required=True, help="the training command(s), recorded as 'run'")
    parser.add_argument("--readouts", type=Path, help="JSON lines written by scripts/probe_readouts.py --json")
    parser.add_argument("--max-iteration", type=int, help="leave out records beyond this iteration")
    parser.add_argument("--compare", type=Path, help="another curve file to print beside this one on stderr")
    args = parser.parse_args()
    if not (args.run / "metrics.jsonl").is_file():
        sys.exit(f"probe_curve: {args.run / 'metrics.jsonl'} does not exist; pass a run folder")

    result = {"run": args.command, **read_curve(args.run, args.max_iteration)}
    if args.readouts is not None:
        rows = [json.loads(line) for line in args.readouts.read_text().splitlines() if line.strip()]
        result["readouts"] = {"script": READOUTS_SCRIPT, "rows": rows}
    json.dump(result, sys.stdout, indent=1)
    print()

    if args.compare is not None:
        other = json.loads(args.compare.read_text())["probe_error_by_iteration"]
        for it, error in result["probe_error_by_iteration"].items():
            beside = f"{100 * other[it]:6.2f} %" if it in other else "      -"
            print(f"{int(it):>6}  {100 * error:6.2f} %  {beside}", file=sys.stderr)


if __name__ == "__main__":
    main()
