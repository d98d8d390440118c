#!/usr/bin/env python3
"""The offered rate and the figures of the replicas benchmark (bench/scripts/replicas writes the inputs).

usage: analyze_replicas.py rate --model FILE --capacity-kw KW --load X --time-scale S --streams K
       analyze_replicas.py analyse WORK_DIR OUT_DIR --runs "r1-least-load r3-least-load ..."
                           --streams K --seconds S --rate R --load X --seed N --time-scale S
                           --hz H --build PROFILE

`rate`: the arrivals per real second that offer X times KW on average, in all and per stream
(printed as "RATE STREAM_RATE"). FILE is `ev-demand --describe`'s output: the demand model,
whose `mean_session_energy_kw_s` E (kW x simulated s) ev-demand computes from the power and
duration mixes it draws from. By Little's law the mean load is the arrival rate (per simulated
second) times E, and one real second is S simulated seconds.

`analyse`: per run (RUN-load.csv, RUN-events-I.csv and RUN-summary-I.json for each demand
stream I, RUN-NAME.metrics), the same figures as the spread benchmark (analyze_spread.py):
peak utilisation per substation, time-averaged spread, sessions refused while another
substation had room, refusals in all and by substations, accepted; and for each algorithm the
ratio of its 3-replica figures to its 1-replica ones. Writes OUT_DIR/replicas.json,
replicas.md and replicas.png.
"""
import argparse
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in bench/analysis/ from the import below
from analyze_spread import events, plot, publish, refusals_with_room, substation_refusals, ticks, window_stats  # noqa: E402

GOAL_RATIO = 1.5


def offered_rate(model, capacity_kw, load, time_scale):
    return load * capacity_kw * time_scale / model["mean_session_energy_kw_s"]


def analyse(work, run, streams, seconds, scale):
    """One run; `r0-limit` is grid-limit's simulation of the streams merged (one file each)."""
    if run == "r0-limit":
        return analyse_limit(work, run, seconds, scale)
    summaries = [json.load(open(os.path.join(work, f"{run}-summary-{i}.json"))) for i in range(1, streams + 1)]
    series, names = ticks(os.path.join(work, f"{run}-load.csv"))
    start = min(s["started_unix"] for s in summaries)
    st = window_stats(series, names, start, start + seconds)
    refusals = []
    for i, summary in enumerate(summaries, 1):
        for e in events(os.path.join(work, f"{run}-events-{i}.csv")):
            if e["status"] == "503":
                refusals.append((summary["started_unix"] + float(e["sent_at_s"]), float(e["power_kw"])))
    refused, with_room, persisted = refusals_with_room(series, refusals)
    total = lambda k: sum(s[k] for s in summaries)
    return {
        "names": names,
        "capacity_kw": st["capacity_kw"],
        "peak_utilisation": st["peak_utilisation"],
        "mean_utilisation": st["mean_utilisation"],
        "spread_time_avg": st["spread_time_avg"],
        "refused_with_room": with_room,
        "refused_with_room_persisting": persisted,
        "refused": refused,
        "substation_refusals": substation_refusals(work, run, names),
        "sent": total("sent"),
        "accepted": total("accepted"),
        "errors": total("errors"),
        "energy_delivered_kwh": st["energy_kw_s"] * scale / 3600.0,
        "samples": len(st["window"]),
        "plot": [(t - start, {n: l / c for n, (l, c) in s.items()}) for t, s in series],
        "model": summaries[0]["model"],
    }


def analyse_limit(work, run, seconds, scale):
    import analyze_spread
    r = analyze_spread.analyse(work, run, seconds, scale)
    r["model"] = None
    return r


def ratio(three, one):
    if one:
        return three / one
    return 1.0 if not three else None  # None: worse than a baseline of zero


def compare(runs):
    out = {}
    for key, r3 in runs.items():
        n, algorithm = key.split("-", 1)
        r1 = runs.get(f"r1-{algorithm}")
        if n != "r3" or not r1:
            continue
        out[algorithm] = {
            "spread_ratio": ratio(r3["spread_time_avg"], r1["spread_time_avg"]),
            "refused_with_room_ratio": ratio(r3["refused_with_room"], r1["refused_with_room"]),
            "refused_ratio": ratio(r3["refused"], r1["refused"]),
        }
        c = out[algorithm]
        c["within_goal"] = all(v is not None and v <= GOAL_RATIO + 1e-9
                               for v in (c["spread_ratio"], c["refused_with_room_ratio"]))
    return out


def fmt_ratio(v):
    return "n/a (baseline 0)" if v is None else f"{v:.2f}x"


def markdown(res):
    s = res["settings"]
    first = next(iter(res["runs"].values()))
    names, caps = first["names"], first["capacity_kw"]
    head = " | ".join(f"peak {n} ({caps[n]:.0f} kW)" for n in names)
    lines = [
        f"Constant Poisson demand for {s['seconds']:g} s at {s['rate']:.2f} sessions/s ({s['load']:g}x the "
        f"grid's {sum(caps.values()):.0f} kW on average), as {s['streams']} ev-demand streams of a third "
        f"each (seeds {s['seed']}001 to {s['seed']}00{s['streams']}); with 3 replicas each stream goes to its own "
        "gridlb, with 1 all go to the one, so both see the same arrivals. One simulated hour = "
        f"{3600 / s['time_scale']:g} s; probes every 100 ms; fresh substations for each run; /load sampled at "
        f"{s['hz']:g} Hz; {s['build']} build.",
        "",
        "The first row is the limit: the same arrivals (the streams merged) placed by an omniscient "
        "least-load router in simulated time (`grid-limit`), sampled alike.",
        "",
        f"| replicas | algorithm | {head} | spread (time avg) | spread / limit | refused with room | refused | "
        "refused / limit | substation refusals (retried) | accepted |",
        "| ---: | --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in sorted(res["runs"].items(), key=lambda kv: (kv[0].split("-", 1)[0], list(res["runs"]).index(kv[0]))):
        n, algorithm = key.split("-", 1)
        peaks = " | ".join(f"{r['peak_utilisation'][x]:.3f}" for x in names)
        lim = res["runs"].get("r0-limit")
        over = (f"{r['spread_time_avg'] / lim['spread_time_avg']:.2f}x"
                if lim and lim["spread_time_avg"] else "n/a")
        ref_over = f"{r['refused'] / lim['refused']:.2f}x" if lim and lim["refused"] else "n/a"
        shown = ("—", "**limit** (omniscient, simulated)") if key == "r0-limit" else (n[1:], algorithm)
        lines.append(f"| {shown[0]} | {shown[1]} | {peaks} | {r['spread_time_avg']:.3f} | {over} | "
                     f"{r['refused_with_room']} | {r['refused']} | {ref_over} | {r['substation_refusals']} | "
                     f"{r['accepted']} of {r['sent']} |")
    lines += ["", f"3 replicas against 1 (goal: spread and refused-with-room within {GOAL_RATIO:g}x):", "",
              "| algorithm | spread 1 → 3 | ratio | refused with room 1 → 3 | ratio | refused 1 → 3 | within goal |",
              "| --- | --- | ---: | --- | ---: | --- | --- |"]
    for algorithm, c in res["comparison"].items():
        r1, r3 = res["runs"][f"r1-{algorithm}"], res["runs"][f"r3-{algorithm}"]
        lines.append(
            f"| {algorithm} | {r1['spread_time_avg']:.3f} → {r3['spread_time_avg']:.3f} | {fmt_ratio(c['spread_ratio'])} | "
            f"{r1['refused_with_room']} → {r3['refused_with_room']} | {fmt_ratio(c['refused_with_room_ratio'])} | "
            f"{r1['refused']} → {r3['refused']} | {'yes' if c['within_goal'] else 'no'} |")
    lines += ["", "![utilisation over time, 1 and 3 replicas](results/replicas.png)", ""]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rate")
    r.add_argument("--model", required=True, help="ev-demand --describe's output")
    r.add_argument("--streams", type=int, default=1)
    r.add_argument("--capacity-kw", type=float, required=True)
    r.add_argument("--load", type=float, required=True)
    r.add_argument("--time-scale", type=float, required=True)
    a = sub.add_parser("analyse")
    a.add_argument("work")
    a.add_argument("out")
    a.add_argument("--runs", required=True)
    for name, kind in (("streams", int), ("seconds", float), ("rate", float), ("load", float), ("seed", int),
                       ("time-scale", float), ("hz", float)):
        a.add_argument(f"--{name}", type=kind, required=True)
    a.add_argument("--build", default="release")
    args = ap.parse_args()
    if args.cmd == "rate":
        with open(args.model) as f:
            rate = offered_rate(json.load(f), args.capacity_kw, args.load, args.time_scale)
        print(f"{rate:.3f} {rate / args.streams:.4f}")
        return
    keys = args.runs.split()
    runs = {k: analyse(args.work, k, args.streams, args.seconds, args.time_scale) for k in keys}
    models = {json.dumps(r.pop("model"), sort_keys=True) for r in runs.values()} - {"null"}
    if len(models) != 1:
        raise SystemExit("the runs' ev-demand summaries state different demand models")
    model = json.loads(models.pop())
    settings = {"seconds": args.seconds, "rate": args.rate, "load": args.load, "seed": args.seed,
                "streams": args.streams, "time_scale": args.time_scale, "hz": args.hz, "build": args.build,
                "mean_session_energy_kw_s": model["mean_session_energy_kw_s"], "demand_model": model}
    os.makedirs(args.out, exist_ok=True)
    # Rows: 1 replica, then 3; columns: the algorithms.
    order = sorted(keys, key=lambda k: (k.split("-", 1)[0], keys.index(k)))
    label = lambda k: ("limit (omniscient)" if k == "r0-limit" else
                       f"{k.split('-', 1)[1]}, {k[1:].split('-', 1)[0]} replica{'s' if not k.startswith('r1-') else ''}")
    labelled = {label(k): runs[k] for k in order}
    cols = len({k.split("-", 1)[1] for k in keys})
    plot(labelled, list(labelled), os.path.join(args.out, "replicas.png"), settings, cols=cols,
         suptitle=f"Utilisation over time, 1 and 3 gridlb replicas, constant demand at {args.load:g}x capacity "
                  f"({args.rate:.1f} sessions/s), sampled at {args.hz:g} Hz")
    for v in runs.values():
        del v["plot"]
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": json.load(open(os.path.join(args.work, "machine.json"))),
        "settings": settings,
        "runs": runs,
        "comparison": compare(runs),
    }
    publish(args.out, "replicas", res, markdown(res), runs)


if __name__ == "__main__":
    main()
