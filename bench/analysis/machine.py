#!/usr/bin/env python3
"""Print, as JSON, what the results are measured on: CPU, cores, memory, OS, kernel, the
versions of rustc, nginx, HAProxy, Envoy, Caddy, oha and wrk, and the load average at the start. Each benchmark
script saves it as machine.json in its work directory; the analyses copy it into the results.

usage: machine.py
"""
import json
import os
import platform
import re
import subprocess


def run(*cmd):
    """The first line or lines a command prints (stdout, else stderr), or None."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or done.stderr.strip()


def field(path, prefix, sep=":"):
    with open(path) as f:
        for line in f:
            if line.startswith(prefix):
                return line.split(sep, 1)[1].strip()
    return None


def envoy_version():
    """`envoy 1.40.0` from `envoy --version` (`... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`)."""
    m = re.search(r"version: \S+?/([\d.]+)/", run("envoy", "--version") or "")
    return f"envoy {m.group(1)}" if m else None


def main():
    mem_kib = int((field("/proc/meminfo", "MemTotal") or "0 kB").split()[0])
    os_name = (field("/etc/os-release", "PRETTY_NAME", "=") or platform.system()).strip('"')
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    print(json.dumps({
        "cpu": field("/proc/cpuinfo", "model name") or "?",
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "os": os_name,
        "kernel": platform.release(),
        "rustc": run("rustc", "--version"),
        "nginx": run("nginx", "-v"),
        "haproxy": (run("haproxy", "-v") or "").split("\n")[0],
        "oha": run("oha", "--version"),
        "wrk": (run("wrk", "--version") or "").split("\n")[0].split(" Copyright")[0] or None,
        "envoy": envoy_version(),
        "caddy": ("caddy " + (run("caddy", "version") or "").split()[0]) if run("caddy", "version") else None,
        "loadavg_at_start": loadavg,
    }))


if __name__ == "__main__":
    main()
