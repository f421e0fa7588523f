"""SO_REUSEPORT listeners against one acceptor (the single-node issue's
"measure which is better"), in one run on one machine.

Each round starts a fresh `ferry dev` twice, once per `ferry.accept` mode,
and drives it at full rate with ferry-bench (librdkafka; acks=all, 1 KiB
records, 6 partitions), for each producer count given. The modes alternate
round by round (A B, B A, ...), so drift of a noisy machine falls on both.
Per run it reports MB/s, publish p99, and how the broker's connections were
spread over its shards (`ferry_connections{shard=...}` from /metrics, read
while the load runs). Build in release first:

    cargo build --release -p ferry-node -p ferry-bench
    python3 perf/accept_modes.py [--seconds 10] [--rounds 2] [--producers 2,8] [--out perf/accept-modes.md]
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import single_node as sn  # noqa: E402
from single_node import free_port, wait_port, RELEASE, ROOT  # noqa: E402


def spread(mport):
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    return [int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
            if line.startswith("ferry_connections{")]


def one(mode, producers, seconds, work):
    for _attempt in range(3):
        r = one_attempt(mode, producers, seconds, work)
        if r is not None:
            return r
    sys.exit(f"ferry did not start three times; see {work}/ferry.log")


def one_attempt(mode, producers, seconds, work):
    port, mport = free_port(), free_port()
    data = os.path.join(work, f"ferry-{mode}-{producers}")
    log = open(os.path.join(work, "ferry.log"), "ab")
    proc = subprocess.Popen([os.path.join(RELEASE, "ferry"), "dev", "--dir", data, "--port", str(port),
                             "--override", f"ferry.metrics.listener=127.0.0.1:{mport}",
                             "--override", f"ferry.accept={mode}"], stdout=log, stderr=log)
    seen = []
    try:
        if not wait_port(port):
            # A port taken meanwhile, or a slow start: try again.
            print(f"ferry did not start on port {port}; trying again", flush=True)
            return None
        done = threading.Event()

        def watch():
            # The spread with the most connections seen while the load ran.
            while not done.wait(1.0):
                try:
                    s = spread(mport)
                except OSError:
                    continue
                if sum(s) > sum(seen):
                    seen[:] = s

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        cmd = [os.path.join(RELEASE, "ferry-bench"), "run", "--bootstrap", f"127.0.0.1:{port}",
               "--topic", "t", "--partitions", "6", "--record-bytes", "1024", "--acks", "all",
               "--rate", "0", "--producers", str(producers), "--consumers", "0", "--warmup-secs", "3",
               "--duration-secs", str(seconds), "--linger-ms", "5",
               "--json", os.path.join(work, "r.json")]
        subprocess.run(cmd, check=True, timeout=seconds + 120, stdout=subprocess.DEVNULL, env=sn.BENCH_ENV)
        done.set()
        t.join()
        import json
        with open(os.path.join(work, "r.json")) as f:
            r = json.load(f)
        return (r["publish"]["throughput"]["mb_per_sec"], r["publish"]["latency"]["p99_ms"], list(seen))
    finally:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--producers", default="2,8")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "accept-modes.md"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-perf-")
    lib = sn.bundled_librdkafka_dir(work)
    if lib:
        sn.BENCH_ENV["LD_LIBRARY_PATH"] = lib
    counts = [int(p) for p in args.producers.split(",")]
    results = {}
    rows = []
    for rnd in range(args.rounds):
        modes = ["reuseport", "acceptor"] if rnd % 2 == 0 else ["acceptor", "reuseport"]
        for producers in counts:
            for mode in modes:
                mb, p99, sp = one(mode, producers, args.seconds, work)
                results.setdefault((mode, producers), []).append(mb)
                row = f"| {rnd + 1} | {producers} | {mode} | {mb:.1f} | {p99:.1f} | {sp} |"
                print(row, flush=True)
                rows.append(row)
    lines = ["# Connections to shards: SO_REUSEPORT listeners against one acceptor", "",
             f"- Machine: {sn.machine()}", f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- Command: `python3 perf/accept_modes.py --seconds {args.seconds} --rounds {args.rounds} "
             f"--producers {args.producers}`",
             "- Load: ferry-bench (librdkafka from the confluent-kafka wheel), acks=all, 1 KiB records, "
             "6 partitions, linger 5 ms, full rate, on the same cores as the broker (2 shards)", "",
             "| round | producers | mode | MB/s | publish p99 ms | connections per shard (peak seen) |",
             "| --- | --- | --- | --- | --- | --- |"] + rows + ["", "Medians over the rounds:", ""]
    for producers in counts:
        r = statistics.median(results[("reuseport", producers)])
        a = statistics.median(results[("acceptor", producers)])
        lines.append(f"- {producers} producers: reuseport {r:.1f} MB/s, acceptor {a:.1f} MB/s, "
                     f"acceptor / reuseport {a / r:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sn.run_cleaning_up(main)
