#!/usr/bin/env python3
"""Instructions per proxied request, from callgrind (bench/scripts/instructions writes the work
files): exact counts, the same on every run of the same build, where CPU time on a shared
2-core host moves by 10 % from one run to the next.

usage: instructions.py WORK_DIR OUT_DIR --requests N

Reads WORK_DIR/NAME.out.1 (callgrind's dump after the measured requests; its counters were
zeroed after the warm-up) for each NAME in WORK_DIR/targets.txt ("NAME LABEL..." per line)
and WORK_DIR/machine.json. Writes OUT_DIR/instructions.json and OUT_DIR/instructions.md.

A caveat that the figures carry: callgrind counts a `rep movsb` copy one instruction per byte,
so large `memcpy`s weigh more in these counts than in time; the memcpy share is listed apart.
"""
import argparse
import collections
import datetime
import json
import os
import re

# gridlb's parts of a request, inclusive (the function and everything it calls), by symbol.
GRIDLB_PARTS = [
    ("the client connection's requests (everything)", r"^gridlb::service::serve::<impl pingora_core::apps::ServerApp for gridlb::service::GridProxy>::process_new::\{\{closure\}\}$"),
    ("Pingora: reading and parsing the request header", r"^pingora_core::protocols::http::v1::server::HttpSession::read_request::\{\{closure\}\}$"),
    ("gridlb: answering one request (all of the below)", r"^gridlb::service::GridProxy::respond::\{\{closure\}\}$"),
    ("gridlb: choosing and reserving a substation", r"^gridlb::admission::Admission::select$"),
    ("gridlb: the exchange with the substation", r"^gridlb::service::relay::<impl gridlb::service::GridProxy>::exchange::\{\{closure\}\}$"),
    ("gridlb: parsing the substation's answer head", r"^gridlb::call::wire::parse_head$"),
    ("gridlb: what the answer teaches (report, session)", r"^gridlb::service::relay::<impl gridlb::service::GridProxy>::charge_answered$"),
    ("gridlb: the answer written to the client", r"^gridlb::service::relay::<impl gridlb::service::GridProxy>::relay::\{\{closure\}\}$"),
    ("Pingora: the answer's head to the wire", r"^pingora_core::protocols::http::v1::server::HttpSession::prepare_response_header$"),
]


def parse(path):
    """Self cost per function and inclusive cost of every call edge, from a callgrind file."""
    names = {}
    selfc = collections.Counter()
    calls = collections.defaultdict(collections.Counter)

    def name(token):
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    fn = cfn = None
    pending = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                cfn = name(line[4:])
            elif line.startswith("calls="):
                pending = True
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if len(parts) < 2:
                    continue
                if pending:
                    calls[fn][cfn] += int(parts[1])
                    pending = False
                else:
                    selfc[fn] += int(parts[1])
    return selfc, calls


def summarize(path, requests):
    selfc, calls = parse(path)
    total = sum(selfc.values())
    memcpy = sum(v for k, v in selfc.items() if re.search(r"mem(cpy|move)", k))
    top = [{"function": k, "per_request": v / requests, "share": v / total}
           for k, v in selfc.most_common(15)]
    parts = []
    for label, pattern in GRIDLB_PARTS:
        rx = re.compile(pattern)
        found = [f for f in set(selfc) | set(calls) if rx.search(f)]
        if found:
            incl = sum(selfc[f] + sum(calls[f].values()) for f in found)
            parts.append({"part": label, "per_request": incl / requests})
    return {"per_request": total / requests, "memcpy_per_request": memcpy / requests,
            "top": top, "parts": parts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--requests", type=int, required=True)
    a = ap.parse_args()
    targets = []
    for line in open(os.path.join(a.work, "targets.txt")):
        key, _, label = line.strip().partition(" ")
        if key:
            targets.append((key, label))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": json.load(open(os.path.join(a.work, "machine.json"))),
        "requests": a.requests,
        "targets": {},
        "labels": dict(targets),
    }
    for key, _ in targets:
        dump = os.path.join(a.work, f"{key}.out.1")
        if not os.path.exists(dump):
            raise SystemExit(f"no callgrind dump for {key}: {dump}")
        result["targets"][key] = summarize(dump, a.requests)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "instructions.json"), "w") as f:
        json.dump(result, f, indent=1)
    t = result["targets"]
    nginx = t.get("nginx", {}).get("per_request")
    md = [f"Instructions per request (callgrind, {a.requests} requests over 16 keep-alive connections after "
          "a warm-up, one worker thread or process each; `bench/scripts/instructions`). Counts, not time: a rerun "
          "of the same builds gives the same figures to within half a percent; cache misses and system calls do "
          "not show, and callgrind counts a `rep movsb` copy one instruction per byte, hence the memcpy columns.",
          "",
          "| configuration | instructions per request | of which memcpy | vs nginx | vs nginx, memcpy left out |",
          "| --- | ---: | ---: | ---: | ---: |"]
    nginx_rest = nginx - t["nginx"]["memcpy_per_request"] if nginx else None
    for key, label in targets:
        r = t[key]
        rest = r["per_request"] - r["memcpy_per_request"]
        vs = f"{r['per_request'] / nginx:.2f}x" if nginx else ""
        vs_rest = f"{rest / nginx_rest:.2f}x" if nginx_rest else ""
        md.append(f"| {label} | {r['per_request']:,.0f} | {r['memcpy_per_request']:,.0f} | {vs} | {vs_rest} |")
    g = t.get("gridlb")
    if g and g["parts"]:
        md += ["", "gridlb by part of a request (inclusive: a part counts what it calls; parts nest):", "",
               "| part | instructions per request |", "| --- | ---: |"]
        md += [f"| {p['part']} | {p['per_request']:,.0f} |" for p in g["parts"]]
    if g:
        md += ["", "gridlb's 15 costliest functions (self):", "", "| function | per request | share |",
               "| --- | ---: | ---: |"]
        md += [f"| `{x['function'][:110]}` | {x['per_request']:,.0f} | {x['share'] * 100:.1f} % |" for x in g["top"]]
    with open(os.path.join(a.out, "instructions.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
