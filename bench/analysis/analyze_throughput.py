#!/usr/bin/env python3
"""Medians of the throughput benchmark's oha runs (bench/scripts/throughput writes them).

usage: analyze_throughput.py WORK_DIR OUT_DIR --reps N --seconds S --rates "1000 4000" --connections C

Reads WORK_DIR/full-CFG-REP.json, WORK_DIR/rateR-CFG-REP.json, rss.txt and machine.json;
writes OUT_DIR/throughput.json and OUT_DIR/throughput.md.
"""
import argparse
import datetime
import json
import os
import statistics

CONFIGS = ["direct", "gridlb", "nginx", "haproxy"]
LABELS = {
    "direct": "client → substation (no proxy)",
    "gridlb": "gridlb (least-load)",
    "nginx": "nginx (least_conn)",
    "haproxy": "HAProxy (leastconn + agent)",
}


def load(path):
    with open(path) as f:
        d = json.load(f)
    codes = {str(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    # oha cancels the requests in flight when the run's time is up: not the proxy's errors.
    errors = sum(v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k)
    total = sum(codes.values()) + errors
    return {
        "rps": d["summary"]["requestsPerSec"],
        "p50_ms": (d["latencyPercentiles"]["p50"] or 0) * 1e3,
        "p99_ms": (d["latencyPercentiles"]["p99"] or 0) * 1e3,
        "requests": total,
        "non_201": total - codes.get("201", 0),
        "errors": errors,
        "statuses": codes,
    }


def med(values):
    return statistics.median(values) if values else None


def summarise(work, prefix, reps):
    out = {}
    for cfg in CONFIGS:
        runs = [load(os.path.join(work, f"{prefix}-{cfg}-{r}.json")) for r in range(1, reps + 1)
                if os.path.exists(os.path.join(work, f"{prefix}-{cfg}-{r}.json"))]
        out[cfg] = {
            "runs": runs,
            "rps": med([r["rps"] for r in runs]),
            "p50_ms": med([r["p50_ms"] for r in runs]),
            "p99_ms": med([r["p99_ms"] for r in runs]),
            "non_201": sum(r["non_201"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
        }
    return out


def rss(work):
    cols = {"gridlb": [], "nginx": [], "haproxy": []}
    with open(os.path.join(work, "rss.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                for name, value in zip(cols, parts[1:]):
                    cols[name].append(int(value) / 1024)
    result = {name: {"idle_mib": v[0] if v else None, "max_mib": max(v) if v else None} for name, v in cols.items()}
    final = os.path.join(work, "gridlb-final-rss.txt")
    if os.path.exists(final):
        parts = open(final).read().split()
        if len(parts) == 2:
            result["gridlb"]["hwm_mib"] = int(parts[1]) / 1024
    return result


def ratio(a, b):
    return a / b if a and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rates", required=True)
    ap.add_argument("--connections", type=int, required=True)
    a = ap.parse_args()
    rates = [int(r) for r in a.rates.split()]
    full = summarise(a.work, "full", a.reps)
    fixed = {str(r): summarise(a.work, f"rate{r}", a.reps) for r in rates}
    for r, cfgs in fixed.items():
        base = cfgs["direct"]
        for cfg in CONFIGS:
            c = cfgs[cfg]
            c["added_p50_ms"] = c["p50_ms"] - base["p50_ms"] if c["p50_ms"] is not None else None
            c["added_p99_ms"] = c["p99_ms"] - base["p99_ms"] if c["p99_ms"] is not None else None
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": json.load(open(os.path.join(a.work, "machine.json"))),
        "settings": {"reps": a.reps, "seconds": a.seconds, "rates": rates, "connections": a.connections,
                     "fixed_rate_connections": 32},
        "full_speed": full,
        "fixed_rate": fixed,
        "rss": rss(a.work),
        "ratios": {
            "gridlb_over_nginx": ratio(full["gridlb"]["rps"], full["nginx"]["rps"]),
            "gridlb_over_haproxy": ratio(full["gridlb"]["rps"], full["haproxy"]["rps"]),
        },
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "throughput.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(a.out, "throughput.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


def fmt(v, spec=".0f"):
    return "n/a" if v is None else format(v, spec)


def markdown(r):
    s = r["settings"]
    lines = [
        f"Full speed: oha, {s['connections']} keep-alive connections, {fmt(s['seconds'], 'g')} s per run, "
        f"{s['reps']} interleaved rounds; median of the rounds. Fixed rates: oha `-q R --latency-correction`, "
        f"32 connections. Added latency = the proxy's percentile minus the direct client's.",
        "",
        "| configuration | req/s (median) | req/s per round | non-201 answers |",
        "| --- | ---: | --- | ---: |",
    ]
    for cfg in CONFIGS:
        c = r["full_speed"][cfg]
        per = ", ".join(fmt(x["rps"]) for x in c["runs"])
        lines.append(f"| {LABELS[cfg]} | {fmt(c['rps'])} | {per} | {c['non_201']} of {c['requests']} |")
    ra = r["ratios"]
    lines += ["", f"gridlb / nginx = **{fmt(ra['gridlb_over_nginx'], '.2f')}**, "
                  f"gridlb / HAProxy = **{fmt(ra['gridlb_over_haproxy'], '.2f')}** (req/s at full speed).", ""]
    for rate, cfgs in r["fixed_rate"].items():
        lines += [f"At {rate} req/s (medians, ms):", "",
                  "| configuration | achieved req/s | p50 | p99 | added p50 | added p99 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for cfg in CONFIGS:
            c = cfgs[cfg]
            lines.append(f"| {LABELS[cfg]} | {fmt(c['rps'])} | {fmt(c['p50_ms'], '.3f')} | {fmt(c['p99_ms'], '.3f')} | "
                         f"{fmt(c['added_p50_ms'], '.3f')} | {fmt(c['added_p99_ms'], '.3f')} |")
        lines.append("")
    m = r["rss"]
    lines += ["Resident memory (RSS) over the whole benchmark, MiB:", "",
              "| proxy | idle | max under load |", "| --- | ---: | ---: |"]
    for name in ("gridlb", "nginx", "haproxy"):
        lines.append(f"| {name} | {fmt(m[name]['idle_mib'], '.1f')} | {fmt(m[name]['max_mib'], '.1f')} |")
    lines.append("")
    lines.append("(nginx: master and workers added up.)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
