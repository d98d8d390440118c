#!/usr/bin/env python3
"""The figures of one k6 run (bench/scripts/k6/run writes the inputs).

usage: analyze_k6.py WORK_DIR OUT_DIR --peak-rate R --status CODE

Reads WORK_DIR/k6-summary.json (k6's --summary-export) and WORK_DIR/machine.json; CODE is k6's
exit status (0: every threshold held, 99: a threshold failed). Writes OUT_DIR/k6.json and
prints it.
"""
import argparse
import datetime
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--peak-rate", type=float, required=True)
    ap.add_argument("--status", type=int, required=True)
    a = ap.parse_args()
    with open(os.path.join(a.work, "k6-summary.json")) as f:
        m = json.load(f)["metrics"]
    with open(os.path.join(a.work, "machine.json")) as f:
        machine = json.load(f)
    dur = m.get("http_req_duration{expected_response:true}", m["http_req_duration"])
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "peak_rate": a.peak_rate,
        "requests": m["http_reqs"]["count"],
        "rps": m["http_reqs"]["rate"],
        "p90_ms": dur.get("p(90)"), "p95_ms": dur.get("p(95)"), "p99_ms": dur.get("p(99)"), "max_ms": dur.get("max"),
        "refusal_rate": m["refusals"]["value"],
        "checks_rate": m["checks"]["value"],
        "dropped_iterations": m.get("dropped_iterations", {}).get("count", 0),
        "thresholds": {name: not ok for metric in m.values() for name, ok in (metric.get("thresholds") or {}).items()},
        "thresholds_passed": a.status == 0,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "k6.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
