"""Sampling FID/KID along training for several runs, as one JSON file and one markdown table: what
docs/results/table1-fashion32-6000/sampling-curve.json holds.

From each run folder trained with `--set train.eval_every=N` (the default metrics, fid and kid), take every
evaluation record that has a FID in metrics.jsonl, in the order written (a `dcvae evaluate` of the same run, e.g.
with --truncation, appends its own), with the protocol it names; add the run's wall time and images/s from
summary.json when it has finished. Print the JSON to stdout and, to stderr, a markdown table of FID / KID by
iteration, one column per run; with two runs, a last column holds the second's FID over the first's.

    .venv/bin/python scripts/sampling_curves.py vaegan=RUN/vaegan dcvae=RUN/dcvae --command "dcvae train ..."
        [--machine "AMD EPYC, 2 cores, ..."] > sampling-curve.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dcvae.training.run_dir import read_summary

PROTOCOL_FIELDS = ("n_generated", "n_real", "reference_split", "decoder", "truncation", "prior", "seed")


def read_evaluations(run: Path) -> list[dict]:
    """The run's FID evaluations in the order written: iteration, date, fid, kid and the protocol fields."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") != "evaluate" or record.get("eval/fid") is None:
            continue
        rows.append({"iteration": record["iteration"], "date": record.get("date"),
                     "fid": round(record["eval/fid"], 2),
                     "kid": None if record.get("eval/kid") is None else round(record["eval/kid"], 5),
                     **{field: record.get(f"eval/{field}") for field in PROTOCOL_FIELDS}})
    return rows


def _fid_kid(row: dict) -> str:
    """"FID / KID", or the FID alone for an evaluation that computed no KID (dcvae evaluate --metrics fid)."""
    return f"{row['fid']:.1f}" + ("" if row["kid"] is None else f" / {row['kid']:.4f}")


def markdown(curves: dict[str, list[dict]]) -> str:
    """FID / KID by iteration, truncation and prior, one column per run (first evaluation of each key; an evaluation
    from before `dcvae evaluate --prior` counts as the standard prior)."""
    names = list(curves)
    cells: dict[tuple, dict[str, dict]] = {}
    for name, rows in curves.items():
        for row in rows:
            key = (row["iteration"], row["truncation"] or 0.0, row["prior"] or "standard")
            cells.setdefault(key, {}).setdefault(name, row)
    ratio = len(names) == 2
    lines = ["| iterations | " + " | ".join(names) + (f" | {names[1]}'s FID / {names[0]}'s |" if ratio else " |"),
             "|---|" + "---|" * (len(names) + ratio)]
    for (it, truncation, prior), row in sorted(cells.items(), key=lambda c: (c[0][0], c[0][1], c[0][2] != "standard")):
        label = f"{it:,}" + (", z from the Gaussian fitted to the aggregate posterior" if prior == "fitted" else "")
        if truncation:
            label += f", {'eps' if prior == 'fitted' else 'z'} clipped to [-{truncation:g}, {truncation:g}]"
        values = [_fid_kid(row[n]) if n in row else "" for n in names]
        if ratio:
            values.append(f"{row[names[1]]['fid'] / row[names[0]]['fid']:.2f}x" if len(row) == 2 else "")
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN", help="a name and the run folder holding metrics.jsonl")
    parser.add_argument("--command", action="append", required=True, help="the command(s) behind the runs")
    parser.add_argument("--machine", help="the machine the runs trained on, in words")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not (Path(path) / "metrics.jsonl").is_file():
            sys.exit(f"sampling_curves: {item!r} is not NAME=RUN with RUN/metrics.jsonl; e.g. dcvae=runs/t1/dcvae")
        runs[name] = Path(path)
    result = {"command": args.command, **({"machine": args.machine} if args.machine else {}), "runs": {}}
    curves = {}
    for name, run in runs.items():
        curves[name] = read_evaluations(run)
        if not curves[name]:
            sys.exit(f"sampling_curves: no FID evaluation in {run / 'metrics.jsonl'}; train with "
                     "--set train.eval_every=N (metrics fid,kid) or run dcvae evaluate on it")
        entry = {"evaluations": curves[name]}
        done = read_summary(run)
        if done is not None:
            entry.update(iterations=done.get("iterations"), wall_seconds=done.get("wall_seconds"),
                         images_per_s=done.get("images_per_s"))
        result["runs"][name] = entry
    print(json.dumps(result, indent=1))
    print(markdown(curves), file=sys.stderr)


if __name__ == "__main__":
    main()
