"""The one reader of the Prometheus text exposition format in gridlb's Python (the benchmark
analyses and scripts/check-stack use it): a page becomes samples, each a metric name, its
labels and its value.

Only what gridlb and the substations expose is needed: `# HELP`/`# TYPE` comments, and sample
lines `name{label="value",...} number` with the usual escapes (\\\\, \\", \\n) in label values.
Timestamps after the value are allowed and ignored.
"""
import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text):
    """[(name, {label: value}, value)] of every sample line of a page, in order."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        name, body, value = m.groups()
        labels = {}
        for k, v in _LABEL.findall(body or ""):
            labels[k] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], v)
        out.append((name, labels, float(value)))
    return out


def total(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels` (0.0 when there are none).
    A label given as a compiled regex matches any value it fully matches."""
    def match(have):
        for k, want in labels.items():
            v = have.get(k)
            if v is None or (v != want if isinstance(want, str) else not want.fullmatch(v)):
                return False
        return True
    return sum(v for n, ls, v in samples(text) if n == name and match(ls))


def total_in_file(path, name, **labels):
    """`total` over a saved page; 0.0 when the file does not exist (a process that never answered)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return 0.0
    return total(text, name, **labels)
