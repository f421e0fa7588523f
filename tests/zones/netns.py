"""Three zones as network namespaces, and a services namespace, for Ferry's
zone tests. Nothing touches the root namespace: no interface, address or
route is added there.

Topology (RUN = "ferryz<pid>", unique per run and recognisable afterwards):

    RUN-br   the bridges' namespace: bridge "zbr" (zones) and bridge "sbr"
             (services), with one port per zone on each (zN-z, zN-s) and
             the services port (svc-s). IPv6 is off everywhere, so the only
             frames are the IPv4 traffic the tests make (and its ARP).
    RUN-zN   zone N (1..3): "zone0" 10.77.N.(10+k)/16 on zbr (one address
             per node k of the zone, clients use .100), "svc0" 10.78.0.(10+N)/24
             on sbr. Routes: 10.77.0.0/16 via zone0, 10.78.0.0/24 via svc0
             (both on-link), no default route.
    RUN-svc  services: "svc0" 10.78.0.1/24 on sbr, where etcd and the S3
             server (moto) listen.

So zbr carries exactly the bytes between zones (node-to-node, and any
client that talks to a node of another zone), and sbr carries S3 and etcd.
Counting: every frame that crosses between zones enters zbr through the
sending zone's port once (rx of zN-z in RUN-br) and leaves it through the
receiving zone's port once (tx of zN-z). `cross_zone_bytes()` sums the
ingress side, so each cross-zone byte is counted ONCE (Ethernet, IP and TCP
headers included); a cloud bill charges it twice (out of one zone, into the
other).

A run that was killed leaves namespaces named ferryz<pid>-*; `cleanup_stale`
deletes those whose pid is no longer alive (killing the processes still in
them first), and never touches a live run's.

CLI: netns.py up [--zones N] (prints the run name, waits for Ctrl-C, then
tears down) | netns.py cleanup | netns.py stats RUN
"""
import argparse
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time

PREFIX = "ferryz"
ZONE_NET = ipaddress.ip_network("10.77.0.0/16")
SVC_NET = ipaddress.ip_network("10.78.0.0/24")
SVC_IP = "10.78.0.1"
# Prints the addresses that did not answer a TCP SYN to port 9 (refused = reachable).
PROBE = """
import socket, sys
for ip in sys.argv[1:]:
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect((ip, 9))
    except ConnectionRefusedError:
        continue
    except OSError:
        print(ip)
    finally:
        s.close()
"""
NAME_RE = re.compile(r"^" + PREFIX + r"(\d+)-(br|svc|z\d+)$")


class TopologyError(Exception):
    pass


def sh(args, check=True, timeout=20, capture=True):
    """Runs a command with a bounded time; raises TopologyError on failure."""
    try:
        r = subprocess.run(args, capture_output=capture, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TopologyError(f"timed out after {timeout}s: {' '.join(args)}")
    if check and r.returncode != 0:
        raise TopologyError(f"{' '.join(args)} failed ({r.returncode}): {(r.stderr or '').strip()}")
    return r


def require_root():
    """Fails with a clear message if namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise TopologyError(
            "the zone tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network "
            "namespaces, veth pairs and bridges with iproute2; run them as root")
    if sh(["ip", "-V"], check=False).returncode != 0:
        raise TopologyError("iproute2's `ip` is missing (apt-get install iproute2)")


def list_netns():
    r = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def netns_pids(ns):
    r = sh(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def delete_netns(ns):
    """Kills what still runs in one of this harness's namespaces (by pid),
    then deletes it. Veths die with their namespace."""
    for _ in range(3):
        pids = netns_pids(ns)
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    sh(["ip", "netns", "delete", ns], check=False)


def cleanup_stale(log=print):
    """Deletes namespaces left by earlier runs of this harness whose owner
    (the pid in the name) is dead. Returns the names removed."""
    removed = []
    for ns in list_netns():
        m = NAME_RE.match(ns)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        if pid == os.getpid():
            continue
        delete_netns(ns)
        removed.append(ns)
    if removed:
        log(f"netns: removed leftovers of a crashed run: {' '.join(removed)}")
    return removed


def _check_no_overlap():
    """Our subnets exist only inside our namespaces, but say so loudly if
    the host uses them too (a reader of counters could be confused)."""
    r = sh(["ip", "-j", "route", "show", "table", "all"], check=False)
    try:
        routes = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        routes = []
    for rt in routes:
        dst = rt.get("dst", "")
        if dst in ("", "default") or ":" in dst:
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
        except ValueError:
            continue
        for ours in (ZONE_NET, SVC_NET):
            if net.overlaps(ours) and net.prefixlen > 0:
                raise TopologyError(f"the host routes {dst}, which overlaps {ours} used by the zone tests")


def _root_routes():
    return sh(["ip", "route", "show", "table", "all"], check=False).stdout


class Topology:
    """Builds and tears down one run's namespaces. Use as a context manager;
    teardown also runs on SIGTERM/SIGINT (they raise) and at exit."""

    def __init__(self, zones=3, log=print):
        if not 1 <= zones <= 9:
            raise ValueError("1..9 zones")
        self.zones = zones
        self.run = f"{PREFIX}{os.getpid()}"
        self.log = log
        self.created = []
        self.up_done = False
        self._root_routes_before = None

    # names
    def ns(self, role):
        return f"{self.run}-{role}"

    def zone_ns(self, z):
        return self.ns(f"z{z}")

    @property
    def svc_ns(self):
        return self.ns("svc")

    @property
    def br_ns(self):
        return self.ns("br")

    @staticmethod
    def node_ip(z, k):
        """Zone z's k-th node (k from 1)."""
        return f"10.77.{z}.{10 + k}"

    @staticmethod
    def client_ip(z):
        return f"10.77.{z}.100"

    def _ns_sh(self, ns, *args):
        return sh(["ip", "-n", ns, *args])

    def up(self, nodes_per_zone=2):
        require_root()
        cleanup_stale(self.log)
        _check_no_overlap()
        self._root_routes_before = _root_routes()
        try:
            self._up(nodes_per_zone)
        except BaseException:
            self.down()
            raise
        return self

    def _up(self, nodes_per_zone):
        t0 = time.time()
        roles = ["br", "svc"] + [f"z{z}" for z in range(1, self.zones + 1)]
        for role in roles:
            ns = self.ns(role)
            sh(["ip", "netns", "add", ns])
            self.created.append(ns)
            for key in ("all", "default"):
                sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                    f"net.ipv6.conf.{key}.disable_ipv6=1"])
            self._ns_sh(ns, "link", "set", "lo", "up")
        br = self.br_ns
        for bridge in ("zbr", "sbr"):
            self._ns_sh(br, "link", "add", bridge, "type", "bridge", "forward_delay", "0",
                        "stp_state", "0", "mcast_snooping", "0")
            self._ns_sh(br, "link", "set", bridge, "up")
        # services
        self._ns_sh(br, "link", "add", "svc-s", "type", "veth", "peer", "name", "svc0",
                    "netns", self.svc_ns)
        self._ns_sh(br, "link", "set", "svc-s", "master", "sbr", "up")
        self._ns_sh(self.svc_ns, "addr", "add", f"{SVC_IP}/24", "dev", "svc0")
        self._ns_sh(self.svc_ns, "link", "set", "svc0", "up")
        for z in range(1, self.zones + 1):
            zns = self.zone_ns(z)
            for port, peer, bridge in ((f"z{z}-z", "zone0", "zbr"), (f"z{z}-s", "svc0", "sbr")):
                self._ns_sh(br, "link", "add", port, "type", "veth", "peer", "name", peer,
                            "netns", zns)
                self._ns_sh(br, "link", "set", port, "master", bridge, "up")
            ips = [self.node_ip(z, k) for k in range(1, nodes_per_zone + 1)] + [self.client_ip(z)]
            for ip in ips:
                self._ns_sh(zns, "addr", "add", f"{ip}/16", "dev", "zone0")
            self._ns_sh(zns, "addr", "add", f"10.78.0.{10 + z}/24", "dev", "svc0")
            self._ns_sh(zns, "link", "set", "zone0", "up")
            self._ns_sh(zns, "link", "set", "svc0", "up")
        self.up_done = True
        self._wait_reachable()
        self.log(f"netns: {self.run}: {self.zones} zones + services up in {time.time() - t0:.1f}s")

    def _wait_reachable(self, limit_s=10):
        """Every zone reaches the services address and the other zones'
        first address: a TCP connection to a closed port is refused (an RST
        came back), within a bounded time."""
        end = time.time() + limit_s
        pending = {}
        for z in range(1, self.zones + 1):
            pending[self.zone_ns(z)] = [SVC_IP] + [self.node_ip(o, 1) for o in range(1, self.zones + 1) if o != z]
        while pending and time.time() < end:
            for ns in list(pending):
                r = sh(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, *pending[ns]], check=False)
                pending[ns] = r.stdout.split()
                if not pending[ns]:
                    del pending[ns]
            if pending:
                time.sleep(0.2)
        if pending:
            raise TopologyError(f"not reachable within {limit_s}s: {pending}")

    def counters(self):
        """{port: (rx_bytes, tx_bytes, rx_packets, tx_packets)} of every
        bridge port, read in the bridges' namespace (the kernel's counters,
        not Ferry's)."""
        r = sh(["ip", "-n", self.br_ns, "-j", "-s", "link", "show"])
        out = {}
        for link in json.loads(r.stdout):
            s = link.get("stats64")
            if not s:
                continue
            out[link["ifname"]] = (s["rx"]["bytes"], s["tx"]["bytes"], s["rx"]["packets"], s["tx"]["packets"])
        return out

    def cross_zone(self, before, after):
        """Bytes that entered the zone bridge from each zone between two
        `counters()` snapshots: {zone: bytes}, each cross-zone byte counted
        once (at the sending zone), headers included."""
        res = {}
        for z in range(1, self.zones + 1):
            p = f"z{z}-z"
            res[z] = after[p][0] - before[p][0]
        return res

    def services_bytes(self, before, after):
        """Bytes each zone sent to, and got from, the services bridge (S3 and
        etcd; not cross-zone): {zone: (sent, received)}."""
        res = {}
        for z in range(1, self.zones + 1):
            p = f"z{z}-s"
            res[z] = (after[p][0] - before[p][0], after[p][1] - before[p][1])
        return res

    def exec_args(self, ns):
        return ["ip", "netns", "exec", ns]

    def down(self):
        for ns in reversed(self.created):
            delete_netns(ns)
        left = [ns for ns in list_netns() if ns.startswith(self.run + "-")]
        self.created = []
        if self._root_routes_before is not None and _root_routes() != self._root_routes_before:
            self.log("netns: WARNING: the root namespace's routes changed during the run "
                     "(not by this harness, which adds none)")
        if left:
            raise TopologyError(f"namespaces not deleted: {left}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()
        return False


def install_signal_teardown():
    """SIGTERM and SIGHUP raise SystemExit, so `with`/`finally` blocks run
    (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
    # Also when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--zones", type=int, default=3)
    u.add_argument("--nodes-per-zone", type=int, default=2)
    sub.add_parser("cleanup")
    st = sub.add_parser("stats")
    st.add_argument("run")
    args = ap.parse_args()
    if args.cmd == "cleanup":
        require_root()
        cleanup_stale()
        return
    if args.cmd == "stats":
        r = sh(["ip", "-n", f"{args.run}-br", "-j", "-s", "link", "show"])
        for link in json.loads(r.stdout):
            s = link["stats64"]
            print(link["ifname"], "rx", s["rx"]["bytes"], "tx", s["tx"]["bytes"])
        return
    install_signal_teardown()
    with Topology(args.zones).up(args.nodes_per_zone) as t:
        print(f"run {t.run}: zones {[t.zone_ns(z) for z in range(1, t.zones + 1)]}, services {t.svc_ns}; "
              "Ctrl-C tears down", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    try:
        main()
    except TopologyError as e:
        print(f"netns: {e}", file=sys.stderr)
        sys.exit(2)
