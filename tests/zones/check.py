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
  secure          (with --secure only) SCRAM users and ACLs made by the admin
                  certificate over mTLS; alice (SASL_SSL) produces to leaders
                  in every zone through her zone's proxies and reads it all
                  back; bob without WRITE is refused by the proxy and moves
                  no offset; Ferry's API key 32000 on the client listener
                  closes the connection; wrong passwords, unknown users and
                  plaintext get nowhere and the nodes keep serving

--secure starts the cluster with TLS, SASL and ACLs (see cluster.py): clients
on a SASL_SSL listener (9092), nodes on an mTLS INTERNAL listener (9093).
It runs topology, cluster and secure (the default then); the other data
steps speak PLAINTEXT and are refused with it.

Logs and files go to a fresh directory (printed); it is kept when a step
fails (--keep keeps it always), and the tails of the logs are printed.
"""
import argparse
import subprocess
import json
import os
import secrets
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
import zclient  # noqa: E402

STEPS = ["topology", "cluster", "metadata", "local", "meter", "cidr", "produce_consume", "cross_zone",
         "groups", "kill", "fence", "secure"]
# The steps that need --secure, and the ones whose clients speak PLAINTEXT.
SECURE_STEPS = ["secure"]
PLAINTEXT_STEPS = [s for s in STEPS if s not in ("topology", "cluster") + tuple(SECURE_STEPS)]
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
        r = self.c.agent(n.zone).call({"cmd": "create_topic", "addr": self.c.probe_addr(n), "topic": name,
                                       "partitions": partitions})
        if r.get("error_code") != 0:
            raise Failed(f"CreateTopics {name}: {r}")
        # Wait (bounded) until every node knows it.
        end = time.time() + 20
        for node in self.c.nodes.values():
            while True:
                m = self.c.metadata(node.zone, self.c.probe_addr(node), NOWHERE, [name])
                ps = m.get("topics", [{}])[0].get("partitions", []) if m.get("topics") else []
                if len(ps) == partitions and all(p["leader"] >= 0 for p in ps):
                    break
                if time.time() > end:
                    raise Failed(f"node {node.id} does not show topic {name} within 20s: {m}")
                time.sleep(0.2)

    def leaders(self, topic, z, client_id, node=None):
        node = node or self.c.zone_nodes(z)[0]
        m = self.c.metadata(z, self.c.probe_addr(node), client_id, [topic])
        if "error" in m:
            raise Failed(f"Metadata from node {node.id}: {m['error']}")
        return {p["partition"]: p["leader"] for p in m["topics"][0]["partitions"]}

    def truth(self, topic, via=None):
        via = via or next(n for n in self.c.nodes.values() if not n.stopped)
        return self.leaders(topic, via.zone, NOWHERE, via)

    def produce(self, z, topic, tag, partitions=None, count=0, seconds=0, rate=0, size=1024,
                timeout_ms=20000, bootstrap=None, client_id=None, debug="", conf=None):
        """conf: a --conf-json file (librdkafka security settings)."""
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
        if conf:
            args += ["--conf-json", conf]
        p = self.c.spawn_client(z, args, f"producer-{tag}.log")
        p.acks_path = acks
        p.tag = tag
        return p

    def consume(self, z, topic, partitions, targets, tag, timeout=60, subscribe=False, group=None, conf=None):
        out = os.path.join(self.dir, f"consumed-{tag}.jsonl")
        args = ["consume", "--bootstrap", self.c.bootstrap(z), "--client-id", tagged(z, f"cons-{tag}"),
                "--rack", zone_name(z), "--group", group or f"g-{tag}", "--topic", topic,
                "--partitions", ",".join(map(str, partitions)),
                "--targets", ",".join(f"{p}:{o}" for p, o in targets.items()),
                "--out", out, "--timeout", str(timeout)]
        if subscribe:
            args.append("--subscribe")
        if conf:
            args += ["--conf-json", conf]
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

    def end_offsets(self, topic, partitions):
        """{partition: end offset}, asked of each partition's true leader
        with ListOffsets by the harness's own client (in secure mode the
        admin certificate, on INTERNAL)."""
        truth = self.truth(topic)
        by_leader = {}
        for p in partitions:
            by_leader.setdefault(truth[p], []).append(p)
        out = {}
        for lid, ps in sorted(by_leader.items()):
            n = self.c.nodes[lid]
            r = self.c.agent(n.zone).call({"cmd": "list_offsets", "addr": self.c.probe_addr(n), "topic": topic,
                                           "partitions": ps})
            if "error" in r or r.get("errors"):
                raise Failed(f"ListOffsets {topic} {ps} at node {lid}: {r}")
            out.update({int(k): v for k, v in r["offsets"].items()})
        return out


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
        m = c.metadata(n.zone, c.probe_addr(n), "ferry-zones-probe", [])
        racks[n.id] = sorted((b["id"], b["rack"], f"{b['host']}:{b['port']}") for b in m["brokers"])
    first = next(iter(racks.values()))
    for nid, r in racks.items():
        if r != first:
            raise Failed(f"node {nid} lists {r}, node 1 lists {first}")
    for bid, rack, addr in first:
        n = c.nodes[bid]
        if rack != n.rack or addr != c.probe_addr(n):
            raise Failed(f"node {bid} listed as {rack} {addr}, configured {n.rack} {c.probe_addr(n)}")
    how = " (asked on INTERNAL with the admin certificate: its endpoints)" if c.secure else ""
    return f"{len(c.nodes)} nodes ({ctx.args.nodes_per_zone}/zone), each lists all with zone and address{how}", \
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


def run_load_and_read(ctx, topic, plan, tag, size, consumers_read, timeout_ms=20000, conf=None, group_prefix="g-"):
    """plan: {zone: [partitions]} to produce `count` records each into.
    consumers_read: {zone: [partitions]}. Returns acks, errors, consumed
    records per zone, payload bytes, bridge counters before/after, summaries.
    conf: the clients' --conf-json; their groups are group_prefix + tag-zN."""
    count = ctx.args.records
    before = ctx.topo.counters()
    rpc_before = node_zone_bytes(ctx)
    t0 = time.time()
    prods = {z: ctx.produce(z, topic, f"{tag}-z{z}", partitions=parts, count=count, size=size,
                            timeout_ms=timeout_ms, conf=conf) for z, parts in plan.items() if parts}
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
                                  timeout=ctx.args.consume_timeout, conf=conf, group=f"{group_prefix}{tag}-z{z}")
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


# ============================================================ secure step

SECURE_TOPIC = "secure-all"
SECURE_PREFIX = "secure-"
# librdkafka's and Kafka's names for what the step expects.
TOPIC_AUTHORIZATION_FAILED = "TOPIC_AUTHORIZATION_FAILED"
SASL_AUTHENTICATION_FAILED = 58
CLUSTER_AUTHORIZATION_FAILED = 31
RPC_ON_CLIENT_LISTENER = "node-to-node API key on a client listener"


def node_metric(ctx, name, label=""):
    """{node id: sum of the samples of `name` (whose labels contain
    `label`)} from every running node's /metrics."""
    out = {}
    for n in ctx.c.nodes.values():
        if n.stopped:
            continue
        r = subprocess.run(ctx.topo.exec_args(ctx.topo.zone_ns(n.zone)) +
                           ["curl", "-s", "-m", "5", f"http://{n.ip}:{cluster.METRICS_PORT}/metrics"],
                           capture_output=True, text=True, check=False, timeout=15)
        total = 0
        for line in r.stdout.splitlines():
            if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        out[n.id] = total
    return out


def log_count(ctx, node_id, text):
    try:
        with open(os.path.join(ctx.dir, f"node-{node_id}.log"), "rb") as f:
            return f.read().decode(errors="replace").count(text)
    except OSError:
        return 0


def secure_setup(ctx, passwords):
    """The admin certificate (a super user) connects to zone 1's INTERNAL
    listener with confluent-kafka's AdminClient and creates the SCRAM users
    and the ACLs; then every node must let alice in (bounded)."""
    c = ctx.c
    t0 = time.time()

    def topic_acl(user, op):
        return {"resource_type": "TOPIC", "name": SECURE_PREFIX, "pattern": "PREFIXED",
                "principal": f"User:{user}", "operation": op}

    plan = {"users": [{"name": u, "password": pw, "mechanism": "SCRAM-SHA-512", "iterations": 4096}
                      for u, pw in sorted(passwords.items())],
            "acls": [topic_acl("alice", "WRITE"), topic_acl("alice", "DESCRIBE"), topic_acl("alice", "READ"),
                     {"resource_type": "GROUP", "name": SECURE_PREFIX, "pattern": "PREFIXED",
                      "principal": "User:alice", "operation": "READ"},
                     # bob may see the topic (so his producer gets as far as
                     # a Produce request) but not write it.
                     topic_acl("bob", "DESCRIBE")]}
    plan_path = cluster.write_private(os.path.join(ctx.dir, "secure-plan.json"), json.dumps(plan))
    admin_conf = c.write_conf("admin", c.admin_conf())
    boot = ",".join(n.internal_addr for n in c.zone_nodes(1))
    p = c.spawn_client(1, ["admin", "--bootstrap", boot, "--conf-json", admin_conf, "--plan", plan_path,
                           "--timeout", "20"], "admin-setup.log")
    r = ctx.finish(p, 90)
    nums = {"admin_result": r}
    problems = []
    bad_users = {u: v for u, v in (r.get("users") or {}).items() if v != "ok"}
    bad_acls = {k: v for k, v in (r.get("acls") or {}).items() if v != "ok"}
    if r.get("error") or len(r.get("users") or {}) != len(passwords) or bad_users:
        problems.append(f"AlterUserScramCredentials: {r.get('users') or r}")
    if len(r.get("acls") or {}) != len(plan["acls"]) or bad_acls:
        problems.append(f"CreateAcls: {r.get('acls') or r}")
    described = set(r.get("described_acls") or [])
    for b in plan["acls"]:
        want = f"{b['principal']} {b['operation']} {b['resource_type']}:{b['pattern']}:{b['name']} ALLOW"
        if want not in described:
            problems.append(f"DescribeAcls does not show {want!r}: {sorted(described)}")
    for u in passwords:
        if "SCRAM_SHA_512/4096" not in (r.get("described_users") or {}).get(u, []):
            problems.append(f"DescribeUserScramCredentials does not show {u}: {r.get('described_users')}")
    if problems:
        raise Failed("setup through INTERNAL with the admin certificate: " + "; ".join(problems), nums)
    nums["setup_s"] = round(time.time() - t0, 1)
    # Every node sees the users (one document in etcd): alice is let in on
    # every node's CLIENT listener.
    end = time.time() + 20
    pending = set(c.nodes)
    last = {}
    while pending:
        for nid in sorted(pending):
            n = c.nodes[nid]
            m = c.agent(n.zone).call({
                "cmd": "metadata", "addr": n.addr, "client_id": tagged(n.zone, "secure-alice"), "topics": [],
                "conn": "alice-setup", "tls": {"ca": c.pki.ca},
                "sasl": {"mechanism": "SCRAM-SHA-512", "user": "alice", "password": passwords["alice"]}})
            last[nid] = m.get("error") or "ok"
            if "error" not in m:
                pending.discard(nid)
                # The CLIENT listener tells its own endpoints, and a client
                # of a known zone sees its zone's nodes only.
                listed = sorted(f"{b['host']}:{b['port']}" for b in m["brokers"])
                want = sorted(x.addr for x in c.nodes.values() if x.zone == n.zone)
                if listed != want:
                    raise Failed(f"node {nid}'s CLIENT listener lists {listed}, want {want}", nums)
        if pending and time.time() > end:
            raise Failed(f"alice not let in within 20s of her creation by nodes {sorted(pending)}: {last}", nums)
        if pending:
            time.sleep(0.3)
    nums["users_everywhere_s"] = round(time.time() - t0 - nums["setup_s"], 1)
    return nums


def secure_alice(ctx, conf, truth, tag, limit_pct):
    """(a): alice produces in every zone to every partition (so to leaders
    in every zone, 2/3 through the proxies of her zone) and reads it all
    back in every zone; cross-zone bytes at most limit_pct % of the
    produced payload."""
    zs = list(range(1, ctx.topo.zones + 1))
    parts = sorted(truth)
    r = run_load_and_read(ctx, SECURE_TOPIC, {z: parts for z in zs}, tag, ctx.args.size,
                          {z: parts for z in zs}, conf=conf, group_prefix=SECURE_PREFIX + "g-")
    sent = ctx.args.records * len(zs)
    problems, nums = compare(r["acks"], r["consumed"], parts)
    if len(r["acks"]) != sent:
        problems.insert(0, f"acked {len(r['acks'])} of {sent}, failed {error_counts(r['errors'])}")
    problems[:0] = producer_problems(r["producers"])
    cross = ctx.topo.cross_zone(r["before"], r["after"])
    total = sum(cross.values())
    produced = r["produced_bytes"]
    pct = 100.0 * total / max(1, produced)
    handoff = r["rpc_cross_zone"].get("handoff-out", 0)
    nums.update({"sent": sent, "acked": len(r["acks"]), "errors": error_counts(r["errors"]),
                 "consumer_errors": {z: s.get("errors") for z, s in r["consumers"].items()},
                 "produced_bytes": produced, "cross_zone_bytes": cross, "cross_zone_pct": round(pct, 4),
                 "services_bytes": ctx.topo.services_bytes(r["before"], r["after"]),
                 "ferry_rpc_cross_zone": r["rpc_cross_zone"], "seconds": r["seconds"]})
    if produced == 0:
        problems.append("nothing was produced")
    # The data goes to the bucket from the proxy's zone; only the handoff
    # commits (over mTLS) and metadata cross, with their TLS handshakes. The
    # zones' librdkafka clients also open a few connections to other zones'
    # CLIENT listeners (Metadata lists every node), each a TLS handshake and
    # a SCRAM exchange: more bytes than plaintext's, hence a generous bound.
    nums["limit_pct"] = limit_pct
    if total > produced * limit_pct / 100:
        problems.append(f"cross-zone {total} B is {pct:.3f}% of {produced} B produced (limit {limit_pct}%)")
    # Some partitions are led in other zones than each producer's, so the
    # proxies must have handed batches off across zones.
    if handoff <= 0:
        problems.append(f"no handoff bytes crossed zones by Ferry's count: {r['rpc_cross_zone']}")
    return problems, nums


def secure_bob(ctx, conf, bob_sasl, truth, parts):
    """(b): bob (DESCRIBE, no WRITE) produces in every zone to partitions
    led in other zones: his zone's proxy refuses, nothing moves.

    librdkafka takes the first TOPIC_AUTHORIZATION_FAILED as a permanent
    topic error and fails what it has not sent yet with _UNKNOWN_PARTITION
    (partition count set to 0), so each zone's producer writes only the
    partitions one proxy stands in for, all in one Produce request (bob's
    settings linger 500 ms): every record then gets the proxy's answer."""
    c = ctx.c
    zs = list(range(1, ctx.topo.zones + 1))
    nums = {"seen_leaders": {}, "partitions": {}, "proxy": {}}
    problems = []
    for z in zs:
        away = sorted(p for p, l in truth.items() if c.nodes[l].zone != z)
        n = c.zone_nodes(z)[0]
        m = c.agent(z).call({"cmd": "metadata", "addr": n.addr, "client_id": tagged(z, "secure-bob"),
                             "topics": [SECURE_TOPIC], "conn": "bob", "tls": {"ca": c.pki.ca}, "sasl": bob_sasl})
        if "error" in m or m["topics"][0]["error"] != 0:
            raise Failed(f"bob's Metadata in zone {z}: {m}")
        seen = {p["partition"]: p["leader"] for p in m["topics"][0]["partitions"]}
        nums["seen_leaders"][z] = seen
        mine = {x.id for x in c.zone_nodes(z)}
        if not set(seen.values()) <= mine:
            problems.append(f"bob in zone {z} sees leaders {seen}, not only zone {z}'s nodes {sorted(mine)}")
        by_proxy = {}
        for p in away:
            by_proxy.setdefault(seen[p], []).append(p)
        proxy, group = max(sorted(by_proxy.items()), key=lambda kv: len(kv[1]))
        nums["proxy"][z] = proxy
        nums["partitions"][z] = group
    before = ctx.end_offsets(SECURE_TOPIC, parts)
    produce_before = node_metric(ctx, "ferry_requests_total", 'api="Produce"')
    prods = {z: ctx.produce(z, SECURE_TOPIC, f"bob-z{z}", partitions=nums["partitions"][z], count=20, size=256,
                            timeout_ms=15000, conf=conf) for z in zs if nums["partitions"][z]}
    sums = {z: ctx.finish(p, 60) for z, p in prods.items()}
    # Anything a proxy let through would be committed within a few batch
    # intervals.
    time.sleep(max(2.0, 20 * ctx.args.batch_interval_ms / 1000))
    after = ctx.end_offsets(SECURE_TOPIC, parts)
    produce_after = node_metric(ctx, "ferry_requests_total", 'api="Produce"')
    refused, other, acked = 0, {}, 0
    for z, p in prods.items():
        a, e = ctx.read_acks(p.acks_path)
        acked += len(a)
        for x in e:
            if x["err"] == TOPIC_AUTHORIZATION_FAILED:
                refused += 1
            else:
                other[x["err"]] = other.get(x["err"], 0) + 1
    want = 20 * len(prods)
    # Produce requests that reached bob's zone's nodes (the proxies).
    reached = {z: sum(produce_after.get(x.id, 0) - produce_before.get(x.id, 0) for x in c.zone_nodes(z))
               for z in prods}
    nums.update({"sent": want, "refused": refused, "other_errors": other, "acked": acked,
                 "produce_requests_at_proxies": reached, "end_offsets_before": before, "end_offsets_after": after,
                 "producers": sums})
    if acked or refused != want or other:
        problems.append(f"bob: {refused}/{want} refused {TOPIC_AUTHORIZATION_FAILED}, {acked} acked, other {other}")
    if any(v <= 0 for v in reached.values()):
        problems.append(f"bob's Produce requests did not all reach his zone's nodes: {reached}")
    if before != after:
        problems.append(f"end offsets moved under bob: {before} -> {after}")
    return problems, nums


def secure_rpc_key(ctx, alice_sasl, truth, parts):
    """(c): Ferry's HandoffCommit (API key 32000) on the CLIENT listener,
    over TLS, from alice once authenticated (so nothing but the listener
    check stands in the way: she may write the topic), then without SASL;
    and the same bytes on INTERNAL with the admin certificate, which is
    answered (the frame decodes) CLUSTER_AUTHORIZATION_FAILED (not the
    member it names)."""
    c = ctx.c
    zs = list(range(1, ctx.topo.zones + 1))
    before = ctx.end_offsets(SECURE_TOPIC, parts)
    problems = []
    nums = {"client_listener": {}, "internal_as_admin": {}}
    for z in zs:
        n = c.zone_nodes(z)[0]
        # Names a member of another zone as its sender, for a partition that
        # member does not lead (as a proxy would).
        sender = next(x for x in c.nodes.values() if x.zone != z)
        part = next((p for p, l in sorted(truth.items()) if l != sender.id), parts[0])
        body = zclient.handoff_commit_body(sender.id, SECURE_TOPIC, part, f"handoff/forged-{os.getpid()}-{z}")
        frame = {"api_key": 32000, "version": 0, "body_hex": body.hex(), "header": "rpc"}
        logs_before = log_count(ctx, n.id, RPC_ON_CLIENT_LISTENER)
        authed = c.agent(z).call({"cmd": "probe", "addr": n.addr, "tls": {"ca": c.pki.ca}, "sasl": alice_sasl,
                                  "frame": frame, "timeout": 8}, timeout=30)
        # The node logs why it closed alice's connection (bounded wait for
        # the line to reach the file).
        end = time.time() + 3
        while log_count(ctx, n.id, RPC_ON_CLIENT_LISTENER) == logs_before and time.time() < end:
            time.sleep(0.1)
        logged = log_count(ctx, n.id, RPC_ON_CLIENT_LISTENER) - logs_before
        anon = c.agent(z).call({"cmd": "probe", "addr": n.addr, "tls": {"ca": c.pki.ca}, "frame": frame,
                                "timeout": 8}, timeout=30)
        internal = c.agent(z).call({"cmd": "probe", "addr": n.internal_addr, "tls": c.admin_tls(),
                                    "frame": frame, "timeout": 8}, timeout=30)
        nums["client_listener"][n.id] = {"sasl_alice": authed, "no_sasl": anon, "closed_logged": logged}
        nums["internal_as_admin"][n.id] = internal
        if not (authed.get("sasl") or {}).get("ok"):
            problems.append(f"node {n.id}: alice did not authenticate over TLS: {authed}")
        elif authed.get("reply") != "closed" or authed.get("serves_after"):
            problems.append(f"node {n.id}: key 32000 from authenticated alice on CLIENT got {authed.get('reply')} "
                            f"(serves after: {authed.get('serves_after')}), want the connection closed")
        if anon.get("tls") != "ok" or anon.get("reply") != "closed":
            problems.append(f"node {n.id}: key 32000 without SASL on CLIENT got {anon}, want closed")
        if default_log_level() and logged < 1:
            problems.append(f"node {n.id} did not log {RPC_ON_CLIENT_LISTENER!r} for alice's request")
        if internal.get("reply") != "answer" or internal.get("rpc_error_codes") != [CLUSTER_AUTHORIZATION_FAILED]:
            problems.append(f"node {n.id}: the same commit on INTERNAL from the admin certificate got {internal}, "
                            f"want error {CLUSTER_AUTHORIZATION_FAILED}")
    time.sleep(max(1.0, 10 * ctx.args.batch_interval_ms / 1000))
    after = ctx.end_offsets(SECURE_TOPIC, parts)
    nums.update({"end_offsets_before": before, "end_offsets_after": after})
    if before != after:
        problems.append(f"end offsets moved after the forged commits: {before} -> {after}")
    return problems, nums


def default_log_level():
    """Whether the nodes log at info or finer (the harness's default), so
    their info lines can be counted."""
    level = os.environ.get("FERRY_ZONES_RUST_LOG", "info").lower()
    return any(w in level for w in ("info", "debug", "trace"))


def refused_unanswered(r):
    """A probe that reached the node, sent its request and got no Kafka
    answer: the connection closed (or the TLS handshake failed) instead."""
    return (r.get("connect") == "ok" and not r.get("serves_after")
            and (r.get("reply") in ("closed", "not_kafka") or r.get("tls") not in (None, "ok")))


def secure_bad_logins(ctx, passwords, alice_conf, parts):
    """(d): wrong password, unknown user and plaintext on the CLIENT
    listener, no client certificate on INTERNAL; a real client with a wrong
    password sees _AUTHENTICATION; then every node still serves alice."""
    c = ctx.c
    zs = list(range(1, ctx.topo.zones + 1))
    problems = []
    nums = {"wrong_password": {}, "unknown_user": {}, "plaintext": {}, "internal_no_cert": {}}
    fails_before = node_metric(ctx, "ferry_authentication_failures_total")
    api_versions = {"api_key": 18, "version": 0, "body_hex": "", "header": "kafka"}
    for z in zs:
        n = c.zone_nodes(z)[-1]
        tls = {"ca": c.pki.ca}
        for key, user, pw in (("wrong_password", "alice", passwords["alice"] + "-wrong"),
                              ("unknown_user", "mallory", passwords["alice"])):
            r = c.agent(z).call({"cmd": "probe", "addr": n.addr, "tls": tls,
                                 "sasl": {"mechanism": "SCRAM-SHA-512", "user": user, "password": pw},
                                 "timeout": 8}, timeout=30)
            nums[key][n.id] = r
            if (r.get("sasl") or {}).get("error_code") != SASL_AUTHENTICATION_FAILED or r.get("serves_after"):
                problems.append(f"node {n.id}: {key} got {r}, want SaslAuthenticate error "
                                f"{SASL_AUTHENTICATION_FAILED} and the connection closed")
        r = c.agent(z).call({"cmd": "probe", "addr": n.addr, "tls": None, "frame": api_versions, "timeout": 8},
                            timeout=30)
        nums["plaintext"][n.id] = r
        if not refused_unanswered(r):
            problems.append(f"node {n.id}: a plaintext ApiVersions on the SASL_SSL listener: {r}, want no answer "
                            f"and the connection closed")
        r = c.agent(z).call({"cmd": "probe", "addr": n.internal_addr, "tls": {"ca": c.pki.ca},
                             "frame": api_versions, "timeout": 8}, timeout=30)
        nums["internal_no_cert"][n.id] = r
        if not refused_unanswered(r):
            problems.append(f"node {n.id}: INTERNAL and a client without a certificate: {r}, want no answer")
    # A real client (librdkafka) with a wrong password, and one that speaks
    # PLAINTEXT to the SASL_SSL listener.
    probes = {}
    for name, conf in (("librdkafka_wrong_password",
                        c.client_conf("alice", passwords["alice"] + "-wrong")),
                       ("librdkafka_plaintext", {"security.protocol": "PLAINTEXT"})):
        path = c.write_conf(name, conf)
        p = c.spawn_client(2, ["auth-probe", "--bootstrap", c.bootstrap(2), "--conf-json", path,
                               "--timeout", "8"], f"{name}.log")
        probes[name] = ctx.finish(p, 40)
    nums.update(probes)
    wp = probes["librdkafka_wrong_password"]
    if wp.get("metadata_ok") or "_AUTHENTICATION" not in (wp.get("error_names") or []):
        problems.append(f"librdkafka with a wrong password: {wp}, want no metadata and _AUTHENTICATION")
    pt = probes["librdkafka_plaintext"]
    if pt.get("metadata_ok") or pt.get("error"):
        problems.append(f"librdkafka over PLAINTEXT got metadata or did not run: {pt}")
    time.sleep(0.5)
    fails_after = node_metric(ctx, "ferry_authentication_failures_total")
    counted = sum(fails_after.values()) - sum(fails_before.values())
    raw_wrong = 2 * len(zs)
    nums["authentication_failures_counted"] = counted
    if counted < raw_wrong + 1:
        problems.append(f"ferry_authentication_failures_total grew by {counted}, want >= {raw_wrong + 1} "
                        f"({raw_wrong} raw refusals and librdkafka's)")
    # The nodes keep serving: alive, every node lets alice in, and she can
    # still produce to every partition.
    dead = [n.id for n in c.nodes.values() if n.proc.poll() is not None]
    if dead:
        problems.append(f"nodes exited: {dead}")
    served = 0
    for n in c.nodes.values():
        m = c.agent(n.zone).call({"cmd": "metadata", "addr": n.addr, "client_id": tagged(n.zone, "secure-after"),
                                  "topics": [SECURE_TOPIC], "conn": "alice-after", "tls": {"ca": c.pki.ca},
                                  "sasl": {"user": "alice", "password": passwords["alice"]}})
        if "error" in m:
            problems.append(f"node {n.id} does not serve alice after the bad logins: {m['error']}")
        else:
            served += 1
    nums["nodes_serving_alice"] = served
    p = ctx.produce(1, SECURE_TOPIC, "secure-after", partitions=parts, count=30, size=256, conf=alice_conf)
    s = ctx.finish(p, 60)
    nums["produce_after"] = s
    if s.get("acked") != 30:
        problems.append(f"alice's produce after the bad logins: {s}")
    return problems, nums


def step_secure(ctx):
    c = ctx.c
    if not c.secure:
        raise Failed("the secure step needs the cluster started with --secure")
    passwords = {"alice": "alice-" + secrets.token_hex(12), "bob": "bob-" + secrets.token_hex(12)}
    alice_sasl = {"mechanism": "SCRAM-SHA-512", "user": "alice", "password": passwords["alice"]}
    bob_sasl = {"mechanism": "SCRAM-SHA-512", "user": "bob", "password": passwords["bob"]}
    nums = {}
    # Before any user exists, alice is refused (so SASL is really on).
    n1 = c.nodes[1]
    early = c.agent(n1.zone).call({"cmd": "probe", "addr": n1.addr, "tls": {"ca": c.pki.ca}, "sasl": alice_sasl,
                                   "timeout": 8}, timeout=30)
    nums["before_setup"] = early
    if (early.get("sasl") or {}).get("error_code") != SASL_AUTHENTICATION_FAILED:
        raise Failed(f"before any user was made, alice's SCRAM login got {early}, want error "
                     f"{SASL_AUTHENTICATION_FAILED}", nums)
    nums.update(secure_setup(ctx, passwords))
    ctx.create_topic(SECURE_TOPIC, 6)
    truth = ctx.truth(SECURE_TOPIC)
    parts = sorted(truth)
    per_zone = {z: sum(1 for l in truth.values() if c.nodes[l].zone == z) for z in range(1, ctx.topo.zones + 1)}
    nums["true_leaders"] = truth
    if min(per_zone.values()) == 0:
        raise Failed(f"a zone leads no partition of {SECURE_TOPIC}: {per_zone}", nums)
    alice_conf = c.write_conf("alice", c.client_conf("alice", passwords["alice"]))
    bob_conf = c.write_conf("bob", c.client_conf("bob", passwords["bob"],
                                                 **{"enable.idempotence": False, "linger.ms": 500}))
    problems = []
    sub = {}
    for name, run in (("a", lambda: secure_alice(ctx, alice_conf, truth, "secure", ctx.args.secure_cross_zone_pct)),
                      ("b", lambda: secure_bob(ctx, bob_conf, bob_sasl, truth, parts)),
                      ("c", lambda: secure_rpc_key(ctx, alice_sasl, truth, parts)),
                      ("d", lambda: secure_bad_logins(ctx, passwords, alice_conf, parts))):
        t0 = time.time()
        pr, n = run()
        n["seconds"] = round(time.time() - t0, 1)
        sub[name] = n
        problems += [f"({name}) {x}" for x in pr]
    nums.update(sub)
    a, b, cc, d = sub["a"], sub["b"], sub["c"], sub["d"]
    closed = sum(1 for v in cc["client_listener"].values() if v["sasl_alice"].get("reply") == "closed")
    refused31 = sum(1 for v in cc["internal_as_admin"].values()
                    if v.get("rpc_error_codes") == [CLUSTER_AUTHORIZATION_FAILED])
    wrong58 = sum(1 for v in d["wrong_password"].values()
                  if (v.get("sasl") or {}).get("error_code") == SASL_AUTHENTICATION_FAILED)
    unknown58 = sum(1 for v in d["unknown_user"].values()
                    if (v.get("sasl") or {}).get("error_code") == SASL_AUTHENTICATION_FAILED)

    def refused(key):
        return sum(1 for v in d[key].values() if refused_unanswered(v))

    detail = (f"setup {nums['setup_s']}s via mTLS admin, users on every node in {nums['users_everywhere_s']}s; "
              f"(a) alice acked {a['acked']}/{a['sent']}, read back by every zone at the same offsets; "
              f"cross-zone {sum(a['cross_zone_bytes'].values())} B = {a['cross_zone_pct']:.3f}% of "
              f"{a['produced_bytes']} B produced (limit {ctx.args.secure_cross_zone_pct}%), handoff "
              f"{a['ferry_rpc_cross_zone'].get('handoff-out', 0)} B out; "
              f"(b) bob refused {b['refused']}/{b['sent']} {TOPIC_AUTHORIZATION_FAILED} at proxies "
              f"(Produce requests {b['produce_requests_at_proxies']}), end offsets unchanged: "
              f"{b['end_offsets_before'] == b['end_offsets_after']}; "
              f"(c) key 32000 on CLIENT closed {closed}/{len(cc['client_listener'])} (alice authenticated), "
              f"on INTERNAL as admin error {CLUSTER_AUTHORIZATION_FAILED} {refused31}/{len(cc['internal_as_admin'])}, "
              f"end offsets unchanged: {cc['end_offsets_before'] == cc['end_offsets_after']}; "
              f"(d) error {SASL_AUTHENTICATION_FAILED} for a wrong password {wrong58}/{len(d['wrong_password'])}, "
              f"an unknown user {unknown58}/{len(d['unknown_user'])}, plaintext unanswered "
              f"{refused('plaintext')}/{len(d['plaintext'])}, INTERNAL without a certificate unanswered "
              f"{refused('internal_no_cert')}/{len(d['internal_no_cert'])}, "
              f"librdkafka {d['librdkafka_wrong_password'].get('error_names')}, auth failures counted "
              f"{d['authentication_failures_counted']}, nodes serving after {d['nodes_serving_alice']}/{len(c.nodes)}, "
              f"produce after {d['produce_after'].get('acked')}/30")
    nums["cross_zone_pct"] = a["cross_zone_pct"]
    if problems:
        raise Failed(detail + " | " + "; ".join(problems[:6]), nums)
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
    ap.add_argument("--s3-params", default="",
                    help="extra bucket URI parameters for every node, e.g. the S3 fault model's "
                         "(slowDownRate=0.01&stallRate=0.005&...)")
    ap.add_argument("--secure", action="store_true",
                    help="TLS, SASL and ACLs: clients on SASL_SSL, nodes on mTLS (steps topology, cluster, secure)")
    ap.add_argument("--secure-cross-zone-pct", type=float, default=5.0,
                    help="secure step: the most cross-zone bytes may be, in %% of the produced payload")
    args = ap.parse_args()
    default = ["topology", "cluster"] + SECURE_STEPS if args.secure else \
        [s for s in STEPS if s not in SECURE_STEPS]
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or default
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        ap.error(f"unknown steps {unknown}; steps: {STEPS}")
    chosen = [s for s in STEPS if s in chosen]
    if args.secure and set(chosen) & set(PLAINTEXT_STEPS):
        ap.error(f"steps {sorted(set(chosen) & set(PLAINTEXT_STEPS))} speak PLAINTEXT; with --secure only "
                 f"topology, cluster and {','.join(SECURE_STEPS)} run")
    if not args.secure and set(chosen) & set(SECURE_STEPS):
        ap.error(f"steps {sorted(set(chosen) & set(SECURE_STEPS))} need --secure (a TLS, SASL and ACL cluster)")
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
                              batch_interval_ms=args.batch_interval_ms, s3=args.s3, secure=args.secure,
                              s3_params=args.s3_params)
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
