//! Fetch (with its long-poll wait and the read replica a client of another
//! zone is pointed to) and ListOffsets.

use super::*;

/// The read replica a client of `zone` should fetch a partition led here
/// from (KIP-392): this node's proxy in the client's zone, if the client is
/// in another zone that has nodes.
pub(super) fn preferred_replica(
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

pub(super) async fn fetch(
    shard: &Rc<Shard>,
    f: fetch_request::FetchRequest,
    version: i16,
    zone: Option<&str>,
    listener: &str,
    may_read: impl Fn(&str) -> bool,
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
    // READ on each topic, once per request (not again on each round of the
    // long poll): `false` answers TOPIC_AUTHORIZATION_FAILED.
    let readable: Vec<bool> = topics
        .iter()
        .map(|(n, _)| n.as_deref().is_none_or(&may_read))
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
        for ((name, t), readable) in topics.iter().zip(&readable) {
            for p in &t.partitions {
                let max = (p.partition_max_bytes.max(0) as usize).min(response_bytes_max);
                let sh = shard.clone();
                let name = name.clone();
                let (part, offset) = (p.partition, p.fetch_offset);
                let readable = *readable;
                tasks.push(glommio::spawn_local(async move {
                    match name {
                        Some(_) if !readable => Some(crate::shard::FetchResult::err(
                            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                        )),
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
                                                listener,
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

pub(super) async fn list_offsets(
    shard: &Rc<Shard>,
    l: list_offsets_request::ListOffsetsRequest,
    may_describe: impl Fn(&str) -> bool,
) -> list_offsets_response::ListOffsetsResponse {
    use list_offsets_response::*;
    let mut topics = Vec::new();
    for t in l.topics {
        let topic: Arc<str> = t.name.as_str().into();
        let describable = may_describe(t.name.as_str());
        let mut parts = Vec::new();
        for p in t.partitions {
            let r = if describable {
                shard
                    .list_offset(topic.clone(), p.partition_index, p.timestamp)
                    .await
            } else {
                crate::shard::ListOffsetResult {
                    error: ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                    offset: -1,
                    timestamp: -1,
                }
            };
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
