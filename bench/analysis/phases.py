#!/usr/bin/env python3
"""Where gridlb's CPU goes, by phase of a request: inclusive shares of the samples of a perf
profile with call graphs (`perf script -F ip,sym` output on stdin or in FILE).

A sample counts for a phase when one of its frames matches the phase's pattern; phases may
nest (gridlb's phases run inside Pingora's HTTP/1 service), so the shares do not add up to
100 %. Only functions that keep a frame of their own can be told apart: an async function
inlined into its caller shows in DWARF call graphs only as `{async_fn#0}` (so there is no row
for `request_filter` as a whole). The
system calls are counted where they are made (libc's `send`/`recv`), so a sample in the
kernel under a send counts both for "sends" and for the phase that sent.

usage: phases.py [FILE]        prints a markdown-ish table, one phase a line
"""
import re
import sys

# (label, pattern on a frame's symbol); in the order printed.
PHASES = [
    ("a client connection's requests (all of the HTTP/1 service)", r"ServerApp for gridlb::service::GridProxy>::process_new\b"),
    ("  Pingora: reading and parsing the request header", r"v1::server::HttpSession::read_request\b"),
    ("  gridlb: reading the request body", r"Session::read_request_body\b"),
    ("  gridlb: choosing and reserving a substation (Admission::select)", r"Admission::(select|admit)\b"),
    ("  gridlb: the exchange with the substation (call.rs, write to read)", r"GridProxy>::exchange\b"),
    ("  gridlb: what the answer teaches (report, session, id check)", r"GridProxy>::charge_answered\b"),
    ("  gridlb: the answer written to the client (relay)", r"GridProxy>::relay\b"),
    ("  Pingora: finishing the request (keep-alive hand-back)", r"http::server::Session::finish\b"),
    ("system calls: send (the loopback peer's receive path included)", r"^(__send|__libc_send|send|__sendto|sendto)$"),
    ("system calls: recv", r"^(__libc_recv|recv|__recv|recvfrom|__libc_recvfrom)$"),
    ("system calls: epoll_wait (idle waits)", r"^(epoll_wait|__GI_epoll_wait)$"),
    ("tokio: scheduling and parking (outside tasks)", r"worker::Context::park|runtime::time::Driver::park"),
    ("the allocator (malloc and free, anywhere)", r"^(mi_|_mi_|malloc|free|cfree|__libc_malloc|__libc_free)"),
]


def samples(lines):
    """Each sample's frames, leaf first."""
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else parts[0]
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym).strip()
        frames.append(re.sub(r" \(inlined\)$", "", sym))
    if frames:
        yield frames


def main():
    src = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    compiled = [(label, re.compile(p)) for label, p in PHASES]
    counts = [0] * len(PHASES)
    total = 0
    for frames in samples(src):
        total += 1
        for i, (_, rx) in enumerate(compiled):
            if any(rx.search(f) for f in frames):
                counts[i] += 1
    if not total:
        print("no samples")
        return
    for (label, _), n in zip(PHASES, counts):
        print(f"{100 * n / total:6.1f} %  {label}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
