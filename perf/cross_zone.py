"""Produce latency, same zone against cross zone, in one run (the zones
issue's benchmark).

`ferry dev --zones 2` runs two nodes in two zones in one process. A topic of
one partition is created; its leader's zone is read from Metadata. Then the
same ferry-bench load (librdkafka, acks=all, 1 KiB records, fixed rate with
coordinated-omission correction) runs twice per round: once tagged with the
leader's zone (the producer talks to the leader), once tagged with the other
zone (the producer talks to its zone's node, which hands the batches off
through the bucket). Rounds alternate the order (A B, B A) so drift of a
noisy machine falls on both. The goal: cross-zone p99 at most 1.25 x the
same-zone p99.

Two bucket settings are measured: the local directory as it is, and with
the S3 latency model (PUT p50/p99 from --put-p50/--put-p99 ms).

    cargo build --release -p ferry-node --bin ferry && cargo build --release -p ferry-bench
    python3 perf/cross_zone.py [--seconds 15] [--rate 2000] [--rounds 2] [--out perf/cross-zone.md]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import single_node as sn  # noqa: E402
from single_node import free_port, wait_port, RELEASE, ROOT  # noqa: E402


def leader_of(addr, topic):
    """The node id that leads partition 0, as an untagged client sees it."""
    out = subprocess.run(["kcat", "-b", addr, "-L", "-t", topic, "-J"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    meta = json.loads(out)
    return meta["topics"][0]["partitions"][0]["leader"]


def run_bench(zone, addr, topic, args, work, name):
    path = os.path.join(work, f"{name}.json")
    cmd = [os.path.join(RELEASE, "ferry-bench"), "run", "--zone", f"{zone}={addr}", "--topic", topic,
           "--partitions", "1", "--record-bytes", "1024", "--acks", "all", "--rate", str(args.rate),
           "--producers", "1", "--consumers", "0", "--warmup-secs", "3",
           "--duration-secs", str(args.seconds), "--linger-ms", "5", "--json", path]
    subprocess.run(cmd, check=True, timeout=args.seconds + 120, stdout=subprocess.DEVNULL, env=sn.BENCH_ENV)
    with open(path) as f:
        return json.load(f)


def one_setting(args, work, label, uri_extra):
    port = free_port()
    while any(not port_free(port + k) for k in (1,)):
        port = free_port()
    data = os.path.join(work, f"ferry-{label}")
    os.makedirs(data, exist_ok=True)
    bucket = "file://" + urllib.parse.quote(os.path.join(os.path.abspath(data), "bucket"))
    wal = f"0@{bucket}?batchInterval={args.batch_interval}{uri_extra}"
    log = open(os.path.join(work, f"ferry-{label}.log"), "ab")
    proc = subprocess.Popen([os.path.join(RELEASE, "ferry"), "dev", "--zones", "2", "--dir", data,
                             "--port", str(port), "--override", f"s3.wal.path={wal}",
                             "--override", f"s3.data.buckets={wal.split('?')[0]}"],
                            stdout=log, stderr=log)
    addrs = {"az1": f"127.0.0.1:{port}", "az2": f"127.0.0.1:{port + 1}"}
    try:
        for a in addrs.values():
            if not wait_port(int(a.rsplit(":", 1)[1])):
                sys.exit(f"ferry dev did not start; see {work}/ferry-{label}.log")
        topic = "xz"
        subprocess.run(["kcat", "-b", addrs["az1"], "-L", "-t", topic], capture_output=True, timeout=30)
        time.sleep(1)
        leader = leader_of(addrs["az1"], topic)
        same = f"az{leader + 1}"
        other = "az2" if same == "az1" else "az1"
        results = {"same": [], "cross": []}
        for rnd in range(args.rounds):
            order = [("same", same), ("cross", other)]
            if rnd % 2:
                order.reverse()
            for kind, zone in order:
                r = run_bench(zone, addrs[zone], topic, args, work, f"{label}-{kind}-{rnd}")
                lat = r["publish"]["latency"]
                results[kind].append((lat["p50_ms"], lat["p99_ms"], r["publish"]["throughput"]["mb_per_sec"]))
                print(f"{label} round {rnd + 1} {kind}-zone ({zone} -> leader in {same}): "
                      f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
                      f"{r['publish']['throughput']['mb_per_sec']:.2f} MB/s", flush=True)
        return results, r["machine"].get("librdkafka", "?")
    finally:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def port_free(port):
    import socket
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=2000, help="records/s (1 KiB each)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-interval", type=int, default=250)
    ap.add_argument("--put-p50", type=int, default=50)
    ap.add_argument("--put-p99", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "cross-zone.md"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-perf-")
    lib = sn.bundled_librdkafka_dir(work)
    if lib:
        sn.BENCH_ENV["LD_LIBRARY_PATH"] = lib
    settings = [("local-dir", ""),
                ("s3-model", f"&putLatencyP50Ms={args.put_p50}&putLatencyP99Ms={args.put_p99}"
                             f"&getLatencyP50Ms=20&getLatencyP99Ms=100")]
    lines = ["# Produce latency: same zone against cross zone", "",
             f"- Machine: {sn.machine()}", f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- Command: `python3 perf/cross_zone.py --seconds {args.seconds} --rate {args.rate} "
             f"--rounds {args.rounds}`",
             f"- Load: ferry-bench, 1 producer, acks=all, 1 KiB records, {args.rate} records/s fixed rate "
             f"(coordinated omission corrected), linger 5 ms, one partition; `ferry dev --zones 2`, "
             f"batchInterval {args.batch_interval} ms for the WAL and the handoff", ""]
    for label, extra in settings:
        results, rdk = one_setting(args, work, label, extra)
        s99 = statistics.median(p[1] for p in results["same"])
        c99 = statistics.median(p[1] for p in results["cross"])
        s50 = statistics.median(p[0] for p in results["same"])
        c50 = statistics.median(p[0] for p in results["cross"])
        ratio = c99 / s99 if s99 else float("nan")
        what = "local directory" if not extra else (f"S3 latency model, PUT p50 {args.put_p50} ms / "
                                                    f"p99 {args.put_p99} ms")
        lines.append(f"## {what}")
        lines.append("")
        lines.append("| round | path | p50 ms | p99 ms | MB/s |")
        lines.append("| --- | --- | --- | --- | --- |")
        for kind in ("same", "cross"):
            for i, (p50, p99, mb) in enumerate(results[kind]):
                lines.append(f"| {i + 1} | {kind} zone | {p50:.1f} | {p99:.1f} | {mb:.2f} |")
        lines.append("")
        lines.append(f"- Medians: same zone p50 {s50:.1f} / p99 {s99:.1f} ms; cross zone p50 {c50:.1f} / "
                     f"p99 {c99:.1f} ms; cross/same p99 = {ratio:.2f} "
                     f"(goal <= 1.25: {'met' if ratio <= 1.25 else 'NOT met'})")
        lines.append(f"- librdkafka: {rdk}")
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sn.run_cleaning_up(main)
