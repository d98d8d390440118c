#!/usr/bin/env python3
"""Medians of the throughput benchmark (bench/scripts/throughput writes its work files).

usage: analyze_throughput.py WORK_DIR OUT_DIR --reps N --seconds S --rates "1000 4000" --connections C
                             [--build release|dev]

Reads from WORK_DIR: full-oha-CFG-REP.json (oha), full-wrk-CFG-REP.txt (wrk, its last line is
the JSON of post.lua's done()), rateR-CFG-REP.json, cpu.txt (CPU ticks of each proxy before and
after each full-speed run), rss.txt, syscalls.txt with syscalls-NAME.json, bursts.json
(bench/scripts/idle-bursts), gridlb-final-rss.txt and machine.json. Writes
OUT_DIR/throughput.json and OUT_DIR/throughput.md.
"""
import argparse
import datetime
import json
import os
import statistics

CONFIGS = ["direct", "gridlb", "bare", "floor", "floor-proxy", "nginx", "haproxy", "envoy", "caddy"]
PROXIES = CONFIGS[1:]
CLIENTS = ["oha", "wrk"]
LABELS = {
    "direct": "client → substation (no proxy)",
    "gridlb": "gridlb (least-load)",
    "bare": "bare Pingora (round robin)",
    "floor": "Pingora answering itself (no upstream)",
    "floor-proxy": "Pingora answering itself through pingora-proxy",
    "nginx": "nginx (least_conn)",
    "haproxy": "HAProxy (leastconn + agent)",
    "envoy": "Envoy (LEAST_REQUEST)",
    "caddy": "Caddy (least_conn)",
}


def load_oha(path):
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
        "answered": sum(codes.values()),
        "non_201": total - codes.get("201", 0),
        "errors": errors,
        "statuses": codes,
    }


def load_wrk(path):
    with open(path) as f:
        line = [x for x in f.read().splitlines() if x.startswith("{")][-1]
    d = json.loads(line)
    socket_errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return {
        "rps": d["requests"] / (d["duration_us"] / 1e6),
        "p50_ms": d["p50_us"] / 1e3,
        "p99_ms": d["p99_us"] / 1e3,
        "requests": d["requests"],
        "answered": d["requests"],
        # wrk counts answers outside 2xx/3xx as status errors (a 201 is the only 2xx here).
        "non_201": d["status"] + socket_errors,
        "errors": socket_errors,
    }


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def runs_of(work, name, reps, loader):
    out = []
    for r in range(1, reps + 1):
        path = os.path.join(work, name.format(rep=r))
        if os.path.exists(path):
            run = loader(path)
            run["rep"] = r
            out.append(run)
    return out


def cpu_ticks(work):
    """{(client, cfg, rep): (user, system) CPU seconds of the proxy over that run}."""
    out, hz = {}, 100
    path = os.path.join(work, "cpu.txt")
    if not os.path.exists(path):
        return out
    for line in open(path):
        parts = line.split()
        if parts[:1] == ["clk_tck"]:
            hz = int(parts[1])
        elif len(parts) == 7 and parts[1] != "direct":
            u0, s0, u1, s1 = (int(p) for p in parts[3:])
            out[(parts[0], parts[1], int(parts[2]))] = ((u1 - u0) / hz, (s1 - s0) / hz)
    return out


def full_speed(work, reps):
    cpu = cpu_ticks(work)
    out = {}
    for client in CLIENTS:
        out[client] = {}
        for cfg in CONFIGS:
            if client == "oha":
                runs = runs_of(work, f"full-oha-{cfg}-{{rep}}.json", reps, load_oha)
            else:
                runs = runs_of(work, f"full-wrk-{cfg}-{{rep}}.txt", reps, load_wrk)
            for run in runs:
                split = cpu.get((client, cfg, run["rep"]))
                per = (lambda secs: secs / run["answered"] * 1e6) if split and run["answered"] else None
                run["cpu_s"] = sum(split) if split else None
                run["cpu_us_per_request"] = per(sum(split)) if per else None
                run["cpu_user_us_per_request"] = per(split[0]) if per else None
                run["cpu_system_us_per_request"] = per(split[1]) if per else None
            out[client][cfg] = {
                "runs": runs,
                "rps": med([r["rps"] for r in runs]),
                "cpu_us_per_request": med([r["cpu_us_per_request"] for r in runs]),
                "non_201": sum(r["non_201"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
            }
    return out


def fixed_rates(work, reps, rates):
    out = {}
    for rate in rates:
        cfgs = {}
        for cfg in CONFIGS:
            runs = runs_of(work, f"rate{rate}-{cfg}-{{rep}}.json", reps, load_oha)
            cfgs[cfg] = {
                "runs": runs,
                "rps": med([r["rps"] for r in runs]),
                "p50_ms": med([r["p50_ms"] for r in runs]),
                "p99_ms": med([r["p99_ms"] for r in runs]),
                "non_201": sum(r["non_201"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
            }
        base = cfgs["direct"]
        for cfg in CONFIGS:
            c = cfgs[cfg]
            for p in ("p50", "p99"):
                ok = c[f"{p}_ms"] is not None and base[f"{p}_ms"] is not None
                c[f"added_{p}_ms"] = c[f"{p}_ms"] - base[f"{p}_ms"] if ok else None
            # Added p99 round by round (each round's direct run is its baseline), for the notes.
            by_rep = {r["rep"]: r["p99_ms"] for r in base["runs"]}
            c["added_p99_ms_per_round"] = [r["p99_ms"] - by_rep[r["rep"]] for r in c["runs"] if r["rep"] in by_rep]
        out[str(rate)] = cfgs
    return out


def rss(work):
    path = os.path.join(work, "rss.txt")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    names = lines[0].split()[1:] if lines and lines[0].startswith("time") else ["gridlb", "nginx", "haproxy"]
    cols = {name: [] for name in names}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == len(names) + 1:
            for name, value in zip(names, parts[1:]):
                cols[name].append(int(value) / 1024)
    result = {name: {"idle_mib": v[0] if v else None, "max_mib": max(v) if v else None} for name, v in cols.items()}
    final = os.path.join(work, "gridlb-final-rss.txt")
    if os.path.exists(final) and "gridlb" in result:
        parts = open(final).read().split()
        if len(parts) == 2:
            result["gridlb"]["hwm_mib"] = int(parts[1]) / 1024
    return result


def syscalls(work):
    path = os.path.join(work, "syscalls.txt")
    if not os.path.exists(path):
        return {"tool": None, "proxies": {}}
    lines = open(path).read().splitlines()
    head = lines[0].split()
    tool, requests = head[1], int(head[3])
    out = {}
    for line in lines[1:]:
        name, count = line.split()
        answered = requests
        js = os.path.join(work, f"syscalls-{name}.json")
        if os.path.exists(js):
            answered = load_oha(js)["answered"] or requests
        n = None if count == "n/a" else float(count)
        out[name] = {"system_calls": n, "requests": answered,
                     "per_request": n / answered if n is not None and answered else None}
    return {"tool": tool, "requests": requests, "connections": 16, "proxies": out}


def bursts(work):
    path = os.path.join(work, "bursts.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        b = json.load(f)
    out = {"settings": b["settings"], "proxies": {}}
    for name, t in b["targets"].items():
        idle = t["idle_kib"]
        back = t["back_within_2x_after_s"]
        out["proxies"][name] = {
            "idle_mib": idle / 1024,
            "peak_mib": t["peak_kib"] / 1024,
            "end_mib": t["end_kib"] / 1024,
            "back_within_2x_after_s": back,
            # Back within 2x the idle RSS inside the watch, and still there at its end.
            "back_within_2x": back is not None and t["end_kib"] <= 2 * idle,
            "opened": t["opened"],
            "series_mib": [[s, v / 1024] for s, v in t["series"]],
        }
    return out


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
    ap.add_argument("--build", default="release")
    a = ap.parse_args()
    rates = [int(r) for r in a.rates.split()]
    full = full_speed(a.work, a.reps)
    def cpu_median(key):
        return {cfg: med([r[key] for c in CLIENTS for r in full[c][cfg]["runs"]]) for cfg in PROXIES}
    cpu_all = cpu_median("cpu_us_per_request")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": json.load(open(os.path.join(a.work, "machine.json"))),
        "settings": {"reps": a.reps, "seconds": a.seconds, "rates": rates, "connections": a.connections,
                     "fixed_rate_connections": 32, "build": a.build, "clients": CLIENTS,
                     "wrk_threads": 2},
        "full_speed": full,
        "cpu_us_per_request": cpu_all,
        "cpu_user_us_per_request": cpu_median("cpu_user_us_per_request"),
        "cpu_system_us_per_request": cpu_median("cpu_system_us_per_request"),
        "fixed_rate": fixed_rates(a.work, a.reps, rates),
        "rss": rss(a.work),
        "syscalls": syscalls(a.work),
        "bursts": bursts(a.work),
        "ratios": {client: {
            "gridlb_over_nginx": ratio(full[client]["gridlb"]["rps"], full[client]["nginx"]["rps"]),
            "gridlb_over_haproxy": ratio(full[client]["gridlb"]["rps"], full[client]["haproxy"]["rps"]),
            "gridlb_over_bare": ratio(full[client]["gridlb"]["rps"], full[client]["bare"]["rps"]),
            "bare_over_nginx": ratio(full[client]["bare"]["rps"], full[client]["nginx"]["rps"]),
            "floor_over_nginx": ratio(full[client]["floor"]["rps"], full[client]["nginx"]["rps"]),
        } for client in CLIENTS},
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
    build = "" if s.get("build", "release") == "release" else f" ({s['build']} build)"
    lines = [
        f"Full speed{build}: oha and wrk (2 threads), {s['connections']} keep-alive connections each, "
        f"{fmt(s['seconds'], 'g')} s per run, {s['reps']} interleaved rounds (order rotated each round); "
        "median of the rounds. CPU per request: the proxy's user + system CPU time over the run "
        "(every process and thread, /proc/PID/stat) divided by the requests answered. Fixed rates: oha "
        "`-q R --latency-correction`, 32 connections. Added latency = the proxy's percentile minus the "
        "direct client's.",
        "",
        "| configuration | req/s oha | req/s wrk | CPU µs/request (oha, wrk) | oha per round | wrk per round | non-201 answers |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    full = r["full_speed"]
    for cfg in CONFIGS:
        o, w = full["oha"][cfg], full["wrk"][cfg]
        cpu = "" if cfg == "direct" else f"{fmt(o['cpu_us_per_request'], '.1f')}, {fmt(w['cpu_us_per_request'], '.1f')}"
        per = lambda c: ", ".join(fmt(x["rps"]) for x in c["runs"])
        lines.append(f"| {LABELS[cfg]} | {fmt(o['rps'])} | {fmt(w['rps'])} | {cpu} | {per(o)} | {per(w)} | "
                     f"{o['non_201'] + w['non_201']} of {o['requests'] + w['requests']} |")
    lines.append("")
    for client in CLIENTS:
        ra = r["ratios"][client]
        lines.append(f"{client}: gridlb / nginx = **{fmt(ra['gridlb_over_nginx'], '.2f')}**, gridlb / HAProxy = "
                     f"**{fmt(ra['gridlb_over_haproxy'], '.2f')}**, gridlb / bare Pingora = "
                     f"{fmt(ra['gridlb_over_bare'], '.2f')}, bare Pingora / nginx = {fmt(ra['bare_over_nginx'], '.2f')}, "
                     f"Pingora answering itself / nginx = {fmt(ra.get('floor_over_nginx'), '.2f')} "
                     "(req/s at full speed).  ")
    lines.append("")
    for rate, cfgs in r["fixed_rate"].items():
        lines += [f"At {rate} req/s (medians, ms):", "",
                  "| configuration | achieved req/s | p50 | p99 | added p50 | added p99 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for cfg in CONFIGS:
            c = cfgs[cfg]
            if not c["runs"]:
                continue
            lines.append(f"| {LABELS[cfg]} | {fmt(c['rps'])} | {fmt(c['p50_ms'], '.3f')} | {fmt(c['p99_ms'], '.3f')} | "
                         f"{fmt(c['added_p50_ms'], '.3f')} | {fmt(c['added_p99_ms'], '.3f')} |")
        lines.append("")
    sc, m = r["syscalls"], r["rss"]
    tool = {"perf": "perf stat, `raw_syscalls:sys_enter`", "strace": "strace -c"}.get(sc["tool"], "not measured")
    lines += [f"Per proxy: CPU per request (median of every full-speed run, both clients), system calls per "
              f"request ({tool}, {sc.get('requests', 'n/a')} requests over 16 connections, every thread and "
              "process of the proxy), resident memory (RSS) during the load runs, MiB:", "",
              "| proxy | CPU µs/request | user, system µs (medians) | system calls/request | RSS idle | RSS max under load |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in PROXIES:
        calls = sc["proxies"].get(name, {}).get("per_request")
        mm = m.get(name, {})
        user = r.get("cpu_user_us_per_request", {}).get(name)
        system = r.get("cpu_system_us_per_request", {}).get(name)
        lines.append(f"| {LABELS[name]} | {fmt(r['cpu_us_per_request'].get(name), '.1f')} | "
                     f"{fmt(user, '.1f')}, {fmt(system, '.1f')} | {fmt(calls, '.2f')} | "
                     f"{fmt(mm.get('idle_mib'), '.1f')} | {fmt(mm.get('max_mib'), '.1f')} |")
    lines += ["", "(nginx: master and workers added up.)", ""]
    b = r.get("bursts")
    if b:
        st = b["settings"]
        lines += [f"Idle-connection bursts (fresh proxies): {st['connections']} idle connections to every proxy at "
                  f"once, held {fmt(st['hold_s'], 'g')} s and dropped, {st['bursts']} times; then the RSS every "
                  f"{fmt(st['interval_s'], 'g')} s for {fmt(st['watch_s'], 'g')} s. MiB:", "",
                  "| proxy | idle | peak | at the end | back within 2x idle | connections per burst |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        for name in PROXIES:
            p = b["proxies"].get(name)
            if not p:
                continue
            back = (f"yes, {p['back_within_2x_after_s']:.1f} s after the last burst" if p["back_within_2x"]
                    else "**no**")
            lines.append(f"| {LABELS[name]} | {p['idle_mib']:.1f} | {p['peak_mib']:.1f} | {p['end_mib']:.1f} | "
                         f"{back} | {', '.join(str(x) for x in p['opened'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
