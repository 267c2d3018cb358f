#!/usr/bin/env python3
"""Heap bytes per held call by owner, from heaptrack's "leaked" flame-graph stacks
(bench/profile-memory). Arguments: HOLD IDLE.stacks SETUP.stacks HELD.stacks, each line
`frame;frame;…;frame BYTES` (root first) of a gateway killed at that moment.

Each allocation is charged to a site: the first frame from the allocation up that is
ours, rsipstack's, tokio's or sqlx's (std/core/alloc frames, hashbrown, bytes … are
skipped); a tokio task's allocation (its future) is charged to the task's spawner, a
tokio channel's or timer's to its user. Sites are then grouped into owners.
"""

import collections
import re
import subprocess
import sys

SKIP = re.compile(
    r"^(<\[|<str>|<&|<T|<F|<\(|<Box<|<Vec<|<Option<)|"
    r"^(<)?(core|alloc|std|hashbrown|bytes|smallvec|memchr|indexmap|__rust|__rg_|__rdl_|malloc|"
    r"calloc|realloc|operator new|<unresolved|\?\?|heaptrack|_start|__libc|start_thread|clone)"
)
TOKIO_ALLOC = re.compile(r"^<?tokio::(runtime::task|task::spawn|runtime::(handle|scheduler)|sync|time|util)")

# (owner, pattern on the site) in order; the first that matches wins.
OWNERS = [
    ("lingering/closed transactions: rsipstack transaction layer (Transaction, its channels, timers, finished_transactions)", r"rsipstack::transaction"),
    ("rsipstack dialog layer (dialog state, its copies of INVITE/200, channels)", r"rsipstack::dialog"),
    ("rsipstack transport/rsip (message (de)serialisation, connections)", r"rsipstack::(transport|sip|rsip)|^rsip"),
    ("rsipstack other", r"rsipstack"),
    ("SIP messages parsed off the wire by our checks + rsip (kept by transactions/dialogs)", r"leadline::sip::(message|endpoint)"),
    ("our call task and its state (b2bua: legs, SDP, channels, timers)", r"leadline::sip::(b2bua|router|session_timer)"),
    ("our SIP server (per-request tasks, admission, registrar)", r"leadline::sip::(server|admission|registrar)"),
    ("media relay (sockets, buffers, recorder)", r"leadline::media"),
    ("events/live calls (event bus, LiveCalls, SSE)", r"leadline::events"),
    ("CRM intake, matcher and store", r"leadline::(crm|matcher|store|sip::identity)|sqlx|libsqlite3|sqlite3"),
    ("leadline other", r"leadline"),
    ("tracing/metrics", r"tracing|metrics"),
    ("tokio internals (not attributable to a spawner)", r"tokio|mio"),
]
compiled = [(o, re.compile(p)) for o, p in OWNERS]
OTHER = "other (std/libc, unresolved)"


LEGACY = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"), ("$u7d$", "}"),
          ("$RF$", "&"), ("$C$", ","), ("$BP$", "*"), ("$u27$", "'"), ("$u5b$", "["),
          ("$u5d$", "]"), ("$LP$", "("), ("$RP$", ")"), ("$u3b$", ";"), ("..", "::")]
_names = {}


def demangle_all(frames):
    """heaptrack leaves Rust v0 symbols (`_R…`) mangled and legacy ones half-done."""
    v0 = sorted({f for f in frames if f.startswith("_R") and f not in _names})
    if v0:
        out = subprocess.run(["c++filt"], input="\n".join(v0), capture_output=True, text=True).stdout
        for raw, nice in zip(v0, out.splitlines()):
            _names[raw] = nice


def clean(frame):
    frame = re.sub(r" \([^()]*\)$", "", frame.strip())
    frame = _names.get(frame, frame)
    if frame.startswith("_$"):
        frame = frame[1:]
    for a, b in LEGACY:
        frame = frame.replace(a, b)
    frame = re.sub(r"\[[0-9a-f]{16}\]", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    return frame


def site_of(frames):
    """frames: leaf first."""
    tokio_kind = None
    for f in frames:
        if SKIP.match(f):
            continue
        if TOKIO_ALLOC.match(f):
            # A task, channel or timer: charge whoever asked for it.
            tokio_kind = tokio_kind or re.sub(r"^<?(tokio::\w+(::\w+)?).*", r"\1", f)
            continue
        if f.startswith(("tokio::", "<tokio::", "mio::")) and tokio_kind:
            continue
        short = re.sub(r"<[^<>]*>", "", f)
        short = re.sub(r"<[^<>]*>", "", short)
        short = short.replace("::{{closure}}", "")
        if short.startswith("::") or not short:
            # A generic helper whose type was stripped (`<[T]>::to_vec`, `<T as Clone>`).
            continue
        return (short[:110], tokio_kind)
    return ("(no known frame)", tokio_kind)


def owner_of(site):
    for o, p in compiled:
        if p.search(site):
            return o
    return OTHER


def load(path):
    sites = collections.Counter()
    owners = collections.Counter()
    total = 0
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return sites, owners, 0
    parsed = []
    for line in lines:
        stack, _, cost = line.rpartition(" ")
        if not cost.isdigit() or cost == "0":
            continue
        raw = [re.sub(r" \([^()]*\)$", "", f.strip()) for f in stack.split(";") if f.strip()]
        parsed.append((raw, int(cost)))
    demangle_all({f for raw, _ in parsed for f in raw})
    for raw, n in parsed:
        frames = [clean(f) for f in raw][::-1]
        site, kind = site_of(frames)
        label = site + (f"  [{kind}]" if kind else "")
        sites[label] += n
        owners[owner_of(site)] += n
        total += n
    return sites, owners, total


def main():
    hold = int(sys.argv[1])
    idle, setup, held = (load(p) for p in sys.argv[2:5])
    kib = lambda b: b / 1024.0
    print(f"  live heap: idle {kib(idle[2]) / 1024:.1f} MiB; with {hold} calls right after set-up "
          f"{kib(setup[2]) / 1024:.1f} MiB, 35 s later {kib(held[2]) / 1024:.1f} MiB")
    print(f"  per call: {kib(setup[2] - idle[2]) / hold:.1f} KiB right after set-up, "
          f"{kib(held[2] - idle[2]) / hold:.1f} KiB 35 s later")
    print(f"  {'owner':<110} {'set-up':>8} {'held':>8}  (bytes per call)")
    names = set(setup[1]) | set(held[1])
    for o in sorted(names, key=lambda o: -(setup[1][o] - idle[1][o])):
        a = (setup[1][o] - idle[1][o]) / hold
        b = (held[1][o] - idle[1][o]) / hold
        if abs(a) < 16 and abs(b) < 16:
            continue
        print(f"  {o:<110} {a:8.0f} {b:8.0f}")
    print(f"  top allocation sites (bytes per call right after set-up / 35 s later):")
    names = set(setup[0]) | set(held[0])
    for s in sorted(names, key=lambda s: -(setup[0][s] - idle[0][s]))[:30]:
        a = (setup[0][s] - idle[0][s]) / hold
        b = (held[0][s] - idle[0][s]) / hold
        if abs(a) < 16 and abs(b) < 16:
            continue
        print(f"    {a:7.0f} {b:7.0f}  {s}")


if __name__ == "__main__":
    main()
