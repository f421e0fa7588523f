#!/usr/bin/env python3
"""Ferry's zone checks (issue 4, "Tests") on three zones made of network
namespaces, with etcd and moto's S3 server in a services namespace.

    sudo python3 tests/zones/check.py --ferry target/debug/ferry [--only a,b] [--nodes-per-zone 2]

Each step prints one line "STEP <name>: PASS|FAIL <numbers>", and the last
line is "RESULT {json}" (step -> {ok, detail, numbers}). Exit code: 0 if every
chosen step passed, 1 if one failed, 2 if the topology or cluster could not
be set up. Steps (in this order; --only picks some, in this order too):

  topology        namespaces, bridges, addresses; the root namespace untouched
  cluster         every node answers Metadata listing all nodes with their zones
  metadata        zone-tagged clients see only their zone's nodes as leaders
                  (Metadata, FindCoordinator); the true leaders are spread over
                  every zone; cross-zone bytes of a metadata-only load
  local           each zone produces to and consumes from the partitions its
                  own nodes lead: all acked records read back at their offsets,
                  and cross-zone bytes <= 1% of produced bytes
  meter           the control: an untagged producer in zone 1 writes straight
                  to leaders in other zones, and the bridge counters must see
                  those bytes cross (so a 0 elsewhere means something)
  cidr            automq.zone.cidr.blocks changed at run time (IncrementalAlter-
                  Configs, broker defaults, name "") moves an untagged client
                  between zones, on the same connection, without restart
  produce_consume (a) producers in every zone (acks=all, idempotent, tagged)
                  write every partition; consumers in every zone read every
                  record at the same offsets
  cross_zone      (b) bytes that entered the zone bridge during produce_consume's
                  load, counted once, <= 1% of the produced payload bytes
  groups          a consumer group per zone (subscribe, commit) reads it all
  kill            (c) kill -9 of a proxy, then of a leader, under load: no
                  acknowledged record lost, none duplicated
  fence           (d) SIGSTOP a leader past its lease, another takes over,
                  SIGCONT: nothing the old leader writes late becomes visible

Logs and files go to a fresh directory (printed); it is kept when a step
fails (--keep keeps it always), and the tails of the logs are printed.
"""
import argparse
import subprocess
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns import Topology, TopologyError, install_signal_teardown, _root_routes  # noqa: E402
import cluster  # noqa: E402
from cluster import Cluster, ClusterError, zone_name  # noqa: E402

STEPS = ["topology", "cluster", "metadata", "local", "meter", "cidr", "produce_consume", "cross_zone",
         "groups", "kill", "fence"]
NOWHERE = "automq_az=nowhere&ferry-zones-truth"  # a zone with no node: the true leaders


def tagged(z, app):
    return f"automq_az={zone_name(z)}&{app}"


class Failed(Exception):
    """A step's check did not hold; the message has the numbers, and
    `nums` (when given) goes to the RESULT line too."""

    def __init__(self, msg, nums=None):
        super().__init__(msg)
        self.nums = nums or {}


class Ctx:
    def __init__(self, args, topo, cluster, workdir):
        self.args = args
        self.topo = topo
        self.c = cluster
        self.dir = workdir
        self.shared = {}

    # ------------------------------------------------------------ helpers
    def create_topic(self, name, partitions):
        n = self.c.nodes[1]
        r = self.c.agent(n.zone).call({"cmd": "create_topic", "addr": n.addr, "topic": name,
                                       "partitions": partitions})
        if r.get("error_code") != 0:
            raise Failed(f"CreateTopics {name}: {r}")
        # Wait (bounded) until every node knows it.
        end = time.time() + 20
        for node in self.c.nodes.values():
            while True:
                m = self.c.metadata(node.zone, node.addr, NOWHERE, [name])
                ps = m.get("topics", [{}])[0].get("partitions", []) if m.get("topics") else []
                if len(ps) == partitions and all(p["leader"] >= 0 for p in ps):
                    break
                if time.time() > end:
                    raise Failed(f"node {node.id} does not show topic {name} within 20s: {m}")
                time.sleep(0.2)

    def leaders(self, topic, z, client_id, node=None):
        node = node or self.c.zone_nodes(z)[0]
        m = self.c.metadata(z, node.addr, client_id, [topic])
        if "error" in m:
            raise Failed(f"Metadata from node {node.id}: {m['error']}")
        return {p["partition"]: p["leader"] for p in m["topics"][0]["partitions"]}

    def truth(self, topic, via=None):
        via = via or next(n for n in self.c.nodes.values() if not n.stopped)
        return self.leaders(topic, via.zone, NOWHERE, via)

    def produce(self, z, topic, tag, partitions=None, count=0, seconds=0, rate=0, size=1024,
                timeout_ms=20000, bootstrap=None, client_id=None, debug=""):
        acks = os.path.join(self.dir, f"acks-{tag}.jsonl")
        args = ["produce", "--bootstrap", bootstrap or self.c.bootstrap(z),
                "--client-id", client_id or tagged(z, f"prod-{tag}"), "--topic", topic, "--tag", tag,
                "--acks", acks, "--size", str(size), "--message-timeout-ms", str(timeout_ms),
                "--flush-timeout", str(timeout_ms / 1000 + 10)]
        if partitions:
            args += ["--partitions", ",".join(map(str, partitions))]
        if count:
            args += ["--count", str(count)]
        if seconds:
            args += ["--seconds", str(seconds)]
        if rate:
            args += ["--rate", str(rate)]
        if debug:
            args += ["--debug", debug]
        p = self.c.spawn_client(z, args, f"producer-{tag}.log")
        p.acks_path = acks
        p.tag = tag
        return p

    def consume(self, z, topic, partitions, targets, tag, timeout=60, subscribe=False, group=None):
        out = os.path.join(self.dir, f"consumed-{tag}.jsonl")
        args = ["consume", "--bootstrap", self.c.bootstrap(z), "--client-id", tagged(z, f"cons-{tag}"),
                "--rack", zone_name(z), "--group", group or f"g-{tag}", "--topic", topic,
                "--partitions", ",".join(map(str, partitions)),
                "--targets", ",".join(f"{p}:{o}" for p, o in targets.items()),
                "--out", out, "--timeout", str(timeout)]
        if subscribe:
            args.append("--subscribe")
        p = self.c.spawn_client(z, args, f"consumer-{tag}.log")
        p.out_path = out
        return p

    @staticmethod
    def finish(p, limit):
        """Waits (bounded) for a client; returns its JSON summary."""
        try:
            out, _ = p.communicate(timeout=limit)
        except Exception:
            p.kill()
            out, _ = p.communicate(timeout=10)
            return {"error": f"did not finish within {limit}s", "raw": (out or "")[-300:]}
        lines = [line for line in (out or "").splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"exit {p.returncode}, no summary"}
        return json.loads(lines[-1])

    @staticmethod
    def read_acks(path):
        acks, errs = [], []
        with open(path) as f:
            for line in f:
                v = json.loads(line)
                (errs if isinstance(v, dict) else acks).append(v)
        return acks, errs

    @staticmethod
    def read_records(path):
        with open(path) as f:
            return [tuple(json.loads(line)) for line in f]


def compare(acks, consumed_by_zone, partitions):
    """The checks shared by produce_consume, local and kill: every consumer
    read the same (partition, offset, key) triples; offsets are dense from
    0; every ack is read at its offset; no key twice."""
    problems = []
    nums = {}
    # An ack without an offset (librdkafka gives None when the broker's
    # answer had -1, e.g. for a duplicate) can only be checked by key.
    acked = {(a[0], a[1]): a[2] for a in acks if a[1] is not None}
    acked_no_offset = [a for a in acks if a[1] is None]
    if acked_no_offset:
        nums["acked_without_offset"] = len(acked_no_offset)
    views = {}
    for z, recs in consumed_by_zone.items():
        seen = {}
        dup_offsets = 0
        for p, o, k in recs:
            if (p, o) in seen and seen[(p, o)] != k:
                problems.append(f"zone {z} read two keys at {p}:{o}")
            if (p, o) in seen:
                dup_offsets += 1
            seen[(p, o)] = k
        views[z] = seen
        keys = {}
        for (p, o), k in seen.items():
            keys.setdefault(k, []).append((p, o))
        dups = {k: v for k, v in keys.items() if len(v) > 1}
        lost = [(po, k) for po, k in acked.items() if seen.get(po) != k]
        lost += [((a[0], None), a[2]) for a in acked_no_offset if a[2] not in keys]
        gaps = 0
        for p in partitions:
            offs = sorted(o for (pp, o) in seen if pp == p)
            if offs and offs != list(range(offs[-1] + 1)):
                gaps += (offs[-1] + 1) - len(offs)
        nums[f"zone{z}"] = {"read": len(seen), "lost_acked": len(lost), "duplicate_keys": len(dups),
                            "offset_gaps": gaps}
        if lost:
            problems.append(f"zone {z}: {len(lost)} acked records not read at their offset, e.g. {lost[:3]}")
        if dups:
            problems.append(f"zone {z}: {len(dups)} keys at two offsets, e.g. {list(dups.items())[:2]}")
        if gaps:
            problems.append(f"zone {z}: {gaps} offsets missing below the end")
    zs = sorted(views)
    for z in zs[1:]:
        if views[z] != views[zs[0]]:
            diff = set(views[z].items()) ^ set(views[zs[0]].items())
            problems.append(f"zones {zs[0]} and {z} read different records ({len(diff)} triples differ, "
                            f"e.g. {sorted(diff)[:3]})")
    return problems, nums


# ================================================================= steps

def step_topology(ctx):
    t = ctx.topo
    names = [t.br_ns, t.svc_ns] + [t.zone_ns(z) for z in range(1, t.zones + 1)]
    from netns import list_netns
    have = set(list_netns())
    missing = [n for n in names if n not in have]
    if missing:
        raise Failed(f"namespaces missing: {missing}")
    if _root_routes() != t._root_routes_before:
        raise Failed("the root namespace's routes changed")
    c = t.counters()
    ports = sorted(k for k in c if k not in ("lo", "zbr", "sbr"))
    return f"{len(names)} namespaces, bridge ports {ports}, root routes unchanged", {"namespaces": len(names)}


def step_cluster(ctx):
    c = ctx.c
    c.wait_all_listed(timeout=30)
    racks = {}
    for n in c.nodes.values():
        m = c.metadata(n.zone, n.addr, "ferry-zones-probe", [])
        racks[n.id] = sorted((b["id"], b["rack"], f"{b['host']}:{b['port']}") for b in m["brokers"])
    first = next(iter(racks.values()))
    for nid, r in racks.items():
        if r != first:
            raise Failed(f"node {nid} lists {r}, node 1 lists {first}")
    for bid, rack, addr in first:
        n = c.nodes[bid]
        if rack != n.rack or addr != n.addr:
            raise Failed(f"node {bid} listed as {rack} {addr}, configured {n.rack} {n.addr}")
    return f"{len(c.nodes)} nodes ({ctx.args.nodes_per_zone}/zone), each lists all with zone and address", \
        {"nodes": len(c.nodes)}


def step_metadata(ctx):
    c = ctx.c
    topic = "zones-meta"
    ctx.create_topic(topic, 12)
    truth = ctx.truth(topic)
    nums = {"true_leaders": truth}
    # Every node tells the same truth, and leaders are spread over zones.
    for n in c.nodes.values():
        t = ctx.leaders(topic, n.zone, NOWHERE, n)
        if t != truth:
            raise Failed(f"node {n.id} says leaders {t}, node 1 says {truth}")
    per_zone = {z: sum(1 for l in truth.values() if c.nodes[l].zone == z) for z in range(1, ctx.topo.zones + 1)}
    nums["partitions_led_per_zone"] = per_zone
    if min(per_zone.values()) == 0:
        raise Failed(f"a zone leads no partition: {per_zone}")
    before = ctx.topo.counters()
    client_bytes = 0
    proxies = {}
    for z in range(1, ctx.topo.zones + 1):
        mine = {n.id for n in c.zone_nodes(z)}
        for n in c.zone_nodes(z):
            m = c.metadata(z, n.addr, tagged(z, "meta"), [topic])
            seen = {p["partition"]: p for p in m["topics"][0]["partitions"]}
            for pi, p in seen.items():
                if p["leader"] not in mine or not set(p["replicas"]) <= mine or not set(p["isr"]) <= mine:
                    raise Failed(f"zone {z} client via node {n.id}: partition {pi} shows {p}, not zone {z}'s nodes")
                if c.nodes[truth[pi]].zone == z and p["leader"] != truth[pi]:
                    raise Failed(f"zone {z}: partition {pi} led in zone by {truth[pi]} shown as {p['leader']}")
            proxies.setdefault(z, set()).update(p["leader"] for p in seen.values())
            for g in range(8):
                fc = c.agent(z).call({"cmd": "find_coordinator", "addr": n.addr,
                                      "client_id": tagged(z, "meta"), "group": f"group-{g}"})
                if fc.get("error_code") != 0 or fc.get("node_id") not in mine:
                    raise Failed(f"zone {z}: FindCoordinator(group-{g}) via node {n.id} gave {fc}")
            r = c.agent(z).call({"cmd": "metadata_loop", "addr": n.addr, "client_id": tagged(z, "meta-loop"),
                                 "topics": [topic], "count": 100})
            client_bytes += r["loop_bytes"]
    after = ctx.topo.counters()
    cross = sum(ctx.topo.cross_zone(before, after).values())
    nums.update({"proxies_used_per_zone": {z: sorted(v) for z, v in proxies.items()},
                 "client_metadata_bytes": client_bytes, "cross_zone_bytes": cross})
    limit = client_bytes // 100
    if cross > limit:
        raise Failed(f"cross-zone bytes {cross} > 1% of the {client_bytes} bytes of Metadata exchanged in zones")
    return (f"tagged clients see only their zone's nodes (Metadata, FindCoordinator) on every node; "
            f"leaders per zone {per_zone}; metadata load {client_bytes} B in-zone, cross-zone {cross} B "
            f"(limit {limit})"), nums


def node_zone_bytes(ctx):
    """Ferry's own count of node-to-node bytes to other zones, summed over
    the running nodes by (kind, direction): a breakdown of what the bridge
    counters measure (they stay the judge)."""
    out = {}
    for n in ctx.c.nodes.values():
        if n.stopped:
            continue
        r = subprocess.run(ctx.topo.exec_args(ctx.topo.zone_ns(n.zone)) +
                           ["curl", "-s", "-m", "5", f"http://{n.ip}:{cluster.METRICS_PORT}/metrics"],
                           capture_output=True, text=True, check=False)
        for line in r.stdout.splitlines():
            if not line.startswith("ferry_zone_bytes_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            if 'peer_zone="' + zone_name(n.zone) + '"' in labels:
                continue
            kind = labels.split('kind="')[1].split('"')[0]
            direction = labels.split('direction="')[1].split('"')[0]
            key = f"{kind}-{direction}"
            out[key] = out.get(key, 0) + int(float(value))
    return out


def run_load_and_read(ctx, topic, plan, tag, size, consumers_read, timeout_ms=20000):
    """plan: {zone: [partitions]} to produce `count` records each into.
    consumers_read: {zone: [partitions]}. Returns acks, errors, consumed
    records per zone, payload bytes, bridge counters before/after, summaries."""
    count = ctx.args.records
    before = ctx.topo.counters()
    rpc_before = node_zone_bytes(ctx)
    t0 = time.time()
    prods = {z: ctx.produce(z, topic, f"{tag}-z{z}", partitions=parts, count=count, size=size,
                            timeout_ms=timeout_ms) for z, parts in plan.items() if parts}
    summaries = {z: ctx.finish(p, timeout_ms / 1000 + 60) for z, p in prods.items()}
    acks, errs = [], []
    for z, p in prods.items():
        a, e = ctx.read_acks(p.acks_path)
        acks += a
        errs += e
    produced = sum(s.get("payload_bytes_acked", 0) for s in summaries.values())
    targets_all = {}
    for p, o, _k, _t in acks:
        if o is not None:
            targets_all[p] = max(targets_all.get(p, 0), o + 1)
    cons = {}
    for z, parts in consumers_read.items():
        if parts:
            cons[z] = ctx.consume(z, topic, parts, {p: targets_all.get(p, 0) for p in parts}, f"{tag}-z{z}",
                                  timeout=ctx.args.consume_timeout)
    csum = {z: ctx.finish(p, ctx.args.consume_timeout + 30) for z, p in cons.items()}
    after = ctx.topo.counters()
    rpc_after = node_zone_bytes(ctx)
    rpc = {k: v - rpc_before.get(k, 0) for k, v in rpc_after.items()}
    consumed = {z: ctx.read_records(p.out_path) for z, p in cons.items()}
    return {"acks": [(a[0], a[1], a[2]) for a in acks], "errors": errs, "consumed": consumed,
            "produced_bytes": produced, "before": before, "after": after, "producers": summaries,
            "consumers": csum, "seconds": round(time.time() - t0, 1), "rpc_cross_zone": rpc}


def producer_problems(summaries):
    out = []
    for z, s in summaries.items():
        if s.get("error"):
            out.append(f"producer in zone {z}: {s['error']}")
        if s.get("fatal"):
            out.append(f"producer in zone {z} stopped on a fatal error after {s.get('sent')} records: {s['fatal']}")
        if s.get("unflushed"):
            out.append(f"producer in zone {z}: {s['unflushed']} records neither acked nor failed at the end")
    return out


def error_counts(errs):
    out = {}
    for e in errs:
        out[e["err"]] = out.get(e["err"], 0) + 1
    return out


def step_local(ctx):
    topic = "zones-local"
    nparts = 6
    ctx.create_topic(topic, nparts)
    truth = ctx.truth(topic)
    plan = {z: sorted(p for p, l in truth.items() if ctx.c.nodes[l].zone == z) for z in range(1, ctx.topo.zones + 1)}
    r = run_load_and_read(ctx, topic, plan, "local", ctx.args.size, plan)
    sent = ctx.args.records * sum(1 for v in plan.values() if v)
    problems = []
    if len(r["acks"]) != sent:
        problems.append(f"acked {len(r['acks'])} of {sent} ({error_counts(r['errors'])})")
    problems += producer_problems(r["producers"])
    # Each zone read its own partitions: compare per zone against its acks.
    nums = {"plan": plan, "acked": len(r["acks"]), "produced_bytes": r["produced_bytes"]}
    for z, parts in plan.items():
        if not parts:
            continue
        za = [a for a in r["acks"] if a[0] in parts]
        pr, n = compare(za, {z: r["consumed"][z]}, parts)
        problems += pr
        nums.update(n)
    cross = ctx.topo.cross_zone(r["before"], r["after"])
    total = sum(cross.values())
    nums["cross_zone_bytes"] = cross
    nums["services_bytes"] = ctx.topo.services_bytes(r["before"], r["after"])
    pct = 100.0 * total / max(1, r["produced_bytes"])
    nums["cross_zone_pct"] = round(pct, 4)
    if r["produced_bytes"] == 0 or total > r["produced_bytes"] / 100:
        problems.append(f"cross-zone {total} B is {pct:.3f}% of {r['produced_bytes']} B produced (limit 1%)")
    detail = (f"same-zone only: acked {len(r['acks'])}/{sent}, read back by each zone at the same offsets; "
              f"cross-zone {total} B = {pct:.3f}% of {r['produced_bytes']} B produced; {r['seconds']}s")
    if problems:
        raise Failed(detail + " | " + "; ".join(problems), nums)
    return detail, nums


def step_meter(ctx):
    """A negative control for the byte counters: data sent on purpose to
    leaders in other zones must show up on the zone bridge."""
    topic = "zones-meter"
    ctx.create_topic(topic, 6)
    truth = ctx.truth(topic)
    elsewhere = sorted(p for p, l in truth.items() if ctx.c.nodes[l].zone != 1)
    if not elsewhere:
        raise Failed(f"no partition led outside zone 1: {truth}")
    before = ctx.topo.counters()
    p = ctx.produce(1, topic, "meter", partitions=elsewhere, count=ctx.args.records, size=ctx.args.size,
                    client_id="ferry-zones-untagged-meter")
    s = ctx.finish(p, 60)
    after = ctx.topo.counters()
    produced = s.get("payload_bytes_acked", 0)
    cross = ctx.topo.cross_zone(before, after)
    pct = 100.0 * cross[1] / max(1, produced)
    nums = {"partitions": elsewhere, "acked": s.get("acked"), "produced_bytes": produced,
            "cross_zone_bytes": cross, "zone1_sent_pct": round(pct, 2)}
    detail = (f"untagged producer in zone 1 to leaders elsewhere: acked {s.get('acked')}/{ctx.args.records}, "
              f"{produced} B; zone 1 sent {cross[1]} B across = {pct:.1f}% of it (want >= 100%)")
    if not produced or cross[1] < produced:
        raise Failed(detail + f" | {s.get('error') or s.get('errors') or ''}")
    return detail, nums


def step_cidr(ctx):
    c = ctx.c
    topic = "zones-cidr"
    ctx.create_topic(topic, 6)
    truth = ctx.truth(topic)
    zs = list(range(1, ctx.topo.zones + 1))
    pids = {n.id: n.proc.pid for n in c.nodes.values()}

    def untagged(z, node=None):
        node = node or c.zone_nodes(z)[0]
        m = c.agent(z).call({"cmd": "metadata", "addr": node.addr, "client_id": "plain-app",
                             "topics": [topic], "conn": "cidr", "source": ctx.topo.client_ip(z)})
        if "error" in m:
            raise Failed(f"Metadata zone {z} via {node.id}: {m['error']}")
        return {p["partition"]: p["leader"] for p in m["topics"][0]["partitions"]}

    def alter(value, via_zone=2):
        node = c.zone_nodes(via_zone)[0]
        return c.agent(via_zone).call({"cmd": "alter_cidr", "addr": node.addr, "value": value})

    def wait_zone_of(z, want_zone, limit=10):
        """Until zone z's untagged client, on every node of its zone and on
        the same connection, sees only want_zone's nodes as leaders (or the
        truth if want_zone is None)."""
        end = time.time() + limit
        while True:
            seen = {n.id: untagged(z, n) for n in c.zone_nodes(z)}
            if want_zone is None:
                ok = all(s == truth for s in seen.values())
            else:
                ids = {n.id for n in c.zone_nodes(want_zone)}
                ok = all(set(s.values()) <= ids for s in seen.values())
            if ok:
                return time.time() - (end - limit)
            if time.time() > end:
                raise Failed(f"zone {z}'s untagged client sees {seen}, want zone {want_zone} "
                             f"(truth {truth}) after {limit}s")
            time.sleep(0.2)

    nums = {}
    r = alter("")
    if r.get("error_code") != 0:
        raise Failed(f"resetting the table: {r}")
    for z in zs:
        wait_zone_of(z, None)
    table = "<>".join(f"{zone_name(z)}@10.77.{z}.0/24" for z in zs)
    r = alter(table)
    if r.get("error_code") != 0:
        raise Failed(f"IncrementalAlterConfigs {table!r}: {r}")
    nums["own_zone_s"] = {z: round(wait_zone_of(z, z), 2) for z in zs}
    # Rotate: zone z's addresses now belong to zone z+1.
    rot = {z: zs[(i + 1) % len(zs)] for i, z in enumerate(zs)}
    table2 = "<>".join(f"{zone_name(rot[z])}@10.77.{z}.0/24" for z in zs)
    r = alter(table2, via_zone=3)
    if r.get("error_code") != 0:
        raise Failed(f"IncrementalAlterConfigs {table2!r}: {r}")
    nums["rotated_s"] = {z: round(wait_zone_of(z, rot[z]), 2) for z in zs}
    # Every node shows the value (kept cluster-wide).
    for n in c.nodes.values():
        d = c.agent(n.zone).call({"cmd": "describe_config", "addr": n.addr,
                                         "key": "automq.zone.cidr.blocks", "resource_name": str(n.id)})
        if d.get("value") != table2:
            raise Failed(f"node {n.id} DescribeConfigs shows {d}, want {table2!r}")
    # A bad value is refused, names the key, and changes nothing.
    bad = alter("az1@300.0.0.0/8")
    nums["bad_value"] = bad
    if bad.get("error_code") == 0:
        raise Failed(f"a bad table was accepted: {bad}")
    for z in zs:
        wait_zone_of(z, rot[z], limit=3)
    # Back to no table: the truth again.
    r = alter("")
    for z in zs:
        wait_zone_of(z, None)
    restarted = [nid for nid, pid in pids.items() if c.nodes[nid].proc.pid != pid or c.nodes[nid].proc.poll() is not None]
    if restarted:
        raise Failed(f"nodes restarted during the step: {restarted}")
    return (f"untagged clients (same connection) moved to their own zone in {nums['own_zone_s']} s, "
            f"to the next zone in {nums['rotated_s']} s, back to the true leaders after reset; "
            f"bad value refused with error {bad.get('error_code')}; no node restarted"), nums


def step_produce_consume(ctx):
    topic = "zones-all"
    nparts = 6
    ctx.create_topic(topic, nparts)
    zs = list(range(1, ctx.topo.zones + 1))
    parts = list(range(nparts))
    r = run_load_and_read(ctx, topic, {z: parts for z in zs}, "all", ctx.args.size, {z: parts for z in zs})
    ctx.shared["all"] = r
    sent = ctx.args.records * len(zs)
    problems, nums = compare(r["acks"], r["consumed"], parts)
    nums.update({"sent": sent, "acked": len(r["acks"]), "failed": len(r["errors"]),
                 "errors": error_counts(r["errors"]), "consumer_errors": {z: s.get("errors") for z, s in r["consumers"].items()}})
    if len(r["acks"]) != sent:
        problems.insert(0, f"acked {len(r['acks'])} of {sent}, failed {error_counts(r['errors'])}")
    problems[:0] = producer_problems(r["producers"])
    ack_by_zone = {z: sum(1 for a in r["acks"] if a[2].startswith(f"all-z{z}-")) for z in zs}
    read_by_zone = {z: len(v) for z, v in r["consumed"].items()}
    detail = f"acked per producer zone {ack_by_zone} of {ctx.args.records}; read per consumer zone {read_by_zone}; {r['seconds']}s"
    if problems:
        raise Failed(detail + " | " + "; ".join(problems[:4]), nums)
    return detail, nums


def step_cross_zone(ctx):
    if "all" not in ctx.shared:
        step_produce_consume_quiet(ctx)
    r = ctx.shared["all"]
    cross = ctx.topo.cross_zone(r["before"], r["after"])
    total = sum(cross.values())
    produced = r["produced_bytes"]
    pct = 100.0 * total / max(1, produced)
    nums = {"cross_zone_bytes_by_sender_zone": cross, "cross_zone_bytes": total, "produced_payload_bytes": produced,
            "pct": round(pct, 4), "services_bytes": ctx.topo.services_bytes(r["before"], r["after"]),
            "ferry_rpc_payload_bytes": r.get("rpc_cross_zone", {})}
    detail = (f"cross-zone {total} B (each byte once, at the sending zone's bridge port, headers included) "
              f"= {pct:.3f}% of {produced} B of acked key+value payload (limit 1%); "
              f"Ferry's RPC payload count {r.get('rpc_cross_zone', {})}")
    if produced == 0:
        raise Failed(detail + " | nothing was produced")
    if total > produced / 100:
        raise Failed(detail)
    return detail, nums


def step_produce_consume_quiet(ctx):
    try:
        step_produce_consume(ctx)
    except Failed:
        pass


def step_groups(ctx):
    if "all" not in ctx.shared:
        step_produce_consume_quiet(ctx)
    r = ctx.shared["all"]
    topic = "zones-all"
    parts = list(range(6))
    ends = {}
    for recs in r["consumed"].values():
        for p, o, _k in recs:
            ends[p] = max(ends.get(p, 0), o + 1)
    if not ends:
        raise Failed("produce_consume left nothing to read")
    cons = {z: ctx.consume(z, topic, parts, ends, f"group-z{z}", timeout=ctx.args.consume_timeout, subscribe=True,
                           group=f"zones-group-{zone_name(z)}") for z in range(1, ctx.topo.zones + 1)}
    sums = {z: ctx.finish(p, ctx.args.consume_timeout + 30) for z, p in cons.items()}
    problems = []
    nums = {}
    for z, s in sums.items():
        recs = ctx.read_records(cons[z].out_path)
        got = {(p, o) for p, o, _ in recs}
        want = {(p, o) for rr in r["consumed"].values() for p, o, _ in rr}
        committed = {int(k): v for k, v in (s.get("committed") or {}).items()}
        errors = {k: v for k, v in (s.get("errors") or {}).items() if "_NO_OFFSET" not in k}
        nums[f"zone{z}"] = {"read": len(got), "want": len(want), "committed": committed, "errors": errors}
        if got != want:
            problems.append(f"zone {z} group read {len(got)} of {len(want)} records ({errors or s.get('error')})")
        elif any(committed.get(p, -1) != ends.get(p, 0) for p in parts if ends.get(p)):
            problems.append(f"zone {z} committed {committed}, ends {ends}")
    detail = "; ".join(f"zone {z}: read {v['read']}/{v['want']}" for z, v in
                       ((z, nums[f'zone{z}']) for z in sums))
    if problems:
        raise Failed(detail + " | " + "; ".join(problems), nums)
    return detail + "; committed offsets = end offsets", nums


def step_kill(ctx):
    c = ctx.c
    topic = "zones-kill"
    nparts = 6
    ctx.create_topic(topic, nparts)
    zs = list(range(1, ctx.topo.zones + 1))
    truth = ctx.truth(topic)
    # The proxy: a zone-1 node that zone-1 clients see as leader of a
    # partition led in another zone. The leader: the true leader of a
    # partition in zone 2 that is not the proxy.
    seen1 = ctx.leaders(topic, 1, tagged(1, "kill"))
    proxy = next((seen1[p] for p, l in truth.items() if c.nodes[l].zone != 1), c.zone_nodes(1)[0].id)
    leader = next((l for p, l in sorted(truth.items()) if c.nodes[l].zone == 2 and l != proxy), c.zone_nodes(2)[0].id)
    secs = ctx.args.kill_seconds
    prods = {z: ctx.produce(z, topic, f"kill-z{z}", partitions=list(range(nparts)), seconds=secs,
                            rate=ctx.args.kill_rate, size=512, timeout_ms=90000, debug="eos") for z in zs}
    t0 = time.time()
    events = []

    def at(t):
        time.sleep(max(0.0, t0 + t - time.time()))

    at(secs * 0.2)
    c.kill9(proxy)
    events.append(f"t={time.time() - t0:.1f}s kill -9 proxy {proxy}")
    at(secs * 0.4)
    c.restart(proxy)
    events.append(f"t={time.time() - t0:.1f}s restart {proxy}")
    at(secs * 0.55)
    c.kill9(leader)
    events.append(f"t={time.time() - t0:.1f}s kill -9 leader {leader}")
    at(secs * 0.75)
    c.restart(leader)
    events.append(f"t={time.time() - t0:.1f}s restart {leader}")
    sums = {z: ctx.finish(p, secs + 120) for z, p in prods.items()}
    acks, errs = [], []
    for p in prods.values():
        a, e = ctx.read_acks(p.acks_path)
        acks += [(x[0], x[1], x[2]) for x in a]
        errs += e
    try:
        c.wait_all_listed(timeout=30)
    except ClusterError as e:
        events.append(f"cluster not whole again: {e}")
    targets = {}
    for p, o, _k in acks:
        if o is not None:
            targets[p] = max(targets.get(p, 0), o + 1)
    parts = list(range(nparts))
    cons = {z: ctx.consume(z, topic, parts, targets, f"kill-z{z}", timeout=ctx.args.consume_timeout) for z in zs}
    csum = {z: ctx.finish(p, ctx.args.consume_timeout + 30) for z, p in cons.items()}
    consumed = {z: ctx.read_records(p.out_path) for z, p in cons.items()}
    problems, nums = compare(acks, consumed, parts)
    sent = sum(s.get("sent", 0) for s in sums.values())
    if any("sent" not in s for s in sums.values()):
        sent = max(sent, len(acks) + len(errs))
    nums.update({"proxy_killed": proxy, "leader_killed": leader, "events": events, "sent": sent,
                 "acked": len(acks), "failed": len(errs), "errors": error_counts(errs),
                 "consumer_errors": {z: s.get("errors") for z, s in csum.items()}})
    problems[:0] = producer_problems(sums)
    if not acks:
        problems.insert(0, "nothing was acknowledged")
    if len(acks) < sent * 0.5:
        problems.insert(0, f"only {len(acks)} of {sent} acknowledged ({error_counts(errs)})")
    lost = sum(v["lost_acked"] for k, v in nums.items() if k.startswith("zone"))
    dups = sum(v["duplicate_keys"] for k, v in nums.items() if k.startswith("zone"))
    detail = (f"{'; '.join(events)}; sent {sent}, acked {len(acks)}, failed {len(errs)} {error_counts(errs)}; "
              f"lost-acked (summed over zones) {lost}, duplicated keys {dups}")
    if problems:
        raise Failed(detail + " | " + "; ".join(problems[:4]), nums)
    return detail, nums


def step_fence(ctx):
    c = ctx.c
    topic = "zones-fence"
    ctx.create_topic(topic, 6)
    truth = ctx.truth(topic)
    # The victim: the leader of partition 0; its zone's clients see it as leader.
    part = 0
    victim = c.nodes[truth[part]]
    others = [n for n in c.nodes.values() if n.id != victim.id]
    observer = next(n for n in others if n.zone != victim.zone)
    nums = {"partition": part, "victim": victim.id}
    # A producer that talks to the victim only.
    prod = ctx.produce(victim.zone, topic, "fence-old", partitions=[part], seconds=600, rate=100, size=256,
                       timeout_ms=120000, bootstrap=victim.addr, client_id=tagged(victim.zone, "fence-old"))
    time.sleep(3)
    c.signal(victim.id, signal.SIGSTOP)
    t_stop = time.time()
    # Another node must take over within the lease (6 s) + takeover wait.
    new_leader = None
    end = time.time() + ctx.args.takeover_timeout
    while time.time() < end:
        try:
            t = ctx.truth(topic, observer)
            if t.get(part, victim.id) not in (victim.id, -1):
                new_leader = c.nodes[t[part]]
                break
        except Exception:
            pass
        time.sleep(0.5)
    nums["takeover_s"] = round(time.time() - t_stop, 1) if new_leader else None

    def read_partition(tag):
        z = observer.zone
        cons = ctx.consume(z, topic, [part], {}, tag, timeout=20)
        s = ctx.finish(cons, 50)
        return ctx.read_records(cons.out_path), s

    # The producer dies while the victim is stopped: from now on, the only
    # writer of fence-old keys is the stopped node's late processing.
    prod.kill()
    prod.wait(10)
    acked_old, _ = ctx.read_acks(prod.acks_path)
    nums["acked_before_stop"] = sum(1 for a in acked_old if a[3] <= t_stop)
    nums["acked_total_old"] = len(acked_old)
    if not new_leader:
        c.signal(victim.id, signal.SIGCONT)
        raise Failed(f"no other node took over partition {part} from stopped node {victim.id} within "
                     f"{ctx.args.takeover_timeout}s (acked before the stop: {nums['acked_before_stop']})", nums)
    nums["new_leader"] = new_leader.id
    # S1: what the partition shows once the new leader serves it; wait
    # (bounded) until it holds every record the old leader acked before the
    # stop, so S1 is the settled history, not a half-rebuilt one.
    acked_keys = {a[2] for a in acked_old}
    end = time.time() + ctx.args.takeover_timeout
    tries = 0
    while True:
        tries += 1
        s1, sum1 = read_partition(f"fence-s1-{tries}")
        if acked_keys <= {k for _p, _o, k in s1} or time.time() > end:
            break
        time.sleep(1)
    nums["s1_reads"] = tries
    # New records through the new leader, from its zone.
    after = ctx.produce(new_leader.zone, topic, "fence-new", partitions=[part], count=50, size=256,
                        timeout_ms=30000)
    sa = ctx.finish(after, 60)
    acked_new, _ = ctx.read_acks(after.acks_path)
    c.signal(victim.id, signal.SIGCONT)
    t_cont = time.time()
    time.sleep(max(3.0, 20 * ctx.args.batch_interval_ms / 1000))
    s2, sum2 = read_partition("fence-s2")
    # Restart the old leader from the bucket; still nothing late shows.
    c.kill9(victim.id)
    c.restart(victim.id)
    try:
        c.wait_all_listed(timeout=30)
    except ClusterError:
        pass
    s3, sum3 = read_partition("fence-s3")
    problems = []
    old_in_s1 = {k for _p, _o, k in s1 if k.startswith("fence-old")}
    for name, s in (("after SIGCONT", s2), ("after the old leader's restart", s3)):
        if s[:len(s1)] != s1:
            problems.append(f"{name}: the records read before SIGCONT changed")
        late = [r for r in s if r[2].startswith("fence-old") and r[2] not in old_in_s1]
        if late:
            problems.append(f"{name}: {len(late)} late records of the fenced node visible, e.g. {late[:3]}")
        new_keys = {k for _p, _o, k in s if k.startswith("fence-new")}
        miss = [a for a in acked_new if a[2] not in new_keys]
        if miss:
            problems.append(f"{name}: {len(miss)} records acked by the new leader missing")
    lost_old = [a for a in acked_old if a[2] not in old_in_s1]
    late_acks = [a for a in acked_old if a[3] > t_stop]
    nums.update({"s1": len(s1), "s2": len(s2), "s3": len(s3), "acked_new": len(acked_new),
                 "old_acks_after_stop": len(late_acks), "old_acked_not_visible": len(lost_old),
                 "cont_after_s": round(t_cont - t_stop, 1), "new_producer": sa})
    if lost_old:
        problems.append(f"{len(lost_old)} records acked by the old leader are not visible")
    detail = (f"node {victim.id} stopped, node {new_leader.id} took over partition {part} in {nums['takeover_s']}s; "
              f"read {len(s1)} before SIGCONT, {len(s2)} after, {len(s3)} after its restart; "
              f"old leader acks after stop {len(late_acks)}, acked-but-invisible {len(lost_old)}")
    if problems:
        raise Failed(detail + " | " + "; ".join(problems), nums)
    return detail, nums


STEP_FUNCS = {name: globals()[f"step_{name}"] for name in STEPS}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", required=True, help="the ferry binary (target/debug/ferry)")
    ap.add_argument("--only", default="", help=f"comma-separated steps, of: {','.join(STEPS)}")
    ap.add_argument("--zones", type=int, default=3)
    ap.add_argument("--nodes-per-zone", type=int, default=2)
    ap.add_argument("--records", type=int, default=2000, help="records per producer (local, produce_consume)")
    ap.add_argument("--size", type=int, default=1024, help="value bytes per record")
    ap.add_argument("--batch-interval-ms", type=int, default=100)
    ap.add_argument("--consume-timeout", type=float, default=45)
    ap.add_argument("--kill-seconds", type=float, default=30)
    ap.add_argument("--kill-rate", type=float, default=100, help="records/s per zone during kill")
    ap.add_argument("--takeover-timeout", type=float, default=30)
    ap.add_argument("--workdir", default="", help="default: a fresh temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory even if all pass")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--s3", choices=["moto", "s3s"], default="moto",
                    help="the S3-protocol server in the services namespace")
    args = ap.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(STEPS)
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        ap.error(f"unknown steps {unknown}; steps: {STEPS}")
    chosen = [s for s in STEPS if s in chosen]
    if not os.access(args.ferry, os.X_OK):
        ap.error(f"{args.ferry} is not an executable (cargo build -p ferry-node --bin ferry)")
    install_signal_teardown()
    workdir = args.workdir or tempfile.mkdtemp(prefix="ferry-zones-")
    os.makedirs(workdir, exist_ok=True)
    print(f"zones: work directory {workdir}", flush=True)
    results = {}
    status = 0

    def record(name, ok, detail, nums=None):
        results[name] = {"ok": ok, "detail": detail, "numbers": nums or {}}
        print(f"STEP {name}: {'PASS' if ok else 'FAIL'} {detail}", flush=True)

    cluster = None
    try:
        topo = Topology(args.zones)
        try:
            topo.up(args.nodes_per_zone)
        except TopologyError as e:
            record("topology", False, str(e))
            status = 2
            return status
        with topo:
            cluster = Cluster(topo, args.ferry, args.nodes_per_zone, workdir,
                              batch_interval_ms=args.batch_interval_ms, s3=args.s3)
            with cluster:
                try:
                    cluster.start()
                except (ClusterError, Exception) as e:
                    record("cluster", False, f"cluster did not start: {e}")
                    status = 2
                    return status
                ctx = Ctx(args, topo, cluster, workdir)
                for name in chosen:
                    t0 = time.time()
                    try:
                        detail, nums = STEP_FUNCS[name](ctx)
                        nums = dict(nums, seconds=round(time.time() - t0, 1))
                        record(name, True, detail, nums)
                    except Failed as e:
                        record(name, False, str(e), dict(e.nums, seconds=round(time.time() - t0, 1)))
                        status = 1
                    except Exception as e:
                        traceback.print_exc()
                        record(name, False, f"{type(e).__name__}: {e}", {"seconds": round(time.time() - t0, 1)})
                        status = 1
                    # A step must not leave a node stopped or dead for the next.
                    for n in cluster.nodes.values():
                        if n.proc and n.proc.poll() is None and n.stopped:
                            cluster.signal(n.id, signal.SIGCONT)
                        if n.proc and n.proc.poll() is not None:
                            try:
                                cluster.restart(n.id)
                            except ClusterError as e:
                                print(f"zones: could not restart node {n.id}: {e}", flush=True)
        return status
    except KeyboardInterrupt:
        print("zones: interrupted; torn down", flush=True)
        status = 130
        return status
    finally:
        if status != 0 and cluster is not None:
            cluster.dump_logs(lines=25)
        line = json.dumps(results, default=str)
        print(f"RESULT {line}", flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(line)
        if status == 0 and not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"zones: logs kept in {workdir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
