//! Security across zones, with two in-process nodes in two zones sharing a
//! bucket and a coordinator: clients on SASL, nodes calling each other over
//! mutual TLS on their INTERNAL listener. A client of zone-b produces
//! through its zone's node to partitions led in zone-a (handed off over
//! mTLS), the proxy enforcing the same ACLs as the leader; a caller with a
//! valid certificate that is not a member's is refused on the inter-node
//! listener and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::broker::server::{self, RunningNode};
use ferry_node::cluster::rpc::{RpcClient, RpcTraffic};
use ferry_node::cluster::{LocalCoordinator, Member};
use ferry_node::config::{Config, HostEnv, SaslMechanism};
use ferry_node::node::{ClusterJoin, NodeSettings};
use ferry_node::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use ferry_node::security::pki::DevCa;
use ferry_node::security::scram::ScramCredential;
use ferry_node::security::SecurityDoc;
use ferry_node::storage::durable::MemoryLog;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn config(id: i32, keystore: &str, ca: &str) -> Config {
    let id_text = id.to_string();
    Config::from_pairs(
        [
            ("node.id", id_text.as_str()),
            ("listeners", "CLIENT://127.0.0.1:0,INTERNAL://127.0.0.1:0"),
            (
                "listener.security.protocol.map",
                "CLIENT:SASL_PLAINTEXT,INTERNAL:SSL",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("ssl.keystore.location", keystore),
            ("ssl.truststore.location", ca),
            ("listener.name.internal.ssl.client.auth", "required"),
            (
                "listener.name.internal.ssl.principal.mapping.rules",
                "RULE:^CN=([^,]*),OU=ferry-nodes.*$/$1/",
            ),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", "User:admin"),
            ("s3.data.buckets", "0@file:///unused"),
        ],
        HostEnv::detect(),
    )
    .unwrap()
}

fn node(
    zone: &str,
    config: &Config,
    coordinator: &Arc<LocalCoordinator>,
    bucket: &Arc<MemoryLog>,
) -> RunningNode {
    server::start(
        NodeSettings {
            rack: Some(zone.to_owned()),
            shards: 1,
            cluster: ClusterJoin::Local(coordinator.clone()),
            ..NodeSettings::from_config(config).unwrap()
        },
        bucket.clone(),
        Default::default(),
        Default::default(),
    )
    .unwrap()
}

/// Bytes `node` sent as handoff commits (its RPC traffic counters).
fn handed_off(node: &RunningNode) -> u64 {
    node.ctx
        .traffic
        .snapshot()
        .iter()
        .filter(|(_, kind, _, _)| *kind == "handoff")
        .map(|(_, _, out, _)| out)
        .sum()
}

/// The principal each member registered, in node order.
fn principals(coordinator: &LocalCoordinator) -> Vec<String> {
    coordinator
        .view()
        .members()
        .iter()
        .map(|m| m.principal.clone())
        .collect()
}

#[test]
fn a_proxy_in_the_clients_zone_enforces_acls_and_hands_off_over_mtls() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("Ferry test CA").unwrap();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem);
    let keystores: Vec<String> = (1..=2)
        .map(|i| {
            let leaf = ca
                .leaf(
                    &format!("CN=node-{i},OU=ferry-nodes,O=Ferry"),
                    &["127.0.0.1"],
                )
                .unwrap();
            write(dir.path(), &format!("node-{i}.pem"), &leaf.keystore_pem(""))
        })
        .collect();
    let coordinator = LocalCoordinator::new();
    let bucket = Arc::new(MemoryLog::new());
    let a = node(
        "zone-a",
        &config(1, &keystores[0], &ca_path),
        &coordinator,
        &bucket,
    );
    let b = node(
        "zone-b",
        &config(2, &keystores[1], &ca_path),
        &coordinator,
        &bucket,
    );
    // Each member registered the principal its certificate maps to.
    assert_eq!(principals(&coordinator), ["User:node-1", "User:node-2"]);

    let mut doc = SecurityDoc::default();
    for (user, pw) in [
        ("admin", "admin-pw"),
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
    ] {
        let c = ScramCredential::from_password(SaslMechanism::ScramSha512, pw, None, 4096).unwrap();
        doc.upsert(user, c);
    }
    let allow = |resource_type, name: &str, operation| AclBinding {
        resource_type,
        name: name.into(),
        pattern: PatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation,
        permission: Permission::Allow,
    };
    doc.acls = vec![
        allow(ResourceType::Topic, "zz", Operation::Write),
        allow(ResourceType::Topic, "zz", Operation::Read),
        allow(ResourceType::Group, "gz", Operation::Read),
    ];
    common::store_security_doc(&a, &doc);

    common::python(
        "acl_zones.py",
        &[
            &format!("zone_a={}", common::listener_addr(&a, "CLIENT")),
            &format!("zone_b={}", common::listener_addr(&b, "CLIENT")),
        ],
        240,
    );
    // zone-b's node handed batches off to zone-a's leader: over the INTERNAL
    // listener, which only mutual TLS gets into.
    assert!(handed_off(&b) > 0, "{:?}", b.ctx.traffic.snapshot());

    // A caller with a certificate from the same CA that is no member's is
    // refused on the inter-node listener, and changes nothing.
    let mallory = ca
        .leaf("CN=mallory,OU=ferry-nodes,O=Ferry", &["127.0.0.1"])
        .unwrap();
    let mallory_pem = write(dir.path(), "mallory.pem", &mallory.keystore_pem(""));
    let mallory_config = config(9, &mallory_pem, &ca_path);
    let tls = mallory_config.listener_security[1].tls.clone().unwrap();
    let client_tls = ferry_node::security::tls::TlsClient::load_client("INTERNAL", &tls).unwrap();
    let internal = common::listener_addr(&a, "INTERNAL");
    let codes = common::run_bounded(30, move || async move {
        let rpc = RpcClient::new(Arc::new(RpcTraffic::new()), 1 << 20).with_tls(Some(client_tls));
        let to = Member::new(1, "zone-a", internal.ip().to_string(), internal.port());
        let commit = common::one_batch_commit(2, 1, "zz", [0; 16]);
        rpc.handoff_commit(&to, &commit, Duration::from_secs(5))
            .await
            .map(|r| r.partitions[0][0].error_code)
    });
    assert_eq!(
        codes.unwrap(),
        31,
        "CLUSTER_AUTHORIZATION_FAILED for a non-member's call"
    );
    a.stop();
    b.stop();
}

/// A node configured to call others over SASL: CLIENT is PLAINTEXT, INTERNAL
/// is SASL_PLAINTEXT with SCRAM-SHA-512, and the node's own user comes from
/// the listener's `sasl.jaas.config`.
fn sasl_internal_config(id: i32, user: &str, password: &str) -> Config {
    let id_text = id.to_string();
    let jaas = format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"{user}\" password=\"{password}\";"
    );
    Config::from_pairs(
        [
            ("node.id", id_text.as_str()),
            ("listeners", "CLIENT://127.0.0.1:0,INTERNAL://127.0.0.1:0"),
            (
                "listener.security.protocol.map",
                "CLIENT:PLAINTEXT,INTERNAL:SASL_PLAINTEXT",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            (
                "listener.name.internal.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
            (
                "listener.name.internal.scram-sha-512.sasl.jaas.config",
                jaas.as_str(),
            ),
            ("s3.data.buckets", "0@file:///unused"),
        ],
        HostEnv::detect(),
    )
    .unwrap()
}

/// Node-to-node calls authenticate with SCRAM on a SASL inter-broker
/// listener: each node adds its user's salted credential to the cluster's
/// document at start and registers as that user; a produce through zone-b's
/// node to a partition led in zone-a is handed off over SASL and lands at
/// the leader. A caller with the wrong password gets no call through, and
/// a node whose password the stored credential does not take does not
/// start.
#[test]
fn nodes_call_each_other_over_scram_on_a_sasl_inter_broker_listener() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let coordinator = LocalCoordinator::new();
    let bucket = Arc::new(MemoryLog::new());
    let a = node(
        "zone-a",
        &sasl_internal_config(1, "node-1", "pw-one"),
        &coordinator,
        &bucket,
    );
    let b = node(
        "zone-b",
        &sasl_internal_config(2, "node-2", "pw-two"),
        &coordinator,
        &bucket,
    );
    assert_eq!(principals(&coordinator), ["User:node-1", "User:node-2"]);
    // Stored salted: never the password.
    let doc = a.ctx.security();
    for (user, pw) in [("node-1", "pw-one"), ("node-2", "pw-two")] {
        let c = doc
            .credential(user, SaslMechanism::ScramSha512)
            .unwrap_or_else(|| panic!("no credential for {user}"));
        assert!(c.verify_password(pw));
        assert!(!doc.encode().windows(pw.len()).any(|w| w == pw.as_bytes()));
    }

    let mut k = std::net::TcpStream::connect(common::listener_addr(&a, "CLIENT")).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(common::raw::create_topic(&mut k, "sz", 4, &[]), 0);
    let view = coordinator.view();
    let led_by_a = (0..4)
        .find(|&p| view.leader("sz", p).is_some_and(|m| m.node_id == 1))
        .expect("node 1 leads a partition");
    let mut kb = std::net::TcpStream::connect(common::listener_addr(&b, "CLIENT")).unwrap();
    kb.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Zone-b's node learns of the new topic within moments: retry while it
    // answers LEADER_NOT_AVAILABLE, for at most 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (code, offset) = loop {
        let r = common::raw::produce(&mut kb, "sz", led_by_a, 1, b"k");
        if r.0 != 5 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((code, offset), (0, 0), "the handoff over SASL was refused");
    assert_eq!(common::raw::list_offset(&mut k, "sz", led_by_a, -1), 1);
    assert!(handed_off(&b) > 0, "{:?}", b.ctx.traffic.snapshot());

    // The wrong password: the connection never carries a call.
    let internal = common::listener_addr(&a, "INTERNAL");
    let wrong = sasl_internal_config(2, "node-2", "not-it")
        .inter_broker_login
        .unwrap();
    let answer = common::run_bounded(30, move || async move {
        let rpc = RpcClient::new(Arc::new(RpcTraffic::new()), 1 << 20).with_login(Some(wrong));
        let to = Member::new(1, "zone-a", internal.ip().to_string(), internal.port());
        let commit = common::one_batch_commit(2, 1, "sz", [0; 16]);
        rpc.handoff_commit(&to, &commit, Duration::from_secs(5))
            .await
            .map(|r| r.partitions[0][0].error_code)
            .map_err(|e| e.to_string())
    });
    let err = answer.expect_err("a call with the wrong password was answered");
    assert!(err.contains("SASL login refused"), "{err}");
    assert_eq!(common::raw::list_offset(&mut k, "sz", led_by_a, -1), 1);

    // A node whose password the stored credential does not take stops.
    let settings = NodeSettings {
        rack: Some("zone-b".into()),
        shards: 1,
        cluster: ClusterJoin::Local(coordinator.clone()),
        ..NodeSettings::from_config(&sasl_internal_config(3, "node-2", "not-it")).unwrap()
    };
    let started = server::start(
        settings,
        bucket.clone(),
        Default::default(),
        Default::default(),
    );
    let err = started.err().expect("a node with a wrong password started");
    assert!(
        err.to_string()
            .contains("does not take this node's password"),
        "{err}"
    );
    a.stop();
    b.stop();
}

/// A group request a proxy forwards is checked at the coordinator as the
/// client that sent it: carol, authenticated with SASL at zone-b's node,
/// commits offsets of two topics for a group whose coordinator is zone-a's
/// node; the topic she may read is committed and the other refused, one by
/// one. (Checked as an anonymous client, a super user here, both would be
/// committed.)
#[test]
fn a_forwarded_group_request_is_checked_at_the_coordinator_as_its_client() {
    use ferry_node::group::coordinator::{group_slot, GROUP_TOPIC};
    let config = |id: i32| {
        let id_text = id.to_string();
        Config::from_pairs(
            [
                ("node.id", id_text.as_str()),
                ("listeners", "CLIENT://127.0.0.1:0,INTERNAL://127.0.0.1:0"),
                (
                    "listener.security.protocol.map",
                    "CLIENT:SASL_PLAINTEXT,INTERNAL:PLAINTEXT",
                ),
                ("inter.broker.listener.name", "INTERNAL"),
                ("sasl.enabled.mechanisms", "PLAIN"),
                (
                    "authorizer.class.name",
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                ),
                ("super.users", "User:ANONYMOUS"),
                ("s3.data.buckets", "0@file:///unused"),
            ],
            HostEnv::detect(),
        )
        .unwrap()
    };
    let coordinator = LocalCoordinator::new();
    let bucket = Arc::new(MemoryLog::new());
    let a = node("zone-a", &config(1), &coordinator, &bucket);
    let b = node("zone-b", &config(2), &coordinator, &bucket);
    let allow = |resource_type, name: &str| AclBinding {
        resource_type,
        name: name.into(),
        pattern: PatternType::Prefixed,
        principal: "User:carol".into(),
        host: "*".into(),
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    let mut doc = SecurityDoc {
        acls: vec![
            allow(ResourceType::Group, "g-ok"),
            allow(ResourceType::Topic, "t-ok"),
        ],
        ..Default::default()
    };
    let c =
        ScramCredential::from_password(SaslMechanism::ScramSha512, "carol-pw", None, 4096).unwrap();
    doc.upsert("carol", c);
    common::store_security_doc(&a, &doc);
    // The topics, made by the anonymous super user on INTERNAL.
    let mut admin = std::net::TcpStream::connect(common::listener_addr(&a, "INTERNAL")).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for t in ["t-ok", "t-no"] {
        assert_eq!(common::raw::create_topic(&mut admin, t, 1, &[]), 0);
    }
    // A group zone-a's node coordinates.
    let view = coordinator.view();
    let group = (0..1000)
        .map(|i| format!("g-ok-{i}"))
        .find(|g| {
            view.leader(GROUP_TOPIC, group_slot(g))
                .is_some_and(|m| m.node_id == 1)
        })
        .unwrap();
    let mut k = std::net::TcpStream::connect(common::listener_addr(&b, "CLIENT")).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(common::raw::plain_login(&mut k, "carol", "carol-pw").0, 0);
    assert_eq!(
        common::raw::offset_commit_codes(&mut k, &group, &["t-ok", "t-no"], 3),
        [("t-no".into(), 29), ("t-ok".into(), 0)]
    );
    // It was served by zone-a's node: zone-b's forwarded it.
    let forwarded: u64 = b
        .ctx
        .traffic
        .snapshot()
        .iter()
        .filter(|(_, kind, _, _)| *kind == "forward")
        .map(|(_, _, out, _)| out)
        .sum();
    assert!(forwarded > 0, "{:?}", b.ctx.traffic.snapshot());
    a.stop();
    b.stop();
}
