//! Zones in a cluster of in-process nodes sharing one coordinator: the
//! topic table is cluster-wide, and every client learns leaders through
//! its zone: a leader in another zone shows as its proxy in the client's
//! zone, in Metadata and FindCoordinator alike; a client of unknown zone
//! sees the true leaders; and a zone table changed at run time (at the
//! cluster defaults, resource name "") moves clients at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server::{self, RunningNode};
use ferry_node::cluster::LocalCoordinator;
use ferry_node::node::{ClusterJoin, NodeSettings};
use ferry_node::storage::durable::MemoryLog;
use ferry_protocol::messages::*;
use ferry_protocol::wire::Message;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn node(id: i32, zone: &str, coordinator: &Arc<LocalCoordinator>) -> RunningNode {
    node_on(id, zone, coordinator, Arc::new(MemoryLog::new()))
}

/// A node whose durable log may be shared with others (a MemoryLog shared
/// by nodes stands for the bucket they share).
fn node_on(
    id: i32,
    zone: &str,
    coordinator: &Arc<LocalCoordinator>,
    log: Arc<MemoryLog>,
) -> RunningNode {
    let settings = NodeSettings {
        rack: Some(zone.to_owned()),
        shards: 1,
        cluster: ClusterJoin::Local(coordinator.clone()),
        ..NodeSettings::local(id)
    };
    server::start(settings, log, Default::default(), Default::default()).unwrap()
}

fn connect(n: &RunningNode) -> TcpStream {
    let c = TcpStream::connect(n.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Partition -> leader id, and broker id -> rack, as `client_id` sees them.
fn metadata(
    c: &mut TcpStream,
    client_id: &str,
    topic: &str,
) -> (BTreeMap<i32, i32>, BTreeMap<i32, String>) {
    let body = RequestBody::Metadata(metadata_request::MetadataRequest {
        topics: Some(vec![metadata_request::MetadataRequestTopic {
            name: Some(topic.into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let resp = raw::call_as(c, client_id, 12, body);
    let r = metadata_response::MetadataResponse::decode(&resp, 12).unwrap();
    let leaders = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id))
        .collect();
    let racks = r
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id,
                b.rack.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    (leaders, racks)
}

fn coordinator_of(c: &mut TcpStream, client_id: &str, group: &str) -> i32 {
    let body = RequestBody::FindCoordinator(find_coordinator_request::FindCoordinatorRequest {
        key: group.into(),
        ..Default::default()
    });
    let resp = raw::call_as(c, client_id, 3, body);
    let r = find_coordinator_response::FindCoordinatorResponse::decode(&resp, 3).unwrap();
    assert_eq!(r.error_code, 0);
    r.node_id
}

fn set_zone_cidrs_at_cluster_defaults(c: &mut TcpStream, value: &str) -> i16 {
    use incremental_alter_configs_request::*;
    let body = RequestBody::IncrementalAlterConfigs(IncrementalAlterConfigsRequest {
        resources: vec![AlterConfigsResource {
            resource_type: 4,
            resource_name: "".into(),
            configs: vec![AlterableConfig {
                name: "automq.zone.cidr.blocks".into(),
                config_operation: 0,
                value: Some(value.into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    let resp = raw::call(c, 0, body);
    incremental_alter_configs_response::IncrementalAlterConfigsResponse::decode(&resp, 0)
        .unwrap()
        .responses[0]
        .error_code
}

#[test]
fn clients_learn_leaders_through_their_zone() {
    let coordinator = LocalCoordinator::new();
    let a = node(1, "zone-a", &coordinator);
    let b = node(2, "zone-b", &coordinator);
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    // A topic created on one node is the cluster's.
    assert_eq!(raw::create_topic(&mut ca, "t", 6, &[]), 0);
    assert_eq!(
        raw::create_topic(&mut cb, "t", 6, &[]),
        36,
        "TOPIC_ALREADY_EXISTS on the other node"
    );

    // Unknown zone: the true leaders, spread over both nodes and zones.
    let (truth, racks) = metadata(&mut cb, "plain-client", "t");
    assert_eq!(
        racks,
        BTreeMap::from([(1, "zone-a".into()), (2, "zone-b".into())])
    );
    assert_eq!(truth.len(), 6);
    assert_eq!(truth.values().filter(|&&l| l == 1).count(), 3, "{truth:?}");
    assert_eq!(truth.values().filter(|&&l| l == 2).count(), 3, "{truth:?}");
    let (truth_a, _) = metadata(&mut ca, "plain-client", "t");
    assert_eq!(truth, truth_a, "every node tells the same truth");

    // A zone-tagged client sees only its zone's node, on either node.
    for c in [&mut ca, &mut cb] {
        let (seen, _) = metadata(c, "automq_az=zone-a&app", "t");
        assert!(seen.values().all(|&l| l == 1), "{seen:?}");
        let (seen, _) = metadata(c, "app&ws_az=zone-b", "t");
        assert!(seen.values().all(|&l| l == 2), "{seen:?}");
        // A zone with no node: the true leaders.
        let (seen, _) = metadata(c, "automq_az=zone-z", "t");
        assert_eq!(seen, truth);
    }
    // The same mapping for group coordinators.
    let groups: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
    let true_coordinators: Vec<i32> = groups
        .iter()
        .map(|g| coordinator_of(&mut ca, "plain-client", g))
        .collect();
    assert!(true_coordinators.contains(&1) && true_coordinators.contains(&2));
    for g in &groups {
        assert_eq!(coordinator_of(&mut cb, "automq_az=zone-a", g), 1);
        assert_eq!(coordinator_of(&mut ca, "diskless_az=zone-b", g), 2);
    }

    // The zone table, set at run time at the cluster defaults through one
    // node, moves an untagged client on 127.0.0.1 on every node.
    assert_eq!(
        set_zone_cidrs_at_cluster_defaults(&mut ca, "zone-b@127.0.0.0/8"),
        0
    );
    for c in [&mut ca, &mut cb] {
        let (seen, _) = metadata(c, "plain-client", "t");
        assert!(seen.values().all(|&l| l == 2), "{seen:?}");
    }
    assert_eq!(
        set_zone_cidrs_at_cluster_defaults(&mut cb, "zone-a@127.0.0.1/32<>zone-b@127.0.0.0/8"),
        0
    );
    let (seen, _) = metadata(&mut cb, "plain-client", "t");
    assert!(
        seen.values().all(|&l| l == 1),
        "longest prefix wins: {seen:?}"
    );
    // A tag still wins over the address.
    let (seen, _) = metadata(&mut cb, "automq_az=zone-b", "t");
    assert!(seen.values().all(|&l| l == 2), "{seen:?}");
    // A bad table is refused and changes nothing.
    assert_eq!(
        set_zone_cidrs_at_cluster_defaults(&mut ca, "zone-a@300.0.0.0/8"),
        40
    );
    let (seen, _) = metadata(&mut ca, "plain-client", "t");
    assert!(seen.values().all(|&l| l == 1), "{seen:?}");

    // A client of zone-b connecting to node a is misrouted (its bytes
    // cross zones): counted (per connection, by its first request), with
    // every client's bytes by zone.
    let mut stray = connect(&a);
    metadata(&mut stray, "automq_az=zone-b&stray", "t");
    let m = a.ctx.metrics.render("");
    let misrouted: u64 = m
        .lines()
        .find(|l| l.starts_with("ferry_misrouted_clients_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(misrouted >= 1, "{m}");
    let mut t = String::new();
    a.ctx.traffic.render(&a.ctx.zone, &mut t);
    assert!(
        t.contains("peer_zone=\"zone-b\",kind=\"client\",direction=\"in\""),
        "{t}"
    );
    drop((ca, cb));
    a.stop();
    b.stop();
}

/// `ferry dev --zones 3`: three nodes in one process, one per zone, each
/// zone's clients led by their own zone's node.
#[test]
fn ferry_dev_runs_three_zones() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // Three consecutive free ports: retry a few bases.
    let mut base = port;
    for _ in 0..20 {
        if (1..3).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()) {
            break;
        }
        base = common::free_port();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["dev", "--zones", "3", "--port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    // The banner names each zone's bootstrap address and client.id.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Logs share stdout: keep the banner's zone lines.
    let mut banner = Vec::new();
    while banner.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ferry dev banner");
        if line.starts_with("  zone ") {
            banner.push(line);
        }
    }
    for (z, line) in banner.iter().enumerate() {
        let want = format!("zone az{}: bootstrap 127.0.0.1:{}", z + 1, base + z as u16);
        assert!(line.contains(&want), "{line:?} should contain {want:?}");
        assert!(line.contains(&format!("automq_az=az{}", z + 1)), "{line}");
    }
    let mut c = TcpStream::connect(("127.0.0.1", base)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(raw::create_topic(&mut c, "dev-t", 6, &[]), 0);
    for z in 0..3u16 {
        let mut c = TcpStream::connect(("127.0.0.1", base + z)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (seen, racks) = metadata(&mut c, &format!("automq_az=az{}&app", z + 1), "dev-t");
        // A zone's client is shown its zone's node only.
        assert_eq!(racks.len(), 1, "zone az{}: {racks:?}", z + 1);
        let node = i32::from(z);
        assert_eq!(racks[&node], format!("az{}", z + 1));
        assert!(
            seen.values().all(|&l| l == node),
            "zone az{}: {seen:?}",
            z + 1
        );
    }
}

/// A node whose WAL and handoff objects go to a directory bucket.
fn node_in_bucket(
    id: i32,
    zone: &str,
    coordinator: &Arc<LocalCoordinator>,
    bucket: &std::path::Path,
) -> (RunningNode, Arc<ferry_node::storage::wal_log::WalLog>) {
    node_in_bucket_checking(id, zone, coordinator, bucket, 100)
}

/// [`node_in_bucket`] whose retention pass (which also notices lost
/// leadership) runs every `retention_check_ms`.
fn node_in_bucket_checking(
    id: i32,
    zone: &str,
    coordinator: &Arc<LocalCoordinator>,
    bucket: &std::path::Path,
    retention_check_ms: u64,
) -> (RunningNode, Arc<ferry_node::storage::wal_log::WalLog>) {
    node_in_bucket_with(id, zone, coordinator, bucket, |s| {
        s.retention_check_ms = retention_check_ms
    })
}

/// [`node_in_bucket`] with its settings changed by `adjust`.
fn node_in_bucket_with(
    id: i32,
    zone: &str,
    coordinator: &Arc<LocalCoordinator>,
    bucket: &std::path::Path,
    adjust: impl FnOnce(&mut NodeSettings),
) -> (RunningNode, Arc<ferry_node::storage::wal_log::WalLog>) {
    let uri = ferry_wal::BucketUri::parse(&format!("file://{}", bucket.display())).unwrap();
    let mut cfg = ferry_wal::WalConfig::new(id as u32);
    cfg.batch_interval = Duration::from_millis(20);
    let opened =
        ferry_node::storage::wal_log::WalLog::open(uri.build_store().unwrap(), cfg).unwrap();
    let mut settings = NodeSettings {
        rack: Some(zone.to_owned()),
        shards: 2,
        cluster: ClusterJoin::Local(coordinator.clone()),
        retention_check_ms: 100,
        ..NodeSettings::local(id)
    };
    adjust(&mut settings);
    let node = server::start(
        settings,
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    (node, opened.log)
}

/// Produce through a proxy (the handoff) and fetch through a read replica:
/// every partition, written at either node, reads the same at both. Here
/// the nodes share a MemoryLog.
#[test]
fn proxies_hand_produces_off_and_replicas_serve_fetches() {
    let coordinator = LocalCoordinator::new();
    let bucket = Arc::new(MemoryLog::new());
    let a = node_on(1, "zone-a", &coordinator, bucket.clone());
    let b = node_on(2, "zone-b", &coordinator, bucket.clone());
    handoff_round_trip(&a, &b);
    a.stop();
    b.stop();
}

/// The same through real WAL and handoff objects in a directory bucket.
#[test]
fn handoff_and_replica_reads_through_a_directory_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    let (a, la) = node_in_bucket(1, "zone-a", &coordinator, dir.path());
    let (b, lb) = node_in_bucket(2, "zone-b", &coordinator, dir.path());
    handoff_round_trip(&a, &b);
    // The proxy's batches are in its handoff objects; the leader's WAL
    // objects hold references to them: entries of topic `h` whose bytes are
    // in a handoff object that is in the bucket.
    let store = ferry_wal::BucketUri::parse(&format!("file://{}", dir.path().display()))
        .unwrap()
        .build_store()
        .unwrap();
    let io = ferry_wal::IoRuntime::new(1).unwrap();
    let scan = io
        .block_on(ferry_wal::recovery::scan_partitions(
            &*store,
            "wal",
            |_, _| true,
        ))
        .unwrap();
    let referenced: Vec<String> = scan
        .entries
        .iter()
        .filter(|e| &*e.entry.topic == "h")
        .filter_map(|e| e.entry.external.as_ref().map(|x| x.key.to_string()))
        .collect();
    assert!(
        !referenced.is_empty(),
        "no WAL entry of the leader refers into a handoff object"
    );
    for key in &referenced {
        assert!(key.starts_with("handoff/"), "{key}");
        assert!(dir.path().join(key).is_file(), "{key} is not in the bucket");
    }
    a.stop();
    b.stop();
    la.shutdown(Duration::from_secs(5));
    lb.shutdown(Duration::from_secs(5));
}

/// Produces one record, retrying retriable errors as clients do (a leader
/// answers LEADER_NOT_AVAILABLE while it takes a partition over) for at
/// most 10 s.
fn produce_retrying(c: &mut TcpStream, topic: &str, p: i32, key: &[u8]) -> (i16, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (err, offset) = raw::produce(c, topic, p, 1_000, key);
        if !matches!(err, 5..=7) || std::time::Instant::now() > deadline {
            return (err, offset);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn handoff_round_trip(a: &RunningNode, b: &RunningNode) {
    let mut ca = connect(a);
    let mut cb = connect(b);
    assert_eq!(raw::create_topic(&mut ca, "h", 4, &[]), 0);
    let (truth, _) = metadata(&mut ca, "plain", "h");
    // Each record goes in at both nodes: one of them is its partition's
    // leader, the other a proxy handing it off.
    let mut want: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for round in 0..3 {
        for p in 0..4 {
            for (name, c) in [("a", &mut ca), ("b", &mut cb)] {
                let key = format!("{name}-{p}-{round}");
                let (err, offset) = produce_retrying(c, "h", p, key.as_bytes());
                assert_eq!(err, 0, "produce {key} (leader {})", truth[&p]);
                want.entry(p).or_default().push((offset, key.into_bytes()));
            }
        }
    }
    for (p, recs) in &want {
        let offsets: Vec<i64> = recs.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..6).collect::<Vec<i64>>(),
            "partition {p}: dense offsets"
        );
        // The leader and the replica serve the same records.
        for c in [&mut ca, &mut cb] {
            let (err, got) = raw::fetch(c, "h", *p, 0);
            assert_eq!(err, 0);
            assert_eq!(&got, recs, "partition {p}");
        }
        // From the middle, too.
        let (_, got) = raw::fetch(&mut cb, "h", *p, 3);
        assert_eq!(&got[..], &recs[3..]);
    }
}

/// Failover: a leader leaves the view (its lease lost); the other node of
/// its zone takes its partitions over from the bucket: the same records at
/// the same offsets, and new ones after them. The old leader acknowledges
/// nothing more.
#[test]
fn a_leaders_partitions_are_taken_over_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    let (a, la) = node_in_bucket(1, "zone-a", &coordinator, dir.path());
    let (b, lb) = node_in_bucket(2, "zone-a", &coordinator, dir.path());
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    assert_eq!(raw::create_topic(&mut ca, "f", 4, &[]), 0);
    let (truth, _) = metadata(&mut ca, "plain", "f");
    assert!(truth.values().any(|&l| l == 1) && truth.values().any(|&l| l == 2));
    let mut want: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for round in 0..5 {
        for p in 0..4 {
            let c = if truth[&p] == 1 { &mut ca } else { &mut cb };
            let key = format!("before-{p}-{round}");
            let (err, offset) = produce_retrying(c, "f", p, key.as_bytes());
            assert_eq!(err, 0, "{key}");
            want.entry(p).or_default().push((offset, key.into_bytes()));
        }
    }
    // Node 1 loses its lease: it refuses produces from now on.
    assert!(coordinator.fence(1));
    let led_by_1: Vec<i32> = truth
        .iter()
        .filter(|(_, &l)| l == 1)
        .map(|(p, _)| *p)
        .collect();
    let (err, _) = raw::produce(&mut ca, "f", led_by_1[0], 1_000, b"late");
    assert_eq!(err, 6, "NOT_LEADER_OR_FOLLOWER from a fenced node");
    // With it, a KIP-951 hint (produce v10+): the new leader and where it is.
    let r = raw::produce_response(&mut ca, 10, "f", led_by_1[0], b"late");
    let part = &r.responses[0].partition_responses[0];
    assert_eq!(part.error_code, 6);
    assert_eq!(part.current_leader.leader_id, 2);
    assert_eq!(r.node_endpoints.len(), 1);
    assert_eq!(r.node_endpoints[0].node_id, 2);
    assert_eq!(r.node_endpoints[0].port, i32::from(b.addr.port()));
    // Node 2 loads what it now leads without waiting for a client, and
    // publishes that it reads node 1's WAL objects: they are kept for it.
    let refs = dir.path().join("meta/refs-2");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let file = std::fs::read(&refs)
            .ok()
            .and_then(|b| ferry_node::storage::refs::RefsFile::decode(&b).ok());
        if file.is_some_and(|f| f.loaded && f.refs.wal.contains_key(&1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 2 never published its references to node 1's objects"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Node 2 leads everything, and continues each log where it ended.
    let (now, _) = metadata(&mut cb, "plain", "f");
    assert!(now.values().all(|&l| l == 2), "{now:?}");
    for p in 0..4 {
        let key = format!("after-{p}");
        let (err, offset) = produce_retrying(&mut cb, "f", p, key.as_bytes());
        assert_eq!(err, 0, "{key}");
        assert_eq!(offset, 5, "partition {p} continues after its 5 records");
        want.entry(p).or_default().push((offset, key.into_bytes()));
    }
    for (p, recs) in &want {
        let (err, got) = raw::fetch(&mut cb, "f", *p, 0);
        assert_eq!(err, 0);
        assert_eq!(&got, recs, "partition {p} after the takeover");
    }
    drop((ca, cb));
    a.stop();
    b.stop();
    la.shutdown(Duration::from_secs(5));
    lb.shutdown(Duration::from_secs(5));
}

/// A fetch naming its rack (KIP-392) at a leader in another zone is sent
/// to the read replica in the client's zone, with no records; in the
/// leader's own zone it gets the records.
#[test]
fn a_fetch_from_another_rack_is_sent_to_its_zones_replica() {
    let coordinator = LocalCoordinator::new();
    let bucket = Arc::new(MemoryLog::new());
    let a = node_on(1, "zone-a", &coordinator, bucket.clone());
    let b = node_on(2, "zone-b", &coordinator, bucket.clone());
    let mut ca = connect(&a);
    assert_eq!(raw::create_topic(&mut ca, "r", 2, &[]), 0);
    let (truth, _) = metadata(&mut ca, "plain", "r");
    let p = *truth.iter().find(|(_, &l)| l == 1).unwrap().0;
    assert_eq!(produce_retrying(&mut ca, "r", p, b"k").0, 0);
    let fetch = |c: &mut TcpStream, rack: &str| {
        let mut body = raw::fetch_request("r", p, 0, 5_000);
        if let RequestBody::Fetch(f) = &mut body {
            f.rack_id = rack.into();
        }
        let started = std::time::Instant::now();
        let resp = raw::call_as(c, "plain", 11, body);
        let r = fetch_response::FetchResponse::decode(&resp, 11).unwrap();
        let part = r.responses[0].partitions[0].clone();
        (part, started.elapsed())
    };
    let (other, took) = fetch(&mut ca, "zone-b");
    assert_eq!(other.error_code, 0);
    assert_eq!(other.preferred_read_replica, 2, "the replica in zone-b");
    assert!(other.records.as_ref().is_none_or(|r| r.is_empty()));
    assert!(
        took < Duration::from_secs(2),
        "answered at once, not after max_wait"
    );
    let (same, _) = fetch(&mut ca, "zone-a");
    assert_eq!(same.preferred_read_replica, -1);
    assert!(same.records.as_ref().is_some_and(|r| !r.is_empty()));
    drop(ca);
    a.stop();
    b.stop();
}

/// A group's coordinator fails over with its committed offsets: the node
/// that comes to lead the group's slot takes them from the old
/// coordinator's snapshot in the bucket.
#[test]
fn committed_offsets_move_with_the_group_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    let (a, la) = node_in_bucket(1, "zone-a", &coordinator, dir.path());
    let (b, lb) = node_in_bucket(2, "zone-a", &coordinator, dir.path());
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    assert_eq!(raw::create_topic(&mut ca, "g", 1, &[]), 0);
    // A group that node 1 coordinates.
    let group = (0..200)
        .map(|i| format!("grp-{i}"))
        .find(|g| coordinator_of(&mut ca, "plain", g) == 1)
        .unwrap();
    let commit = |c: &mut TcpStream, offset: i64| {
        use offset_commit_request::*;
        let body = RequestBody::OffsetCommit(OffsetCommitRequest {
            group_id: group.as_str().into(),
            generation_id_or_member_epoch: -1,
            member_id: "".into(),
            retention_time_ms: -1,
            topics: vec![OffsetCommitRequestTopic {
                name: "g".into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: offset,
                    committed_leader_epoch: -1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let resp = raw::call(c, 2, body);
        offset_commit_response::OffsetCommitResponse::decode(&resp, 2)
            .unwrap()
            .topics[0]
            .partitions[0]
            .error_code
    };
    let fetch = |c: &mut TcpStream| {
        use offset_fetch_request::*;
        let body = RequestBody::OffsetFetch(OffsetFetchRequest {
            group_id: group.as_str().into(),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: "g".into(),
                partition_indexes: vec![0],
                ..Default::default()
            }]),
            ..Default::default()
        });
        let resp = raw::call(c, 1, body);
        offset_fetch_response::OffsetFetchResponse::decode(&resp, 1)
            .unwrap()
            .topics[0]
            .partitions[0]
            .committed_offset
    };
    assert_eq!(commit(&mut ca, 42), 0);
    assert_eq!(fetch(&mut ca), 42);
    // Node 1 goes; node 2 now coordinates the group, with its offsets.
    assert!(coordinator.fence(1));
    assert_eq!(coordinator_of(&mut cb, "plain", &group), 2);
    assert_eq!(
        fetch(&mut cb),
        42,
        "the committed offset moved with the group"
    );
    // Node 2 commits while it coordinates; then node 1 is back and
    // coordinates the group again. It takes node 2's newer offset over
    // before any group request: even with node 2's snapshot gone by then.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(commit(&mut cb, 50), 0);
    let snapshot_1 = dir.path().join("meta/groups-1");
    let snapshot_2 = dir.path().join("meta/groups-2");
    let before = std::fs::read(&snapshot_1).unwrap();
    eventually(
        Duration::from_secs(10),
        "node 2 persisted its commit (OffsetCommit answers after it)",
        || std::fs::read(&snapshot_2).is_ok(),
    );
    assert!(coordinator.unfence(1));
    // Nothing but the take-over changes node 1's offsets meanwhile.
    eventually(
        Duration::from_secs(10),
        "node 1 rewrites its snapshot with what it took over",
        || std::fs::read(&snapshot_1).is_ok_and(|b| b != before),
    );
    std::fs::remove_file(&snapshot_2).unwrap();
    assert_eq!(coordinator_of(&mut ca, "plain", &group), 1);
    assert_eq!(fetch(&mut ca), 50, "the newer commit, made at node 2");
    drop((ca, cb));
    a.stop();
    b.stop();
    la.shutdown(Duration::from_secs(5));
    lb.shutdown(Duration::from_secs(5));
}

/// A node that lost its lease may miss the views in which another node led
/// its partitions (it was stopped, or simply not looking). When it
/// registers again and leads them again, it must not go on from what it
/// held: it loads them again, with what the other node wrote meanwhile.
#[test]
fn a_node_back_from_a_lost_lease_reloads_what_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    // Node 1 looks at the view only when asked (no retention pass soon).
    let (a, la) = node_in_bucket_checking(1, "zone-a", &coordinator, dir.path(), 60_000);
    let (b, lb) = node_in_bucket(2, "zone-a", &coordinator, dir.path());
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    assert_eq!(raw::create_topic(&mut cb, "s", 4, &[]), 0);
    let (truth, _) = metadata(&mut cb, "plain", "s");
    let p = *truth.iter().find(|(_, &l)| l == 1).unwrap().0;
    assert_eq!(produce_retrying(&mut ca, "s", p, b"one"), (0, 0));
    // Node 1 loses its lease; node 2 takes the partition and writes to it.
    assert!(coordinator.fence(1));
    assert_eq!(produce_retrying(&mut cb, "s", p, b"two"), (0, 1));
    // Node 1 is back before it ever looked.
    assert!(coordinator.unfence(1));
    let (err, offset) = produce_retrying(&mut ca, "s", p, b"three");
    assert_eq!(err, 0);
    assert_eq!(offset, 2, "node 1 continues after node 2's record");
    let (_, got) = raw::fetch(&mut ca, "s", p, 0);
    assert_eq!(
        got,
        vec![
            (0, b"one".to_vec()),
            (1, b"two".to_vec()),
            (2, b"three".to_vec())
        ]
    );
    drop((ca, cb));
    a.stop();
    b.stop();
    la.shutdown(Duration::from_secs(5));
    lb.shutdown(Duration::from_secs(5));
}

/// A zone table set at run time survives a restart of a node whose
/// coordinator is in process (the bucket keeps it; etcd keeps its own).
#[test]
fn a_zone_table_set_at_run_time_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = common::DevNode::start(dir.path(), common::free_port(), &[]);
    let describe = |c: &mut TcpStream| -> Option<String> {
        use describe_configs_request::*;
        let body = RequestBody::DescribeConfigs(DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: 4,
                resource_name: "0".into(),
                configuration_keys: Some(vec!["automq.zone.cidr.blocks".into()]),
                ..Default::default()
            }],
            ..Default::default()
        });
        let resp = raw::call(c, 1, body);
        let r = describe_configs_response::DescribeConfigsResponse::decode(&resp, 1).unwrap();
        r.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == "automq.zone.cidr.blocks")
            .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
    };
    let value = "zone-x@10.9.0.0/16";
    {
        let mut c = ready(n.port);
        assert_eq!(set_zone_cidrs_at_cluster_defaults(&mut c, value), 0);
        assert_eq!(describe(&mut c).as_deref(), Some(value));
    }
    n.kill9_and_restart(&[]);
    let mut c = ready(n.port);
    assert_eq!(
        describe(&mut c).as_deref(),
        Some(value),
        "kept across the restart"
    );
}

/// A connection to a node that has finished starting: it answers an
/// ApiVersions request (retried for at most 20 s).
fn ready(port: u16) -> TcpStream {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "node on {port} never answered"
        );
        let attempt = || -> std::io::Result<TcpStream> {
            let mut c = TcpStream::connect(("127.0.0.1", port))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            let frame = ferry_protocol::frame::concat(
                &ferry_protocol::frame::encode_request(
                    1,
                    Some("ready"),
                    0,
                    &RequestBody::ApiVersions(Default::default()),
                )
                .map_err(std::io::Error::other)?,
            );
            c.write_all(&frame)?;
            let mut size = [0u8; 4];
            c.read_exact(&mut size)?;
            let mut rest = vec![0u8; u32::from_be_bytes(size) as usize];
            c.read_exact(&mut rest)?;
            Ok(c)
        };
        match attempt() {
            Ok(c) => return c,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The object keys under `dir/prefix/node/`.
fn objects_of(dir: &std::path::Path, prefix: &str, node: i32) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir.join(prefix).join(node.to_string()))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wal"))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

fn seq_of(key: &str) -> u64 {
    key.trim_end_matches(".wal").parse().unwrap()
}

/// The oldest object `pick` finds in node `node`'s published references,
/// once it has published some with every partition it leads loaded.
fn in_use_by(
    dir: &std::path::Path,
    node: i32,
    pick: impl Fn(&ferry_node::storage::refs::Refs) -> Option<u64>,
) -> u64 {
    let path = dir.join(format!("meta/refs-{node}"));
    let mut found = None;
    eventually(Duration::from_secs(10), "published references", || {
        found = std::fs::read(&path)
            .ok()
            .and_then(|b| ferry_node::storage::refs::RefsFile::decode(&b).ok())
            .filter(|f| f.loaded)
            .and_then(|f| pick(&f.refs));
        found.is_some()
    });
    found.unwrap()
}

/// A whole partition, retried while its leader is loading it.
fn fetch_retrying(c: &mut TcpStream, topic: &str, p: i32) -> Vec<(i64, Vec<u8>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (err, got) = raw::fetch(c, topic, p, 0);
        if err == 0 {
            return got;
        }
        assert!(
            matches!(err, 5..=7) && std::time::Instant::now() < deadline,
            "fetch {topic}-{p}: error {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts node `id` again on `bucket` with a coordinator of its own, and
/// checks that every partition of `topic` reads back as `want`.
fn reads_the_same_from_the_bucket_alone(
    bucket: &std::path::Path,
    id: i32,
    zone: &str,
    topic: &str,
    want: &BTreeMap<i32, Vec<(i64, Vec<u8>)>>,
) {
    let (n, log) = node_in_bucket_with(
        id,
        zone,
        &LocalCoordinator::new(),
        bucket,
        quick_deletes(600_000),
    );
    let mut c = connect(&n);
    for (p, recs) in want {
        assert_eq!(
            &fetch_retrying(&mut c, topic, *p),
            recs,
            "partition {p}, node {id} from the bucket alone"
        );
    }
    drop(c);
    n.stop();
    log.shutdown(Duration::from_secs(5));
}

/// Waits up to `limit` for `cond`; panics with `what`.
fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Settings for the object-deletion tests: passes every 100 ms, objects
/// deletable at 400 ms old, compaction every `compaction_ms`.
fn quick_deletes(compaction_ms: u64) -> impl FnOnce(&mut NodeSettings) {
    move |s| {
        s.retention_check_ms = 100;
        s.object_delete_age_ms = 400;
        s.compaction_interval_ms = compaction_ms;
    }
}

/// A proxy's handoff objects are kept while their leader reads from them,
/// however old, and deleted once the leader has compacted the batches:
/// the records read the same afterwards.
#[test]
fn handoff_objects_go_once_their_leader_no_longer_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    // Node 2 compacts late: node 1's handoff objects are in use until then.
    let (a, la) = node_in_bucket_with(
        1,
        "zone-a",
        &coordinator,
        dir.path(),
        quick_deletes(600_000),
    );
    let (b, lb) = node_in_bucket_with(2, "zone-b", &coordinator, dir.path(), quick_deletes(4_000));
    let mut ca = connect(&a);
    let cb = connect(&b);
    assert_eq!(raw::create_topic(&mut ca, "g", 4, &[]), 0);
    let (truth, _) = metadata(&mut ca, "plain", "g");
    let led_by_2: Vec<i32> = truth
        .iter()
        .filter(|(_, &l)| l == 2)
        .map(|(p, _)| *p)
        .collect();
    assert!(!led_by_2.is_empty(), "{truth:?}");
    let started = std::time::Instant::now();
    let mut want: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for round in 0..4 {
        for &p in &led_by_2 {
            // Through node 1, in the other zone: a handoff.
            let key = format!("h-{p}-{round}");
            let (err, offset) = produce_retrying(&mut ca, "g", p, key.as_bytes());
            assert_eq!(err, 0, "{key}");
            want.entry(p).or_default().push((offset, key.into_bytes()));
        }
    }
    // The objects node 2 reads from (a handoff refused while it loaded
    // the partition is in none of them, and may go).
    let in_use = in_use_by(dir.path(), 2, |r| r.handoff.get(&1).copied());
    let written: Vec<String> = objects_of(dir.path(), "handoff", 1)
        .into_iter()
        .filter(|k| seq_of(k) >= in_use)
        .collect();
    assert!(!written.is_empty(), "the proxy wrote handoff objects");
    // Its own counters say so too.
    let text = ferry_node::storage::durable::DurableLog::render_metrics(&*la);
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.split(' ').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let uploaded = counter("ferry_handoff_objects_total{");
    assert!(
        uploaded >= written.len() as u64,
        "{uploaded} objects counted"
    );
    assert!(counter("ferry_handoff_puts_total{") >= uploaded);
    // Well past the deletion age, before node 2 compacts: all kept.
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        started.elapsed() < Duration::from_millis(3_500),
        "too slow to check before compaction"
    );
    let now: Vec<String> = objects_of(dir.path(), "handoff", 1);
    assert!(
        written.iter().all(|k| now.contains(k)),
        "kept while in use: {written:?}, {now:?}"
    );
    // Node 2 compacts them into its own objects: nothing refers to them.
    // All but the newest, which keeps node 1's numbering going.
    let newest = objects_of(dir.path(), "handoff", 1).last().cloned();
    eventually(
        Duration::from_secs(20),
        "the handoff objects are deleted",
        || objects_of(dir.path(), "handoff", 1).len() <= 1,
    );
    assert_eq!(objects_of(dir.path(), "handoff", 1).last(), newest.as_ref());
    // Every pass of both nodes now deletes what it can.
    for n in [&a, &b] {
        eventually(Duration::from_secs(5), "no blocked deletion pass", || {
            n.ctx
                .refs_blocked
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        });
    }
    drop((ca, cb));
    a.stop();
    la.shutdown(Duration::from_secs(5));
    // Node 2 again, from the bucket alone: the same records.
    b.stop();
    lb.shutdown(Duration::from_secs(5));
    reads_the_same_from_the_bucket_alone(dir.path(), 2, "zone-b", "g", &want);
}

/// A node that left the cluster: its successor loads its partitions
/// without waiting for a client, its WAL objects are kept until the
/// successor has compacted them, then the lowest node id of the view
/// deletes them. Nothing is lost.
#[test]
fn a_departed_nodes_objects_go_once_its_partitions_are_compacted_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    let (a, la) = node_in_bucket_with(
        1,
        "zone-a",
        &coordinator,
        dir.path(),
        quick_deletes(600_000),
    );
    let (b, lb) = node_in_bucket_with(2, "zone-a", &coordinator, dir.path(), quick_deletes(5_000));
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    assert_eq!(raw::create_topic(&mut ca, "d", 4, &[]), 0);
    let (truth, _) = metadata(&mut ca, "plain", "d");
    let mut want: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for round in 0..3 {
        for p in 0..4 {
            let c = if truth[&p] == 1 { &mut ca } else { &mut cb };
            let key = format!("d-{p}-{round}");
            let (err, offset) = produce_retrying(c, "d", p, key.as_bytes());
            assert_eq!(err, 0, "{key}");
            want.entry(p).or_default().push((offset, key.into_bytes()));
        }
    }
    assert!(!objects_of(dir.path(), "wal", 1).is_empty());
    // Node 1 leaves the view and never comes back.
    assert!(coordinator.fence(1));
    drop(ca);
    a.stop();
    la.shutdown(Duration::from_secs(5));
    let left = std::time::Instant::now();
    // Node 2 loads node 1's partitions by itself, and then reads from
    // node 1's WAL objects.
    let in_use = in_use_by(dir.path(), 2, |r| r.wal.get(&1).copied());
    let kept: Vec<String> = objects_of(dir.path(), "wal", 1)
        .into_iter()
        .filter(|k| seq_of(k) >= in_use)
        .collect();
    assert!(!kept.is_empty());
    // Node 2 has not compacted yet: node 1's objects stay, however old.
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        left.elapsed() < Duration::from_millis(4_500),
        "too slow to check before compaction"
    );
    let now = objects_of(dir.path(), "wal", 1);
    assert!(
        kept.iter().all(|k| now.contains(k)),
        "kept while node 2 reads them: {kept:?}, {now:?}"
    );
    let newest = objects_of(dir.path(), "wal", 1).last().cloned();
    eventually(
        Duration::from_secs(20),
        "node 1's WAL objects are deleted (all but the newest)",
        || objects_of(dir.path(), "wal", 1).len() <= 1,
    );
    assert_eq!(objects_of(dir.path(), "wal", 1).last(), newest.as_ref());
    // Node 2 again, from the bucket alone: the same records.
    drop(cb);
    b.stop();
    lb.shutdown(Duration::from_secs(5));
    reads_the_same_from_the_bucket_alone(dir.path(), 2, "zone-a", "d", &want);
}

/// A leadership blip: node 2 joins, leads a partition and takes a write,
/// then leaves, all while node 1 is not looking. Node 1 leads the
/// partition again, but does not go on from its old log: another node led
/// it in between, so it loads it again and continues after node 2's write.
#[test]
fn a_leader_that_missed_a_brief_other_leader_reloads_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = LocalCoordinator::new();
    // Node 1 runs no background pass during the test: only requests make it
    // look at the view.
    let idle = |s: &mut NodeSettings| {
        s.retention_check_ms = 600_000;
        s.compaction_interval_ms = 600_000;
    };
    let (a, la) = node_in_bucket_with(1, "zone-a", &coordinator, dir.path(), idle);
    let mut ca = connect(&a);
    assert_eq!(raw::create_topic(&mut ca, "blip", 4, &[]), 0);
    for p in 0..4 {
        let (err, offset) = produce_retrying(&mut ca, "blip", p, b"a-0");
        assert_eq!((err, offset), (0, 0), "partition {p}");
    }
    let (b, lb) = node_in_bucket_with(2, "zone-a", &coordinator, dir.path(), idle);
    let mut cb = connect(&b);
    let (truth, _) = metadata(&mut cb, "plain", "blip");
    let p = *truth
        .iter()
        .find(|(_, &l)| l == 2)
        .expect("node 2 leads a partition")
        .0;
    let (err, offset) = produce_retrying(&mut cb, "blip", p, b"b-1");
    assert_eq!((err, offset), (0, 1), "node 2 continues node 1's log");
    // Node 2 is gone again before node 1 looks.
    assert!(coordinator.fence(2));
    let (err, offset) = produce_retrying(&mut ca, "blip", p, b"a-2");
    assert_eq!(err, 0);
    assert_eq!(offset, 2, "node 1 continues after node 2's write");
    assert_eq!(
        fetch_retrying(&mut ca, "blip", p),
        vec![
            (0, b"a-0".to_vec()),
            (1, b"b-1".to_vec()),
            (2, b"a-2".to_vec())
        ]
    );
    drop((ca, cb));
    a.stop();
    b.stop();
    la.shutdown(Duration::from_secs(5));
    lb.shutdown(Duration::from_secs(5));
}
