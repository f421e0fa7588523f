//! The Kafka APIs: one function per request, from a decoded request to its
//! response body. Partition work goes through the [`Shard`] calls, which find
//! the owning shard; this file only splits requests by partition and puts the
//! answers back together.

use crate::clock::now_ms;
use crate::cluster::topics::TopicError;
use crate::group::coordinator::{group_slot, GROUP_TOPIC};
use crate::shard::Shard;
use bytes::Bytes;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::frame::{self, Request, SupportedApis};
use ferry_protocol::messages::*;
use ferry_protocol::wire::{KStr, VersionRange};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The APIs and versions this node implements, and so advertises.
pub fn supported_apis() -> SupportedApis {
    let r = |min, max| VersionRange { min, max };
    SupportedApis::new([
        // Produce from v3: record batches (magic 2) only.
        (0, r(3, 11)),
        // Fetch from v4: magic 2 only.
        (1, r(4, 16)),
        (2, r(1, 9)),
        (3, r(1, 12)),
        (18, r(0, 4)),
        (19, r(2, 7)),
        (20, r(1, 6)),
        (22, r(0, 5)),
        (17, r(0, 1)),
        (37, r(0, 3)),
        (60, r(0, 1)),
        // The group coordinator.
        (8, r(2, 9)),
        (9, r(1, 9)),
        (10, r(0, 6)),
        (11, r(0, 9)),
        (12, r(0, 4)),
        (13, r(0, 5)),
        (14, r(0, 5)),
        (15, r(0, 5)),
        (16, r(0, 5)),
        (42, r(0, 2)),
        // Configs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.
        (32, r(0, 4)),
        (33, r(0, 2)),
        (44, r(0, 1)),
    ])
}

fn s(x: &str) -> KStr {
    x.into()
}

/// Answers a request; `None` for requests that get no answer (acks=0).
pub async fn handle(
    shard: &Rc<Shard>,
    req: Request,
    peer: Option<std::net::SocketAddr>,
) -> Option<ResponseBody> {
    let v = req.api_version();
    shard.ctx.sync_topics();
    let client_id = req.header.client_id.as_deref().unwrap_or("").to_owned();
    let addr = peer.map(|p| p.ip());
    if crate::group::coordinator::is_group_api(req.api_key()) {
        let g = crate::group::coordinator::GroupRequest {
            version: v,
            client_id: req.header.client_id.as_deref().unwrap_or("").to_string(),
            client_host: peer.map_or_else(String::new, |p| format!("/{}", p.ip())),
            body: req.body,
        };
        return shard.group(g).await;
    }
    Some(match req.body {
        RequestBody::FindCoordinator(f) => {
            let zone = shard.client_zone(&client_id, addr, None);
            ResponseBody::FindCoordinator(find_coordinator(shard, f, zone.as_deref()))
        }
        RequestBody::ApiVersions(_) => {
            ResponseBody::ApiVersions(api_versions_response::ApiVersionsResponse {
                api_keys: shard.ctx.supported.api_versions(),
                ..Default::default()
            })
        }
        RequestBody::Metadata(m) => {
            let zone = shard.client_zone(&client_id, addr, None);
            ResponseBody::Metadata(metadata(shard, m, v, zone.as_deref()).await)
        }
        RequestBody::Produce(p) => {
            let zone = shard.client_zone(&client_id, addr, None);
            return produce(shard, p, zone.as_deref())
                .await
                .map(ResponseBody::Produce);
        }
        RequestBody::Fetch(f) => {
            // A fetch's rack (KIP-392) tells a client's zone too.
            let zone = shard.client_zone(&client_id, addr, Some(f.rack_id.as_str()));
            ResponseBody::Fetch(fetch(shard, f, v, zone.as_deref()).await)
        }
        RequestBody::ListOffsets(l) => ResponseBody::ListOffsets(list_offsets(shard, l).await),
        RequestBody::CreateTopics(c) => ResponseBody::CreateTopics(create_topics(shard, c).await),
        RequestBody::DeleteTopics(d) => ResponseBody::DeleteTopics(delete_topics(shard, d).await),
        RequestBody::CreatePartitions(c) => {
            ResponseBody::CreatePartitions(create_partitions(shard, c).await)
        }
        RequestBody::InitProducerId(i) => {
            ResponseBody::InitProducerId(init_producer_id(&shard.ctx.producer_ids, i))
        }
        RequestBody::DescribeCluster(_) => ResponseBody::DescribeCluster(describe_cluster(shard)),
        RequestBody::DescribeConfigs(d) => ResponseBody::DescribeConfigs(
            crate::broker::configs::describe(&shard.ctx, &shard.topics.get(), &d),
        ),
        RequestBody::AlterConfigs(a) => ResponseBody::AlterConfigs(alter_configs(shard, a).await),
        RequestBody::IncrementalAlterConfigs(a) => {
            ResponseBody::IncrementalAlterConfigs(incremental_alter_configs(shard, a).await)
        }
        RequestBody::SaslHandshake(_) => {
            ResponseBody::SaslHandshake(sasl_handshake_response::SaslHandshakeResponse {
                // SASL is not configured: no mechanism is enabled.
                error_code: ErrorCode::UNSUPPORTED_SASL_MECHANISM.code(),
                mechanisms: vec![],
                ..Default::default()
            })
        }
        other => ResponseBody::default_for(other.api_key())?,
    })
}

/// Applies `change` to the cluster's topic table: on the newest table,
/// stored in the coordinator with compare-and-set (tried again on the newer
/// table when another node changed it first), then written to the bucket.
/// This node's changes run one at a time.
async fn change_topics<T>(
    shard: &Shard,
    mut change: impl FnMut(&crate::cluster::topics::Topics) -> Result<T, (ErrorCode, String)>,
) -> Result<T, (ErrorCode, String)> {
    const ATTEMPTS: usize = 8;
    let ctx = &shard.ctx;
    let _guard = ctx.topic_changes.lock().await;
    for _ in 0..ATTEMPTS {
        ctx.sync_topics();
        let expected = ctx.topics_version();
        let result = change(&ctx.topics)?;
        let data = Bytes::from(ctx.topics.snapshot().encode());
        match ctx.cluster.put_topics(expected, data).await {
            Ok(Ok(version)) => {
                ctx.topics_stored(version);
                persist_topics(shard)
                    .await
                    .map_err(|e| (ErrorCode::KAFKA_STORAGE_ERROR, e))?;
                return Ok(result);
            }
            // Another node's change came first: start again from its table
            // (the next sync replaces this node's unstored change).
            Ok(Err(_)) => continue,
            Err(e) => {
                // Unstored: take the cluster's table back.
                ctx.sync_topics();
                return Err((ErrorCode::REQUEST_TIMED_OUT, e.to_string()));
            }
        }
    }
    Err((
        ErrorCode::REQUEST_TIMED_OUT,
        format!("the topic table changed under {ATTEMPTS} attempts in a row; try again"),
    ))
}

/// Writes the topic table to the bucket. It writes the *current* table,
/// tagged with the version read before it was taken, so that writes racing
/// from several shards can be ordered: the log drops a write older than one
/// already made, and the newer one holds this change too.
async fn persist_topics(shard: &Shard) -> Result<(), String> {
    let version = shard.ctx.topics.version();
    let table = shard.ctx.topics.snapshot();
    let rx = shard
        .ctx
        .durable
        .put_meta("topics", version, Bytes::from(table.encode()));
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the WAL is shut down".into()),
    }
}

/// Creates a topic and persists the table before answering.
async fn create_topic(
    shard: &Shard,
    name: &str,
    partitions: i32,
    configs: crate::cluster::topics::TopicConfigs,
) -> Result<(), (ErrorCode, String)> {
    change_topics(shard, |topics| {
        topics
            .create_with_configs(name, partitions, configs.clone())
            .map(|_| ())
            .map_err(|e| (topic_error_code(&e), e.to_string()))
    })
    .await?;
    tracing::info!(topic = name, partitions, "topic created");
    Ok(())
}

/// A per-resource result as the error code and message of a response.
fn outcome(r: Result<(), (ErrorCode, String)>) -> (ErrorCode, Option<KStr>) {
    match r {
        Ok(()) => (ErrorCode::NONE, None),
        Err((code, message)) => (code, Some(s(&message))),
    }
}

fn topic_error_code(e: &TopicError) -> ErrorCode {
    match e {
        TopicError::Exists(_) => ErrorCode::TOPIC_ALREADY_EXISTS,
        TopicError::Unknown(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidName(_) => ErrorCode::INVALID_TOPIC_EXCEPTION,
        TopicError::InvalidPartitions(_) => ErrorCode::INVALID_PARTITIONS,
        TopicError::Corrupt { .. } => ErrorCode::UNKNOWN_SERVER_ERROR,
    }
}

/// A node as clients see it: id, advertised address and zone (its rack).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Broker {
    node_id: i32,
    host: String,
    port: u16,
    zone: String,
}

impl Broker {
    fn of(m: &crate::cluster::Member) -> Broker {
        Broker {
            node_id: m.node_id,
            host: m.host.clone(),
            port: m.port,
            zone: m.zone.clone(),
        }
    }
}

/// The brokers a client sees: every live node, with its zone as its rack
/// (this node alone if the view is empty).
fn brokers(shard: &Shard) -> Vec<Broker> {
    let view = shard.view();
    if view.is_empty() {
        let c = &shard.ctx;
        return vec![Broker {
            node_id: c.node_id,
            host: c.advertised_host.clone(),
            port: c.advertised_port,
            zone: c.zone.clone(),
        }];
    }
    view.members().iter().map(Broker::of).collect()
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

async fn metadata(
    shard: &Rc<Shard>,
    m: metadata_request::MetadataRequest,
    v: i16,
    zone: Option<&str>,
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
        None => table_now
            .iter()
            .map(|t| (Some(t.name.to_string()), t.id))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(n, id)| (n.map(|n| n.to_string()), id))
            .collect(),
    };
    for (name, id) in wanted {
        let table = shard.topics.get();
        let info = match &name {
            Some(n) => table.get(n).cloned(),
            None => table.by_id(&id).cloned(),
        };
        let info = match (info, &name) {
            (Some(i), _) => Some(i),
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
    let brokers: Vec<MetadataResponseBroker> = brokers(shard)
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
fn node_endpoints<T>(
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
fn leader_hint(
    shard: &Shard,
    topic: &str,
    partition: i32,
    zone: Option<&str>,
    endpoints: &mut Vec<Broker>,
) -> Option<(i32, i32)> {
    let view = shard.view();
    let m = view.route(topic, partition, zone)?;
    if !endpoints.iter().any(|e| e.node_id == m.node_id) {
        endpoints.push(Broker::of(m));
    }
    Some((m.node_id, view.leader_epoch(topic, partition)))
}

async fn produce(
    shard: &Rc<Shard>,
    p: produce_request::ProduceRequest,
    zone: Option<&str>,
) -> Option<produce_response::ProduceResponse> {
    use produce_response::*;
    let mut endpoints = Vec::new();
    let started = Instant::now();
    let acks = p.acks;
    if p.transactional_id.is_some() {
        // Transactions are not implemented: refuse rather than mis-store.
        let responses = p
            .topic_data
            .into_iter()
            .map(|t| TopicProduceResponse {
                name: t.name,
                partition_responses: t
                    .partition_data
                    .into_iter()
                    .map(|pd| PartitionProduceResponse {
                        index: pd.index,
                        error_code: ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code(),
                        base_offset: -1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        return Some(ProduceResponse {
            responses,
            ..Default::default()
        });
    }
    // Every partition is handed to its owner at once; answers are awaited in
    // request order.
    let mut tasks = Vec::new();
    for t in &p.topic_data {
        let topic: Arc<str> = t.name.as_str().into();
        for pd in &t.partition_data {
            let records = pd
                .records
                .as_ref()
                .map(|r| r.to_bytes())
                .unwrap_or_default();
            let sh = shard.clone();
            let topic = topic.clone();
            let (index, timeout) = (pd.index, p.timeout_ms);
            tasks.push(glommio::spawn_local(async move {
                sh.produce(topic, index, records, acks, timeout).await
            }));
        }
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await);
    }
    shard
        .latency
        .borrow_mut()
        .produce_us(started.elapsed().as_micros() as u64);
    if acks == 0 {
        return None;
    }
    let mut results = results.into_iter();
    let responses = p
        .topic_data
        .into_iter()
        .map(|t| TopicProduceResponse {
            partition_responses: t
                .partition_data
                .iter()
                .filter_map(|pd| {
                    let r = results.next()?;
                    if r.error.is_err() {
                        shard.ctx.metrics.error(r.error.code());
                    }
                    let hint = (r.error == ErrorCode::NOT_LEADER_OR_FOLLOWER)
                        .then(|| {
                            leader_hint(shard, t.name.as_str(), pd.index, zone, &mut endpoints)
                        })
                        .flatten();
                    Some(PartitionProduceResponse {
                        index: pd.index,
                        error_code: r.error.code(),
                        base_offset: r.base_offset,
                        log_append_time_ms: -1,
                        log_start_offset: r.log_start,
                        error_message: r.message.map(KStr::from),
                        current_leader: hint.map_or_else(Default::default, |(id, epoch)| {
                            LeaderIdAndEpoch {
                                leader_id: id,
                                leader_epoch: epoch,
                                ..Default::default()
                            }
                        }),
                        ..Default::default()
                    })
                })
                .collect(),
            name: t.name,
            ..Default::default()
        })
        .collect();
    Some(ProduceResponse {
        responses,
        node_endpoints: node_endpoints(endpoints, |id, host, port, rack| NodeEndpoint {
            node_id: id,
            host,
            port,
            rack,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The read replica a client of `zone` should fetch a partition led here
/// from (KIP-392): this node's proxy in the client's zone, if the client is
/// in another zone that has nodes.
fn preferred_replica(
    shard: &Shard,
    zone: Option<&str>,
    topic: &str,
    partition: i32,
) -> Option<i32> {
    let zone = zone.filter(|z| *z != shard.ctx.zone)?;
    if !matches!(shard.route(topic, partition), crate::shard::Route::Local) {
        return None;
    }
    let view = shard.view();
    let me = view.member(shard.ctx.node_id)?;
    view.proxy(me, zone)
        .map(|m| m.node_id)
        .filter(|&id| id != shard.ctx.node_id)
}

async fn fetch(
    shard: &Rc<Shard>,
    f: fetch_request::FetchRequest,
    version: i16,
    zone: Option<&str>,
) -> fetch_response::FetchResponse {
    use fetch_response::*;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(f.max_wait_ms.clamp(0, 60_000) as u64);
    let min_bytes = f.min_bytes.max(0) as usize;
    let response_bytes_max = if f.max_bytes > 0 {
        f.max_bytes as usize
    } else {
        usize::MAX
    };
    let table = shard.topics.get();
    // Resolve names (v12 and below) or ids (v13+).
    let topics: Vec<(Option<Arc<str>>, &fetch_request::FetchTopic)> = f
        .topics
        .iter()
        .map(|t| {
            let name = if t.topic.is_empty() {
                table.by_id(&t.topic_id).map(|i| i.name.clone())
            } else {
                Some(Arc::from(t.topic.as_str()))
            };
            (name, t)
        })
        .collect();
    // Partitions whose fetch this client should make at a read replica in
    // its own zone (v11+): answered at once, without records.
    let mut preferred: std::collections::HashMap<(Arc<str>, i32), i32> = Default::default();
    if version >= 11 {
        for (name, t) in &topics {
            let Some(n) = name else { continue };
            for p in &t.partitions {
                if let Some(id) = preferred_replica(shard, zone, n, p.partition) {
                    preferred.insert((n.clone(), p.partition), id);
                }
            }
        }
    }
    loop {
        let mut tasks = Vec::new();
        for (name, t) in &topics {
            for p in &t.partitions {
                let max = (p.partition_max_bytes.max(0) as usize).min(response_bytes_max);
                let sh = shard.clone();
                let name = name.clone();
                let (part, offset) = (p.partition, p.fetch_offset);
                tasks.push(glommio::spawn_local(async move {
                    match name {
                        Some(n) => Some(sh.fetch(n, part, offset, max).await),
                        None => None,
                    }
                }));
            }
        }
        let mut results = Vec::with_capacity(tasks.len());
        let mut total = 0usize;
        let mut any_error = false;
        for t in tasks {
            let mut r = t.await;
            match &mut r {
                Some(r) => {
                    // The response-level max_bytes: partitions are filled in
                    // request order, and the first one with data always gets
                    // its records (KIP-74), even past the limit.
                    if total > 0 && total + r.records.len() > response_bytes_max {
                        r.records = Default::default();
                    }
                    total += r.records.len();
                    any_error |= r.error.is_err();
                }
                None => any_error = true,
            }
            results.push(r);
        }
        let now = Instant::now();
        // Kafka answers at once on an error, or when min_bytes is met
        // (min_bytes 0 means "do not wait").
        if total >= min_bytes
            || any_error
            || !preferred.is_empty()
            || now >= deadline
            || topics.is_empty()
        {
            shard
                .latency
                .borrow_mut()
                .fetch_us(started.elapsed().as_micros() as u64);
            let mut results = results.into_iter();
            let endpoints = std::cell::RefCell::new(Vec::new());
            let responses = topics
                .iter()
                .map(|(name, t)| FetchableTopicResponse {
                    topic: t.topic.clone(),
                    topic_id: t.topic_id,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let r = results.next().flatten();
                            let mut out = PartitionData {
                                partition_index: p.partition,
                                high_watermark: -1,
                                last_stable_offset: -1,
                                log_start_offset: -1,
                                preferred_read_replica: -1,
                                records: Some(Default::default()),
                                ..Default::default()
                            };
                            match r {
                                None => {
                                    out.error_code = if name.is_none() {
                                        ErrorCode::UNKNOWN_TOPIC_ID.code()
                                    } else {
                                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code()
                                    }
                                }
                                Some(r) => {
                                    out.error_code = r.error.code();
                                    if r.error == ErrorCode::NOT_LEADER_OR_FOLLOWER {
                                        if let Some((id, epoch)) = name.as_deref().and_then(|n| {
                                            leader_hint(
                                                shard,
                                                n,
                                                p.partition,
                                                zone,
                                                &mut endpoints.borrow_mut(),
                                            )
                                        }) {
                                            out.current_leader = LeaderIdAndEpoch {
                                                leader_id: id,
                                                leader_epoch: epoch,
                                                ..Default::default()
                                            };
                                        }
                                    }
                                    out.high_watermark = r.high_watermark;
                                    out.last_stable_offset = r.high_watermark;
                                    out.log_start_offset = r.log_start;
                                    // A client in another zone is sent to
                                    // the read replica in its zone, with no
                                    // records from here.
                                    let to = name
                                        .as_ref()
                                        .and_then(|n| preferred.get(&(n.clone(), p.partition)));
                                    match to {
                                        Some(&id) if r.error.is_ok() => {
                                            out.preferred_read_replica = id
                                        }
                                        _ => out.records = Some(r.records),
                                    }
                                }
                            }
                            out
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            return FetchResponse {
                responses,
                node_endpoints: node_endpoints(endpoints.into_inner(), |id, host, port, rack| {
                    NodeEndpoint {
                        node_id: id,
                        host,
                        port,
                        rack,
                        ..Default::default()
                    }
                }),
                ..Default::default()
            };
        }
        // Long poll: wake on the first partition that gets data, or at the
        // deadline.
        let (tx, rx) = futures_channel::mpsc::unbounded::<()>();
        let mut waits = Vec::new();
        for (name, t) in &topics {
            let Some(name) = name else { continue };
            for p in &t.partitions {
                let sh = shard.clone();
                let (name, part, offset, tx) =
                    (name.clone(), p.partition, p.fetch_offset, tx.clone());
                waits.push(glommio::spawn_local(async move {
                    sh.wait(name, part, offset).await;
                    let _ = tx.unbounded_send(());
                }));
            }
        }
        drop(tx);
        let left = deadline.saturating_duration_since(Instant::now());
        let mut rx = rx;
        let _ = glommio::timer::timeout(left, async {
            use futures_lite::StreamExt;
            let _ = rx.next().await;
            Ok(())
        })
        .await;
        for w in waits {
            let _ = w.cancel().await;
        }
    }
}

async fn list_offsets(
    shard: &Rc<Shard>,
    l: list_offsets_request::ListOffsetsRequest,
) -> list_offsets_response::ListOffsetsResponse {
    use list_offsets_response::*;
    let mut topics = Vec::new();
    for t in l.topics {
        let topic: Arc<str> = t.name.as_str().into();
        let mut parts = Vec::new();
        for p in t.partitions {
            let r = shard
                .list_offset(topic.clone(), p.partition_index, p.timestamp)
                .await;
            parts.push(ListOffsetsPartitionResponse {
                partition_index: p.partition_index,
                error_code: r.error.code(),
                old_style_offsets: if r.offset >= 0 {
                    vec![r.offset]
                } else {
                    vec![]
                },
                timestamp: r.timestamp,
                offset: r.offset,
                leader_epoch: 0,
                ..Default::default()
            });
        }
        topics.push(ListOffsetsTopicResponse {
            name: t.name,
            partitions: parts,
            ..Default::default()
        });
    }
    ListOffsetsResponse {
        topics,
        ..Default::default()
    }
}

async fn create_topics(
    shard: &Rc<Shard>,
    c: create_topics_request::CreateTopicsRequest,
) -> create_topics_response::CreateTopicsResponse {
    use create_topics_response::*;
    let mut out = Vec::new();
    for t in c.topics {
        let partitions = if t.num_partitions == -1 {
            shard.ctx.num_partitions
        } else {
            t.num_partitions
        };
        // The topic's config overrides, checked before anything is created.
        let overrides = crate::broker::configs::topic_configs_for_create(
            t.configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_ref().map(KStr::as_str))),
        );
        let result = if !t.assignments.is_empty() {
            Err((
                ErrorCode::INVALID_REQUEST,
                "manual replica assignment is not supported".to_string(),
            ))
        } else if t.replication_factor != -1 && t.replication_factor != 1 {
            // The bucket is the replication: Ferry keeps one copy per partition.
            Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "Ferry keeps data in the bucket; use replication factor 1 or -1".to_string(),
            ))
        } else {
            match &overrides {
                Err(p) => Err(p.clone().into_pair()),
                Ok(_) if c.validate_only => crate::cluster::topics::validate_name(&t.name)
                    .map_err(|e| (topic_error_code(&e), e.to_string())),
                Ok(o) => create_topic(shard, &t.name, partitions, o.clone()).await,
            }
        };
        let id = shard
            .topics
            .get()
            .get(&t.name)
            .map(|i| i.id)
            .unwrap_or_default();
        let (code, msg) = outcome(result);
        out.push(CreatableTopicResult {
            name: t.name,
            topic_id: id,
            error_code: code.code(),
            error_message: msg,
            num_partitions: if code.is_ok() { partitions } else { -1 },
            replication_factor: if code.is_ok() { 1 } else { -1 },
            configs: Some(match &overrides {
                Ok(o) if code.is_ok() => crate::broker::configs::created_topic_configs(
                    o,
                    &crate::broker::configs::NodeValues::of(&shard.ctx),
                ),
                _ => vec![],
            }),
            ..Default::default()
        });
    }
    CreateTopicsResponse {
        topics: out,
        ..Default::default()
    }
}

async fn delete_topics(
    shard: &Rc<Shard>,
    d: delete_topics_request::DeleteTopicsRequest,
) -> delete_topics_response::DeleteTopicsResponse {
    use delete_topics_response::*;
    let table = shard.topics.get();
    let mut names: Vec<(Option<String>, ferry_protocol::wire::Uuid)> = d
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), Default::default()))
        .collect();
    names.extend(
        d.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    let mut out = Vec::new();
    for (name, id) in names {
        let name = name.or_else(|| table.by_id(&id).map(|i| i.name.to_string()));
        let result = match &name {
            None => Err((ErrorCode::UNKNOWN_TOPIC_ID, "unknown topic id".to_string())),
            Some(n) => {
                let r = change_topics(shard, |topics| {
                    topics
                        .delete(n)
                        .map(|(info, _)| info)
                        .map_err(|e| (topic_error_code(&e), e.to_string()))
                })
                .await;
                r.map(|info| shard.forget_topic(&info.name))
            }
        };
        let (code, msg) = outcome(result);
        out.push(DeletableTopicResult {
            name: name.as_deref().map(s),
            topic_id: id,
            error_code: code.code(),
            error_message: msg,
            ..Default::default()
        });
    }
    DeleteTopicsResponse {
        responses: out,
        ..Default::default()
    }
}

async fn create_partitions(
    shard: &Rc<Shard>,
    c: create_partitions_request::CreatePartitionsRequest,
) -> create_partitions_response::CreatePartitionsResponse {
    use create_partitions_response::*;
    let mut results = Vec::new();
    for t in c.topics {
        let r = if c.validate_only {
            Ok(())
        } else {
            change_topics(shard, |topics| {
                topics
                    .add_partitions(&t.name, t.count)
                    .map(|_| ())
                    .map_err(|e| (topic_error_code(&e), e.to_string()))
            })
            .await
        };
        let (code, msg) = outcome(r);
        results.push(CreatePartitionsTopicResult {
            name: t.name,
            error_code: code.code(),
            error_message: msg,
            ..Default::default()
        });
    }
    CreatePartitionsResponse {
        results,
        ..Default::default()
    }
}

async fn alter_configs(
    shard: &Rc<Shard>,
    a: alter_configs_request::AlterConfigsRequest,
) -> alter_configs_response::AlterConfigsResponse {
    use alter_configs_response::*;
    let mut responses = Vec::new();
    for r in a.resources {
        let alt = crate::broker::configs::Alteration::Replace(
            r.configs
                .iter()
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.as_str().to_owned());
                    (c.name.as_str().to_owned(), value)
                })
                .collect(),
        );
        let result = alter_resource(
            shard,
            r.resource_type,
            &r.resource_name,
            &alt,
            a.validate_only,
        )
        .await;
        let (code, msg) = outcome(result);
        responses.push(AlterConfigsResourceResponse {
            error_code: code.code(),
            error_message: msg,
            resource_type: r.resource_type,
            resource_name: r.resource_name,
            ..Default::default()
        });
    }
    AlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    a: incremental_alter_configs_request::IncrementalAlterConfigsRequest,
) -> incremental_alter_configs_response::IncrementalAlterConfigsResponse {
    use incremental_alter_configs_response::*;
    let mut responses = Vec::new();
    for r in a.resources {
        let alt = crate::broker::configs::Alteration::Incremental(
            r.configs
                .iter()
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.as_str().to_owned());
                    (c.name.as_str().to_owned(), c.config_operation, value)
                })
                .collect(),
        );
        let result = alter_resource(
            shard,
            r.resource_type,
            &r.resource_name,
            &alt,
            a.validate_only,
        )
        .await;
        let (code, msg) = outcome(result);
        responses.push(AlterConfigsResourceResponse {
            error_code: code.code(),
            error_message: msg,
            resource_type: r.resource_type,
            resource_name: r.resource_name,
            ..Default::default()
        });
    }
    IncrementalAlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

/// Applies one resource's config change: a topic's overrides are checked,
/// stored in the topic table and persisted before the answer; broker
/// configs are checked by [`crate::broker::configs::alter_broker`].
async fn alter_resource(
    shard: &Shard,
    resource_type: i8,
    name: &str,
    alt: &crate::broker::configs::Alteration,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    use crate::broker::configs::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
    match resource_type {
        RESOURCE_TOPIC => {
            let check = |topics: &crate::cluster::topics::Topics| {
                let now = topics.snapshot();
                let Some(info) = now.get(name) else {
                    return Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    ));
                };
                let next = configs::alter_topic(&info.configs, alt)
                    .map_err(configs::ConfigProblem::into_pair)?;
                Ok((next != *info.configs).then_some(next))
            };
            shard.ctx.sync_topics();
            if validate_only || check(&shard.ctx.topics)?.is_none() {
                return Ok(());
            }
            change_topics(shard, |topics| match check(topics)? {
                Some(next) => topics
                    .set_configs(name, next)
                    .map(|_| ())
                    .map_err(|e| (topic_error_code(&e), e.to_string())),
                None => Ok(()),
            })
            .await?;
            tracing::info!(topic = name, keys = ?alt.keys(), "topic configs altered");
            Ok(())
        }
        RESOURCE_BROKER => {
            let changes = configs::alter_broker(shard.ctx.node_id, name, alt)
                .map_err(configs::ConfigProblem::into_pair)?;
            if validate_only {
                return Ok(());
            }
            for (key, value) in changes {
                // The only dynamic key is the cluster-wide zone table.
                if key == crate::cluster::zone::ZONE_CIDR_KEY {
                    shard
                        .ctx
                        .cluster
                        .set_zone_cidrs(value.as_deref().unwrap_or(""))
                        .await
                        .map_err(|e| (ErrorCode::INVALID_CONFIG, e.to_string()))?;
                    tracing::info!(
                        key,
                        value = value.as_deref().unwrap_or(""),
                        "broker config altered cluster-wide"
                    );
                    // An in-process coordinator forgets it at a restart:
                    // the bucket keeps it (etcd keeps its own).
                    if shard.ctx.in_process {
                        let text = shard.ctx.cluster.zone_cidrs();
                        let rx = shard.ctx.durable.put_meta(
                            ZONE_CIDRS_META,
                            now_ms() as u64,
                            Bytes::from(text.into_bytes()),
                        );
                        match rx.await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                return Err((ErrorCode::KAFKA_STORAGE_ERROR, e.to_string()))
                            }
                            Err(_) => {
                                return Err((
                                    ErrorCode::KAFKA_STORAGE_ERROR,
                                    "the WAL is shut down".into(),
                                ))
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        other => Err(configs::unsupported_resource(other).into_pair()),
    }
}

pub use crate::storage::durable::ZONE_CIDRS_META;

pub use crate::node::ProducerIds;

fn init_producer_id(
    ids: &ProducerIds,
    i: init_producer_id_request::InitProducerIdRequest,
) -> init_producer_id_response::InitProducerIdResponse {
    use init_producer_id_response::*;
    if i.transactional_id.is_some() {
        return InitProducerIdResponse {
            error_code: ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code(),
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
    }
    // A client bumping its own epoch (KIP-360) keeps its id.
    let (id, epoch) = if i.producer_id >= 0 && i.producer_epoch >= 0 && i.producer_epoch < i16::MAX
    {
        (i.producer_id, i.producer_epoch + 1)
    } else {
        (ids.next(), 0)
    };
    InitProducerIdResponse {
        producer_id: id,
        producer_epoch: epoch,
        ..Default::default()
    }
}

/// A group's coordinator is the node that leads its slot (as a partition
/// of `__consumer_offsets`), or that node's proxy in the client's zone, the
/// same mapping Metadata shows. Transactions are not implemented, so
/// transaction coordinators are not available.
fn find_coordinator(
    shard: &Shard,
    f: find_coordinator_request::FindCoordinatorRequest,
    zone: Option<&str>,
) -> find_coordinator_response::FindCoordinatorResponse {
    use find_coordinator_response::*;
    let ok = f.key_type == 0;
    let keys = if f.coordinator_keys.is_empty() {
        vec![f.key.clone()]
    } else {
        f.coordinator_keys
    };
    let brokers = brokers(shard);
    let answer = |key: &KStr| -> (ErrorCode, i32, KStr, i32) {
        if !ok {
            return (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1);
        }
        let (node, _) = routed_leader(shard, GROUP_TOPIC, group_slot(key.as_str()), zone);
        match brokers.iter().find(|b| b.node_id == node) {
            Some(b) => (ErrorCode::NONE, b.node_id, s(&b.host), i32::from(b.port)),
            None => (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, s(""), -1),
        }
    };
    let (code, node, host, port) = answer(&f.key);
    FindCoordinatorResponse {
        error_code: code.code(),
        node_id: node,
        host,
        port,
        coordinators: keys
            .into_iter()
            .map(|key| {
                let (code, node_id, host, port) = answer(&key);
                Coordinator {
                    key,
                    node_id,
                    host,
                    port,
                    error_code: code.code(),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

/// The group a request is about, for the group APIs that name one.
/// (ListGroups, DescribeGroups and DeleteGroups are answered by the node
/// asked, from the groups it coordinates.)
pub fn group_of(body: &RequestBody) -> Option<&str> {
    Some(match body {
        RequestBody::JoinGroup(r) => r.group_id.as_str(),
        RequestBody::SyncGroup(r) => r.group_id.as_str(),
        RequestBody::Heartbeat(r) => r.group_id.as_str(),
        RequestBody::LeaveGroup(r) => r.group_id.as_str(),
        RequestBody::OffsetCommit(r) => r.group_id.as_str(),
        RequestBody::OffsetFetch(r) => {
            if r.groups.is_empty() {
                r.group_id.as_str()
            } else if r.groups.len() == 1 {
                r.groups[0].group_id.as_str()
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// The node a group request must be served by, if not this one: the
/// group's coordinator (the leader of its slot). Requests reach this node
/// when it is that coordinator's proxy in the client's zone.
pub fn forward_target(shard: &Shard, body: &RequestBody) -> Option<crate::cluster::Member> {
    let group = group_of(body)?;
    let view = shard.view();
    let m = view.leader(GROUP_TOPIC, group_slot(group))?;
    (m.node_id != shard.ctx.node_id).then(|| m.clone())
}

/// Serves a client request another node forwarded (a group request whose
/// coordinator is this node), answering the whole response frame.
pub async fn forwarded(
    shard: &Rc<Shard>,
    f: crate::cluster::rpc::Forward,
) -> crate::cluster::rpc::ForwardResponse {
    let refuse = |code: ErrorCode| crate::cluster::rpc::ForwardResponse {
        error_code: code.code(),
        frame: None,
    };
    let req = match frame::decode_request(&f.frame, &shard.ctx.supported) {
        Ok(r) => r,
        Err(_) => return refuse(ErrorCode::INVALID_REQUEST),
    };
    let (correlation_id, version) = (req.correlation_id(), req.api_version());
    let peer = f
        .client_host
        .trim_start_matches('/')
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 0));
    let Some(body) = handle(shard, req, peer).await else {
        return crate::cluster::rpc::ForwardResponse {
            error_code: 0,
            frame: None,
        };
    };
    match frame::encode_response(correlation_id, version, &body) {
        Ok(segs) => crate::cluster::rpc::ForwardResponse {
            error_code: 0,
            frame: Some(frame::concat(&segs)),
        },
        Err(_) => refuse(ErrorCode::UNKNOWN_SERVER_ERROR),
    }
}

fn describe_cluster(shard: &Shard) -> describe_cluster_response::DescribeClusterResponse {
    use describe_cluster_response::*;
    let ctx = &shard.ctx;
    let brokers: Vec<DescribeClusterBroker> = brokers(shard)
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

#[cfg(test)]
mod tests {
    use super::ProducerIds;

    #[test]
    fn producer_ids_carry_the_node_id_and_the_start_second() {
        let start = 1_764_000_000; // 2025-11-24
        let a = ProducerIds::new(1, start);
        let b = ProducerIds::new(2, start);
        let (a0, a1, b0) = (a.next(), a.next(), b.next());
        assert_eq!(a1, a0 + 1);
        assert_ne!(a0, b0, "two nodes started at the same second");
        assert_eq!(a0 >> 48, 1);
        assert_eq!(b0 >> 48, 2);
        assert_eq!(a0 & ((1 << 48) - 1), (start as i64) << 17);
        // A restart a second later starts past 131,072 ids of the first run.
        let again = ProducerIds::new(1, start + 1);
        assert_eq!(again.next(), a0 + (1 << 17));
        // Never negative, whatever the node id.
        assert!(ProducerIds::new(i32::MAX, start).next() >= 0);
        assert!(ProducerIds::new(-1, u64::MAX).next() >= 0);
    }
}
