//! The group coordinator at work: the [`GroupCoordinator`] state machine
//! lives on shard 0, alone, so it needs no lock. Other shards send it group
//! requests through the channel mesh. JoinGroup and SyncGroup answers that
//! must wait are parked under their token until a later call or the timer
//! completes them. Committed offsets are written to the bucket
//! (`meta/groups-<node id>`, see [`groups_meta_name`]) before an
//! OffsetCommit is answered, one snapshot at a time, so a later snapshot
//! never lands before an earlier one.

use crate::clock::now_ms;
use crate::group::{Completed, GroupConfig, GroupCoordinator, Reply, RequestContext, Token};
use bytes::Bytes;
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::{RequestBody, ResponseBody};
use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// The answer for an OffsetCommit topic that is not committed: `code` for
/// each of its partitions.
pub fn commit_refused(
    t: &ferry_protocol::messages::offset_commit_request::OffsetCommitRequestTopic,
    code: ErrorCode,
) -> ferry_protocol::messages::offset_commit_response::OffsetCommitResponseTopic {
    use ferry_protocol::messages::offset_commit_response::*;
    OffsetCommitResponseTopic {
        name: t.name.clone(),
        partitions: t
            .partitions
            .iter()
            .map(|p| OffsetCommitResponsePartition {
                partition_index: p.partition_index,
                error_code: code.code(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
use std::time::Duration;

/// How often session and rebalance timeouts are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// A group request from any shard, with what the coordinator needs to know
/// about its sender.
#[derive(Debug)]
pub struct GroupRequest {
    pub body: RequestBody,
    pub version: i16,
    pub client_id: String,
    pub client_host: String,
}

pub struct Coordinator {
    state: RefCell<GroupCoordinator>,
    waiting: RefCell<HashMap<Token, oneshot::Sender<Completed>>>,
    persist: glommio::sync::Semaphore,
    persisted_changes: RefCell<u64>,
    /// Where the offsets are kept.
    meta: Arc<dyn crate::storage::durable::MetaStore>,
    /// The metadata object the offsets go to ([`groups_meta_name`]).
    meta_name: String,
}

pub use crate::storage::durable::groups_meta_name;

impl Coordinator {
    pub fn new(
        config: GroupConfig,
        snapshot: Option<Bytes>,
        meta: Arc<dyn crate::storage::durable::MetaStore>,
        meta_name: String,
    ) -> Coordinator {
        let mut state = GroupCoordinator::new(config, now_ms() as u64);
        if let Some(s) = snapshot {
            match state.restore(&s, now_ms() as u64) {
                Ok(n) => tracing::info!(offsets = n, "restored committed offsets"),
                Err(e) => {
                    tracing::error!(error = %e, "meta/groups is unreadable; starting without committed offsets")
                }
            }
        }
        let persisted = state.offsets_changes();
        Coordinator {
            state: RefCell::new(state),
            waiting: RefCell::new(HashMap::new()),
            persist: glommio::sync::Semaphore::new(1),
            persisted_changes: RefCell::new(persisted),
            meta,
            meta_name,
        }
    }

    fn deliver(&self, completed: Vec<(Token, Completed)>) {
        let mut w = self.waiting.borrow_mut();
        for (t, c) in completed {
            if let Some(tx) = w.remove(&t) {
                let _ = tx.send(c);
            }
        }
    }

    /// Runs the session and rebalance timers until the shard ends.
    pub fn start_timer(self: &Rc<Self>) {
        let me = self.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TICK).await;
                let out = me.state.borrow_mut().tick(now_ms() as u64);
                for (g, m) in &out.expired_members {
                    tracing::info!(group = %g, member = %m, "member expired");
                }
                me.deliver(out.completed);
            }
        })
        .detach();
    }

    /// Takes over committed offsets from another node's snapshot (for the
    /// groups `take` picks), and persists them as this node's.
    pub async fn adopt(&self, snapshot: &[u8], take: impl Fn(&str) -> bool) {
        let r = self
            .state
            .borrow_mut()
            .adopt(snapshot, now_ms() as u64, take);
        match r {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    offsets = n,
                    "took over committed offsets of groups now coordinated here"
                );
                if let Err(e) = self.persist().await {
                    tracing::warn!(error = %e, "persisting taken-over offsets failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "another node's offsets snapshot is unreadable"),
        }
    }

    /// Writes the offsets snapshot if commits happened since the last one.
    async fn persist(&self) -> Result<(), String> {
        let _permit = self
            .persist
            .acquire_permit(1)
            .await
            .map_err(|e| e.to_string())?;
        let (changes, snapshot) = {
            let s = self.state.borrow();
            (s.offsets_changes(), s.snapshot())
        };
        if changes == *self.persisted_changes.borrow() {
            return Ok(());
        }
        match self.meta.put_meta(&self.meta_name, changes, snapshot).await {
            Ok(Ok(())) => {
                *self.persisted_changes.borrow_mut() = changes;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the WAL is shut down".into()),
        }
    }

    async fn wait(&self, token: Token) -> Option<Completed> {
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(token, tx);
        rx.await.ok()
    }

    pub async fn handle(
        &self,
        r: GroupRequest,
        topic_exists: impl Fn(&str) -> bool,
    ) -> Option<ResponseBody> {
        let now = now_ms() as u64;
        let ctx = RequestContext {
            version: r.version,
            client_id: &r.client_id,
            client_host: &r.client_host,
            now_ms: now,
        };
        Some(match r.body {
            RequestBody::JoinGroup(j) => {
                let out = self.state.borrow_mut().join(&ctx, &j);
                self.deliver(out.completed);
                match out.reply {
                    Reply::Ready(resp) => ResponseBody::JoinGroup(resp),
                    Reply::Pending(t) => match self.wait(t).await? {
                        Completed::Join(resp) => ResponseBody::JoinGroup(resp),
                        Completed::Sync(_) => return None,
                    },
                }
            }
            RequestBody::SyncGroup(s) => {
                let out = self.state.borrow_mut().sync(&ctx, &s);
                self.deliver(out.completed);
                match out.reply {
                    Reply::Ready(resp) => ResponseBody::SyncGroup(resp),
                    Reply::Pending(t) => match self.wait(t).await? {
                        Completed::Sync(resp) => ResponseBody::SyncGroup(resp),
                        Completed::Join(_) => return None,
                    },
                }
            }
            RequestBody::Heartbeat(h) => {
                ResponseBody::Heartbeat(self.state.borrow_mut().heartbeat(&ctx, &h))
            }
            RequestBody::LeaveGroup(l) => {
                let (resp, completed) = self.state.borrow_mut().leave(&ctx, &l);
                self.deliver(completed);
                ResponseBody::LeaveGroup(resp)
            }
            RequestBody::OffsetCommit(mut o) => {
                // Offsets of topics that do not exist are not stored, as in
                // Kafka; they are answered UNKNOWN_TOPIC_OR_PARTITION.
                let (known, unknown): (Vec<_>, Vec<_>) =
                    o.topics.drain(..).partition(|t| topic_exists(&t.name));
                o.topics = known;
                let mut resp = self.state.borrow_mut().offset_commit(&ctx, &o);
                resp.topics.extend(
                    unknown
                        .iter()
                        .map(|t| commit_refused(t, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)),
                );
                if let Err(e) = self.persist().await {
                    tracing::warn!(error = %e, "committed offsets were not persisted");
                    for t in &mut resp.topics {
                        for p in &mut t.partitions {
                            if p.error_code == 0 {
                                p.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.code();
                            }
                        }
                    }
                }
                ResponseBody::OffsetCommit(resp)
            }
            RequestBody::OffsetFetch(o) => {
                ResponseBody::OffsetFetch(self.state.borrow().offset_fetch(&ctx, &o))
            }
            RequestBody::ListGroups(l) => {
                ResponseBody::ListGroups(self.state.borrow().list_groups(&ctx, &l))
            }
            RequestBody::DescribeGroups(d) => {
                ResponseBody::DescribeGroups(self.state.borrow().describe_groups(&ctx, &d))
            }
            RequestBody::DeleteGroups(d) => {
                let resp = self.state.borrow_mut().delete_groups(&ctx, &d);
                if let Err(e) = self.persist().await {
                    tracing::warn!(error = %e, "group deletion was not persisted");
                }
                ResponseBody::DeleteGroups(resp)
            }
            other => ResponseBody::default_for(other.api_key())?,
        })
    }
}

/// Whether an API is served by the group coordinator.
pub fn is_group_api(api_key: i16) -> bool {
    matches!(api_key, 8 | 9 | 11 | 12 | 13 | 14 | 15 | 16 | 42)
}

/// Groups are spread over nodes like the partitions of a 50-partition
/// topic, as Kafka spreads them over `__consumer_offsets`.
pub const GROUP_SLOTS: u32 = 50;

/// The slot of a group: where its coordinator is.
pub fn group_slot(group: &str) -> i32 {
    (crc32c::crc32c(group.as_bytes()) % GROUP_SLOTS) as i32
}

/// The name groups are placed by (see [`group_slot`]).
pub const GROUP_TOPIC: &str = "__consumer_offsets";
