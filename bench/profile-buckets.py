#!/usr/bin/env python3
"""Groups `perf script -F comm,tid,period,ip,sym,dso --no-inline` samples (with call
chains) into buckets that mean something for the gateway (bench/profile-setup).

self: each sample goes to one bucket, so the column adds up to 100 %. A sample whose leaf
is in the kernel is "syscalls", one in malloc/free/realloc is "allocation", whoever called
them; otherwise the first frame from the leaf up that belongs to a bucket takes it, so
std/core/alloc helpers (memcpy, hashing, formatting, Vec growth) are charged to their
caller. inclusive: samples with a frame of the bucket anywhere on the stack. Weighted by
the sample period (CPU time, since perf adjusts the period to the sampling frequency).
"""

import collections
import re
import sys

# (bucket, pattern on the demangled symbol); the leftmost crate path in a symbol decides,
# so `core::ptr::drop_in_place<rsipstack::...>` is rsipstack's and `<alloc::vec::Vec<T> as
# Clone>::clone` nobody's.
BUCKETS = [
    ("our SIP checks (src/sip/message)", r"leadline::sip::message\b"),
    ("identity/matcher/intake (sip::identity, matcher, crm)", r"leadline::(sip::identity|matcher|crm)\b"),
    ("our store adapter (src/store)", r"leadline::store\b"),
    ("our call handling (b2bua, server, router, registrar, endpoint, …)", r"leadline::sip\b"),
    ("leadline other (events, media, http, webhooks)", r"leadline\b"),
    ("rsipstack transport/parsing (rsip, transport)", r"(rsipstack::(transport|sip|rsip)|rsip|nom)\b"),
    ("rsipstack transaction/dialog layer", r"rsipstack\b"),
    # flume is the channel to sqlx's SQLite worker thread (nothing else here uses it).
    ("sqlx/SQLite", r"(sqlx\w*|libsqlite3_sys|flume)\b|^sqlite3"),
    ("tracing/metrics", r"(tracing\w*|metrics\w*|sharded_slab|nu_ansi_term|matchers)\b"),
    ("tokio (scheduling, channels, timers)", r"(tokio\w*|mio)\b"),
    ("HTTP (axum/hyper, for /metrics and the API)", r"(axum|hyper\w*|tower\w*|h2)\b"),
    ("serde/json, uuid, chrono", r"(serde\w*|uuid|chrono\w*)\b"),
]
ALLOC = "allocation (malloc/free)"
SYSCALLS = "syscalls (kernel)"
OTHER = "other (std/libc with no known caller, unresolved)"

ALLOC_RE = re.compile(
    r"^(malloc|free|realloc|calloc|cfree|_int_malloc|_int_free\w*|_int_realloc|malloc_consolidate|"
    r"unlink_chunk|sysmalloc|tcache_\w+|__libc_(malloc|free|calloc|realloc)|__malloc_\w+|"
    r"arena_get2|alloc_perturb|mi_\w+|_mi_\w+|je_\w+|_rjem_\w+|sdallocx|__rust_alloc|"
    r"__rust_dealloc|__rust_realloc|__rdl_\w+|__rg_\w+|mallocx|rallocx|free_perturb)(\.\w+)?$"
)
CRATE_RE = re.compile(r"(?:^|[<\s(&*,])((?:[A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)*)")
SYSCALL_RE = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_|__ia32_sys_)(\w+)")

compiled = [(name, re.compile(pat)) for name, pat in BUCKETS]


def bucket_of(sym):
    """The bucket of one frame, or None for helpers (std, core, alloc, libc) and for
    wrappers that only pass a poll on (a span's `Instrumented`, tokio's task harness)."""
    if "Instrumented" in sym or sym.startswith(("<core::", "core::", "<alloc::", "alloc::")) and "poll" in sym:
        return None
    if sym.startswith("sqlite3"):
        return "sqlx/SQLite"
    # The leftmost path in the symbol.
    for m in CRATE_RE.finditer(sym):
        path = m.group(1)
        head = path.split("::", 1)[0]
        if head in ("core", "alloc", "std", "hashbrown", "bytes", "smallvec", "memchr", "impl", "dyn", "as"):
            continue
        for name, pat in compiled:
            if pat.match(path):
                return name
        return None
    return None


def main():
    self_w = collections.Counter()
    incl_w = collections.Counter()
    sys_w = collections.Counter()
    # Kernel time by who entered the kernel: (bucket of the first frame above, syscall).
    kernel_by = collections.Counter()
    thread_w = collections.Counter()
    leaf_w = collections.Counter()
    total = 0.0
    samples = 0

    def flush(comm, period, frames):
        nonlocal total, samples
        if not frames:
            return
        samples += 1
        total += period
        thread_w[comm] += period
        leaf_sym, leaf_dso = frames[0]
        leaf_w[(leaf_sym, leaf_dso.rsplit("/", 1)[-1])] += period
        seen = set()
        for sym, _ in frames:
            b = bucket_of(sym)
            if b:
                seen.add(b)
            if ALLOC_RE.match(sym):
                seen.add(ALLOC)
        if "kernel" in leaf_dso or leaf_dso.startswith("["):
            name = "other (interrupts, page faults, scheduler)"
            for sym, dso in frames:
                m = SYSCALL_RE.match(sym)
                if m:
                    name = m.group(1)
                    break
            sys_w[name] += period
            caller = "(no known frame)"
            for sym, dso in frames:
                if "kernel" in dso or dso.startswith("["):
                    continue
                b = bucket_of(sym)
                if b:
                    caller = b
                    break
            kernel_by[(caller, name)] += period
            self_w[SYSCALLS] += period
            seen.add(SYSCALLS)
        elif ALLOC_RE.match(leaf_sym):
            self_w[ALLOC] += period
        else:
            chosen = OTHER
            for sym, _ in frames:
                b = bucket_of(sym)
                if b:
                    chosen = b
                    break
            self_w[chosen] += period
        for b in seen:
            incl_w[b] += period

    comm, period, frames = None, 0.0, []
    header = re.compile(r"^(\S.*?)\s+(\d+)\s+(\d+)\s*$")
    frame = re.compile(r"^\s+[0-9a-f]+\s+(.*)\s+\((.*)\)\s*$")
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line.strip():
            flush(comm, period, frames)
            comm, period, frames = None, 0.0, []
            continue
        if not line[0].isspace():
            flush(comm, period, frames)
            m = header.match(line)
            if m:
                comm, period = m.group(1).strip(), float(m.group(3))
            else:
                comm, period = line.split()[0], 1.0
            frames = []
            continue
        m = frame.match(line)
        if m:
            sym = re.sub(r"::h[0-9a-f]{16}$", "", m.group(1).strip())
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            frames.append((sym, m.group(2)))
    flush(comm, period, frames)

    if total == 0:
        print("no samples (is perf allowed to profile? kernel.perf_event_paranoid)")
        return
    pct = lambda w: 100.0 * w / total
    print(f"profile        {samples} samples of the gateway's threads")
    print(f"  {'bucket':<70} {'self %':>7} {'inclusive %':>12}")
    order = [name for name, _ in BUCKETS] + [ALLOC, SYSCALLS, OTHER]
    for name in sorted(order, key=lambda n: -self_w[n]):
        if self_w[name] == 0 and incl_w[name] == 0:
            continue
        # Every worker's stack starts in tokio's runtime: its inclusive share says nothing.
        blank = name == OTHER or name.startswith("tokio")
        incl = f"{'':>12}" if blank else f"{pct(incl_w[name]):12.1f}"
        print(f"  {name:<70} {pct(self_w[name]):7.1f} {incl}")
    print("  syscalls by name (share of all samples):")
    for name, w in sys_w.most_common(8):
        print(f"    {name:<68} {pct(w):7.1f}")
    print("  kernel time by who entered the kernel (first bucket frame above; share of all samples):")
    for (caller, name), w in kernel_by.most_common(10):
        print(f"    {(name + ' from ' + caller)[:68]:<68} {pct(w):7.1f}")
    print("  threads:")
    for name, w in thread_w.most_common(6):
        print(f"    {name:<68} {pct(w):7.1f}")
    print("  top leaf symbols:")
    for (sym, dso), w in leaf_w.most_common(15):
        print(f"    {(sym[:80] + ' [' + dso + ']'):<100} {pct(w):5.1f}")


if __name__ == "__main__":
    main()
