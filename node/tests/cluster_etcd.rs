//! The etcd coordinator against a real etcd (Debian's `etcd-server`, which
//! scripts/test.sh installs). Each test starts its own etcd on free ports
//! with its data in a temporary directory, and kills it when done, also on
//! panic. Without etcd the tests fail: they do not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_node::cluster::etcd_api::{Client, ConnectOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_node::cluster::etcd::{EtcdCoordinator, EtcdOptions};
use ferry_node::cluster::zone::ZoneResolver;
use ferry_node::cluster::{follow_zone_cidrs, Coordinator, CoordinatorError, Member};
use ferry_wal::IoRuntime;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "etcd is not installed (not on PATH, nor in /usr/bin): these tests need a real \
                 etcd v3 server. scripts/test.sh installs Debian's etcd-server; by hand: \
                 apt-get install etcd-server"
            )
        })
}

/// One etcd process, killed on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd on this data directory and these ports, and waits (at
    /// most 20 s) until it answers.
    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new(etcd_binary())
            .args(["--name", "ferry-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("ferry-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "ferry-test"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let ready = rt.block_on(async {
                let opts = ConnectOptions {
                    connect_timeout: Duration::from_millis(500),
                    keep_alive_interval: Duration::from_secs(10),
                    keep_alive_timeout: Duration::from_millis(500),
                    meter: None,
                };
                let Ok(mut c) = Client::connect(std::slice::from_ref(&client), opts).await else {
                    return false;
                };
                let get = c.get("ready-check", false);
                matches!(
                    tokio::time::timeout(Duration::from_millis(500), get).await,
                    Ok(Ok(_))
                )
            });
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited with {status} at start-up:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("etcd did not answer within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn options(etcd: &Etcd, cluster: &str) -> EtcdOptions {
    let mut o = EtcdOptions::new(vec![etcd.endpoint()], cluster);
    o.lease_ttl = Duration::from_secs(3);
    o.fence_margin = Duration::from_millis(1000);
    o.connect_timeout = Duration::from_secs(2);
    o.request_timeout = Duration::from_secs(2);
    o.takeover_wait = Duration::from_secs(1);
    o
}

fn member(node_id: i32, zone: &str) -> Member {
    Member::new(node_id, zone, "127.0.0.1", 9000 + node_id as u16)
}

fn register(
    io: &IoRuntime,
    options: EtcdOptions,
    m: Member,
) -> Result<EtcdCoordinator, CoordinatorError> {
    io.block_on(EtcdCoordinator::register(io.handle().clone(), options, m))
}

/// Polls `cond` every 20 ms for at most `limit`; panics with `what`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!("not within {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(c: &dyn Coordinator) -> Vec<i32> {
    c.view().members().iter().map(|m| m.node_id).collect()
}

#[test]
fn two_nodes_share_a_view_a_leave_and_the_zone_cidrs() {
    let etcd = Etcd::start();
    let io = IoRuntime::new(2).unwrap();
    let a = register(&io, options(&etcd, "c1"), member(1, "za")).expect("node 1 registers");
    assert!(ids(&a).contains(&1), "a view holds its own node at once");
    let b = register(&io, options(&etcd, "c1"), member(2, "zb")).expect("node 2 registers");
    // A node of another cluster id is not seen.
    let other = register(&io, options(&etcd, "c2"), member(1, "za")).expect("other cluster");

    wait_until(
        Duration::from_secs(5),
        "both views hold both nodes at one revision",
        || ids(&a) == [1, 2] && ids(&b) == [1, 2] && a.view().revision() == b.view().revision(),
    );
    assert_eq!(ids(&other), [1]);
    let view = b.view();
    assert_eq!(view.member(1), Some(&member(1, "za")));
    assert_eq!(view.zones().collect::<Vec<_>>(), ["za", "zb"]);
    assert!(!a.fenced() && !b.fenced());
    assert_eq!((a.session(), b.session()), (1, 1));

    // The zone CIDR blocks, set through one node, reach the other.
    let resolver = ZoneResolver::default();
    let mut seen = 0;
    let g = b.zone_cidrs_generation();
    io.block_on(a.set_zone_cidrs("za@10.0.0.0/8 <> zb@10.1.0.0/16"))
        .expect("valid value is stored");
    wait_until(
        Duration::from_secs(5),
        "b sees the new zone CIDR blocks",
        || b.zone_cidrs() == "za@10.0.0.0/8<>zb@10.1.0.0/16",
    );
    assert!(b.zone_cidrs_generation() > g);
    assert!(follow_zone_cidrs(&b, &resolver, &mut seen));
    assert_eq!(
        resolver.table().zone_of("10.1.2.3".parse().unwrap()),
        Some("zb")
    );
    assert_eq!(other.zone_cidrs(), "", "another cluster's value is its own");
    let bad = io.block_on(a.set_zone_cidrs("za@10.0.0.0"));
    assert!(matches!(bad, Err(CoordinatorError::Config(_))), "{bad:?}");
    assert_eq!(a.zone_cidrs(), "za@10.0.0.0/8<>zb@10.1.0.0/16");

    // One leaves: the other's view loses it, at a higher revision.
    let before = b.view().revision();
    let gen = b.generation();
    io.block_on(a.leave()).expect("leaves");
    assert!(a.fenced(), "a node that left is fenced");
    let took = wait_until(Duration::from_secs(5), "b's view loses node 1", || {
        ids(&b) == [2]
    });
    assert!(b.view().revision() > before);
    assert!(b.generation() > gen);
    eprintln!("leave seen after {took:?}");

    // Its id is free again at once, and the view's revision moves on.
    let a2 = register(&io, options(&etcd, "c1"), member(1, "za")).expect("node 1 again");
    wait_until(Duration::from_secs(5), "node 1 back in b's view", || {
        ids(&b) == [1, 2]
    });
    assert!(a2.view().revision() > before);
    wait_until(Duration::from_secs(5), "same revision again", || {
        a2.view().revision() == b.view().revision()
    });
    assert_eq!(a2.zone_cidrs(), "za@10.0.0.0/8<>zb@10.1.0.0/16");

    // Dropping a coordinator leaves too (in the background).
    drop(a2);
    wait_until(
        Duration::from_secs(5),
        "dropped node 1 leaves b's view",
        || ids(&b) == [2],
    );
    // The epoch every client sees is the revision.
    let v = b.view();
    assert_eq!(i64::from(v.leader_epoch("t", 0)), v.revision() as i64);
}

#[test]
fn a_duplicate_node_id_is_refused_and_a_stale_one_taken_over() {
    let etcd = Etcd::start();
    let io = IoRuntime::new(2).unwrap();
    let a = register(&io, options(&etcd, "c1"), member(1, "za")).expect("node 1 registers");
    let start = Instant::now();
    let dup = register(&io, options(&etcd, "c1"), member(1, "zb"));
    let took = start.elapsed();
    assert!(
        matches!(dup, Err(CoordinatorError::DuplicateNode { node_id: 1 })),
        "{dup:?}"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    // The refused registration left nothing behind and a is untouched.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.view().members(), [member(1, "za")]);
    assert!(!a.fenced());
    drop(a);

    // A key left by a process that just died (its lease still alive, not
    // renewed): a restart waits for it to expire, then registers.
    let stale_ttl = 2;
    io.block_on(async {
        let opts = ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(2),
            meter: None,
        };
        let mut c = Client::connect(&[etcd.endpoint()], opts).await.unwrap();
        let lease = c.lease_grant(stale_ttl).await.unwrap().id;
        let value = r#"{"zone":"zz","host":"old","port":1}"#;
        c.put("/ferry/c1/members/7", value, lease).await.unwrap();
    });
    let mut o = options(&etcd, "c1");
    o.takeover_wait = Duration::from_secs(8);
    let start = Instant::now();
    let b = register(&io, o, member(7, "zb")).expect("registers once the stale lease expired");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500), "did not wait: {took:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(b.view().member(7), Some(&member(7, "zb")));
}

#[test]
fn losing_etcd_fences_and_a_restarted_etcd_takes_the_node_back() {
    let mut etcd = Etcd::start();
    let io = IoRuntime::new(2).unwrap();
    let o = options(&etcd, "c1");
    let (ttl, margin) = (o.lease_ttl, o.fence_margin);
    let a = register(&io, o, member(1, "za")).expect("node 1 registers");
    let b = register(&io, options(&etcd, "c1"), member(2, "zb")).expect("node 2 registers");
    wait_until(Duration::from_secs(5), "both in view", || ids(&a) == [1, 2]);
    // Renewals keep it unfenced past several TTLs.
    std::thread::sleep(ttl * 2);
    assert!(!a.fenced() && !b.fenced(), "renewed leases do not fence");
    let revision = a.view().revision();

    etcd.kill();
    let killed = Instant::now();
    let took = wait_until(ttl + margin, "fenced after etcd is gone", || {
        a.fenced() && b.fenced()
    });
    eprintln!("fenced {took:?} after etcd was killed");
    // Not before the lease could have been renewed for the last time.
    assert!(
        took >= ttl - margin - ttl / 3 - Duration::from_millis(200),
        "fenced too early: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.fenced(), "stays fenced");

    // etcd comes back (same data, same ports): both register again, with
    // new sessions, at a higher revision.
    etcd.spawn();
    wait_until(
        Duration::from_secs(20),
        "registered again after etcd came back",
        || !a.fenced() && !b.fenced(),
    );
    assert_eq!((a.session(), b.session()), (2, 2));
    // The views were stale while etcd was away; the watchers come back
    // within their backoff.
    wait_until(
        Duration::from_secs(10),
        "both back in the views, at one revision past the old one",
        || {
            ids(&a) == [1, 2]
                && ids(&b) == [1, 2]
                && a.view().revision() > revision
                && a.view().revision() == b.view().revision()
        },
    );
    eprintln!("back {:?} after etcd was killed", killed.elapsed());
}

#[test]
fn an_unreachable_etcd_is_an_error_within_the_timeouts() {
    let io = IoRuntime::new(1).unwrap();
    // A port nobody listens on.
    let port = free_port();
    let mut o = EtcdOptions::new(vec![format!("http://127.0.0.1:{port}")], "c1");
    o.connect_timeout = Duration::from_millis(500);
    o.request_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let r = register(&io, o, member(1, "za"));
    let took = start.elapsed();
    assert!(matches!(r, Err(CoordinatorError::Etcd(_))), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    eprintln!(
        "refused after {took:?}: {}",
        r.err().map(|e| e.to_string()).unwrap_or_default()
    );

    // One that accepts connections and never answers: the request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut o = EtcdOptions::new(vec![format!("http://{addr}")], "c1");
    o.connect_timeout = Duration::from_millis(500);
    o.request_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let r = register(&io, o, member(1, "za"));
    let took = start.elapsed();
    assert!(matches!(r, Err(CoordinatorError::Etcd(_))), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    eprintln!(
        "silent etcd refused after {took:?}: {}",
        r.err().map(|e| e.to_string()).unwrap_or_default()
    );
    drop(silent);
}

#[test]
fn etcd_bytes_count_as_coordinator_traffic_of_the_endpoints_zone() {
    use ferry_node::cluster::etcd::CoordinatorTraffic;
    use ferry_node::cluster::rpc::RpcTraffic;
    use ferry_node::cluster::zone::ZoneTable;
    let etcd = Etcd::start();
    let io = IoRuntime::new(2).unwrap();
    let count = |zones: &str| {
        let traffic = Arc::new(RpcTraffic::new());
        let counted = CoordinatorTraffic {
            traffic: traffic.clone(),
            zones: ZoneTable::parse(zones).unwrap(),
        };
        (traffic, counted)
    };
    // 127.0.0.0/8 is etcd's zone here; the other node's table has none.
    let (traffic_a, counted_a) = count("zx@127.0.0.0/8");
    let (traffic_b, counted_b) = count("");
    let register_counted = |options, m, counted| {
        io.block_on(EtcdCoordinator::register_counted(
            io.handle().clone(),
            options,
            m,
            Some(counted),
        ))
    };
    let a = register_counted(options(&etcd, "c1"), member(1, "za"), counted_a)
        .expect("node 1 registers, counted");
    let b = register_counted(options(&etcd, "c1"), member(2, "zb"), counted_b)
        .expect("node 2 registers, counted");
    wait_until(Duration::from_secs(5), "both see both", || {
        ids(&a) == [1, 2] && ids(&b) == [1, 2]
    });
    let coordinator = |t: &RpcTraffic| -> Vec<(String, u64, u64)> {
        t.snapshot()
            .into_iter()
            .filter(|r| r.1 == "coordinator")
            .map(|(z, _, o, i)| (z, o, i))
            .collect()
    };
    let rows = coordinator(&traffic_a);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "zx");
    assert!(rows[0].1 > 100 && rows[0].2 > 100, "{rows:?}");
    let rows_b = coordinator(&traffic_b);
    assert_eq!(rows_b.len(), 1, "{rows_b:?}");
    assert_eq!(rows_b[0].0, "unknown");
    // Lease renewals keep counting while the node lives.
    let before = coordinator(&traffic_a)[0].1;
    wait_until(Duration::from_secs(5), "renewals are counted", || {
        coordinator(&traffic_a)[0].1 > before
    });
    // A write by one node reaches the other.
    io.block_on(a.set_zone_cidrs("za@10.0.0.0/8"))
        .expect("stored");
    wait_until(Duration::from_secs(5), "b sees it", || {
        b.zone_cidrs() == "za@10.0.0.0/8"
    });
    // The cross-zone total counts the etcd bytes of a known other zone.
    let mut text = String::new();
    traffic_a.render("za", &mut text);
    assert!(
        text.contains("kind=\"coordinator\",direction=\"out\""),
        "{text}"
    );
    let cross: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ferry_cross_zone_bytes_total{local_zone=\"za\"} "))
        .and_then(|v| v.parse().ok())
        .expect("a cross-zone total");
    assert!(cross > 200, "{text}");
    // Leaving revokes the lease at once.
    io.block_on(a.leave()).expect("leaves");
    wait_until(Duration::from_secs(2), "b sees node 1 leave", || {
        ids(&b) == [2]
    });
}

/// With several endpoints, the client connects to one that answers: a dead
/// endpoint listed first is skipped, not an error; with only dead ones,
/// connecting fails (bounded by the connect timeout).
#[test]
fn a_client_skips_an_endpoint_that_does_not_answer() {
    let etcd = Etcd::start();
    let io = IoRuntime::new(1).unwrap();
    let opts = || ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        keep_alive_interval: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(2),
        meter: None,
    };
    let dead = format!("127.0.0.1:{}", free_port());
    io.block_on(async {
        let mut c = Client::connect(&[dead.clone(), etcd.endpoint()], opts())
            .await
            .expect("connects past the dead endpoint");
        c.put("skip-check", "v", 0)
            .await
            .expect("a call goes through");
        assert!(Client::connect(std::slice::from_ref(&dead), opts())
            .await
            .is_err());
    });
}
