#!/usr/bin/env python3
"""Figures and plots of the spread benchmark (bench/scripts/spread writes the inputs).

usage: analyze_spread.py WORK_DIR OUT_DIR --routers "limit least-load ..." --seconds S --rate R
                         --seed N --time-scale X --hz H --build PROFILE [--profile P]

"limit" is the omniscient placement of the same demand in simulated time (grid-limit writes the
same files as a real run); every other router's spread and refusals are also given as a ratio to
it. Runs whose client retried refusals (retry-*) also report retries sent and accepted and
attempts per accepted session, from ev-demand's summary.

Per router, from WORK_DIR/ROUTER-load.csv (the substations' own /load, sampled),
ROUTER-events.csv and ROUTER-summary.json (ev-demand) and ROUTER-NAME.metrics:
- peak utilisation of each substation (load / capacity, as the substation reports it);
- time-averaged spread: the mean over the demand window of (max - min utilisation);
- sessions refused while another substation had room: a 503 for P kW when, in the last sample
  taken before the request was sent, some substation had load + P <= capacity;
- sessions refused in all, and refusals by substations that the router retried elsewhere;
- energy delivered: the integral of the total load over the demand window, in simulated kWh.
Writes OUT_DIR/spread.json, spread.md and spread.png.
"""
import argparse
import bisect
import csv
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in bench/analysis/ from the import below
import matplotlib  # noqa: E402
import prom  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOM_EPS = 1e-6


def ticks(path):
    """[(t_unix, {name: (load, capacity)})], complete ticks only, in time order."""
    by_t = {}
    names = set()
    with open(path) as f:
        for row in csv.DictReader(f):
            names.add(row["substation"])
            by_t.setdefault(float(row["t_unix"]), {})[row["substation"]] = (
                float(row["load_kw"]), float(row["capacity_kw"]))
    return sorted((t, subs) for t, subs in by_t.items() if len(subs) == len(names)), sorted(names)


def events(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def utilisation(tick, name):
    load, cap = tick[name]
    return load / cap


def window_stats(series, names, start, end):
    """Over the samples in [start, end]: peak and mean utilisation per substation, the
    time-weighted mean spread (max - min utilisation) and the energy integral (trapezoids, kW s)."""
    window = [(t, s) for t, s in series if start <= t <= end]
    util = utilisation
    peak = {n: max((util(s, n) for _, s in window), default=0.0) for n in names}
    mean_util = {n: (sum(util(s, n) for _, s in window) / len(window) if window else 0.0) for n in names}
    spread_area = energy_kw_s = 0.0
    for (t0, s0), (t1, s1) in zip(window, window[1:]):
        dt = t1 - t0
        sp0 = max(util(s0, n) for n in names) - min(util(s0, n) for n in names)
        sp1 = max(util(s1, n) for n in names) - min(util(s1, n) for n in names)
        spread_area += (sp0 + sp1) / 2 * dt
        energy_kw_s += (sum(s0[n][0] for n in names) + sum(s1[n][0] for n in names)) / 2 * dt
    span = window[-1][0] - window[0][0] if len(window) > 1 else 0.0
    return {
        "window": window,
        "peak_utilisation": peak,
        "mean_utilisation": mean_util,
        "spread_time_avg": spread_area / span if span else None,
        "energy_kw_s": energy_kw_s,
        "capacity_kw": {n: window[0][1][n][1] if window else None for n in names},
    }


def refusals_with_room(series, refusals):
    """refusals: [(t_unix sent, power_kw)] of the 503 answers. Returns (refused, with room,
    with room that persisted): a refusal is "with room" when, in the last sample taken before the
    request was sent, some substation had load + power <= capacity; it persisted when that
    substation still had the room in the next sample (the router's view was behind, not a race
    with a booking between the sample and the request)."""
    times = [t for t, _ in series]
    with_room = persisted = 0
    for t, kw in refusals:
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            continue
        room = lambda tick: {n for n, (load, cap) in tick.items() if load + kw <= cap + ROOM_EPS}
        before = room(series[i][1])
        if before:
            with_room += 1
            if i + 1 < len(series) and before & room(series[i + 1][1]):
                persisted += 1
    return len(refusals), with_room, persisted


def substation_refusals(work, prefix, names):
    """Sessions the substations themselves refused (the router retried them elsewhere)."""
    return int(sum(
        prom.total_in_file(os.path.join(work, f"{prefix}-{n}.metrics"), "substation_sessions_total", result="refused")
        for n in names))


def analyse(work, router, seconds, scale):
    summary = json.load(open(os.path.join(work, f"{router}-summary.json")))
    series, names = ticks(os.path.join(work, f"{router}-load.csv"))
    start = summary["started_unix"]
    st = window_stats(series, names, start, start + seconds)
    window = st["window"]
    times = [t for t, _ in series]
    accepted_kw = {n: [] for n in names}
    refusals = []
    for e in events(os.path.join(work, f"{router}-events.csv")):
        if e["status"].startswith("2") and e["substation"] in accepted_kw:
            accepted_kw[e["substation"]].append(float(e["power_kw"]))
        if e["status"] == "503":
            refusals.append((start + float(e["sent_at_s"]), float(e["power_kw"])))
    refused, with_room, room_persisted = refusals_with_room(series, refusals)
    all_kw = [kw for v in accepted_kw.values() for kw in v]
    mean_kw = sum(all_kw) / len(all_kw) if all_kw else 0.0
    return {
        "names": names,
        "capacity_kw": st["capacity_kw"],
        "peak_utilisation": st["peak_utilisation"],
        "mean_utilisation": st["mean_utilisation"],
        "spread_time_avg": st["spread_time_avg"],
        "refused_with_room": with_room,
        "refused_with_room_persisting": room_persisted,
        "mean_session_kw": mean_kw,
        "session_step": {n: mean_kw / window[0][1][n][1] for n in names} if window else {},
        "spread_without_smallest_time_avg": pair_spread(window, names),
        "refused": refused,
        "substation_refusals": substation_refusals(work, router, names),
        "sent": summary["sent"],
        "accepted": summary["accepted"],
        "errors": summary["errors"],
        "share": {n: v["share"] for n, v in summary["substations"].items()},
        "energy_delivered_kwh": st["energy_kw_s"] * scale / 3600.0,
        "retries_sent": summary.get("retries_sent", 0),
        "retries_accepted": summary.get("retries_accepted", 0),
        "attempts_per_accepted": summary.get("attempts_per_accepted"),
        "vehicles": summary["sent"] - summary.get("retries_sent", 0),
        "samples": len(window),
        "sample_gaps_max_s": max((b - a for a, b in zip(times, times[1:])), default=None),
        "plot": [(t - start, {n: utilisation(s, n) for n in names}) for t, s in series],
    }


def pair_spread(window, names):
    """Time-averaged spread among every substation but the smallest."""
    if len(window) < 2 or len(names) < 3:
        return None
    smallest = min(names, key=lambda n: window[0][1][n][1])
    rest = [n for n in names if n != smallest]
    area = 0.0
    for (t0, s0), (t1, s1) in zip(window, window[1:]):
        sp = lambda s: max(s[n][0] / s[n][1] for n in rest) - min(s[n][0] / s[n][1] for n in rest)
        area += (sp(s0) + sp(s1)) / 2 * (t1 - t0)
    return area / (window[-1][0] - window[0][0])


def plot(results, routers, path, settings, cols=3, suptitle=None):
    """One panel per key of `results` (in the order of `routers`): each substation's
    utilisation over time."""
    rows = (len(routers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows), sharex=True, sharey=True, squeeze=False)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for ax, router in zip(axes.flat, routers):
        r = results[router]
        ts = [t for t, _ in r["plot"]]
        for colour, n in zip(colours, r["names"]):
            cap = r["capacity_kw"][n]
            ax.plot(ts, [u[n] for _, u in r["plot"]], color=colour, lw=1.2,
                    label=f"{n} ({cap:.0f} kW)" if cap else n)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_ylim(0, 1.1)
        ax.set_xlim(0, settings["seconds"])
        sp = r["spread_time_avg"]
        ax.set_title(f"{router}: spread {sp:.3f}, refused {r['refused']} ({r['refused_with_room']} with room)",
                     fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(routers):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds from the start of demand")
    for ax in axes[:, 0]:
        ax.set_ylabel("utilisation (load / capacity)")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(suptitle or (
        f"Utilisation over time, rush-hour demand (peak {settings['rate']:g} sessions/s, "
        f"seed {settings['seed']}, 1 h = {3600 / settings['time_scale']:g} s), sampled at "
        f"{settings['hz']:g} Hz"), fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def against_limit(results):
    """Each run's spread and refusals as ratios to the limit's, and refusals over the limit as a
    share of the vehicles offered; in place."""
    lim = results.get("limit")
    if not lim:
        return
    for r in results.values():
        r["spread_over_limit"] = (r["spread_time_avg"] / lim["spread_time_avg"]
                                  if lim["spread_time_avg"] else None)
        r["refused_over_limit"] = r["refused"] / lim["refused"] if lim["refused"] else None
        r["excess_refused_share"] = ((r["refused"] - lim["refused"]) / r["vehicles"]
                                     if r["vehicles"] else None)


def ratio_cell(v):
    return "n/a" if v is None else f"{v:.2f}x"


def limit_table(names, caps, runs, label="router"):
    """The table rows, the limit first, with ratios to it."""
    head = " | ".join(f"peak {n} ({caps[n]:.0f} kW)" for n in names)
    lines = [
        f"| {label} | {head} | spread (time avg) | spread / limit | refused with room | refused | refused / limit | substation refusals (retried) | accepted | energy delivered (kWh) |",
        "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for router, r in runs.items():
        peaks = " | ".join(f"{r['peak_utilisation'][n]:.3f}" for n in names)
        shown = "**limit** (omniscient, simulated)" if router.endswith("limit") else router
        lines.append(
            f"| {shown} | {peaks} | {r['spread_time_avg']:.3f} | {ratio_cell(r.get('spread_over_limit'))} | "
            f"{r['refused_with_room']} | {r['refused']} | {ratio_cell(r.get('refused_over_limit'))} | "
            f"{r['substation_refusals']} | {r['accepted']} of {r['sent']} | {r['energy_delivered_kwh']:.0f} |")
    return lines


def retry_table(runs):
    """Runs whose client came back after refusals: retries and attempts per accepted session."""
    rows = {k: r for k, r in runs.items() if k.startswith("retry-")}
    if not rows:
        return []
    lines = ["", "Refused clients coming back (ev-demand `--retries 3`, least-load): `retry-honest` waits "
             "the `Retry-After` gridlb (or the substation) gave, `retry-constant` a constant 1 s (gridlb's "
             "answer before it knew when sessions end; one probe interval, rounded up).", "",
             "| run | vehicles | accepted | retries sent | retries accepted | attempts per accepted session |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k, r in rows.items():
        apa = r["attempts_per_accepted"]
        lines.append(f"| {k} | {r['vehicles']} | {r['accepted']} | {r['retries_sent']} | {r['retries_accepted']} | "
                     f"{'n/a' if apa is None else f'{apa:.3f}'} |")
    return lines


def markdown(res):
    s = res["settings"]
    first = res["routers"][next(iter(res["routers"]))]
    names, caps = first["names"], first["capacity_kw"]
    demand = ("Rush-hour demand" if s.get("profile", "rush-hour") == "rush-hour"
              else f"{s['profile'].capitalize()} demand")
    lines = [
        f"{demand} for {s['seconds']:g} s (peak {s['rate']:g} sessions/s, seed {s['seed']}, "
        f"one simulated hour = {3600 / s['time_scale']:g} s), the same for every router; fresh substations "
        f"for each; /load sampled at {s['hz']:g} Hz; {s['build']} build. The first row is the limit: the "
        "same arrivals placed by an omniscient least-load router in simulated time (`grid-limit`: it knows "
        "each session's start and end the instant they happen, no network, no lag), sampled alike.",
        "",
    ]
    lines += limit_table(names, caps, res["routers"])
    lines += retry_table(res["routers"])
    lines += ["", "![utilisation over time](results/spread.png)", ""]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--routers", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--time-scale", type=float, required=True)
    ap.add_argument("--hz", type=float, required=True)
    ap.add_argument("--build", default="release")
    ap.add_argument("--profile", default="rush-hour")
    a = ap.parse_args()
    routers = a.routers.split()
    settings = {"seconds": a.seconds, "rate": a.rate, "seed": a.seed, "time_scale": a.time_scale,
                "hz": a.hz, "build": a.build, "profile": a.profile}
    results = {r: analyse(a.work, r, a.seconds, a.time_scale) for r in routers}
    against_limit(results)
    os.makedirs(a.out, exist_ok=True)
    plot(results, routers, os.path.join(a.out, "spread.png"), settings)
    for r in results.values():
        del r["plot"]
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": json.load(open(os.path.join(a.work, "machine.json"))),
        "settings": settings,
        "routers": results,
    }
    publish(a.out, "spread", res, markdown(res), results)


def publish(out, stem, res, md, runs):
    """Write OUT/STEM.json and OUT/STEM.md, print the markdown, and fail (exit non-zero) when a
    run has too few samples or sent nothing: the benchmarks fail on errors, not on numbers."""
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    bad = [k for k, v in runs.items() if v["samples"] < 10 or v["sent"] == 0]
    if bad:
        raise SystemExit(f"no usable samples or demand for: {', '.join(bad)}")


if __name__ == "__main__":
    main()
