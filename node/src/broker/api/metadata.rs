//! Metadata and DescribeCluster: the nodes and leaders a client is shown,
//! per zone, and the leader hints (KIP-951) errors carry.

use super::*;

/// A node as clients see it: id, advertised address and zone (its rack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Broker {
    pub(super) node_id: i32,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) zone: String,
}

impl Broker {
    /// `m` as a client of `listener` reaches it; `None` if it does not
    /// serve that listener.
    pub(super) fn of(m: &crate::cluster::Member, listener: &str) -> Option<Broker> {
        let (host, port) = m.endpoint(listener)?;
        Some(Broker {
            node_id: m.node_id,
            host: host.to_owned(),
            port,
            zone: m.zone.clone(),
        })
    }
}

/// The brokers a client of `listener` sees: every live node, at its
/// endpoint of that listener, with its zone as its rack (this node alone
/// if the view is empty).
pub(super) fn brokers(shard: &Shard, listener: &str) -> Vec<Broker> {
    let view = shard.view();
    if view.is_empty() {
        let c = &shard.ctx;
        return c
            .listeners
            .iter()
            .find(|l| l.name() == listener)
            .map(|l| Broker {
                node_id: c.node_id,
                host: l.spec.advertised_host.clone(),
                port: l.spec.advertised_port,
                zone: c.zone.clone(),
            })
            .into_iter()
            .collect();
    }
    view.members()
        .iter()
        .filter_map(|m| Broker::of(m, listener))
        .collect()
}

/// What the principal may do to a topic, by name (ACLs).
pub(super) struct TopicAccess<'a> {
    pub(super) describe: &'a dyn Fn(&str) -> bool,
    pub(super) create: &'a dyn Fn(&str) -> bool,
}

/// The node a client of `zone` should see as a partition's leader, and the
/// leader epoch: the leader, or its proxy in the client's zone.
pub fn routed_leader(shard: &Shard, topic: &str, partition: i32, zone: Option<&str>) -> (i32, i32) {
    let view = shard.view();
    match view.route(topic, partition, zone) {
        Some(m) => (m.node_id, view.leader_epoch(topic, partition)),
        None => (shard.ctx.node_id, 0),
    }
}

pub(super) async fn metadata(
    shard: &Rc<Shard>,
    m: metadata_request::MetadataRequest,
    v: i16,
    zone: Option<&str>,
    listener: &str,
    may: TopicAccess<'_>,
) -> metadata_response::MetadataResponse {
    use metadata_response::*;
    let ctx = &shard.ctx;
    let mut topics = Vec::new();
    let requested: Option<Vec<(Option<KStr>, ferry_protocol::wire::Uuid)>> = match m.topics {
        // v0 used an empty list for "all"; later versions use null.
        Some(t) if !(t.is_empty() && v == 0) => {
            Some(t.into_iter().map(|t| (t.name, t.topic_id)).collect())
        }
        _ => None,
    };
    let allow_create = ctx.auto_create_topics && (v < 4 || m.allow_auto_topic_creation);
    let table_now = shard.topics.get();
    let wanted: Vec<(Option<String>, ferry_protocol::wire::Uuid)> = match requested {
        // Every topic: those the principal may not describe are left out.
        None => table_now
            .iter()
            .filter(|t| (may.describe)(&t.name))
            .map(|t| (Some(t.name.to_string()), t.id))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(n, id)| (n.map(|n| n.to_string()), id))
            .collect(),
    };
    for (name, id) in wanted {
        if name.as_deref().is_some_and(|n| !(may.describe)(n)) {
            topics.push(MetadataResponseTopic {
                error_code: ErrorCode::TOPIC_AUTHORIZATION_FAILED.code(),
                name: name.as_deref().map(s),
                ..Default::default()
            });
            continue;
        }
        let table = shard.topics.get();
        let info = match &name {
            Some(n) => table.get(n).cloned(),
            None => table.by_id(&id).cloned(),
        };
        let info = match (info, &name) {
            (Some(i), _) => Some(i),
            (None, Some(n)) if allow_create && !(may.create)(n) => {
                topics.push(MetadataResponseTopic {
                    error_code: ErrorCode::TOPIC_AUTHORIZATION_FAILED.code(),
                    name: name.as_deref().map(s),
                    ..Default::default()
                });
                continue;
            }
            (None, Some(n)) if allow_create => {
                match create_topic(shard, n, ctx.num_partitions, Default::default()).await {
                    Ok(()) | Err((ErrorCode::TOPIC_ALREADY_EXISTS, _)) => {
                        shard.topics.get().get(n).cloned()
                    }
                    Err((code, _)) => {
                        topics.push(MetadataResponseTopic {
                            error_code: code.code(),
                            name: name.as_deref().map(s),
                            ..Default::default()
                        });
                        continue;
                    }
                }
            }
            _ => None,
        };
        let Some(info) = info else {
            topics.push(MetadataResponseTopic {
                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                name: name.as_deref().map(s),
                topic_id: id,
                ..Default::default()
            });
            continue;
        };
        topics.push(MetadataResponseTopic {
            name: Some(s(&info.name)),
            topic_id: info.id,
            partitions: (0..info.partitions)
                .map(|p| {
                    let (leader, epoch) = routed_leader(shard, &info.name, p, zone);
                    MetadataResponsePartition {
                        partition_index: p,
                        leader_id: leader,
                        leader_epoch: epoch,
                        replica_nodes: vec![leader],
                        isr_nodes: vec![leader],
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        });
    }
    // A client of a known zone is shown its zone's nodes, and any leader
    // of another zone it is routed to (a zone with no node left): a client
    // that looks elsewhere for metadata would cross zones for nothing, and
    // on TLS and SASL pay a handshake each time.
    let mut all = brokers(shard, listener);
    if let Some(z) = zone.filter(|z| all.iter().any(|b| b.zone == *z)) {
        let routed: std::collections::HashSet<i32> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.leader_id))
            .collect();
        all.retain(|b| b.zone == z || routed.contains(&b.node_id));
    }
    let brokers: Vec<MetadataResponseBroker> = all
        .into_iter()
        .map(|b| MetadataResponseBroker {
            node_id: b.node_id,
            host: s(&b.host),
            port: i32::from(b.port),
            rack: Some(s(&b.zone)),
            ..Default::default()
        })
        .collect();
    let controller_id = brokers.first().map_or(ctx.node_id, |b| b.node_id);
    MetadataResponse {
        brokers,
        cluster_id: Some(s(&ctx.cluster_id)),
        controller_id,
        topics,
        ..Default::default()
    }
}

/// The KIP-951 endpoints gathered by [`leader_hint`], as `make` builds the
/// response's own type (produce and fetch each have one).
pub(super) fn node_endpoints<T>(
    endpoints: Vec<Broker>,
    make: impl Fn(i32, KStr, i32, Option<KStr>) -> T,
) -> Vec<T> {
    endpoints
        .into_iter()
        .map(|b| make(b.node_id, s(&b.host), i32::from(b.port), Some(s(&b.zone))))
        .collect()
}

/// KIP-951: with NOT_LEADER_OR_FOLLOWER, the leader a client of `zone`
/// should turn to (the same mapping Metadata shows), and its endpoint, so
/// the client need not ask for metadata first.
pub(super) fn leader_hint(
    shard: &Shard,
    topic: &str,
    partition: i32,
    zone: Option<&str>,
    listener: &str,
    endpoints: &mut Vec<Broker>,
) -> Option<(i32, i32)> {
    let view = shard.view();
    let m = view.route(topic, partition, zone)?;
    if !endpoints.iter().any(|e| e.node_id == m.node_id) {
        endpoints.extend(Broker::of(m, listener));
    }
    Some((m.node_id, view.leader_epoch(topic, partition)))
}

pub(super) fn describe_cluster(
    shard: &Shard,
    listener: &str,
) -> describe_cluster_response::DescribeClusterResponse {
    use describe_cluster_response::*;
    let ctx = &shard.ctx;
    let brokers: Vec<DescribeClusterBroker> = brokers(shard, listener)
        .into_iter()
        .map(|b| DescribeClusterBroker {
            broker_id: b.node_id,
            host: s(&b.host),
            port: i32::from(b.port),
            rack: Some(s(&b.zone)),
            ..Default::default()
        })
        .collect();
    DescribeClusterResponse {
        cluster_id: s(&ctx.cluster_id),
        controller_id: brokers.first().map_or(ctx.node_id, |b| b.broker_id),
        endpoint_type: 1,
        brokers,
        ..Default::default()
    }
}
