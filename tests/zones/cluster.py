"""A Ferry cluster over the zone namespaces of netns.py: etcd and moto's S3
server in the services namespace, `ferry node` processes in the zones.

    with Topology(3).up(npz) as topo, Cluster(topo, ferry, npz, workdir) as c:
        c.start()            # etcd, moto, bucket, every node; waits for Metadata
        c.agent(z).call({...})   # a raw Kafka client living in zone z
        c.kill9(node_id); c.restart(node_id); c.stop_signal(node_id, SIGSTOP)

Every wait is bounded; every process is killed on exit (they are also in
namespaces that netns.py deletes after killing what is left in them). Logs
are under the run's work directory: etcd.log, moto.log, node-<id>.log and
node-<id>.properties.

With secure=True (check.py --secure) every node has two listeners: CLIENT
on port 9092 (SASL_SSL, SCRAM-SHA-512) and INTERNAL on 9093 (SSL with
ssl.client.auth=required, the inter-broker listener), ACLs on
(StandardAuthorizer, nothing allowed without an ACL), and super.users = the
principals of the nodes' certificates and of the harness's admin
certificate. pki.py makes the certificates under <workdir>/pki. The harness's
raw agents then speak TLS with the admin certificate to the INTERNAL
listener (probe_addr); clients of the zones use CLIENT with a SCRAM user
(client_conf) once one exists: no user exists at start, a super user has to
create them (check.py's secure step does, through INTERNAL, with the admin
certificate).
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from netns import SVC_IP
from pki import Pki, PkiError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import s3_server_argv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ZCLIENT = os.path.join(HERE, "zclient.py")
BUCKET = "ferry-zones"
S3_PORT = 9000
ETCD_PORT = 2379
KAFKA_PORT = 9092
INTERNAL_PORT = 9093  # secure mode: the inter-broker listener (mTLS)
METRICS_PORT = 9100
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ClusterError(Exception):
    pass


def write_private(path, text):
    """Writes `text` to a file only its owner may read (it holds passwords);
    answers the path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class Agent:
    """A zclient.py agent in one namespace: JSON request, JSON answer, with
    a bounded wait for every answer."""

    def __init__(self, topo, ns, log_path, defaults=None):
        self.ns = ns
        # Fields every request carries unless it sets them (secure mode: tls).
        self.defaults = defaults or {}
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(topo.exec_args(ns) + [sys.executable, "-u", ZCLIENT, "agent"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, bufsize=1)
        self.lock = threading.Lock()

    def call(self, req, timeout=30):
        req = {**self.defaults, **req}
        with self.lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            out = []

            def read():
                out.append(self.proc.stdout.readline())
            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(timeout)
            if t.is_alive() or not out or not out[0]:
                self.kill()
                raise ClusterError(f"agent in {self.ns} did not answer {req.get('cmd')} within {timeout}s")
            return json.loads(out[0])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


class Node:
    def __init__(self, node_id, zone, k, ip):
        self.id = node_id
        self.zone = zone      # 1-based zone number
        self.k = k            # 1-based index in its zone
        self.ip = ip
        self.proc = None
        self.stopped = False

    @property
    def addr(self):
        """The client listener (PLAINTEXT, or CLIENT in secure mode)."""
        return f"{self.ip}:{KAFKA_PORT}"

    @property
    def internal_addr(self):
        """Secure mode's INTERNAL listener."""
        return f"{self.ip}:{INTERNAL_PORT}"

    @property
    def rack(self):
        return zone_name(self.zone)


def zone_name(z):
    return f"az{z}"


class Cluster:
    def __init__(self, topo, ferry, nodes_per_zone, workdir, batch_interval_ms=100, log=print,
                 extra_props=None, s3="moto", secure=False, s3_params=""):
        if s3 not in ("moto", "s3s"):
            raise ClusterError(f"unknown S3 server {s3!r}: moto or s3s")
        self.s3 = s3
        # Extra bucket URI parameters, such as the S3 fault model's.
        self.s3_params = s3_params
        self.secure = secure
        self.pki = None
        self.certs = {}   # secure mode: node id (and "admin") -> pki.Leaf
        self.topo = topo
        self.ferry = os.path.abspath(ferry)
        self.npz = nodes_per_zone
        self.dir = workdir
        self.batch_ms = batch_interval_ms
        self.log = log
        self.extra = extra_props or {}
        self.cluster_id = topo.run
        self.procs = []
        self.agents = {}
        self.nodes = {}
        nid = 1
        for z in range(1, topo.zones + 1):
            for k in range(1, nodes_per_zone + 1):
                self.nodes[nid] = Node(nid, z, k, topo.node_ip(z, k))
                nid += 1
        os.makedirs(workdir, exist_ok=True)

    # ---------------------------------------------------------- helpers --
    @property
    def s3_endpoint(self):
        return f"http://{SVC_IP}:{S3_PORT}"

    def zone_nodes(self, z):
        return [n for n in self.nodes.values() if n.zone == z]

    def bootstrap(self, z):
        return ",".join(n.addr for n in self.zone_nodes(z))

    def agent(self, where):
        """The agent in zone `where` (int) or in "svc". In secure mode its
        requests go over TLS with the admin certificate unless they say
        otherwise (`"tls": None`, or their own `tls`/`sasl`)."""
        if where not in self.agents:
            ns = self.topo.svc_ns if where == "svc" else self.topo.zone_ns(where)
            defaults = {"tls": self.admin_tls()} if self.secure and where != "svc" else None
            self.agents[where] = Agent(self.topo, ns, os.path.join(self.dir, f"agent-{where}.log"), defaults)
        return self.agents[where]

    def probe_addr(self, n):
        """Where the harness's own raw requests go: the client listener, or
        in secure mode the INTERNAL one (the admin certificate, a super
        user, needs no SCRAM user)."""
        return n.internal_addr if self.secure else n.addr

    # ----------------------------------------------------------- secure --
    def admin_tls(self):
        a = self.certs["admin"]
        return {"ca": self.pki.ca, "cert": a.cert, "key": a.key}

    def super_users(self):
        return [self.certs[n].principal for n in sorted(self.nodes)] + [self.certs["admin"].principal]

    def client_conf(self, user, password, **extra):
        """librdkafka settings for a SCRAM user on the CLIENT listener."""
        conf = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": password, "ssl.ca.location": self.pki.ca}
        conf.update(extra)
        return conf

    def admin_conf(self):
        """librdkafka settings for the admin certificate on INTERNAL."""
        a = self.certs["admin"]
        return {"security.protocol": "SSL", "ssl.ca.location": self.pki.ca,
                "ssl.certificate.location": a.cert, "ssl.key.location": a.key}

    def write_conf(self, name, conf):
        """A --conf-json file for zclient.py; answers its path."""
        return write_private(os.path.join(self.dir, f"conf-{name}.json"), json.dumps(conf, indent=1))

    def _make_certs(self):
        t0 = time.time()
        try:
            self.pki = Pki(self.dir).make_ca()
            for n in self.nodes.values():
                self.certs[n.id] = self.pki.leaf(f"node-{n.id}", "ferry-nodes", ips=[n.ip])
            self.certs["admin"] = self.pki.leaf("admin", "ferry-admins")
        except PkiError as e:
            raise ClusterError(f"certificates: {e}")
        self.log(f"cluster: CA and {len(self.certs)} certificates made in {time.time() - t0:.1f}s under "
                 f"{self.pki.dir}; super users {self.super_users()}")

    def _spawn(self, ns, args, log_name):
        log = open(os.path.join(self.dir, log_name), "ab")
        p = subprocess.Popen(self.topo.exec_args(ns) + args, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def spawn_client(self, z, args, log_name):
        """A zclient.py producer/consumer in zone z; returns the Popen (stdout
        piped: its JSON summary)."""
        log = open(os.path.join(self.dir, log_name), "ab")
        p = subprocess.Popen(self.topo.exec_args(self.topo.zone_ns(z)) + [sys.executable, "-u", ZCLIENT] + args,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                             start_new_session=True)
        self.procs.append(p)
        return p

    # ------------------------------------------------------------ start --
    def start(self, timeout=90):
        t0 = time.time()
        if self.secure:
            self._make_certs()
        self._start_services()
        for n in self.nodes.values():
            self._write_props(n)
            self._start_node(n)
        self.wait_all_listed(timeout=max(10, timeout - (time.time() - t0)))
        self.log(f"cluster: {len(self.nodes)} nodes in {self.topo.zones} zones up in {time.time() - t0:.1f}s")
        return self

    def _start_services(self):
        svc = self.topo.svc_ns
        d = os.path.join(self.dir, "etcd-data")
        client = f"http://{SVC_IP}:{ETCD_PORT}"
        peer = "http://127.0.0.1:2380"
        self.etcd = self._spawn(svc, [
            "etcd", "--name", "ferryz", "--data-dir", d,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"ferryz={peer}", "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_id], "etcd.log")
        try:
            # zclient.py creates the bucket with these credentials too.
            argv, log_name = s3_server_argv(self.s3, SVC_IP, S3_PORT, self.dir,
                                            access_key="test", secret_key="test")
        except (ValueError, FileNotFoundError) as e:
            raise ClusterError(str(e))
        self.moto = self._spawn(svc, argv, log_name)
        a = self.agent("svc")
        r = a.call({"cmd": "wait_tcp", "addrs": [f"{SVC_IP}:{ETCD_PORT}", f"{SVC_IP}:{S3_PORT}"], "timeout": 30},
                   timeout=40)
        if not r.get("ok"):
            raise ClusterError(f"services did not listen within 30s: {r}")
        end = time.time() + 20
        while True:
            r = a.call({"cmd": "s3_bucket", "endpoint": self.s3_endpoint, "bucket": BUCKET})
            if r.get("ok"):
                break
            if time.time() > end:
                raise ClusterError(f"could not create the bucket: {r}")
            time.sleep(0.5)

    def _bucket_uri(self):
        extra = f"&{self.s3_params}" if self.s3_params else ""
        return (f"s3://{BUCKET}?region=us-east-1&endpoint={self.s3_endpoint}&pathStyle=true"
                f"&accessKey=test&secretKey=test{extra}")

    def _write_props(self, n):
        uri = self._bucket_uri()
        props = {
            "node.id": n.id,
            "broker.rack": n.rack,
            "listeners": f"PLAINTEXT://{n.addr}",
            "s3.data.buckets": f"0@{uri}",
            "s3.wal.path": f"0@{uri}&batchInterval={self.batch_ms}",
            "automq.zonerouter.channels": f"0@{uri}&batchInterval={self.batch_ms}",
            "ferry.coordinator": f"etcd://{SVC_IP}:{ETCD_PORT}",
            "ferry.cluster.id": self.cluster_id,
            "ferry.metrics.listener": f"{n.ip}:{METRICS_PORT}",
            "ferry.shards": 1,
            "num.partitions": 6,
            "auto.create.topics.enable": "false",
        }
        if self.secure:
            props["listeners"] = f"CLIENT://{n.addr},INTERNAL://{n.internal_addr}"
            props.update({
                "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL",
                "inter.broker.listener.name": "INTERNAL",
                # One key and certificate for both listeners; client
                # certificates asked for (and required) on INTERNAL only.
                # No ssl.principal.mapping.rules: DEFAULT, the whole subject.
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": self.certs[n.id].keystore,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": self.pki.ca,
                "listener.name.internal.ssl.client.auth": "required",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "authorizer.class.name": AUTHORIZER,
                "super.users": ";".join(self.super_users()),
                "allow.everyone.if.no.acl.found": "false",
            })
        props.update(self.extra)
        with open(self.props_path(n), "w") as f:
            for k, v in props.items():
                f.write(f"{k}={v}\n")

    def props_path(self, n):
        return os.path.join(self.dir, f"node-{n.id}.properties")

    def _start_node(self, n):
        env_args = ["env", "RUST_LOG=" + os.environ.get("FERRY_ZONES_RUST_LOG", "info")]
        n.proc = self._spawn(self.topo.zone_ns(n.zone),
                             env_args + [self.ferry, "node", "--config", self.props_path(n)],
                             f"node-{n.id}.log")
        n.stopped = False

    # ------------------------------------------------------------ waits --
    def metadata(self, z, addr, client_id, topics=None, conn=None, timeout=15):
        return self.agent(z).call({"cmd": "metadata", "addr": addr, "client_id": client_id,
                                   "topics": topics, "conn": conn}, timeout=timeout)

    def wait_all_listed(self, timeout=60, nodes=None):
        """Until every live node answers Metadata listing exactly `nodes`
        (default: all) with their racks. Bounded."""
        want = sorted((n.id, n.rack) for n in (nodes or self.nodes.values()))
        end = time.time() + timeout
        last = {}
        while True:
            pending = []
            for n in self.nodes.values():
                if n.proc is None or n.stopped:
                    continue
                if n.proc.poll() is not None:
                    raise ClusterError(f"node {n.id} exited with {n.proc.returncode}:\n{self.tail(f'node-{n.id}.log')}")
                r = self.metadata(n.zone, self.probe_addr(n), "ferry-zones-probe", topics=[], conn=None)
                got = sorted((b["id"], b["rack"]) for b in r.get("brokers", []))
                last[n.id] = r.get("error") or got
                if got != want:
                    pending.append(n.id)
            if not pending:
                return
            if time.time() > end:
                raise ClusterError(f"within {timeout}s, nodes {pending} did not list {want}: {last}")
            time.sleep(0.3)

    # ------------------------------------------------------------- chaos --
    def kill9(self, node_id):
        n = self.nodes[node_id]
        if n.proc and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGKILL)
            n.proc.wait(10)
        n.stopped = True
        self.log(f"cluster: kill -9 node {node_id} ({n.rack})")

    def restart(self, node_id, wait_s=60):
        n = self.nodes[node_id]
        if n.proc and n.proc.poll() is None:
            raise ClusterError(f"node {node_id} still runs")
        self._start_node(n)
        r = self.agent(n.zone).call({"cmd": "wait_tcp", "addrs": [n.addr], "timeout": wait_s}, timeout=wait_s + 10)
        if not r.get("ok"):
            raise ClusterError(f"node {node_id} did not listen within {wait_s}s:\n{self.tail(f'node-{n.id}.log')}")
        self.log(f"cluster: node {node_id} restarted")

    def signal(self, node_id, sig):
        n = self.nodes[node_id]
        n.proc.send_signal(sig)
        n.stopped = sig == signal.SIGSTOP

    # ------------------------------------------------------------- logs --
    def tail(self, name, lines=40):
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                text = ANSI.sub("", f.read().decode(errors="replace")).splitlines()
        except OSError:
            return f"(no {name})"
        return "\n".join(text[-lines:])

    def dump_logs(self, lines=30):
        names = sorted(os.listdir(self.dir))
        for name in names:
            if name.endswith(".log"):
                print(f"----- {os.path.join(self.dir, name)} (last {lines} lines) -----")
                print(self.tail(name, lines))

    # ------------------------------------------------------------- stop --
    def stop(self):
        for a in self.agents.values():
            a.kill()
        self.agents = {}
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
