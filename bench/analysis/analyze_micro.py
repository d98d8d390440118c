#!/usr/bin/env python3
"""The criterion estimates of the selection microbenchmarks (bench/scripts/micro runs them).

usage: analyze_micro.py CRITERION_DIR WORK_DIR OUT_DIR

Reads CRITERION_DIR/GROUP/FUNCTION/SUBSTATIONS/new/estimates.json (criterion's own output) and
WORK_DIR/machine.json; writes OUT_DIR/micro.json (median, mean and the median's confidence
interval per call, in ns) and prints one line per benchmark.
"""
import argparse
import datetime
import glob
import json
import os


def estimates(criterion):
    rows = []
    for path in glob.glob(os.path.join(criterion, "*", "*", "*", "new", "estimates.json")):
        group, function, n = os.path.relpath(path, criterion).split(os.sep)[:3]
        with open(path) as f:
            e = json.load(f)
        rows.append({"group": group, "function": function, "substations": int(n),
                     "median_ns": e["median"]["point_estimate"], "mean_ns": e["mean"]["point_estimate"],
                     "median_ci_ns": [e["median"]["confidence_interval"]["lower_bound"],
                                      e["median"]["confidence_interval"]["upper_bound"]]})
    return sorted(rows, key=lambda r: (r["group"], r["function"], r["substations"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("criterion")
    ap.add_argument("work")
    ap.add_argument("out")
    a = ap.parse_args()
    rows = estimates(a.criterion)
    if not rows:
        raise SystemExit(f"no criterion estimates under {a.criterion}")
    with open(os.path.join(a.work, "machine.json")) as f:
        machine = json.load(f)
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine, "results": rows}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "micro.json"), "w") as f:
        json.dump(res, f, indent=1)
    for r in rows:
        print(f"{r['group']}/{r['function']}/{r['substations']}: median {r['median_ns']:.0f} ns")


if __name__ == "__main__":
    main()
