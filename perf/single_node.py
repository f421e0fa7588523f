"""Single-node produce benchmark (the single-node issue's benchmark), as
ratios measured in one run on one machine:

  1. the loopback TCP limit on this machine (iperf3, one stream);
  2. Ferry (`ferry dev`, local-directory bucket, batchInterval 250 ms):
     peak MB/s with acks=all, 1 KiB records, 6 partitions; then publish p50
     and p99 at half that rate, beside the WAL's PUT p99 from /metrics;
  3. the same client against the `tansu` broker with its memory engine, if
     it is installed (`cargo install tansu --features dynostore`);
  4. what the bucket directory's filesystem takes (new 8 MiB files
     written with O_DIRECT, as Ferry's file bucket writes WAL objects);
  5. Ferry and tansu again under `ferry-bench blast`, a raw-protocol load
     that sends one pre-encoded request again and again: librdkafka spends
     more CPU per record than Ferry does, and on a machine where the load
     shares the broker's cores it, not the broker, sets the peak. Each
     broker's CPU seconds per GB are printed too.

Every measurement gets a fresh broker; Ferry's bucket directory is deleted
after each (a peak run writes tens of GB).

The load comes from `ferry-bench` (librdkafka, the 2.12 that rdkafka-sys
bundles, linked in; the LD_LIBRARY_PATH pointing at the confluent-kafka
wheel's library is left from when it linked Debian's 2.0.2, and only matters
for a build that links librdkafka dynamically). The report names the
librdkafka version used. Build both in release first:

    cargo build --release -p ferry-node -p ferry-bench
    python3 perf/single_node.py [--tansu PATH] [--seconds 20] [--out perf/single-node.md]

It prints every figure and the machine, and writes them as Markdown.
"""
import argparse
import json
import mmap
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from harness import free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
# The ferry binary measured (perf/before_after.py points it at other builds).
FERRY = os.path.join(RELEASE, "ferry")


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


def iperf3_loopback(seconds):
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # No connect probe: it would use up the one-off server's session.
        time.sleep(1)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
        bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
        return bps / 8 / 1e6
    finally:
        server.kill()
        server.wait()


def disk_write_limit(directory, seconds=5, writers=2, size=8 << 20):
    """MB/s of new 8 MiB files written with O_DIRECT into `directory` (the
    filesystem the bucket directory is on) by `writers` threads, each file
    staged and renamed as Ferry's file bucket does, and kept until the end
    (as a run's WAL objects are): what the bucket directory itself can
    take."""
    os.makedirs(directory, exist_ok=True)
    written = [0] * writers
    stop = time.time() + seconds

    def writer(i):
        buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT needs
        buf.write(os.urandom(4096) * (size // 4096))
        n = 0
        while time.time() < stop:
            path = os.path.join(directory, f"{i}-{n}")
            fd = os.open(path + "#1", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT)
            try:
                os.write(fd, buf)
            finally:
                os.close(fd)
            os.rename(path + "#1", path)
            written[i] += size
            n += 1
    started = time.time()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(directory, ignore_errors=True)
    return sum(written) / (time.time() - started) / 1e6


def bundled_librdkafka_dir(work):
    """A directory holding the confluent-kafka wheel's librdkafka as
    librdkafka.so.1, or None if the wheel is not installed."""
    try:
        import confluent_kafka
    except ImportError:
        return None
    libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    found = [f for f in os.listdir(libs) if f.startswith("librdkafka")] if os.path.isdir(libs) else []
    if not found:
        return None
    d = os.path.join(work, "librdkafka")
    os.makedirs(d, exist_ok=True)
    os.symlink(os.path.join(libs, found[0]), os.path.join(d, "librdkafka.so.1"))
    return d


BENCH_ENV = dict(os.environ)


def cpu_seconds(pid):
    """User + system CPU seconds a running process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench(bootstrap, topic, rate, seconds, json_path):
    cmd = [os.path.join(RELEASE, "ferry-bench"), "run", "--bootstrap", bootstrap, "--topic", topic,
           "--partitions", "6", "--record-bytes", "1024", "--acks", "all", "--rate", str(int(rate)),
           "--producers", "2", "--consumers", "0", "--warmup-secs", "5", "--duration-secs", str(seconds),
           "--linger-ms", "5", "--json", json_path]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, timeout=seconds + 120, stdout=subprocess.DEVNULL, env=BENCH_ENV)
    with open(json_path) as f:
        return json.load(f)


def metric(port, name, labels=""):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + labels) or (line.startswith(name + "{") and labels in line):
            return float(line.rsplit(" ", 1)[1])
    return None


class Broker:
    """One fresh broker process for one measurement: Ferry (`ferry dev` on
    its own directory, deleted afterwards, so that no run's bucket fills the
    disk) or tansu's memory engine."""

    def __init__(self, kind, args, work, name):
        self.kind, self.port, self.mport = kind, free_port(), free_port()
        self.dir = os.path.join(work, name)
        log = open(os.path.join(work, f"{name}.log"), "ab")
        if kind == "ferry":
            cmd = [FERRY, "dev", "--dir", self.dir, "--port", str(self.port),
                   "--override", f"ferry.metrics.listener=127.0.0.1:{self.mport}"]
        else:
            cmd = [args.tansu, "--listener-url", f"tcp://127.0.0.1:{self.port}",
                   "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
                   "--storage-engine", "memory://tansu/"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        if not wait_port(self.port):
            self.stop()
            sys.exit(f"{kind} did not start: {' '.join(cmd)}; see {work}/{name}.log")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def measured(broker, load):
    """Runs `load()` and adds the CPU seconds the broker and the load used."""
    broker_before, load_before, wall_before = broker.cpu(), children_cpu_seconds(), time.time()
    out = load()
    out["cpu"] = {"broker_s": broker.cpu() - broker_before, "load_s": children_cpu_seconds() - load_before,
                  "wall_s": time.time() - wall_before}
    return out


def blast(bootstrap, json_path):
    """ferry-bench blast: the same pre-encoded request again and again, so
    that the client leaves the cores to the broker (2 s warm-up, 8 s
    measured, which also bounds what the memory engine holds)."""
    cmd = [os.path.join(RELEASE, "ferry-bench"), "blast", "--bootstrap", bootstrap, "--topic", "blast",
           "--partitions", "6", "--record-bytes", "1024", "--batch-records", "128", "--connections", "2",
           "--in-flight", "32", "--warmup-secs", "2", "--duration-secs", "8", "--json", json_path]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL)
    with open(json_path) as f:
        return json.load(f)


def with_broker(kind, args, work, name, load):
    broker = Broker(kind, args, work, name)
    try:
        return broker, measured(broker, lambda: load(broker))
    finally:
        broker.stop()


def cpu_per_gb(run):
    """Broker CPU seconds per GB of record values acknowledged, over a whole
    blast run (warm-up, window and drain)."""
    gb = run["acked_total"] * run["config"]["record_bytes"] / 1e9
    return run["cpu"]["broker_s"] / gb if gb > 0 else float("nan")


def blast_line(name, run):
    """One broker's blast figures, as a report line."""
    lat, cpu = run["latency"], run["cpu"]
    return (f"- {name}: {run['mb_per_sec']:.1f} MB/s, request p50 {lat['p50_ms']:.1f} ms, p99 "
            f"{lat['p99_ms']:.1f} ms; CPU over {cpu['wall_s']:.0f} s: broker {cpu['broker_s']:.1f} s "
            f"({cpu_per_gb(run):.2f} s per GB), load {cpu['load_s']:.1f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tansu", default=shutil.which("tansu") or "/opt/tansu/bin/tansu")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "single-node.md"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-perf-")
    lib = bundled_librdkafka_dir(work)
    if lib:
        BENCH_ENV["LD_LIBRARY_PATH"] = lib
    have_tansu = os.path.exists(args.tansu)
    lines = [f"- Machine: {machine()}", f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- Command: `python3 perf/single_node.py --seconds {args.seconds}`",
             "- Every measurement on a fresh broker (Ferry: `ferry dev`, local-directory bucket, "
             "batchInterval 250 ms; tansu: memory engine), on the same 2 cores as the load"]
    loop = iperf3_loopback(10)
    lines.append(f"- Loopback TCP (iperf3, 1 stream, 10 s): {loop:.0f} MB/s")
    disk = disk_write_limit(os.path.join(work, "disk"))
    lines.append(f"- Bucket directory's filesystem: new 8 MiB files written with O_DIRECT, 2 writers, 5 s: "
                 f"{disk:.0f} MB/s")

    # 1. The load: librdkafka.
    lines.append("")
    lines.append("### librdkafka load (the issue's benchmark)")
    lines.append("")
    lines.append("- Load: ferry-bench run (librdkafka), 2 producers, acks=all, 1 KiB records, 6 partitions, "
                 f"linger 5 ms, 5 s warm-up, {args.seconds} s measured")
    _, peak = with_broker("ferry", args, work, "ferry-peak", lambda b: bench(
        b.bootstrap, "peak", 0, args.seconds, os.path.join(work, "ferry-peak.json")))
    lines.append(f"- librdkafka used by the load generator: {peak['machine'].get('librdkafka', '?')}")
    fp = peak["publish"]["throughput"]["mb_per_sec"]
    cpu = peak["cpu"]
    pl = peak["publish"]["latency"]
    lines.append(f"- Ferry peak (rate 0): {fp:.1f} MB/s, "
                 f"{peak['publish']['throughput']['records_per_sec']:.0f} records/s, "
                 f"publish p50 {pl['p50_ms']:.1f} ms, p99 {pl['p99_ms']:.1f} ms, "
                 f"failed {peak['publish']['records_failed']}; CPU over {cpu['wall_s']:.0f} s: "
                 f"broker {cpu['broker_s']:.1f} s, load generator {cpu['load_s']:.1f} s")

    def half_run(b):
        out = bench(b.bootstrap, "half", peak["publish"]["throughput"]["records_per_sec"] / 2, args.seconds,
                    os.path.join(work, "ferry-half.json"))
        out["put_p99"] = metric(b.mport, "ferry_wal_upload_latency_seconds", 'quantile="0.99"')
        out["puts"] = metric(b.mport, "ferry_s3_puts_total")
        return out
    _, half = with_broker("ferry", args, work, "ferry-half", half_run)
    hl = half["publish"]["latency"]
    lines.append(f"- Ferry at half the peak ({half['publish']['throughput']['mb_per_sec']:.1f} MB/s): "
                 f"publish p50 {hl['p50_ms']:.1f} ms, p99 {hl['p99_ms']:.1f} ms, max {hl['max_ms']:.1f} ms")
    if half["put_p99"] is not None:
        goal = 250 + half["put_p99"] * 1000 + 5
        lines.append(f"- WAL PUT p99 (from /metrics): {half['put_p99'] * 1000:.1f} ms; goal p99 <= 250 + PUT p99 "
                     f"+ 5 = {goal:.1f} ms: {'met' if hl['p99_ms'] <= goal else 'NOT met'}; "
                     f"S3 PUTs {half['puts']:.0f}")
    lines.append(f"- Ferry / loopback: {fp / loop:.3f} (goal >= 0.5: {'met' if fp / loop >= 0.5 else 'NOT met'})")
    if have_tansu:
        try:
            _, tpeak = with_broker("tansu", args, work, "tansu-peak", lambda b: bench(
                b.bootstrap, "peak", 0, args.seconds, os.path.join(work, "tansu-peak.json")))
            tp = tpeak["publish"]["throughput"]["mb_per_sec"]
            cpu = tpeak["cpu"]
            lines.append(f"- tansu 0.6.0 (memory engine, not durable) peak, same client: {tp:.1f} MB/s; CPU over "
                         f"{cpu['wall_s']:.0f} s: broker {cpu['broker_s']:.1f} s, load generator "
                         f"{cpu['load_s']:.1f} s")
            lines.append(f"- Ferry / tansu: {fp / tp:.2f} (goal >= 3: {'met' if fp / tp >= 3 else 'NOT met'})")
        except subprocess.CalledProcessError:
            lines.append("- tansu (memory engine): the load generator could not talk to it (see the run's "
                         "stderr); no ratio")
    else:
        lines.append(f"- tansu: not installed at {args.tansu}; no ratio")

    # 2. A load that leaves the cores to the broker.
    lines.append("")
    lines.append("### Raw-protocol load (`ferry-bench blast`): the broker, not the client, sets the peak")
    lines.append("")
    lines.append("- Load: one Produce request (6 partitions x 128 records of 1 KiB, acks=all) encoded once and "
                 "sent again and again, 2 connections x 32 in flight, 2 s warm-up, 8 s measured")
    _, fb = with_broker("ferry", args, work, "ferry-blast", lambda b: blast(
        b.bootstrap, os.path.join(work, "ferry-blast.json")))
    fbm = fb["mb_per_sec"]
    lines.append(blast_line("Ferry", fb))
    lines.append(f"- Ferry / loopback: {fbm / loop:.3f} (goal >= 0.5: "
                 f"{'met' if fbm / loop >= 0.5 else 'NOT met'}); Ferry / the bucket directory's write limit: "
                 f"{fbm / disk:.2f}")
    if have_tansu:
        try:
            _, tb = with_broker("tansu", args, work, "tansu-blast", lambda b: blast(
                b.bootstrap, os.path.join(work, "tansu-blast.json")))
            tbm = tb["mb_per_sec"]
            lines.append(blast_line("tansu (memory engine)", tb))
            lines.append(f"- Ferry / tansu: {fbm / tbm:.2f} (goal >= 3: {'met' if fbm / tbm >= 3 else 'NOT met'})")
        except subprocess.CalledProcessError:
            lines.append("- tansu (memory engine): blast could not talk to it (see the run's stderr); no ratio")
    text = "# Single-node produce benchmark\n\n" + "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


def run_cleaning_up(main):
    """Runs `main`; the work directories it made (`ferry-perf-*`, with
    buckets of gigabytes) never outlive it."""
    before = set(os.listdir(tempfile.gettempdir()))
    try:
        main()
    finally:
        for name in set(os.listdir(tempfile.gettempdir())) - before:
            if name.startswith("ferry-perf-"):
                shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)


if __name__ == "__main__":
    run_cleaning_up(main)
