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

mod admin;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod security;

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
            ResponseBody::FindCoordinator(find_coordinator(shard, f, zone.as_deref(), listener))
        }
        RequestBody::ApiVersions(_) => {
            ResponseBody::ApiVersions(api_versions_response::ApiVersionsResponse {
                api_keys: shard.ctx.supported.api_versions(),
                ..Default::default()
            })
        }
        RequestBody::Metadata(m) => {
            let zone = shard.client_zone(&client_id, addr, None);
            ResponseBody::Metadata(metadata(shard, m, v, zone.as_deref(), listener).await)
        }
        RequestBody::Produce(p) => {
            let zone = shard.client_zone(&client_id, addr, None);
            return produce(shard, p, zone.as_deref(), listener)
                .await
                .map(ResponseBody::Produce);
        }
        RequestBody::Fetch(f) => {
            // A fetch's rack (KIP-392) tells a client's zone too.
            let zone = shard.client_zone(&client_id, addr, Some(f.rack_id.as_str()));
            ResponseBody::Fetch(fetch(shard, f, v, zone.as_deref(), listener).await)
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
        RequestBody::DescribeCluster(_) => {
            ResponseBody::DescribeCluster(describe_cluster(shard, listener))
        }
        RequestBody::DescribeConfigs(d) => ResponseBody::DescribeConfigs(
            crate::broker::configs::describe(&shard.ctx, &shard.topics.get(), &d),
        ),
        RequestBody::AlterUserScramCredentials(a) => {
            ResponseBody::AlterUserScramCredentials(alter_user_scram_credentials(shard, a).await)
        }
        RequestBody::DescribeUserScramCredentials(d) => {
            ResponseBody::DescribeUserScramCredentials(describe_user_scram_credentials(shard, d))
        }
        RequestBody::AlterConfigs(a) => ResponseBody::AlterConfigs(alter_configs(shard, a).await),
        RequestBody::IncrementalAlterConfigs(a) => {
            ResponseBody::IncrementalAlterConfigs(incremental_alter_configs(shard, a).await)
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
