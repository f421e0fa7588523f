"""Before and after a change: one build of Ferry against another, single
node and three zones, in one run on one machine.

    cargo build --release -p ferry-node --bin ferry -p ferry-bench
    python3 perf/before_after.py --base /path/to/earlier/ferry [--ferry target/release/ferry]
        [--rounds 2] [--seconds 10] [--out perf/before-after.md]

Both builds get the same load from the same `ferry-bench` (this checkout's),
round after round, in alternating order (base then new, new then base), so
that the drift of a noisy machine falls on both. Per round and build:

  1. single node (`ferry dev`, local-directory bucket, a fresh one per run):
     the librdkafka peak (2 producers, acks=all, 1 KiB records, 6
     partitions, rate 0) and `ferry-bench blast` (the broker, not the
     client, sets the peak; broker CPU seconds per GB);
  2. three zones (`ferry-bench sweep --zones 3`, one node per zone, in one
     process): one point, batchInterval 250 ms and 8 MiB, 4,000 records/s
     of 1 KiB, 3 producers and 3 consumers, the S3 latency model (PUT p50
     50 / p99 300 ms): publish p50/p99, same-zone and cross-zone p99,
     end-to-end p99, and cross-zone bytes as a share of produced bytes.

It prints each run as it ends, then the medians per build and the ratio
new/base, and writes them as Markdown.
"""
import argparse
import csv
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import single_node as sn  # noqa: E402

SWEEP_COLUMNS = [("publish_p50_ms", "publish p50 ms"), ("publish_p99_ms", "publish p99 ms"),
                 ("same_zone_p99_ms", "same-zone p99 ms"), ("cross_zone_p99_ms", "cross-zone p99 ms"),
                 ("e2e_p99_ms", "end-to-end p99 ms"), ("mb_per_sec", "MB/s"),
                 ("cross_zone_fraction", "cross-zone bytes / produced")]


def single_node(ferry, args, work, tag):
    """The librdkafka peak and blast on a fresh `ferry dev` each."""
    sn.FERRY = ferry
    _, peak = sn.with_broker("ferry", args, work, f"{tag}-peak", lambda b: sn.bench(
        b.bootstrap, "peak", 0, args.seconds, os.path.join(work, f"{tag}-peak.json")))
    _, blast = sn.with_broker("ferry", args, work, f"{tag}-blast", lambda b: sn.blast(
        b.bootstrap, os.path.join(work, f"{tag}-blast.json")))
    for name in (f"{tag}-peak", f"{tag}-blast"):
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    return {"peak MB/s": peak["publish"]["throughput"]["mb_per_sec"],
            "peak p99 ms": peak["publish"]["latency"]["p99_ms"],
            "blast MB/s": blast["mb_per_sec"],
            "blast p99 ms": blast["latency"]["p99_ms"],
            "blast broker CPU s/GB": sn.cpu_per_gb(blast)}


def three_zones(ferry, args, work, tag):
    """One sweep point across three zones; its CSV row."""
    out_dir = os.path.join(work, f"{tag}-sweep")
    cmd = [os.path.join(sn.RELEASE, "ferry-bench"), "sweep", "--ferry", ferry, "--zones", "3",
           "--batch-interval-ms", "250", "--max-bytes-mib", "8", "--rate", "4000", "--producers", "3",
           "--consumers", "3", "--partitions", "6", "--linger-ms", "50", "--warmup-secs", "5",
           "--duration-secs", str(args.seconds * 2), "--name", tag, "--out-dir", out_dir,
           "--work-dir", os.path.join(work, f"{tag}-sweep-work")]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, timeout=args.seconds * 2 + 300, stdout=subprocess.DEVNULL,
                   env=sn.BENCH_ENV)
    found = glob.glob(os.path.join(out_dir, "*", "sweep.csv"))
    if not found:
        sys.exit(f"the sweep wrote no sweep.csv under {out_dir}")
    with open(found[0]) as f:
        row = next(r for r in csv.DictReader(f) if r["target"] == "ferry")
    if row["status"] != "ok":
        sys.exit(f"the sweep point failed: {row.get('error')}")
    shutil.rmtree(os.path.join(work, f"{tag}-sweep-work"), ignore_errors=True)
    return {label: float(row[col]) for col, label in SWEEP_COLUMNS}


def table(title, runs, keys):
    """Markdown: every run, then the medians and the ratio new/base."""
    lines = [f"## {title}", "", "| run | build | " + " | ".join(keys) + " |",
             "| --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for i, (build, r) in enumerate(runs):
        lines.append(f"| {i + 1} | {build} | " + " | ".join(fmt(r[k]) for k in keys) + " |")
    med = {b: {k: statistics.median(r[k] for bb, r in runs if bb == b) for k in keys}
           for b in ("base", "new")}
    for b in ("base", "new"):
        lines.append(f"| median | {b} | " + " | ".join(fmt(med[b][k]) for k in keys) + " |")
    lines.append("| new / base | | " + " | ".join(
        f"{med['new'][k] / med['base'][k]:.3f}" if med["base"][k] else "-" for k in keys) + " |")
    return lines + [""]


def fmt(x):
    return f"{x:.4f}" if abs(x) < 1 else f"{x:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the ferry binary of the earlier build")
    ap.add_argument("--ferry", default=os.path.join(sn.RELEASE, "ferry"), help="the ferry binary of the new build")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--base-name", default="base", help="how the report names the earlier build")
    ap.add_argument("--new-name", default="new", help="how the report names the new build")
    ap.add_argument("--out", default=os.path.join(sn.ROOT, "perf", "before-after.md"))
    args = ap.parse_args()
    for path in (args.base, args.ferry):
        if not os.access(path, os.X_OK):
            sys.exit(f"not an executable: {path}")
    work = tempfile.mkdtemp(prefix="ferry-perf-")
    lib = sn.bundled_librdkafka_dir(work)
    if lib:
        sn.BENCH_ENV["LD_LIBRARY_PATH"] = lib
    builds = {"base": args.base, "new": args.ferry}
    single, zones = [], []
    for rnd in range(args.rounds):
        order = ["base", "new"] if rnd % 2 == 0 else ["new", "base"]
        for b in order:
            r = single_node(builds[b], args, work, f"{b}-{rnd}")
            single.append((b, r))
            print(f"round {rnd + 1} {b} single node: " + ", ".join(f"{k} {fmt(v)}" for k, v in r.items()),
                  flush=True)
        for b in reversed(order):
            r = three_zones(builds[b], args, work, f"{b}-{rnd}-zones3")
            zones.append((b, r))
            print(f"round {rnd + 1} {b} three zones: " + ", ".join(f"{k} {fmt(v)}" for k, v in r.items()),
                  flush=True)
    lines = ["# Before and after", "",
             f"- Machine: {sn.machine()}", f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- Command: `python3 perf/before_after.py --base {args.base} --ferry {args.ferry} "
             f"--rounds {args.rounds} --seconds {args.seconds}`",
             f"- base: {args.base_name}; new: {args.new_name}",
             "- Same load generator (this checkout's ferry-bench) for both; rounds alternate the order", ""]
    lines += table("Single node (`ferry dev`, local-directory bucket)", single,
                   ["peak MB/s", "peak p99 ms", "blast MB/s", "blast p99 ms", "blast broker CPU s/GB"])
    lines += table("Three zones (`ferry-bench sweep --zones 3`, 250 ms / 8 MiB, 4,000 records/s, "
                   "S3 latency model)", zones, [label for _, label in SWEEP_COLUMNS])
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sn.run_cleaning_up(main)
