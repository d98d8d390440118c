#!/usr/bin/env python3
"""Write bench/RESULTS.md from the latest results in bench/results/ (each benchmark script
calls this at its end). Nothing in RESULTS.md is written by hand: the figures, the verdicts
against the targets and the diagnosis of a missed target all come from the result files
(throughput.json, spread.json, replicas.json, micro.json, k6.json, instructions.json, profile.txt)."""
import json
import os
import re

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(BENCH, "results")


def load(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f) if name.endswith(".json") else f.read()


def read_md(name):
    path = os.path.join(RESULTS, name)
    return open(path).read() if os.path.exists(path) else None


def machine_line(m):
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']} (kernel {m['kernel']}), "
            f"{m['rustc']}; load average at start {' '.join(m['loadavg_at_start'])}")


def verdict(ok):
    return "**met**" if ok else "**missed**"


def micro_row(micro, group, function, n):
    if not micro:
        return None
    for r in micro["results"]:
        if (r["group"], r["function"], r["substations"]) == (group, function, n):
            return r
    return None


def targets(tp, spread, micro, profile, replicas=None, instructions=None):
    rows, notes = [], []
    if tp:
        throughput_targets(tp, profile, rows, notes, instructions)
    if micro:
        sel = micro_row(micro, "grid_select", "least-load", 1024)
        sel_p2c = micro_row(micro, "grid_select", "p2c", 1024)
        if sel:
            us = lambda r: f"{r['median_ns'] / 1000:.2f} µs" if r["median_ns"] >= 1000 else f"{r['median_ns']:.0f} ns"
            rows.append(("one selection under 1 µs with 1024 substations (least-load, the default)",
                         f"Grid::select {us(sel)}", verdict(sel["median_ns"] < 1000)))
            if sel_p2c:
                rows.append(("one selection under 1 µs with 1024 substations (p2c)",
                             f"Grid::select {us(sel_p2c)}", verdict(sel_p2c["median_ns"] < 1000)))
            if sel["median_ns"] >= 1000:
                notes.append(selection_note(micro, load("profile-selection.txt")))
    if spread:
        ll = spread["routers"].get("least-load")
        lim = spread["routers"].get("limit")
        if ll:
            within = all(v <= 1.0 + 1e-9 for v in ll["peak_utilisation"].values())
            rows.append(("least-load keeps every substation within capacity",
                         "peaks " + ", ".join(f"{n} {v:.3f}" for n, v in ll["peak_utilisation"].items()),
                         verdict(within)))
            rows.append(("least-load: zero sessions refused while another substation had room",
                         f"{ll['refused_with_room']} of {ll['refused']} refusals", verdict(ll["refused_with_room"] == 0)))
            missed = ll["refused_with_room"] > 0
            if lim:
                ok = ll["spread_time_avg"] <= 1.05 * lim["spread_time_avg"] + 1e-9
                rows.append(("least-load: time-averaged spread at most 1.05x the omniscient limit's",
                             f"{ll['spread_time_avg']:.3f} vs limit {lim['spread_time_avg']:.3f} "
                             f"({ll['spread_over_limit']:.2f}x)", verdict(ok)))
                allowed = lim["refused"] + 0.02 * ll["vehicles"]
                ok_ref = ll["refused"] <= allowed
                rows.append(("least-load: refusals at most the limit's + 2 % of the sessions offered",
                             f"{ll['refused']} vs limit {lim['refused']} (+2 % of {ll['vehicles']}: at most "
                             f"{allowed:.0f})", verdict(ok_ref)))
                missed = missed or not ok or not ok_ref
            honest, const = spread["routers"].get("retry-honest"), spread["routers"].get("retry-constant")
            if honest and const and honest["attempts_per_accepted"] and const["attempts_per_accepted"]:
                ok = honest["attempts_per_accepted"] < const["attempts_per_accepted"]
                rows.append(("honest Retry-After: fewer client attempts per accepted session than a constant 1 s",
                             f"{honest['attempts_per_accepted']:.3f} vs {const['attempts_per_accepted']:.3f} "
                             f"(retries accepted {honest['retries_accepted']} of {honest['retries_sent']} vs "
                             f"{const['retries_accepted']} of {const['retries_sent']})", verdict(ok)))
                notes.append(retry_note(honest, const, ok))
            if missed:
                notes.append(spread_note(spread))
            peers = peers_note(spread)
            if peers:
                notes.append(peers)
    if replicas:
        c = replicas["comparison"].get("least-load")
        if c:
            r1, r3 = replicas["runs"]["r1-least-load"], replicas["runs"]["r3-least-load"]
            ratio = lambda v: "n/a (one replica: 0)" if v is None else f"{v:.2f}x"
            ok_spread = c["spread_ratio"] is not None and c["spread_ratio"] <= 1.5 + 1e-9
            ok_room = c["refused_with_room_ratio"] is not None and c["refused_with_room_ratio"] <= 1.5 + 1e-9
            rows.append(("3 gridlb replicas, least-load: time-averaged spread within 1.5x of one replica's",
                         f"{r1['spread_time_avg']:.3f} → {r3['spread_time_avg']:.3f} ({ratio(c['spread_ratio'])})",
                         verdict(ok_spread)))
            ok_tight = c["spread_ratio"] is not None and c["spread_ratio"] <= 1.1 + 1e-9
            rows.append(("3 gridlb replicas, least-load: time-averaged spread within 1.1x of one replica's",
                         f"{ratio(c['spread_ratio'])}", verdict(ok_tight)))
            if not ok_tight:
                notes.append(tight_replicas_note(replicas))
            lim = replicas["runs"].get("r0-limit")
            if lim and lim["spread_time_avg"]:
                rows.append(("least-load, constant demand: spread at most 1.05x the omniscient limit's (1 / 3 replicas)",
                             f"limit {lim['spread_time_avg']:.3f}; 1 replica {r1['spread_time_avg']:.3f} "
                             f"({r1['spread_time_avg'] / lim['spread_time_avg']:.2f}x), 3 replicas "
                             f"{r3['spread_time_avg']:.3f} ({r3['spread_time_avg'] / lim['spread_time_avg']:.2f}x)",
                             verdict(r1["spread_time_avg"] <= 1.05 * lim["spread_time_avg"] + 1e-9)))
            rows.append(("3 gridlb replicas, least-load: refused with room within 1.5x of one replica's",
                         f"{r1['refused_with_room']} → {r3['refused_with_room']} ({ratio(c['refused_with_room_ratio'])}; "
                         f"refusals in all {r1['refused']} → {r3['refused']})", verdict(ok_room)))
            notes.append(replicas_note(replicas, ok_spread and ok_room))
    return rows, notes


def tight_replicas_note(rep):
    runs = rep["runs"]
    r1, r3, lim = runs["r1-least-load"], runs["r3-least-load"], runs.get("r0-limit")
    text = (f"**Why 3 least-load replicas miss 1.1x of one.** Spread {r1['spread_time_avg']:.3f} with one "
            f"replica, {r3['spread_time_avg']:.3f} with three ({r3['spread_time_avg'] / r1['spread_time_avg']:.2f}x)")
    if lim:
        text += f"; the omniscient limit of the same arrivals is {lim['spread_time_avg']:.3f}"
    text += (f". Refusals by the substations themselves (retried elsewhere) go from {r1['substation_refusals']} to "
             f"{r3['substation_refusals']}: one replica's choice collides with another's bookings in flight. "
             "Each replica subtracts the power of only the sessions it routed (a third of them) when they end, "
             "so between two reports the replicas' views of the same substation differ by the sessions the "
             "others routed that have ended, and by the others' requests in flight; one replica alone knows "
             "every session and every request. Closing that gap needs shared state (which the design rules out) "
             "or more frequent reports: the substation's header on every answer already reaches each replica "
             "only for its own answers. One seed, a debug build and other builds on the same two cores: the "
             "previous release-build run of this benchmark (before session-end awareness) measured 0.067 → 0.076.")
    return text


def replicas_note(rep, met):
    runs, cmp_ = rep["runs"], rep["comparison"]
    r1, r3 = runs["r1-least-load"], runs["r3-least-load"]
    others = "; ".join(
        f"{a} spread {runs['r1-' + a]['spread_time_avg']:.3f} → {runs['r3-' + a]['spread_time_avg']:.3f}, "
        f"refused with room {runs['r1-' + a]['refused_with_room']} → {runs['r3-' + a]['refused_with_room']}"
        for a in cmp_ if a != "least-load")
    text = ("**Several replicas (bench/scripts/replicas).** " if met else "**Why 3 least-load replicas miss the 1.5x goal.** ")
    text += (f"least-load with 1 and 3 replicas: spread {r1['spread_time_avg']:.3f} → {r3['spread_time_avg']:.3f}, "
             f"refused with room {r1['refused_with_room']} → {r3['refused_with_room']}, refusals in all "
             f"{r1['refused']} → {r3['refused']}, refusals by the substations themselves (retried elsewhere) "
             f"{r1['substation_refusals']} → {r3['substation_refusals']}; the other algorithms: {others}. ")
    if met:
        text += ("No herding: every replica learns every substation's load from the `x-substation-load` header "
                 "of each answer, which counts the bookings of every replica, so the replicas' views differ only "
                 "by what is in flight elsewhere at that moment; and a replica that finds no room probes the "
                 "stale substations again before refusing. What one replica cannot see (another's requests in "
                 "flight) shows as substation refusals that gridlb retries on the next candidate, not as "
                 "sessions lost.")
    else:
        text += ("Each replica adds to a substation's last report only its own requests in flight, so for "
                 "the time between two reports the replicas see the same least-loaded substation and all send "
                 "to it; the substation refuses what does not fit (counted above as substation refusals, "
                 "retried on the next candidate). The `x-substation-load` header of every answer counts every "
                 "replica's bookings, and a replica re-probes stale substations before refusing, so the views "
                 "converge at each answer; what remains is the window of one request's round trip.")
    return text


def figures(values, names=None, spec=".1f", unit=""):
    """`gridlb 1.2, nginx 3.4` for the configurations that have a figure."""
    names = names or list(values)
    return ", ".join(f"{PROXY_NAMES.get(k, k)} {v:{spec}}{unit}" for k in names
                     if (v := values.get(k)) is not None)


PROXY_NAMES = {"bare": "bare Pingora", "floor": "Pingora answering itself",
               "floor-proxy": "Pingora answering itself through pingora-proxy", "haproxy": "HAProxy",
               "envoy": "Envoy", "caddy": "Caddy"}


def throughput_targets(tp, profile, rows, notes, instructions=None):
    """The throughput benchmark's verdict rows and, for a missed target, its diagnosis."""
    ratios, cpu = tp["ratios"], tp.get("cpu_us_per_request") or {}
    missed_cost = False
    for client in ("oha", "wrk"):
        ra = ratios.get(client) or {}
        pair = (ra.get("gridlb_over_nginx"), ra.get("gridlb_over_haproxy"))
        if None in pair:
            continue
        ok = min(pair) >= 1.0
        rows.append((f"gridlb req/s at least nginx's and HAProxy's ({client})",
                     f"gridlb/nginx {pair[0]:.2f}, gridlb/HAProxy {pair[1]:.2f}", verdict(ok)))
        missed_cost = missed_cost or not ok
    if cpu.get("gridlb") is not None and cpu.get("nginx") is not None:
        ok = cpu["gridlb"] <= cpu["nginx"]
        rows.append(("gridlb CPU time per request at most nginx's",
                     f"{cpu['gridlb']:.1f} µs vs nginx {cpu['nginx']:.1f} µs"
                     + (f" (bare Pingora {cpu['bare']:.1f} µs)" if cpu.get("bare") is not None else ""), verdict(ok)))
        missed_cost = missed_cost or not ok
    calls = {k: v["per_request"] for k, v in tp["syscalls"]["proxies"].items()}
    if calls.get("gridlb") is not None and calls.get("nginx") is not None:
        ok = calls["gridlb"] <= calls["nginx"] + 1e-9
        rows.append(("gridlb system calls per request at most nginx's",
                     f"{calls['gridlb']:.2f} vs nginx {calls['nginx']:.2f}"
                     + (f" (bare Pingora {calls['bare']:.2f})" if calls.get("bare") is not None else ""), verdict(ok)))
        missed_cost = missed_cost or not ok
    if missed_cost:
        notes.append(throughput_note(tp, profile, instructions))
    missed_latency = False
    for rate in ("1000", "4000"):
        f = tp["fixed_rate"].get(rate)
        if not f or f["gridlb"]["added_p99_ms"] is None or f["nginx"]["added_p99_ms"] is None:
            continue
        g, n = f["gridlb"]["added_p99_ms"], f["nginx"]["added_p99_ms"]
        rows.append((f"added p99 at most nginx's at {int(rate):,} req/s",
                     f"gridlb {g:.3f} ms vs nginx {n:.3f} ms", verdict(g <= n)))
        missed_latency = missed_latency or g > n
    f = tp["fixed_rate"].get("1000")
    if f and f["gridlb"]["added_p99_ms"] is not None:
        added = f["gridlb"]["added_p99_ms"]
        rows.append(("p99 added latency at most 1 ms at 1,000 req/s",
                     f"{added:.3f} ms (p99 {f['gridlb']['p99_ms']:.3f} ms vs {f['direct']['p99_ms']:.3f} ms direct)",
                     verdict(added <= 1.0)))
        missed_latency = missed_latency or added > 1.0
    if missed_latency:
        notes.append(latency_note(tp))
    rss = tp["rss"]
    g, n = rss["gridlb"]["max_mib"], (rss.get("nginx") or {}).get("max_mib")
    missed_memory = False
    if g is not None and n is not None:
        rows.append(("gridlb RSS under load at most nginx's", f"{g:.1f} MiB vs nginx {n:.1f} MiB at most",
                     verdict(g <= n)))
        missed_memory = g > n
    if g is not None:
        rows.append(("gridlb RSS at most 50 MiB under load", f"{g:.1f} MiB at most", verdict(g <= 50)))
        missed_memory = missed_memory or g > 50
    bursts = (tp.get("bursts") or {}).get("proxies", {})
    if "gridlb" in bursts:
        p, st = bursts["gridlb"], tp["bursts"]["settings"]
        rows.append((f"gridlb RSS back within 2x idle inside {st['watch_s']:g} s after idle-connection bursts",
                     f"idle {p['idle_mib']:.1f} MiB, peak {p['peak_mib']:.1f} MiB, {p['end_mib']:.1f} MiB "
                     f"{st['watch_s']:g} s after the last of {st['bursts']} bursts of {st['connections']}",
                     verdict(p["back_within_2x"])))
        missed_memory = missed_memory or not p["back_within_2x"]
    if missed_memory:
        notes.append(memory_note(tp))


def throughput_note(tp, profile, instructions=None):
    full, cpu = tp["full_speed"], tp.get("cpu_us_per_request") or {}
    calls = {k: v["per_request"] for k, v in tp["syscalls"]["proxies"].items()}
    text = ("**Why gridlb misses a throughput or cost target.** Full-speed medians, req/s (oha / wrk): "
            + ", ".join(f"{PROXY_NAMES.get(k, k)} {v['rps']:.0f} / {full['wrk'][k]['rps']:.0f}"
                        for k, v in full["oha"].items() if v["rps"] and full["wrk"][k]["rps"]) + ". ")
    g, b, n = cpu.get("gridlb"), cpu.get("bare"), cpu.get("nginx")
    f = cpu.get("floor")
    own = None
    if None not in (g, b, n):
        text += "CPU time per request, µs: " + figures(cpu) + ". "
        own = g - b
        if g > n and b >= g:
            text += (f"Bare Pingora, which only takes the next substation in turn, spends more than gridlb: "
                     "Pingora's own upstream path costs more than gridlb's exchange, so it does not say "
                     "how much of gridlb's cost is the framework's. ")
        elif g > n and b > n:
            text += (f"Of gridlb's {g - n:.1f} µs over nginx, {b - n:.1f} µs are the framework's (bare "
                     "Pingora, which only takes the next substation in turn, spends that much more than "
                     f"nginx) and {own:.1f} µs gridlb's own work on top of Pingora. ")
        elif g > n:
            text += (f"Bare Pingora spends no more than nginx, so gridlb's {g - n:.1f} µs over nginx are "
                     "its own work on top of Pingora. ")
    if None not in (g, f, n):
        text += (f"Pingora answering every request itself, with no upstream at all (the same service gridlb "
                 f"runs, `bare-pingora --answer`), spends {f:.1f} µs per request"
                 + (f", {f / n * 100:.0f} % of nginx's {n:.1f} µs for a whole proxied exchange: "
                    if f < n else f", more than nginx's {n:.1f} µs for a whole proxied exchange: ")
                 + "that is the floor of the listener, the runtime and the client's HTTP/1 session. "
                 + f"The other {g - f:.1f} µs of gridlb's are the exchange with the substation (a write and a "
                   "read on a pooled connection, whose loopback send also runs the substation's receive path "
                   "and wakes it) and gridlb's own work; "
                 + (f"that half alone costs more than nginx's whole exchange, so it, more than the framework's "
                    "floor, is where gridlb loses. " if g - f > n
                    else "the floor and that half together make the gap. "))
    fp = cpu.get("floor-proxy")
    if None not in (f, fp):
        text += (f"Through pingora-proxy's `ProxyHttp` (`bare-pingora --answer-proxy`, the shape gridlb had "
                 "before it served its client connections itself, `proxy/src/service/serve.rs`), the same "
                 f"answer costs {fp:.1f} µs per request, {fp - f:+.1f} µs. ")
    user, system = tp.get("cpu_user_us_per_request", {}), tp.get("cpu_system_us_per_request", {})
    if None not in (user.get("gridlb"), system.get("gridlb"), user.get("nginx"), system.get("nginx")):
        gu, gs, nu, ns = user["gridlb"], system["gridlb"], user["nginx"], system["nginx"]
        text += (f"Split by where the time is spent (medians, µs): gridlb {gu:.1f} in user space and {gs:.1f} "
                 f"in the kernel, nginx {nu:.1f} and {ns:.1f}"
                 + (f", Pingora answering itself {user['floor']:.1f} and {system['floor']:.1f}"
                    if None not in (user.get("floor"), system.get("floor")) else "")
                 + ". ")
        if gu - nu > gs - ns:
            share = (gu - nu) / ((gu - nu) + max(gs - ns, 0)) * 100
            text += (f"Of gridlb's excess over nginx, {gu - nu:.1f} µs are user space and {gs - ns:.1f} µs "
                     f"kernel: {share:.0f} % of the gap is instructions run in the process (Pingora's HTTP/1 "
                     "session, tokio's scheduling, the allocator and gridlb's own work, in the profile "
                     "below), not the system calls or the network stack. ")
        else:
            text += (f"Of gridlb's excess over nginx, {gs - ns:.1f} µs are kernel and {gu - nu:.1f} µs user "
                     "space. ")
        if None not in (user.get("floor"), system.get("floor")):
            fu = user["floor"]
            budget = nu - fu
            text += ("The budget this leaves: with Pingora's client session kept (gridlb is built on "
                     "Pingora's server and its HTTP/1 session), gridlb matches nginx's CPU only if the "
                     "exchange with the substation and all of gridlb's own work fit in what nginx spends in "
                     "user space beyond that session's floor, "
                     f"{nu:.1f} − {fu:.1f} = {budget:.1f} µs per request (taking the substation side's kernel "
                     "work to cost gridlb what it costs nginx); "
                     f"they take {gu - fu:.1f} µs now"
                     + (f", {(gu - fu) / budget:.0f} times that. " if budget > 0 else ". "))
    if calls.get("gridlb") is not None:
        tool = tp["syscalls"].get("tool")
        text += f"System calls per request ({tool}): " + figures(calls, spec=".2f") + ". "
        if calls.get("nginx") is not None and calls["gridlb"] > calls["nginx"]:
            text += (f"gridlb makes {calls['gridlb'] - calls['nginx']:.2f} more per request than nginx"
                     + (f" and {calls['gridlb'] - calls['bare']:.2f} more than bare Pingora"
                        if calls.get("bare") is not None and calls["gridlb"] > calls["bare"] else "")
                     + "; on loopback each send runs the receiver's network stack and wakes it, so a "
                       "system call costs far more than its own instructions. ")
    text += (f"On this machine the client, the proxy and the substations share {tp['machine']['cores']} cores, "
             "so every proxy's ceiling at full speed is set by its CPU per request. ")
    advice = []
    if profile:
        dsos = dict((m.group(2).strip(), float(m.group(1))) for m in
                    re.finditer(r"^\s+([\d.]+)%\s+(\S+)\s*$", section(profile, "shared object"), re.M))
        malloc = sum(float(p[:-1]) for p, sym in top_symbols(profile, 40)
                     if re.search(r"malloc|_int_free|cfree|unlink_chunk|malloc_consolidate|mi_free|_mi_", sym))
        if dsos:
            text += ("Where gridlb's CPU goes at full speed (perf, cpu-clock samples, self time; "
                     "bench/results/profile.txt, `bench/scripts/profile`): "
                     + ", ".join(f"{k} {v:.0f} %" for k, v in list(dsos.items())[:3])
                     + f"; the allocator's malloc and free (mimalloc's `mi_` functions included) take {malloc:.0f} %. ")
            if malloc >= 5:
                advice.append("cut allocations on the request path (gridlb already runs on mimalloc; Pingora "
                              "builds a boxed request header and a response header per request, and gridlb "
                              "parses each answer's headers into a map)")
        phases = [(m.group(2).strip(), float(m.group(1))) for m in
                  re.finditer(r"^\s*([\d.]+) %\s+(.+)$", section(profile, "by phase"), re.M)]
        if phases:
            text += ("By phase of a request (inclusive shares of the samples, from DWARF call graphs; "
                     "phases nest, so they do not add up): "
                     + "; ".join(f"{label} {share:.0f} %" for label, share in phases) + ". ")
        one = section(profile, "one request")
        if re.search(r'^sendto\(\d+, "POST /charge', one, re.M) and re.search(r'^sendto\(\d+, "\{', one, re.M):
            text += ("The trace of one request (bench/results/profile.txt) shows gridlb writing the request to "
                     "the substation as two `sendto` calls, the header and then the body. ")
            advice.append("write the upstream request header and the buffered body in one write")
        if re.search(r"getpeername\s+[\d.]+ per request", profile):
            text += "It also calls `getpeername` once per request (Pingora, on reusing a pooled connection). "
            advice.append("avoid the per-request `getpeername`")
    if own is not None and own > 0:
        text += ("gridlb's own work per request, beyond what bare Pingora does, is reading and buffering the "
                 "whole body before choosing (admission needs the power), choosing from least-load's index "
                 "and reserving, and learning from every answer (its load report, the session it booked). ")
    if advice:
        text += "Changes that would narrow the gap, for the core owner: " + "; ".join(advice) + "."
    if instructions:
        text += instructions_note(instructions)
    return text.strip()


def instructions_note(ins):
    """What the exact instruction counts (bench/scripts/instructions) say about the CPU gap."""
    t = {k: v["per_request"] for k, v in ins["targets"].items()}
    g, n, f, fp = t.get("gridlb"), t.get("nginx"), t.get("floor"), t.get("floor-proxy")
    if None in (g, n):
        return ""
    text = (f" Counted instructions per request (callgrind: counts, the same on every run, not time; `bench/scripts/instructions`): gridlb "
            f"{g:,.0f}, nginx {n:,.0f} ({g / n:.2f}x)")
    if t.get("haproxy") is not None:
        copies = ins["targets"]["haproxy"]["memcpy_per_request"]
        text += f", HAProxy {t['haproxy']:,.0f} ({copies:,.0f} of them the per-byte count of its buffer copies)"
    text += ". "
    if f is not None:
        text += (f"Pingora answering every request itself takes {f:,.0f}"
                 + (f" ({fp:,.0f} through pingora-proxy)" if fp is not None else "")
                 + f", {f / n * 100:.0f} % of what nginx takes for a whole proxied exchange; gridlb's "
                 f"{g - f:,.0f} on top are its exchange with the substation and its own work (by part in "
                 "the section \"Instructions per request\" below). So the gap to nginx is instructions: ")
        if f >= n:
            text += ("Pingora's client session alone counts more than nginx's whole exchange, so with that "
                     "session kept no cut of gridlb's own work brings gridlb to nginx's count; the exchange "
                     "and gridlb's bookkeeping on top of it are what a cut can still shrink.")
        else:
            text += ("Pingora's client session alone is close to nginx's whole exchange, and the exchange "
                     "and gridlb's bookkeeping on top of it cost more than that again.")
    return text


def latency_note(tp):
    cpu = tp.get("cpu_us_per_request") or {}
    oha = tp["full_speed"]["oha"]
    text = "**Why gridlb's added p99 misses a target.** "
    for rate, f in tp["fixed_rate"].items():
        added = {k: v["added_p99_ms"] for k, v in f.items() if k != "direct"}
        per_round = f["gridlb"].get("added_p99_ms_per_round") or []
        text += (f"At {int(rate):,} req/s, added p99 (median of the rounds, ms): " + figures(added, spec=".3f")
                 + ("; gridlb round by round " + ", ".join(f"{x:.2f}" for x in per_round) if per_round else "")
                 + (f"; added p50 gridlb {f['gridlb']['added_p50_ms']:.3f} ms" if f["gridlb"]["added_p50_ms"] is not None else ""))
        if oha["gridlb"]["rps"] and oha["nginx"]["rps"]:
            text += (f". That rate is {int(rate) / oha['gridlb']['rps'] * 100:.0f} % of gridlb's full-speed "
                     f"throughput here and {int(rate) / oha['nginx']['rps'] * 100:.0f} % of nginx's. ")
        else:
            text += ". "
    if cpu.get("gridlb") is not None and cpu.get("nginx") is not None:
        if cpu["gridlb"] > cpu["nginx"]:
            text += (f"gridlb needs more CPU per request ({cpu['gridlb']:.1f} µs against nginx's "
                     f"{cpu['nginx']:.1f}), so at a given rate it keeps a core busy longer and a request more "
                     "often waits behind another or for the scheduler; a server's tail grows as its load nears "
                     "its ceiling, and the same rate is nearer gridlb's. ")
        else:
            text += (f"gridlb needs no more CPU per request than nginx here ({cpu['gridlb']:.1f} µs against "
                     f"{cpu['nginx']:.1f}), so the gap is not its CPU cost: on cores shared by the client, the "
                     "proxies and the substations a p99 is set by a few scheduling delays, which move from "
                     "round to round (see the figures round by round). ")
    f = tp["fixed_rate"].get("1000")
    if f and f["bare"]["added_p99_ms"] is not None and f["gridlb"]["added_p99_ms"] is not None:
        b, g = f["bare"]["added_p99_ms"], f["gridlb"]["added_p99_ms"]
        if b <= g:
            text += (f"Bare Pingora adds {b:.3f} ms at 1,000 req/s: the framework's share of gridlb's {g:.3f} ms, "
                     f"the other {g - b:.3f} ms is gridlb's own.")
        else:
            text += (f"Bare Pingora adds {b:.3f} ms at 1,000 req/s, no less than gridlb's {g:.3f} ms: at this "
                     "rate the framework, not gridlb's own work, sets the added tail.")
    return text.strip()


def memory_note(tp):
    rss = tp["rss"]
    text = ("**Why gridlb misses a memory target.** RSS under load (MiB, the largest of the 200 ms samples): "
            + figures({k: v.get("max_mib") for k, v in rss.items()}) + "; before the load: "
            + figures({k: v.get("idle_mib") for k, v in rss.items()}) + ". ")
    g, b = rss["gridlb"].get("max_mib"), (rss.get("bare") or {}).get("max_mib")
    if g is not None and b is not None and g > 0:
        text += (f"Bare Pingora reaches {b:.1f} MiB, {min(b / g, 1) * 100:.0f} % of gridlb's {g:.1f}: that much "
                 "is there without any of gridlb's own state. ")
    bursts = (tp.get("bursts") or {}).get("proxies", {})
    if bursts:
        st = tp["bursts"]["settings"]
        text += (f"After {st['bursts']} bursts of {st['connections']} idle connections, {st['watch_s']:g} s after "
                 "the last (idle → peak → end, MiB): "
                 + "; ".join(f"{PROXY_NAMES.get(k, k)} {p['idle_mib']:.1f} → {p['peak_mib']:.1f} → {p['end_mib']:.1f}"
                             + ("" if p["back_within_2x"] else " (not back within 2x)") for k, p in bursts.items())
                 + ". ")
        g, b = bursts.get("gridlb"), bursts.get("bare")
        if g and b and b["peak_mib"] > 0:
            text += (f"gridlb's peak is {g['peak_mib']:.1f} MiB against bare Pingora's {b['peak_mib']:.1f}: gridlb's "
                     "listeners put no 64 KiB read buffer under each connection (Pingora's default, which bare "
                     "Pingora keeps; `proxy/src/server.rs` `client_listener`), its allocator (mimalloc) "
                     "gives freed memory back at once, and its worker threads collect what they freed "
                     "as connections end (`proxy/src/relieve.rs`). ")
        if g and not g["back_within_2x"]:
            after = g.get("back_within_2x_after_s")
            if after is not None:
                text += (f"gridlb was back within 2x idle {after:.1f} s after the last burst, then grew again while "
                         f"idle, to {g['end_mib']:.1f} MiB at the end of the watch: memory re-taken by the "
                         "process after the connections had gone (an idle gridlb without bursts stays flat), "
                         "not yet explained. ")
            elif b and not b["back_within_2x"]:
                text += ("Bare Pingora keeps it too: what stays is what Pingora's per-connection state left "
                         "in the allocator. ")
            else:
                text += ("Bare Pingora gives it back, so what stays is held by gridlb's own per-connection "
                         "or per-request state. ")
    return text.strip()


def section(profile, word):
    """The lines of the `## ...` section of a perf excerpt whose title has `word`."""
    out, inside = [], False
    for line in profile.splitlines():
        if line.startswith("## "):
            inside = word in line
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def top_symbols(profile, n, section_word="functions"):
    """The top `n` (share, symbol) pairs of a perf report excerpt; with `section_word` None,
    of the whole text, else of the `## ...` section whose title has that word."""
    out, section = [], None
    for line in profile.splitlines():
        if line.startswith("## "):
            section = line
            continue
        if section_word is None or (section and section_word in section):
            m = re.match(r"\s+([\d.]+%)\s+(.*)", line)
            if m:
                sym = re.sub(r"^\[\.\]\s*|^\[k\]\s*", "", m.group(2).strip())
                sym = re.sub(r"(\s+-)+\s*$", "", sym).strip()
                sym = sym if len(sym) <= 70 else sym[:67] + "..."
                out.append((m.group(1), f"`{sym}`"))
    return out[:n]


MICRO_LABELS = {"choose": "GridSelection::choose", "grid_select": "Grid::select", "offer": "SubstationState::offer"}


def selection_note(micro, profile=None):
    rows = {(r["group"], r["function"], r["substations"]): r["median_ns"] for r in micro["results"]}
    sel = [(n, rows.get(("grid_select", "least-load", n))) for n in (3, 16, 128, 1024)]
    ch = [(n, rows.get(("choose", "least-load", n))) for n in (3, 16, 128, 1024)]
    p2c_sel = rows.get(("grid_select", "p2c", 1024))
    offer = rows.get(("offer", "newer-then-choose", 1024))
    choose_1024 = rows.get(("choose", "least-load", 1024))
    grow = lambda xs: ", ".join(f"{v / 1000:.2f} µs at {n}" for n, v in xs if v)
    over = sel[-1][1] - 1000 if sel[-1][1] else None
    text = ("**Why one least-load selection is over 1 µs with 1024 substations.** `Grid::select` costs "
            + grow(sel) + (f", {over:.0f} ns over the budget at 1024" if over else "")
            + "; `GridSelection::choose` alone " + grow(ch) + ". "
            "Least-load no longer scores every substation on every request: its first choice is read from "
            "an index kept current where a score changes (a tournament tree per distinct capacity over the "
            "planned load; each report, reservation, release and flag change marks the substation, and the next "
            "choice reads the marked ones again, with what time changes applied lazily from a heap of due "
            "events; docs/design.md), so `choose` grows with the "
            "depth of a tree, not with the number of substations. What `Grid::select` adds to `choose` "
            "does not grow in proportion to the substations either (the figures above): Pingora's "
            "`select_with` (its iterator, the readiness lookup in its health registry), the reservation's "
            "compare-and-swap, and the index's bookkeeping: a mark (a lock) when the reservation is made and one "
            "when it is released, and the next choice's read of the marked substation (a path of a tree).")
    if p2c_sel:
        text += (f" p2c through the same path (its reservation updates the index too) costs "
                 f"{p2c_sel:.0f} ns at 1024.")
    ab = {(r["group"], r["function"]): r for r in (micro.get("against") or {}).get("rows", [])}
    same = ab.get(("grid_select", "least-load"))
    if same:
        rev = micro["against"]["rev"]
        text += (f" Run in turns with the build of {rev} (`bench/scripts/micro --against {rev}`), this build's "
                 f"`Grid::select` takes {same['this_ns']:.0f} ns at 1024 substations and {rev}'s "
                 f"{same['against_ns']:.0f} ns ({same['this_ns'] / same['against_ns']:.2f}x): a figure that moves "
                 "between runs while this ratio holds is the host's speed, not the code's.")
    load = micro.get("machine", {}).get("loadavg_at_start")
    if load:
        text += (f" The machine's load average was {load[0]} on its {micro['machine'].get('cores', '?')} "
                 "cores when this run started (other builds share them), which inflates every figure "
                 "here; compare rows of one run, not runs.")
    if profile:
        top = top_symbols(profile, 5, None)
        if top:
            head = profile.splitlines()[0]
            what = "`Grid::select`" if ("Grid::select" in head or "grid_select" in head) else "`choose`"
            text += (f" perf on {what} (least-load) at 1024 substations (self time, "
                     "bench/results/profile-selection.txt): " + "; ".join(f"{p} {s}" for p, s in top) + ".")
    if offer:
        text += (f" A report update and the choice after it (`SubstationState::offer`, which marks the substation, "
                 f"then `choose`, which reads it again into its tree) cost {offer:.0f} ns at 1024 substations")
        if choose_1024:
            text += f", {offer - choose_1024:.0f} ns more than a choice with nothing marked"
        text += ": O(log n), a path of one capacity's tree."
    return text


def spread_note(spread):
    ll = spread["routers"]["least-load"]
    lim = spread["routers"].get("limit")
    s = spread["settings"]
    text = "**Why least-load misses a spread target.** "
    if ll["refused_with_room"]:
        persisting = ll.get("refused_with_room_persisting", 0)
        text += (f"{ll['refused_with_room']} of {ll['refused']} refusals happened while the last sample before "
                 f"the request showed room somewhere; in {persisting} of them that substation still had the room "
                 "in the next sample (the room was there all along and gridlb's view was behind); the other "
                 f"{ll['refused_with_room'] - persisting} are races at the sampler's resolution (a booking took "
                 f"the room in the {1000 / s['hz']:.0f} ms between the sample and the request). ")
        if lim:
            text += (f"The omniscient limit, which by construction refuses only when nothing has room, scores "
                     f"{lim['refused_with_room']} by the same measure on the same arrivals (sessions placed "
                     "between two samples take the room the earlier sample showed): at this resolution the "
                     "measure cannot reach 0 for any router, and least-load is at the limit's figure. ")
    over = ll.get("spread_over_limit")
    if lim and over is not None and over > 1.05:
        steps = ", ".join(f"{v:.3f} of {n}" for n, v in ll.get("session_step", {}).items())
        text += (f"The time-averaged spread is {ll['spread_time_avg']:.3f}, {over:.2f}x the limit's "
                 f"{lim['spread_time_avg']:.3f}. The mean accepted session is {ll.get('mean_session_kw', 0):.1f} kW, "
                 f"i.e. {steps}'s capacity: the limit pays that step too; what least-load spends above it is "
                 "the lag of its view (sessions it did not route, ending between reports). ")
    if lim:
        text += (f"The limit's spread is {lim['spread_time_avg']:.3f} with {lim['refused']} refusals; least-load's "
                 f"{ll['spread_time_avg']:.3f} with {ll['refused']}. gridlb subtracts the power of the sessions it "
                 "routed that ended since the last report (`proxy/src/sessions.rs`), so its view lags only for "
                 "sessions it did not route.")
    return text


def retry_note(honest, const, met):
    head = ("**Retry-After honoured (spread bench, `--retry-after`).** " if met
            else "**Why the honest Retry-After misses its target.** ")
    rate = lambda r: r["retries_accepted"] / r["retries_sent"] if r["retries_sent"] else 0.0
    return (head + f"Clients that came back at gridlb's Retry-After made {honest['attempts_per_accepted']:.3f} "
            f"requests per accepted session ({honest['retries_accepted']} of {honest['retries_sent']} retries "
            f"accepted, {rate(honest):.0%}); after a constant 1 s, {const['attempts_per_accepted']:.3f} "
            f"({const['retries_accepted']} of {const['retries_sent']}, {rate(const):.0%}): a difference of "
            f"{abs(const['attempts_per_accepted'] - honest['attempts_per_accepted']) / const['attempts_per_accepted']:.1%}, "
            "one seed, inside what another seed or the other engineers' builds on the same cores could move. "
            "Why so small: at this benchmark's time scale (1 h = 3 s) sessions last 1.5 to 12 real seconds, "
            "so an honest answer (whole seconds, at least 1) is a few seconds at most, close to the constant "
            "(the waits themselves are not recorded; the retry counts are); and the room a Retry-After promises is the room that sessions gridlb knows of "
            "will free, which new arrivals at rush hour compete for: most retries land on a grid that is full "
            "again. The honest answer matters where sessions last longer than a second in real time (no time "
            "scale), where a constant 1 s would make a client retry for every second of a wait of minutes.")


def peers_note(spread):
    r = spread["routers"]
    lim = r.get("limit")
    have = [k for k in ("envoy", "envoy-orca", "caddy") if k in r]
    if not lim or not have:
        return None
    cells = "; ".join(f"{k} spread {r[k]['spread_time_avg']:.3f} ({r[k]['spread_time_avg'] / lim['spread_time_avg']:.2f}x "
                      f"the limit), refused {r[k]['refused']} ({r[k]['refused_with_room']} with room), refusals by "
                      f"the substations {r[k]['substation_refusals']}" for k in have)
    like_random = (f" (random: {r['random']['spread_time_avg']:.3f})" if "random" in r else "")
    return ("**Envoy and Caddy.** " + cells + ". Envoy's LEAST_REQUEST balances requests in flight, "
            "which at these rates is almost always zero everywhere: it spreads about like random"
            + like_random + " and relies on its retries to another host. Its client-side weighted round "
            "robin reads the substations' ORCA header (weight = rps / utilisation) and does better, but "
            "weights are recomputed every 100 ms at best and know nothing of a session's power. Caddy "
            "cannot retry a request that got an answer, so every 503 from a full substation reaches the "
            "client while another has room; its passive health check only keeps that substation out for a "
            "second afterwards.")


def main():
    tp, spread, micro, k6 = load("throughput.json"), load("spread.json"), load("micro.json"), load("k6.json")
    replicas = load("replicas.json")
    instructions = load("instructions.json")
    profile = load("profile.txt")
    out = ["# Benchmark results", "",
           "Written by the scripts in bench/scripts/ (`bench/analysis/report.py` assembles this page from "
           "bench/results/); do not edit by hand. How to rerun: bench/README.md.", ""]
    machines = {}
    for name, r in (("throughput", tp), ("spread", spread), ("replicas", replicas), ("micro", micro),
                    ("instructions", instructions), ("k6", k6)):
        if r:
            machines.setdefault(machine_line(r["machine"]), []).append(f"{name} ({r['date']})")
    out += ["## Machine", ""]
    for line, which in machines.items():
        out.append(f"- {', '.join(which)}: {line}")
    out += ["", "Other builds and tests ran on the same two cores during some of these runs; every "
            "comparison is interleaved and reported as a median so that such noise falls on all the "
            "configurations alike, but absolute figures are lower than on an idle machine.", ""]
    rows, notes = targets(tp, spread, micro, profile, replicas, instructions)
    if rows:
        out += ["## Verdict against the targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        out.append("")
        for n in notes:
            out += [n, ""]
    if tp:
        out += [f"## Throughput, cost and memory ({tp['date']})", "", read_md("throughput.md") or "", ""]
        m = tp["machine"]
        if m.get("nginx"):
            peers = [m.get(k) for k in ("nginx", "haproxy", "envoy", "caddy") if m.get(k)]
            clients = [m.get(k) for k in ("oha", "wrk") if m.get(k)]
            out += [f"Peers: {', '.join(peers)}; clients: {', '.join(clients)}.", ""]
    if spread:
        out += [f"## Spread ({spread['date']})", "", read_md("spread.md") or "", ""]
    if replicas:
        out += [f"## Replicas ({replicas['date']})", "", read_md("replicas.md") or "", ""]
    if instructions:
        out += [f"## Instructions per request ({instructions['date']})", "", read_md("instructions.md") or "", ""]
    if micro:
        out += [f"## Microbenchmarks ({micro['date']})", "",
                "Criterion, median time per call (`cargo bench -p gridlb --bench selection`).", "",
                "| benchmark | 3 | 16 | 128 | 1024 |", "| --- | ---: | ---: | ---: | ---: |"]
        names = sorted({(r["group"], r["function"]) for r in micro["results"]})
        for g, f in names:
            cells = []
            for n in (3, 16, 128, 1024):
                r = micro_row(micro, g, f, n)
                cells.append("n/a" if not r else (f"{r['median_ns']:.0f} ns" if r["median_ns"] < 1e4
                                                  else f"{r['median_ns'] / 1000:.1f} µs"))
            out.append(f"| {MICRO_LABELS.get(g, g)} ({f}) | " + " | ".join(cells) + " |")
        out.append("")
        ab = micro.get("against")
        if ab:
            out += [f"Against the build of {ab['rev']}, in the same run (`bench/scripts/micro --against "
                    f"{ab['rev']}`: both builds in turns, order rotated, median of the rounds), 1024 substations:",
                    "", f"| benchmark | this build | {ab['rev']} | this / {ab['rev']} |", "| --- | ---: | ---: | ---: |"]
            for r in ab["rows"]:
                out.append(f"| {MICRO_LABELS.get(r['group'], r['group'])} ({r['function']}) | "
                           f"{r['this_ns']:.0f} ns | {r['against_ns']:.0f} ns | {r['this_ns'] / r['against_ns']:.2f} |")
            out.append("")
    if k6:
        th = ", ".join(f"`{k}` {'passed' if v else 'failed'}" for k, v in k6["thresholds"].items())
        out += [f"## k6 ({k6['date']})", "",
                f"`bench/scripts/k6/run`: ramping arrival rate up to {k6['peak_rate']:g} sessions/s through gridlb. "
                f"{k6['requests']} requests ({k6['rps']:.0f}/s on average), p90 {k6['p90_ms']:.2f} ms, "
                f"p99 {k6['p99_ms']:.2f} ms, max {k6['max_ms']:.2f} ms for accepted sessions; "
                f"refusals {k6['refusal_rate'] * 100:.2f} %, checks {k6['checks_rate'] * 100:.2f} %, "
                f"dropped iterations {k6['dropped_iterations']}. Thresholds: {th}.", ""]
    if profile:
        out += ["## Profile of gridlb at full speed", "", "```", profile.strip(), "```", ""]
    with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
        f.write("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    main()
