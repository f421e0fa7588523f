//! ACLs: the matrix through real clients (acl_clients.py), and with raw
//! requests `allow.everyone.if.no.acl.found` and a node without an
//! authorizer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::config::SaslMechanism;
use ferry_node::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use ferry_node::security::scram::ScramCredential;
use ferry_node::security::SecurityDoc;
use ferry_protocol::messages::*;
use ferry_protocol::wire::Message;
use std::time::Duration;

#[test]
fn the_acl_matrix_holds_for_real_clients() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let n = common::node_from_pairs(&[
        (
            "listeners",
            "SASL_PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
        ),
        (
            "listener.security.protocol.map",
            "SASL_PLAINTEXT:SASL_PLAINTEXT,INTERNAL:PLAINTEXT",
        ),
        ("inter.broker.listener.name", "INTERNAL"),
        ("sasl.enabled.mechanisms", "PLAIN"),
        (
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ),
        ("super.users", "User:admin"),
    ]);
    let mut doc = SecurityDoc::default();
    for (user, pw) in [
        ("admin", "admin-pw"),
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
    ] {
        let c = ScramCredential::from_password(SaslMechanism::ScramSha512, pw, None, 4096).unwrap();
        doc.upsert(user, c);
    }
    common::store_security_doc(&n, &doc);
    common::python(
        "acl_clients.py",
        &[
            &format!("bootstrap={}", common::listener_addr(&n, "SASL_PLAINTEXT")),
            "admin=admin-pw",
            "alice=alice-pw",
            "bob=bob-pw",
        ],
        300,
    );
    n.stop();
}

fn connect(a: &str) -> std::net::TcpStream {
    let k = std::net::TcpStream::connect(a).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    k
}

/// The error code Metadata gives a named topic.
fn metadata_code(k: &mut std::net::TcpStream, topic: &str) -> i16 {
    let body = RequestBody::Metadata(metadata_request::MetadataRequest {
        topics: Some(vec![metadata_request::MetadataRequestTopic {
            name: Some(topic.into()),
            ..Default::default()
        }]),
        allow_auto_topic_creation: false,
        ..Default::default()
    });
    let r = common::raw::call(k, 12, body);
    metadata_response::MetadataResponse::decode(&r, 12)
        .unwrap()
        .topics[0]
        .error_code
}

/// With `allow.everyone.if.no.acl.found=true`, a resource without any
/// binding is open to all, and one with a binding for someone else is not;
/// without an authorizer, the ACL APIs answer SECURITY_DISABLED.
#[test]
fn allow_if_no_acl_found_and_no_authorizer() {
    let n = common::node_from_pairs(&[
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        (
            "authorizer.class.name",
            "kafka.security.authorizer.AclAuthorizer",
        ),
        ("allow.everyone.if.no.acl.found", "true"),
    ]);
    let a = common::listener_addr(&n, "PLAINTEXT").to_string();
    let mut k = connect(&a);
    assert_eq!(common::raw::create_topic(&mut k, "open", 1, &[]), 0);
    assert_eq!(common::raw::create_topic(&mut k, "guarded", 1, &[]), 0);
    let mut doc = SecurityDoc::default();
    doc.acls.push(AclBinding {
        resource_type: ResourceType::Topic,
        name: "guarded".into(),
        pattern: PatternType::Literal,
        principal: "User:carol".into(),
        host: "*".into(),
        operation: Operation::Read,
        permission: Permission::Allow,
    });
    common::store_security_doc(&n, &doc);
    assert_eq!(metadata_code(&mut k, "open"), 0, "no binding: open to all");
    assert_eq!(
        metadata_code(&mut k, "guarded"),
        29,
        "a binding for carol only"
    );
    // ListOffsets checks DESCRIBE on its own (clients ask Metadata first,
    // so only a raw request reaches it).
    assert_eq!(
        common::raw::list_offset_answer(&mut k, "open", 0, -1),
        (0, 0)
    );
    assert_eq!(
        common::raw::list_offset_answer(&mut k, "guarded", 0, -1).0,
        29
    );
    n.stop();

    // ACLs on, nothing allowed without a binding: an anonymous client's
    // InitProducerId (idempotence needs IDEMPOTENT_WRITE on the cluster or
    // WRITE on a topic) is refused.
    let n = common::node_from_pairs(&[
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        (
            "authorizer.class.name",
            "kafka.security.authorizer.AclAuthorizer",
        ),
    ]);
    let mut k = connect(&common::listener_addr(&n, "PLAINTEXT").to_string());
    assert_eq!(common::raw::init_producer_id_answer(&mut k, -1, -1).0, 31);
    n.stop();

    let n = common::node_from_pairs(&[("listeners", "PLAINTEXT://127.0.0.1:0")]);
    let mut k = connect(&common::listener_addr(&n, "PLAINTEXT").to_string());
    let body = RequestBody::DescribeAcls(describe_acls_request::DescribeAclsRequest {
        resource_type_filter: 1,
        pattern_type_filter: 1,
        operation: 1,
        permission_type: 1,
        ..Default::default()
    });
    let r = common::raw::call(&mut k, 2, body);
    let d = describe_acls_response::DescribeAclsResponse::decode(&r, 2).unwrap();
    assert_eq!(d.error_code, 54, "SECURITY_DISABLED");
    n.stop();
}

/// A group request naming several groups or topics is answered one by one,
/// as Kafka's: refused groups get GROUP_AUTHORIZATION_FAILED and refused
/// topics TOPIC_AUTHORIZATION_FAILED while the rest are served; OffsetFetch
/// leaves out the topics the principal may not describe, or refuses them
/// where the request names them. A request whose every item is refused is
/// refused whole.
#[test]
fn refused_groups_and_topics_are_answered_one_by_one() {
    let n = common::node_from_pairs(&[
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        (
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ),
    ]);
    let allow = |resource_type, name: &str, pattern, operation| AclBinding {
        resource_type,
        name: name.into(),
        pattern,
        principal: "User:ANONYMOUS".into(),
        host: "*".into(),
        operation,
        permission: Permission::Allow,
    };
    let doc = SecurityDoc {
        acls: vec![
            allow(
                ResourceType::Topic,
                "t-",
                PatternType::Prefixed,
                Operation::Create,
            ),
            allow(
                ResourceType::Topic,
                "t-ok",
                PatternType::Literal,
                Operation::Read,
            ),
            allow(
                ResourceType::Group,
                "g-ok",
                PatternType::Literal,
                Operation::Read,
            ),
            allow(
                ResourceType::Group,
                "g-ok",
                PatternType::Literal,
                Operation::Delete,
            ),
        ],
        ..Default::default()
    };
    common::store_security_doc(&n, &doc);
    let mut k = connect(&common::listener_addr(&n, "PLAINTEXT").to_string());
    assert_eq!(common::raw::create_topic(&mut k, "t-ok", 1, &[]), 0);
    assert_eq!(common::raw::create_topic(&mut k, "t-no", 1, &[]), 0);

    // OffsetCommit: t-ok is committed, t-no refused.
    assert_eq!(
        common::raw::offset_commit_codes(&mut k, "g-ok", &["t-ok", "t-no"], 5),
        [("t-no".into(), 29), ("t-ok".into(), 0)]
    );

    // OffsetFetch of all topics (v7): t-no is left out. Naming both: t-no
    // is refused.
    use offset_fetch_request::*;
    let fetch = |topics: Option<Vec<&str>>| {
        RequestBody::OffsetFetch(OffsetFetchRequest {
            group_id: "g-ok".into(),
            topics: topics.map(|ts| {
                ts.into_iter()
                    .map(|t| OffsetFetchRequestTopic {
                        name: t.into(),
                        partition_indexes: vec![0],
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        })
    };
    let fetched = |k: &mut std::net::TcpStream, body| {
        let r = common::raw::call(k, 7, body);
        let r = offset_fetch_response::OffsetFetchResponse::decode(&r, 7).unwrap();
        let mut all: Vec<(String, i64, i16)> = r
            .topics
            .iter()
            .map(|t| {
                let p = &t.partitions[0];
                (t.name.to_string(), p.committed_offset, p.error_code)
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(fetched(&mut k, fetch(None)), [("t-ok".into(), 5, 0)]);
    assert_eq!(
        fetched(&mut k, fetch(Some(vec!["t-ok", "t-no"]))),
        [("t-no".into(), -1, 29), ("t-ok".into(), 5, 0)]
    );
    // OffsetFetch of two groups (v8): g-no refused, g-ok served.
    let two = RequestBody::OffsetFetch(OffsetFetchRequest {
        groups: ["g-ok", "g-no"]
            .iter()
            .map(|g| OffsetFetchRequestGroup {
                group_id: (*g).into(),
                topics: None,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let r = common::raw::call(&mut k, 8, two);
    let r = offset_fetch_response::OffsetFetchResponse::decode(&r, 8).unwrap();
    let mut groups: Vec<(String, i16, Vec<String>)> = r
        .groups
        .iter()
        .map(|g| {
            let topics = g.topics.iter().map(|t| t.name.to_string()).collect();
            (g.group_id.to_string(), g.error_code, topics)
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            ("g-no".into(), 30, vec![]),
            ("g-ok".into(), 0, vec!["t-ok".to_string()])
        ]
    );

    // DescribeGroups: g-no refused, g-ok described; g-no alone: refused.
    let describe = |k: &mut std::net::TcpStream, names: &[&str]| {
        let body = RequestBody::DescribeGroups(describe_groups_request::DescribeGroupsRequest {
            groups: names.iter().map(|g| (*g).into()).collect(),
            ..Default::default()
        });
        let r = common::raw::call(k, 5, body);
        let r = describe_groups_response::DescribeGroupsResponse::decode(&r, 5).unwrap();
        let mut all: Vec<(String, i16)> = r
            .groups
            .iter()
            .map(|g| (g.group_id.to_string(), g.error_code))
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        describe(&mut k, &["g-ok", "g-no"]),
        [("g-no".into(), 30), ("g-ok".into(), 0)]
    );
    assert_eq!(describe(&mut k, &["g-no"]), [("g-no".into(), 30)]);

    // DeleteGroups: g-no refused, g-ok (empty, with offsets) deleted.
    let body = RequestBody::DeleteGroups(delete_groups_request::DeleteGroupsRequest {
        groups_names: vec!["g-ok".into(), "g-no".into()],
        ..Default::default()
    });
    let r = common::raw::call(&mut k, 2, body);
    let r = delete_groups_response::DeleteGroupsResponse::decode(&r, 2).unwrap();
    let mut results: Vec<(String, i16)> = r
        .results
        .iter()
        .map(|g| (g.group_id.to_string(), g.error_code))
        .collect();
    results.sort();
    assert_eq!(results, [("g-no".into(), 30), ("g-ok".into(), 0)]);
    assert_eq!(fetched(&mut k, fetch(None)), []);
    n.stop();
}
