//! Produce and InitProducerId: a request split by partition, each part
//! sent to its owning shard, the answers joined in the request's order.

use super::*;

pub(super) async fn produce(
    shard: &Rc<Shard>,
    p: produce_request::ProduceRequest,
    zone: Option<&str>,
    listener: &str,
    may_write: impl Fn(&str) -> bool,
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
        // WRITE on the topic (checked here, so a proxy hands nothing off
        // for a client the leader would refuse).
        let writable = may_write(t.name.as_str());
        for pd in &t.partition_data {
            if !writable {
                tasks.push(glommio::spawn_local(async {
                    crate::shard::ProduceResult::err(
                        ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                        "not authorized to WRITE to the topic",
                    )
                }));
                continue;
            }
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
                            leader_hint(
                                shard,
                                t.name.as_str(),
                                pd.index,
                                zone,
                                listener,
                                &mut endpoints,
                            )
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

pub(super) fn init_producer_id(
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
    // Without a transactional id Kafka always answers a new producer id at
    // epoch 0, whatever id and epoch the request names (KIP-360's bump is
    // for transactional producers): a client cannot bump, and so fence,
    // another producer's epoch. A client that asked to bump its own gets a
    // fresh id, which clients take as a reset.
    let _ = (i.producer_id, i.producer_epoch);
    InitProducerIdResponse {
        producer_id: ids.next(),
        producer_epoch: 0,
        ..Default::default()
    }
}
