#!/usr/bin/env python3
"""The criterion estimates of the selection microbenchmarks (bench/scripts/micro runs them).

usage: analyze_micro.py CRITERION_DIR WORK_DIR OUT_DIR
       analyze_micro.py --against REV CRITERION_DIR WORK_DIR OUT_DIR

Reads CRITERION_DIR/GROUP/FUNCTION/SUBSTATIONS/new/estimates.json (criterion's own output) and
WORK_DIR/machine.json; writes OUT_DIR/micro.json (median, mean and the median's confidence
interval per call, in ns) and prints one line per benchmark.

With --against: reads the interleaved rounds bench/scripts/micro ran of this build and of REV
(CRITERION_DIR/criterion-{this,against}-ROUND/...) and adds to OUT_DIR/micro.json, as
`against`, the median over the rounds of each benchmark for both builds.
"""
import argparse
import datetime
import glob
import json
import os
import statistics


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


def against(rev, criterion, out):
    """Medians over the rounds, per benchmark, of this build and of REV."""
    runs = {}
    for side in ("this", "against"):
        for d in sorted(glob.glob(os.path.join(criterion, f"criterion-{side}-*"))):
            for r in estimates(d):
                key = (r["group"], r["function"], r["substations"])
                runs.setdefault(key, {"this": [], "against": []})[side].append(r["median_ns"])
    rows = [{"group": g, "function": f, "substations": n,
             "this_ns": statistics.median(v["this"]), "against_ns": statistics.median(v["against"]),
             "rounds": min(len(v["this"]), len(v["against"]))}
            for (g, f, n), v in sorted(runs.items()) if v["this"] and v["against"]]
    if not rows:
        raise SystemExit(f"no interleaved rounds under {criterion}")
    path = os.path.join(out, "micro.json")
    with open(path) as f:
        res = json.load(f)
    res["against"] = {"rev": rev, "rows": rows}
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    for r in rows:
        print(f"{r['group']}/{r['function']}/{r['substations']}: this build {r['this_ns']:.0f} ns, "
              f"{rev} {r['against_ns']:.0f} ns ({r['rounds']} rounds)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", metavar="REV")
    ap.add_argument("criterion")
    ap.add_argument("work")
    ap.add_argument("out")
    a = ap.parse_args()
    if a.against:
        against(a.against, a.criterion, a.out)
        return
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
