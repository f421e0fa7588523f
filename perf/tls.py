"""Produce throughput over SASL_SSL against PLAINTEXT, in one run.

Each round starts a fresh `ferry dev` twice: once as it is (PLAINTEXT), once
with `--secure` (clients on SASL_SSL with SCRAM-SHA-512, TLS 1.3 with
AES-GCM as rustls and librdkafka's OpenSSL negotiate it), and runs the same
librdkafka load against each at full speed (ferry-bench run, rate 0). It
reports produce MB/s and the broker's CPU seconds per GB for both, and the
ratio of the medians (goal: TLS at least 0.7 of plaintext). Rounds
alternate the order.

Build first:

    cargo build --release -p ferry-node -p ferry-bench
    python3 perf/tls.py [--rounds 2] [--seconds 15]
"""
import argparse
import resource
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import single_node as sn  # noqa: E402
from single_node import free_port, wait_port  # noqa: E402


class Node:
    """A fresh `ferry dev` on its own directory, PLAINTEXT or `--secure`."""

    def __init__(self, work, name, secure):
        self.port = free_port()
        self.dir = os.path.join(work, name)
        log = open(os.path.join(work, f"{name}.log"), "ab")
        cmd = [sn.FERRY, "dev", "--dir", self.dir, "--port", str(self.port)]
        if secure:
            cmd.append("--secure")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_port(self.port):
            self.stop()
            sys.exit(f"ferry did not start: {' '.join(cmd)}; see {work}/{name}.log")
        self.client_config = []
        if secure:
            props = os.path.join(self.dir, "secure", "client.properties")
            deadline = time.time() + 20
            while not os.path.exists(props) and time.time() < deadline:
                time.sleep(0.1)
            for line in open(props):
                key, value = line.strip().split("=", 1)
                if key == "bootstrap.servers":
                    continue
                # librdkafka's name for the mechanism is sasl.mechanisms.
                self.client_config.append(f"{key}={value}")

    def cpu(self):
        return sn.cpu_seconds(self.proc.pid)

    def stop(self):
        sn.Broker.stop(self)


def run_load(node, work, name, seconds, rate):
    json_path = os.path.join(work, f"{name}.json")
    cmd = [os.path.join(sn.RELEASE, "ferry-bench"), "run", "--bootstrap", f"127.0.0.1:{node.port}",
           "--topic", "tls", "--partitions", "6", "--record-bytes", "1024", "--acks", "all", "--rate", str(rate),
           "--producers", "2", "--consumers", "0", "--warmup-secs", "5", "--duration-secs", str(seconds),
           "--linger-ms", "5", "--json", json_path]
    for c in node.client_config:
        cmd += ["--client-config", c]
    shown = [a if "sasl.password" not in a else "sasl.password=[redacted]" for a in cmd[1:]]
    print("+", " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, timeout=seconds + 120, stdout=subprocess.DEVNULL, env=sn.BENCH_ENV)
    import json
    with open(json_path) as f:
        return json.load(f)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(work, name, secure, seconds, rate):
    node = Node(work, name, secure)
    try:
        before = node.cpu()
        client_before = children_cpu()
        out = run_load(node, work, name, seconds, rate)
        broker_s = node.cpu() - before
        # The load generator is a finished child: its whole run (warm-up
        # included), so per GB it is an upper bound.
        client_s = children_cpu() - client_before
    finally:
        node.stop()
    acked = out["publish"]["records_acked"]
    gb = acked * 1024 / 1e9
    return {
        "mb_per_sec": out["publish"]["throughput"]["mb_per_sec"],
        "broker_s": broker_s,
        "cpu_s_per_gb": broker_s / gb if gb else float("nan"),
        "client_s_per_gb": client_s / gb if gb else float("nan"),
        "failed": out["publish"]["records_failed"],
        "p99_ms": out["publish"]["latency"]["p99_ms"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=0,
                    help="records/s over both producers; 0 (default) sends as fast as it goes")
    ap.add_argument("--out", default=os.path.join(sn.ROOT, "perf", "tls.md"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-tls-")
    lib = sn.bundled_librdkafka_dir(work)
    if lib:
        sn.BENCH_ENV["LD_LIBRARY_PATH"] = lib
    results = {"plaintext": [], "sasl_ssl": []}
    for r in range(args.rounds):
        order = [("plaintext", False), ("sasl_ssl", True)]
        if r % 2:
            order.reverse()
        for name, secure in order:
            m = measure(work, f"{name}-{r}", secure, args.seconds, args.rate)
            print(f"round {r + 1} {name}: {m['mb_per_sec']:.1f} MB/s, broker {m['cpu_s_per_gb']:.2f} CPU s/GB, "
                  f"client {m['client_s_per_gb']:.2f} CPU s/GB, "
                  f"p99 {m['p99_ms']:.1f} ms, failed {m['failed']}", flush=True)
            results[name].append(m)
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("mb_per_sec", "cpu_s_per_gb", "client_s_per_gb", "p99_ms")}
           for k, v in results.items()}
    ratio = med["sasl_ssl"]["mb_per_sec"] / med["plaintext"]["mb_per_sec"]
    lines = [
        "# Produce over SASL_SSL against PLAINTEXT",
        "",
        f"- Machine: {sn.machine()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `python3 perf/tls.py --rounds {args.rounds} --seconds {args.seconds}"
        + (f" --rate {args.rate}`" if args.rate else "`"),
        "- Each measurement on a fresh `ferry dev` (local-directory bucket, batchInterval 250 ms); SASL_SSL is "
        "`ferry dev --secure` (SCRAM-SHA-512, TLS via rustls with aws-lc-rs); the same 2 cores carry the load",
        "- Load: ferry-bench run (librdkafka), 2 producers, acks=all, 1 KiB records, 6 partitions, linger 5 ms, "
        + (f"rate {args.rate} records/s" if args.rate else "rate 0 (as fast as it goes)")
        + f", 5 s warm-up, {args.seconds} s measured",
        "- Client CPU is the load generator's whole run (warm-up included) per GB acked in the measured part: "
        "an upper bound, for comparing the two protocols",
        "",
        "| round | protocol | MB/s | broker CPU s per GB | client CPU s per GB | publish p99 ms | failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        for i, m in enumerate(runs):
            lines.append(f"| {i + 1} | {name} | {m['mb_per_sec']:.1f} | {m['cpu_s_per_gb']:.2f} | "
                         f"{m['client_s_per_gb']:.2f} | "
                         f"{m['p99_ms']:.1f} | {m['failed']} |")
    lines += [
        "",
        f"- Medians: PLAINTEXT {med['plaintext']['mb_per_sec']:.1f} MB/s, "
        f"{med['plaintext']['cpu_s_per_gb']:.2f} CPU s/GB; SASL_SSL {med['sasl_ssl']['mb_per_sec']:.1f} MB/s, "
        f"{med['sasl_ssl']['cpu_s_per_gb']:.2f} CPU s/GB",
        f"- SASL_SSL / PLAINTEXT throughput: {ratio:.3f} (goal >= 0.7: {'met' if ratio >= 0.7 else 'NOT met'})",
        f"- Broker CPU per GB, SASL_SSL / PLAINTEXT: "
        f"{med['sasl_ssl']['cpu_s_per_gb'] / med['plaintext']['cpu_s_per_gb']:.2f}; "
        f"client CPU per GB: {med['sasl_ssl']['client_s_per_gb'] / med['plaintext']['client_s_per_gb']:.2f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
