//! The Kafka APIs: one function per request, from a decoded request to its
//! response body. Partition work goes through the [`Shard`] calls, which find
//! the owning shard; these modules only split requests by partition and put
//! the answers back together.
//!
//! [`handle`] dispatches; one module per family: `produce` (Produce,
//! InitProducerId), `fetch` (Fetch, ListOffsets), `metadata` (Metadata,
//! DescribeCluster), `admin` (topics and configs), `groups`
//! (FindCoordinator, and forwarding group requests to their coordinator).
//! The error codes of a partition's answer are chosen below, from typed
//! errors (`AppendError::error_code`, `RpcError::error_code`, the shard's
//! answers for the durable log's errors); `admin::topic_error_code` maps
//! the topic table's `TopicError`.

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

mod acls;
mod admin;
mod fetch;
mod groups;
mod metadata;
mod produce;
pub(crate) mod security;

use crate::security::acl::{Operation, ResourceType};
pub use acls::group_refusal;
use acls::*;
use admin::*;
use fetch::*;
use groups::*;
pub use groups::{forward_target, forwarded, group_of};
pub use metadata::routed_leader;
use metadata::*;
use produce::*;
pub use security::change_security;
use security::*;

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
        // SASL (served by the connection, see broker::sasl). Handshake v0
        // is listed because librdkafka requires it to see SASL at all, and
        // answered UNSUPPORTED_VERSION: its tokens would come unframed.
        (17, r(0, 1)),
        (36, r(0, 2)),
        // SCRAM credentials (KIP-554).
        (50, r(0, 0)),
        (51, r(0, 0)),
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
        // ACLs.
        (29, r(0, 3)),
        (30, r(0, 3)),
        (31, r(0, 3)),
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
    session: &crate::broker::conn::Session,
) -> Option<ResponseBody> {
    let v = req.api_version();
    let peer = session.peer;
    let listener = session.listener.name();
    shard.ctx.sync_topics();
    let client_id = req.header.client_id.as_deref().unwrap_or("").to_owned();
    let addr = peer.map(|p| p.ip());
    if crate::group::coordinator::is_group_api(req.api_key()) {
        if let Some(refused) = group_refusal(shard, session, &req.body) {
            return Some(refused);
        }
        let mut body = req.body;
        let refused = take_refused_items(shard, session, &mut body);
        let named = offset_fetch_named(&body);
        let g = crate::group::coordinator::GroupRequest {
            version: v,
            client_id: req.header.client_id.as_deref().unwrap_or("").to_string(),
            client_host: peer.map_or_else(String::new, |p| format!("/{}", p.ip())),
            body,
        };
        let mut answer = shard.group(g).await?;
        answer_refused_items(refused, &mut answer);
        filter_fetched_offsets(shard, session, named, &mut answer);
        filter_listed_groups(shard, session, &mut answer);
        return Some(answer);
    }
    // ACLs (all true when they are off).
    let may = |op: Operation, name: &str| allowed(shard, session, op, ResourceType::Topic, name);
    let on_cluster = |op: Operation| allowed_on_cluster(shard, session, op);
    let denied = |what: &str| Some(s(&format!("not authorized to {what}")));
    const TOPIC_DENIED: i16 = ErrorCode::TOPIC_AUTHORIZATION_FAILED.code();
    const CLUSTER_DENIED: i16 = ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code();
    Some(match req.body {
        RequestBody::FindCoordinator(f) => {
            let zone = shard.client_zone(&client_id, addr, None);
            let may_describe_group =
                |g: &str| allowed(shard, session, Operation::Describe, ResourceType::Group, g);
            ResponseBody::FindCoordinator(find_coordinator(
                shard,
                f,
                zone.as_deref(),
                listener,
                &may_describe_group,
            ))
        }
        RequestBody::ApiVersions(_) => {
            ResponseBody::ApiVersions(api_versions_response::ApiVersionsResponse {
                api_keys: shard.ctx.supported.api_versions(),
                ..Default::default()
            })
        }
        RequestBody::Metadata(m) => {
            let zone = shard.client_zone(&client_id, addr, None);
            let describe = |t: &str| may(Operation::Describe, t);
            let create = |t: &str| on_cluster(Operation::Create) || may(Operation::Create, t);
            let access = TopicAccess {
                describe: &describe,
                create: &create,
            };
            ResponseBody::Metadata(metadata(shard, m, v, zone.as_deref(), listener, access).await)
        }
        RequestBody::Produce(p) => {
            let zone = shard.client_zone(&client_id, addr, None);
            return produce(shard, p, zone.as_deref(), listener, |t| {
                may(Operation::Write, t)
            })
            .await
            .map(ResponseBody::Produce);
        }
        RequestBody::Fetch(f) => {
            // A fetch's rack (KIP-392) tells a client's zone too.
            let zone = shard.client_zone(&client_id, addr, Some(f.rack_id.as_str()));
            ResponseBody::Fetch(
                fetch(shard, f, v, zone.as_deref(), listener, |t| {
                    may(Operation::Read, t)
                })
                .await,
            )
        }
        RequestBody::ListOffsets(l) => {
            ResponseBody::ListOffsets(list_offsets(shard, l, |t| may(Operation::Describe, t)).await)
        }
        RequestBody::CreateTopics(mut c) => {
            let cluster = on_cluster(Operation::Create);
            let (ok, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut c.topics)
                .into_iter()
                .partition(|t| cluster || may(Operation::Create, t.name.as_str()));
            c.topics = ok;
            let mut r = create_topics(shard, c).await;
            r.topics.extend(refused.into_iter().map(|t| {
                create_topics_response::CreatableTopicResult {
                    name: t.name,
                    error_code: TOPIC_DENIED,
                    error_message: denied("CREATE the topic"),
                    ..Default::default()
                }
            }));
            ResponseBody::CreateTopics(r)
        }
        RequestBody::DeleteTopics(mut d) => {
            let table = shard.topics.get();
            let name_of = |t: &delete_topics_request::DeleteTopicState| -> Option<String> {
                match &t.name {
                    Some(n) => Some(n.to_string()),
                    None => table.by_id(&t.topic_id).map(|i| i.name.to_string()),
                }
            };
            let mut refused = Vec::new();
            d.topic_names.retain(|n| {
                let ok = may(Operation::Delete, n.as_str());
                if !ok {
                    refused.push((Some(n.clone()), Default::default()));
                }
                ok
            });
            d.topics.retain(|t| {
                // An unknown id is left for the handler to answer.
                let ok = name_of(t).is_none_or(|n| may(Operation::Delete, &n));
                if !ok {
                    refused.push((t.name.clone(), t.topic_id));
                }
                ok
            });
            let mut r = delete_topics(shard, d).await;
            r.responses
                .extend(refused.into_iter().map(|(name, topic_id)| {
                    delete_topics_response::DeletableTopicResult {
                        name,
                        topic_id,
                        error_code: TOPIC_DENIED,
                        error_message: denied("DELETE the topic"),
                        ..Default::default()
                    }
                }));
            ResponseBody::DeleteTopics(r)
        }
        RequestBody::CreatePartitions(mut c) => {
            let (ok, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut c.topics)
                .into_iter()
                .partition(|t| may(Operation::Alter, t.name.as_str()));
            c.topics = ok;
            let mut r = create_partitions(shard, c).await;
            r.results.extend(refused.into_iter().map(|t| {
                create_partitions_response::CreatePartitionsTopicResult {
                    name: t.name,
                    error_code: TOPIC_DENIED,
                    error_message: denied("ALTER the topic"),
                    ..Default::default()
                }
            }));
            ResponseBody::CreatePartitions(r)
        }
        RequestBody::InitProducerId(i) => {
            // An idempotent producer needs IDEMPOTENT_WRITE on the cluster,
            // or WRITE on some topic (as in Kafka).
            if !(on_cluster(Operation::IdempotentWrite)
                || allowed_any(shard, session, Operation::Write, ResourceType::Topic))
            {
                ResponseBody::InitProducerId(init_producer_id_response::InitProducerIdResponse {
                    error_code: CLUSTER_DENIED,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                })
            } else {
                ResponseBody::InitProducerId(init_producer_id(&shard.ctx.producer_ids, i))
            }
        }
        RequestBody::DescribeCluster(_) => {
            ResponseBody::DescribeCluster(describe_cluster(shard, listener))
        }
        RequestBody::DescribeConfigs(mut d) => {
            let (ok, refused) = config_access(
                std::mem::take(&mut d.resources),
                |r| (r.resource_type, r.resource_name.clone()),
                |rt, name| config_allowed(shard, session, Operation::DescribeConfigs, rt, name),
            );
            d.resources = ok;
            let mut r = crate::broker::configs::describe(&shard.ctx, &shard.topics.get(), &d);
            r.results.extend(
                refused
                    .into_iter()
                    .map(|(resource_type, resource_name, code)| {
                        describe_configs_response::DescribeConfigsResult {
                            error_code: code,
                            error_message: denied("DESCRIBE_CONFIGS"),
                            resource_type,
                            resource_name,
                            ..Default::default()
                        }
                    }),
            );
            ResponseBody::DescribeConfigs(r)
        }
        RequestBody::AlterUserScramCredentials(a) => {
            if on_cluster(Operation::Alter) {
                ResponseBody::AlterUserScramCredentials(
                    alter_user_scram_credentials(shard, a).await,
                )
            } else {
                ResponseBody::AlterUserScramCredentials(
                    alter_user_scram_credentials_response::AlterUserScramCredentialsResponse {
                        results: a
                            .deletions
                            .iter()
                            .map(|d| d.name.clone())
                            .chain(a.upsertions.iter().map(|u| u.name.clone()))
                            .map(|user| {
                                alter_user_scram_credentials_response::AlterUserScramCredentialsResult {
                                    user,
                                    error_code: CLUSTER_DENIED,
                                    error_message: denied("ALTER the cluster"),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    },
                )
            }
        }
        RequestBody::DescribeUserScramCredentials(d) => {
            if on_cluster(Operation::Describe) {
                ResponseBody::DescribeUserScramCredentials(describe_user_scram_credentials(
                    shard, d,
                ))
            } else {
                ResponseBody::DescribeUserScramCredentials(
                    describe_user_scram_credentials_response::DescribeUserScramCredentialsResponse {
                        error_code: CLUSTER_DENIED,
                        error_message: denied("DESCRIBE the cluster"),
                        ..Default::default()
                    },
                )
            }
        }
        RequestBody::AlterConfigs(mut a) => {
            let (ok, refused) = config_access(
                std::mem::take(&mut a.resources),
                |r| (r.resource_type, r.resource_name.clone()),
                |rt, name| config_allowed(shard, session, Operation::AlterConfigs, rt, name),
            );
            a.resources = ok;
            let mut r = alter_configs(shard, a).await;
            r.responses.extend(
                refused
                    .into_iter()
                    .map(|(resource_type, resource_name, code)| {
                        alter_configs_response::AlterConfigsResourceResponse {
                            error_code: code,
                            error_message: denied("ALTER_CONFIGS"),
                            resource_type,
                            resource_name,
                            ..Default::default()
                        }
                    }),
            );
            ResponseBody::AlterConfigs(r)
        }
        RequestBody::IncrementalAlterConfigs(mut a) => {
            let (ok, refused) = config_access(
                std::mem::take(&mut a.resources),
                |r| (r.resource_type, r.resource_name.clone()),
                |rt, name| config_allowed(shard, session, Operation::AlterConfigs, rt, name),
            );
            a.resources = ok;
            let mut r = incremental_alter_configs(shard, a).await;
            r.responses.extend(
                refused
                    .into_iter()
                    .map(|(resource_type, resource_name, code)| {
                        incremental_alter_configs_response::AlterConfigsResourceResponse {
                            error_code: code,
                            error_message: denied("ALTER_CONFIGS"),
                            resource_type,
                            resource_name,
                            ..Default::default()
                        }
                    }),
            );
            ResponseBody::IncrementalAlterConfigs(r)
        }
        RequestBody::CreateAcls(c) => {
            ResponseBody::CreateAcls(create_acls(shard, session, c).await)
        }
        RequestBody::DescribeAcls(d) => {
            ResponseBody::DescribeAcls(describe_acls(shard, session, d))
        }
        RequestBody::DeleteAcls(d) => {
            ResponseBody::DeleteAcls(delete_acls(shard, session, d).await)
        }
        other => ResponseBody::default_for(other.api_key())?,
    })
}

pub use crate::storage::durable::ZONE_CIDRS_META;

pub use crate::node::ProducerIds;

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
