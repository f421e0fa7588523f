//! Topics and configs: CreateTopics, DeleteTopics, CreatePartitions,
//! AlterConfigs and IncrementalAlterConfigs, with the topic table changed
//! through the coordinator (compare-and-set) and kept in the bucket.

use super::*;

/// Applies `change` to the cluster's topic table: on the newest table,
/// stored in the coordinator with compare-and-set (tried again on the newer
/// table when another node changed it first), then written to the bucket.
/// This node's changes run one at a time.
pub(super) async fn change_topics<T>(
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
pub(super) async fn persist_topics(shard: &Shard) -> Result<(), String> {
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
pub(super) async fn create_topic(
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
pub(super) fn outcome(r: Result<(), (ErrorCode, String)>) -> (ErrorCode, Option<KStr>) {
    match r {
        Ok(()) => (ErrorCode::NONE, None),
        Err((code, message)) => (code, Some(s(&message))),
    }
}

pub(super) fn topic_error_code(e: &TopicError) -> ErrorCode {
    match e {
        TopicError::Exists(_) => ErrorCode::TOPIC_ALREADY_EXISTS,
        TopicError::Unknown(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidName(_) => ErrorCode::INVALID_TOPIC_EXCEPTION,
        TopicError::InvalidPartitions(_) => ErrorCode::INVALID_PARTITIONS,
        TopicError::Corrupt { .. } => ErrorCode::UNKNOWN_SERVER_ERROR,
    }
}

pub(super) async fn create_topics(
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

pub(super) async fn delete_topics(
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

pub(super) async fn create_partitions(
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

pub(super) async fn alter_configs(
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

pub(super) async fn incremental_alter_configs(
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
pub(super) async fn alter_resource(
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
