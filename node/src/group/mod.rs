//! The classic consumer-group coordinator, as a pure state machine.
//!
//! This file owns every group's membership (Kafka's classic protocol:
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups,
//! DeleteGroups); `offsets` its committed offsets (OffsetCommit,
//! OffsetFetch), and `snapshot` the encoding those offsets are persisted in;
//! [`coordinator`] runs it on a shard. The state machine does no I/O and
//! reads no clock: time comes in as `now_ms` (Unix epoch milliseconds, so
//! commit timestamps survive a restart), and member ids come from a seed the
//! caller passes in.
//!
//! # States
//!
//! ```text
//!            first join                all members rejoined, or the
//!   Empty ─────────────► Preparing ───  rebalance timeout ──► Completing ── leader's ──► Stable
//!     ▲                  Rebalance  ◄──────────────────────── Rebalance     SyncGroup      │
//!     │                   │   ▲   ◄──── join, leave, expiry ───────────────────────────────┘
//!     └── no member left ─┘   └──── join, leave, expiry, or a member that never synced
//! ```
//!
//! `Dead` is what DescribeGroups reports for a group that does not exist:
//! a deleted group is removed at once.
//!
//! # Pending responses
//!
//! JoinGroup and SyncGroup often cannot be answered at once: a join waits
//! for the other members, a follower's sync waits for the leader's. Such a
//! call returns [`Reply::Pending`] with a [`Token`], and some later call
//! (another member's join or sync, a leave, or [`GroupCoordinator::tick`])
//! returns `(token, response)` in its `completed` list. Every token handed out
//! is completed exactly once, within the rebalance timeout. A pending response
//! whose connection has gone is simply dropped by the caller.
//!
//! # Persistence
//!
//! Group membership lives in memory only: after a restart every member
//! rejoins (its old member id gets UNKNOWN_MEMBER_ID). Committed offsets are
//! what must survive: [`GroupCoordinator::snapshot`] encodes them, and
//! [`GroupCoordinator::restore`] reads them back. The layout (big-endian):
//!
//! ```text
//! snapshot  = "FGOF" version:u16(=1) group_count:u32 group* crc32c:u32
//! group     = id:str protocol_type:opt_str topic_count:u32 topic*
//! topic     = name:str partition_count:u32 partition*
//! partition = index:i32 offset:i64 leader_epoch:i32 commit_timestamp_ms:i64 metadata:str
//! str       = len:u32 utf8[len]          opt_str = len:u32 (0xFFFFFFFF: none) utf8[len]
//! ```
//!
//! The CRC32C covers every byte before it.
//!
//! # Not done yet
//!
//! - Static membership (KIP-345): `group.instance.id` is recorded and
//!   reported (JoinGroup member lists, DescribeGroups) and LeaveGroup can
//!   name a member by it, but it gives no static semantics: a restarted
//!   static member joins as a new member and triggers a rebalance, its old
//!   member leaves by session expiry, and FENCED_INSTANCE_ID is never sent.
//! - Transactional offset commits (TxnOffsetCommit) and `require_stable`.
//! - The KIP-848 consumer protocol (ConsumerGroupHeartbeat): every group
//!   here is a "classic" group.
//! - Topic existence checks (UNKNOWN_TOPIC_OR_PARTITION on OffsetCommit) and
//!   authorization: the caller does those.

pub mod coordinator;
mod offsets;
mod snapshot;

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use ferry_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use ferry_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use ferry_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use ferry_protocol::messages::heartbeat_request::HeartbeatRequest;
use ferry_protocol::messages::heartbeat_response::HeartbeatResponse;
use ferry_protocol::messages::join_group_request::JoinGroupRequest;
use ferry_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use ferry_protocol::messages::leave_group_request::LeaveGroupRequest;
use ferry_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use ferry_protocol::messages::list_groups_request::ListGroupsRequest;
use ferry_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use ferry_protocol::messages::offset_commit_request::OffsetCommitRequest;
use ferry_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use ferry_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use ferry_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use ferry_protocol::messages::sync_group_request::SyncGroupRequest;
use ferry_protocol::messages::sync_group_response::SyncGroupResponse;
use ferry_protocol::wire::KStr;

pub use crate::config::GroupConfig;

/// A group's state, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned; members heartbeat.
    Stable,
    /// Does not exist.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Names a response that is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// The answer to a JoinGroup or SyncGroup: now, or later under a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    Ready(T),
    Pending(Token),
}

/// A response that was pending and is now ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Completed {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
}

/// What a JoinGroup or SyncGroup call returns: its own reply, and the
/// pending responses (of this or other members) it completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    pub reply: Reply<T>,
    pub completed: Vec<(Token, Completed)>,
}

/// What [`GroupCoordinator::tick`] changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickOutcome {
    /// Pending responses that are now ready.
    pub completed: Vec<(Token, Completed)>,
    /// `(group, member)` removed for missing their session timeout, the
    /// rebalance timeout or the sync deadline.
    pub expired_members: Vec<(String, String)>,
    /// Groups removed: empty, and with no offsets left.
    pub removed_groups: Vec<String>,
    /// Committed offsets dropped by `offsets.retention.minutes`.
    pub expired_offsets: usize,
}

/// Who sent a request, its API version, and the time.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The request's API version.
    pub version: i16,
    /// The request header's client id.
    pub client_id: &'a str,
    /// The client's address as DescribeGroups shows it (Kafka: `/10.0.0.1`).
    pub client_host: &'a str,
    /// Unix epoch milliseconds.
    pub now_ms: u64,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client did not send one.
    pub leader_epoch: i32,
    /// The client's metadata string; a null one is stored as "", as Kafka
    /// does.
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Errors of this module: only reading a snapshot can fail. Request errors
/// are Kafka error codes inside the responses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("offsets snapshot: does not start with the magic bytes \"FGOF\"")]
    SnapshotMagic,
    #[error("offsets snapshot: format version {0} is not supported (this build reads 1)")]
    SnapshotVersion(u16),
    #[error(
        "offsets snapshot: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    SnapshotChecksum { stored: u32, computed: u32 },
    #[error("offsets snapshot: truncated reading {what} at byte {at}")]
    SnapshotTruncated { what: &'static str, at: usize },
    #[error("offsets snapshot: {what} at byte {at} is not UTF-8")]
    SnapshotUtf8 { what: &'static str, at: usize },
    #[error("offsets snapshot: {extra} bytes after the last group")]
    SnapshotTrailing { extra: usize },
}

// ---------------------------------------------------------------------------
// Members and groups
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Pending {
    token: Token,
    version: i16,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    /// `(name, metadata)` in the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    heartbeat_deadline_ms: u64,
    join: Option<Pending>,
    sync: Option<Pending>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    /// Members with a pending join or sync are waiting on the coordinator,
    /// not the other way round, so their session does not run out.
    fn kept_alive(&self) -> bool {
        self.join.is_some() || self.sync.is_some()
    }
}

/// A member id handed out with MEMBER_ID_REQUIRED, not yet used to rejoin.
#[derive(Debug, Clone)]
struct PendingMember {
    id: String,
    deadline_ms: u64,
}

/// A join request, parsed and checked.
struct JoinSpec<'a> {
    ctx: &'a RequestContext<'a>,
    instance_id: Option<String>,
    protocol_type: &'a str,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
}

/// Responses completed and members removed while handling one call.
#[derive(Default)]
struct Effects {
    completed: Vec<(Token, Completed)>,
    removed: Vec<(String, String)>,
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order: the first is the leader when one must be chosen.
    members: Vec<Member>,
    pending_members: Vec<PendingMember>,
    rebalance_started_ms: u64,
    join_deadline_ms: u64,
    /// The first join phase of a group out of Empty waits for
    /// `initial_rebalance_delay_ms` even when everyone has joined.
    initial_delay: bool,
    sync_deadline_ms: u64,
    empty_since_ms: u64,
    offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
}

fn next_generation(generation: i32) -> i32 {
    generation.checked_add(1).unwrap_or(1)
}

impl Group {
    fn new(id: &str, now_ms: u64) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            rebalance_started_ms: 0,
            join_deadline_ms: 0,
            initial_delay: false,
            sync_deadline_ms: 0,
            empty_since_ms: now_ms,
            offsets: BTreeMap::new(),
        }
    }

    fn member_index(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    fn is_leader(&self, id: &str) -> bool {
        self.leader.as_deref() == Some(id)
    }

    /// The group's rebalance timeout: the largest of its members'.
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Whether a member with these protocols may be in the group: same
    /// protocol type, and one protocol every other member supports too.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], except: &str) -> bool {
        let mut others = self.members.iter().filter(|m| m.id != except).peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// Kafka's choice: among the protocols every member supports, the one
    /// most members list first among those; ties go to the first member's
    /// preference.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            let choice = m
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name));
            if let Some(i) = choice {
                votes[i] += 1;
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, &v) in votes.iter().enumerate() {
            if best.is_none_or(|(_, most)| v > most) {
                best = Some((i, v));
            }
        }
        // Membership checks keep a common protocol; should it ever be
        // missing, the first member's favourite keeps the group going.
        best.map(|(i, _)| candidates[i].to_owned())
            .or_else(|| first.protocols.first().map(|(name, _)| name.clone()))
    }

    /// The JoinGroup answer for the current generation; the leader's
    /// carries every member's metadata for the chosen protocol.
    fn join_response(&self, member_id: &str) -> JoinGroupResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if self.is_leader(member_id) {
            self.members
                .iter()
                .map(|m| JoinGroupResponseMember {
                    member_id: KStr::from(m.id.as_str()),
                    group_instance_id: m.instance_id.as_deref().map(KStr::from),
                    metadata: m.metadata(&protocol),
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse {
            error_code: ErrorCode::NONE.code(),
            generation_id: self.generation,
            protocol_type: self.protocol_type.as_deref().map(KStr::from),
            protocol_name: Some(KStr::from(protocol.as_str())),
            leader: KStr::from(self.leader.as_deref().unwrap_or("")),
            member_id: KStr::from(member_id),
            members,
            ..Default::default()
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncGroupResponse {
        SyncGroupResponse {
            error_code: ErrorCode::NONE.code(),
            protocol_type: self.protocol_type.as_deref().map(KStr::from),
            protocol_name: self.protocol_name.as_deref().map(KStr::from),
            assignment,
            ..Default::default()
        }
    }

    /// Moves to PreparingRebalance (from Empty, Stable or
    /// CompletingRebalance; otherwise does nothing). Pending syncs fail with
    /// REBALANCE_IN_PROGRESS: their members must rejoin.
    fn prepare_rebalance(&mut self, now_ms: u64, cfg: &GroupConfig, fx: &mut Effects) {
        let from_empty = match self.state {
            GroupState::Empty => true,
            GroupState::Stable => false,
            GroupState::CompletingRebalance => {
                for m in &mut self.members {
                    if let Some(p) = m.sync.take() {
                        let response = sync_error(p.version, ErrorCode::REBALANCE_IN_PROGRESS);
                        fx.completed.push((p.token, Completed::Sync(response)));
                    }
                    m.assignment = Bytes::new();
                }
                false
            }
            GroupState::PreparingRebalance | GroupState::Dead => return,
        };
        self.state = GroupState::PreparingRebalance;
        self.rebalance_started_ms = now_ms;
        let timeout = self.rebalance_timeout_ms();
        self.initial_delay = from_empty && cfg.initial_rebalance_delay_ms > 0;
        let wait = if self.initial_delay {
            cfg.initial_rebalance_delay_ms.min(timeout)
        } else {
            timeout
        };
        self.join_deadline_ms = now_ms.saturating_add(wait);
    }

    /// Ends the join phase if everyone has rejoined, or time is up.
    fn maybe_complete_join(&mut self, now_ms: u64, fx: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending_members.is_empty() && self.members.iter().all(|m| m.join.is_some());
        if (all_joined && !self.initial_delay) || now_ms >= self.join_deadline_ms {
            self.complete_join(now_ms, fx);
        }
    }

    /// Drops the members that did not rejoin, starts the next generation and
    /// answers every pending join.
    fn complete_join(&mut self, now_ms: u64, fx: &mut Effects) {
        let (joined, dropped): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.join.is_some());
        self.members = joined;
        for m in dropped {
            if let Some(p) = m.sync {
                let response = sync_error(p.version, ErrorCode::UNKNOWN_MEMBER_ID);
                fx.completed.push((p.token, Completed::Sync(response)));
            }
            fx.removed.push((self.id.clone(), m.id));
        }
        if self
            .leader
            .as_deref()
            .is_none_or(|l| self.member_index(l).is_none())
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.initial_delay = false;
        self.generation = next_generation(self.generation);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            self.empty_since_ms = now_ms;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = now_ms.saturating_add(self.rebalance_timeout_ms());
        for i in 0..self.members.len() {
            let Some(p) = self.members[i].join.take() else {
                continue;
            };
            let m = &mut self.members[i];
            m.heartbeat_deadline_ms = now_ms.saturating_add(m.session_timeout_ms);
            let id = m.id.clone();
            let response = self.join_response(&id);
            fx.completed.push((p.token, Completed::Join(response)));
        }
    }

    /// Membership changed: rebalance, and end the join phase if it can end.
    fn rebalance(&mut self, now_ms: u64, cfg: &GroupConfig, fx: &mut Effects) {
        self.prepare_rebalance(now_ms, cfg, fx);
        self.maybe_complete_join(now_ms, fx);
    }

    /// Removes a member; its pending responses fail with UNKNOWN_MEMBER_ID.
    fn remove_member(
        &mut self,
        id: &str,
        now_ms: u64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> bool {
        let Some(i) = self.member_index(id) else {
            return false;
        };
        let m = self.members.remove(i);
        if let Some(p) = m.join {
            let response = join_error(p.version, ErrorCode::UNKNOWN_MEMBER_ID, &m.id);
            fx.completed.push((p.token, Completed::Join(response)));
        }
        if let Some(p) = m.sync {
            let response = sync_error(p.version, ErrorCode::UNKNOWN_MEMBER_ID);
            fx.completed.push((p.token, Completed::Sync(response)));
        }
        if self.is_leader(id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.rebalance(now_ms, cfg, fx);
        true
    }

    /// LeaveGroup for one member, named by id or (v3+) instance id.
    fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: u64,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> ErrorCode {
        let id = if member_id.is_empty() {
            let by_instance = instance_id.and_then(|inst| {
                self.members
                    .iter()
                    .find(|m| m.instance_id.as_deref() == Some(inst))
            });
            match by_instance {
                Some(m) => m.id.clone(),
                None => return ErrorCode::UNKNOWN_MEMBER_ID,
            }
        } else {
            member_id.to_owned()
        };
        if let Some(i) = self.pending_members.iter().position(|p| p.id == id) {
            self.pending_members.remove(i);
            self.maybe_complete_join(now_ms, fx);
            return ErrorCode::NONE;
        }
        if self.remove_member(&id, now_ms, cfg, fx) {
            ErrorCode::NONE
        } else {
            ErrorCode::UNKNOWN_MEMBER_ID
        }
    }

    /// Adds a member that is joining, and rebalances.
    fn add_member(
        &mut self,
        id: String,
        spec: JoinSpec<'_>,
        token: Token,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let now_ms = spec.ctx.now_ms;
        if self.members.is_empty() {
            self.protocol_type = Some(spec.protocol_type.to_owned());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.push(Member {
            id,
            instance_id: spec.instance_id,
            client_id: spec.ctx.client_id.to_owned(),
            client_host: spec.ctx.client_host.to_owned(),
            session_timeout_ms: spec.session_timeout_ms,
            rebalance_timeout_ms: spec.rebalance_timeout_ms,
            protocols: spec.protocols,
            assignment: Bytes::new(),
            heartbeat_deadline_ms: now_ms.saturating_add(spec.session_timeout_ms),
            join: Some(Pending {
                token,
                version: spec.ctx.version,
            }),
            sync: None,
        });
        if self.state == GroupState::PreparingRebalance && self.initial_delay {
            let cap = self
                .rebalance_started_ms
                .saturating_add(self.rebalance_timeout_ms());
            self.join_deadline_ms = now_ms
                .saturating_add(cfg.initial_rebalance_delay_ms)
                .min(cap);
        }
        self.rebalance(now_ms, cfg, fx);
    }

    /// A known member rejoins with (maybe) new protocols: rebalance.
    fn update_member(
        &mut self,
        index: usize,
        spec: JoinSpec<'_>,
        token: Token,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) {
        let now_ms = spec.ctx.now_ms;
        let m = &mut self.members[index];
        let pending = Pending {
            token,
            version: spec.ctx.version,
        };
        if let Some(old) = m.join.replace(pending) {
            // A second join while the first waits: the first is answered
            // with a retriable error so that no token is left hanging.
            let response = join_error(old.version, ErrorCode::REBALANCE_IN_PROGRESS, &m.id);
            fx.completed.push((old.token, Completed::Join(response)));
        }
        m.protocols = spec.protocols;
        m.session_timeout_ms = spec.session_timeout_ms;
        m.rebalance_timeout_ms = spec.rebalance_timeout_ms;
        m.heartbeat_deadline_ms = now_ms.saturating_add(spec.session_timeout_ms);
        if spec.instance_id.is_some() {
            m.instance_id = spec.instance_id;
        }
        self.rebalance(now_ms, cfg, fx);
    }

    fn touch(&mut self, index: usize, now_ms: u64) {
        let m = &mut self.members[index];
        m.heartbeat_deadline_ms = now_ms.saturating_add(m.session_timeout_ms);
    }

    /// Timeouts: members-to-be, sessions, the join phase, the sync phase,
    /// and offset retention. Returns how many offsets expired.
    fn tick(&mut self, now_ms: u64, cfg: &GroupConfig, fx: &mut Effects) -> usize {
        let before = self.pending_members.len();
        self.pending_members.retain(|p| p.deadline_ms > now_ms);
        if self.pending_members.len() != before {
            self.maybe_complete_join(now_ms, fx);
        }

        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.kept_alive() && m.heartbeat_deadline_ms <= now_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            if self.remove_member(&id, now_ms, cfg, fx) {
                fx.removed.push((self.id.clone(), id));
            }
        }

        self.maybe_complete_join(now_ms, fx);

        if self.state == GroupState::CompletingRebalance && now_ms >= self.sync_deadline_ms {
            let unsynced: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.sync.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in unsynced {
                if self.remove_member(&id, now_ms, cfg, fx) {
                    fx.removed.push((self.id.clone(), id));
                }
            }
        }

        self.expire_offsets(now_ms, cfg)
    }

    /// Kafka's rule: a consumer group's offsets all expire once it has been
    /// empty for the retention time; a standalone committer's (no protocol
    /// type) expire one by one, by commit time.
    fn expire_offsets(&mut self, now_ms: u64, cfg: &GroupConfig) -> usize {
        if self.state != GroupState::Empty {
            return 0;
        }
        let retention = cfg.offsets_retention_ms;
        let mut expired = 0;
        if self.protocol_type.is_some() {
            if self.empty_since_ms.saturating_add(retention) <= now_ms {
                expired = self.offsets.values().map(BTreeMap::len).sum();
                self.offsets.clear();
            }
        } else {
            for partitions in self.offsets.values_mut() {
                partitions.retain(|_, o| {
                    let keep = commit_ms(o).saturating_add(retention) > now_ms;
                    expired += usize::from(!keep);
                    keep
                });
            }
            self.offsets.retain(|_, partitions| !partitions.is_empty());
        }
        expired
    }

    /// The earliest time [`Group::tick`] has something to do.
    fn next_deadline_ms(&self, cfg: &GroupConfig) -> Option<u64> {
        let pending = self.pending_members.iter().map(|p| p.deadline_ms);
        let sessions = self
            .members
            .iter()
            .filter(|m| !m.kept_alive())
            .map(|m| m.heartbeat_deadline_ms);
        let phase = match self.state {
            GroupState::PreparingRebalance => Some(self.join_deadline_ms),
            GroupState::CompletingRebalance => Some(self.sync_deadline_ms),
            GroupState::Empty if self.protocol_type.is_some() && !self.offsets.is_empty() => {
                Some(self.empty_since_ms.saturating_add(cfg.offsets_retention_ms))
            }
            GroupState::Empty => self
                .offsets
                .values()
                .flat_map(BTreeMap::values)
                .map(|o| commit_ms(o).saturating_add(cfg.offsets_retention_ms))
                .min(),
            _ => None,
        };
        // An empty group with nothing left is removed at the next tick.
        let removable = self.is_removable().then_some(0);
        pending.chain(sessions).chain(phase).chain(removable).min()
    }

    fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }
}

fn commit_ms(o: &CommittedOffset) -> u64 {
    u64::try_from(o.commit_timestamp_ms).unwrap_or(0)
}

fn join_error(version: i16, code: ErrorCode, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: code.code(),
        generation_id: -1,
        protocol_type: None,
        // Nullable from v7; before that an empty string.
        protocol_name: if version >= 7 {
            None
        } else {
            Some(KStr::default())
        },
        leader: KStr::default(),
        member_id: KStr::from(member_id),
        ..Default::default()
    }
}

fn sync_error(_version: i16, code: ErrorCode) -> SyncGroupResponse {
    SyncGroupResponse {
        error_code: code.code(),
        ..Default::default()
    }
}

/// Turns a pending reply into a ready one if the call itself completed it.
fn settle<T>(
    reply: Reply<T>,
    mut completed: Vec<(Token, Completed)>,
    take: impl Fn(Completed) -> Result<T, Box<Completed>>,
) -> Outcome<T> {
    if let Reply::Pending(token) = reply {
        if let Some(pos) = completed.iter().position(|(t, _)| *t == token) {
            let (_, response) = completed.remove(pos);
            match take(response) {
                Ok(ready) => {
                    return Outcome {
                        reply: Reply::Ready(ready),
                        completed,
                    }
                }
                // A token is only ever completed with its own kind; should
                // that break, the completion goes back where it was.
                Err(other) => completed.insert(pos, (token, *other)),
            }
        }
    }
    Outcome { reply, completed }
}

/// Member ids and tokens.
#[derive(Debug)]
struct Ids {
    seed: u64,
    members_created: u64,
    tokens_issued: u64,
}

impl Ids {
    /// `<client_id>-<uuid-shaped seed and counter>`: unique within this
    /// coordinator's life, and across restarts if the seed differs.
    fn member_id(&mut self, client_id: &str) -> String {
        self.members_created += 1;
        let s = self.seed;
        let c = self.members_created;
        format!(
            "{client_id}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            s >> 32,
            (s >> 16) & 0xffff,
            s & 0xffff,
            c >> 48,
            c & 0xffff_ffff_ffff
        )
    }

    fn token(&mut self) -> Token {
        self.tokens_issued += 1;
        Token(self.tokens_issued)
    }
}

// ---------------------------------------------------------------------------
// The coordinator
// ---------------------------------------------------------------------------

/// Every classic group this node coordinates.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    ids: Ids,
    offsets_changes: u64,
}

impl GroupCoordinator {
    /// `id_seed` goes into every member id; pass something that differs
    /// between runs (the start time, a random number), so that a member id
    /// from before a restart is never handed out again.
    pub fn new(config: GroupConfig, id_seed: u64) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            ids: Ids {
                seed: id_seed,
                members_created: 0,
                tokens_issued: 0,
            },
            offsets_changes: 0,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Applies new settings (AlterConfigs); they apply to later requests.
    pub fn set_config(&mut self, config: GroupConfig) {
        self.config = config;
    }

    /// JoinGroup.
    pub fn join(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &JoinGroupRequest,
    ) -> Outcome<JoinGroupResponse> {
        let mut fx = Effects::default();
        let reply = self.join_inner(ctx, req, &mut fx);
        settle(reply, fx.completed, |c| match c {
            Completed::Join(r) => Ok(r),
            other => Err(Box::new(other)),
        })
    }

    fn join_inner(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &JoinGroupRequest,
        fx: &mut Effects,
    ) -> Reply<JoinGroupResponse> {
        let version = ctx.version;
        let now_ms = ctx.now_ms;
        let member_id = req.member_id.as_str();
        let fail = |code: ErrorCode| Reply::Ready(join_error(version, code, member_id));
        let cfg = &self.config;

        let group_id = req.group_id.as_str();
        if group_id.is_empty() {
            return fail(ErrorCode::INVALID_GROUP_ID);
        }
        let session_timeout_ms = match u64::try_from(req.session_timeout_ms) {
            Ok(t) if (cfg.session_timeout_ms_min..=cfg.session_timeout_ms_max).contains(&t) => t,
            _ => return fail(ErrorCode::INVALID_SESSION_TIMEOUT),
        };
        // v0 has no rebalance timeout: the session timeout stands in.
        let rebalance_timeout_ms = u64::try_from(req.rebalance_timeout_ms)
            .ok()
            .filter(|&t| version >= 1 && t > 0)
            .unwrap_or(session_timeout_ms);
        let protocol_type = req.protocol_type.as_str();
        if protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();

        if !self.groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return fail(ErrorCode::UNKNOWN_MEMBER_ID);
            }
            self.groups
                .insert(group_id.to_owned(), Group::new(group_id, now_ms));
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return fail(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if !group.supports(protocol_type, &protocols, member_id) {
            return fail(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        let spec = JoinSpec {
            ctx,
            instance_id: if version >= 5 {
                req.group_instance_id.as_ref().map(|s| s.to_string())
            } else {
                None
            },
            protocol_type,
            protocols,
            session_timeout_ms,
            rebalance_timeout_ms,
        };

        if member_id.is_empty() {
            if group.members.len() + group.pending_members.len() >= cfg.group_size_max {
                return fail(ErrorCode::GROUP_MAX_SIZE_REACHED);
            }
            let new_id = self.ids.member_id(ctx.client_id);
            if version >= 4 {
                // KIP-394: hand out the id, and let the client come back
                // with it, so that a join retried after a lost response
                // does not leave a ghost member behind.
                group.pending_members.push(PendingMember {
                    id: new_id.clone(),
                    deadline_ms: now_ms.saturating_add(session_timeout_ms),
                });
                return Reply::Ready(join_error(version, ErrorCode::MEMBER_ID_REQUIRED, &new_id));
            }
            let token = self.ids.token();
            group.add_member(new_id, spec, token, cfg, fx);
            return Reply::Pending(token);
        }

        if let Some(i) = group.pending_members.iter().position(|p| p.id == member_id) {
            group.pending_members.remove(i);
            let token = self.ids.token();
            group.add_member(member_id.to_owned(), spec, token, cfg, fx);
            return Reply::Pending(token);
        }
        let Some(index) = group.member_index(member_id) else {
            return fail(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        let unchanged = group.members[index].protocols == spec.protocols;
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ErrorCode::UNKNOWN_MEMBER_ID),
            GroupState::CompletingRebalance if unchanged => {
                // A join response was lost: send it again.
                group.touch(index, now_ms);
                Reply::Ready(group.join_response(member_id))
            }
            GroupState::Stable if unchanged && !group.is_leader(member_id) => {
                group.touch(index, now_ms);
                Reply::Ready(group.join_response(member_id))
            }
            // Rejoining during a join phase, or with new protocols, or the
            // leader asking for a new assignment.
            _ => {
                let token = self.ids.token();
                group.update_member(index, spec, token, cfg, fx);
                Reply::Pending(token)
            }
        }
    }

    /// SyncGroup. The leader's call completes everyone's; a follower's waits
    /// for the leader.
    pub fn sync(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &SyncGroupRequest,
    ) -> Outcome<SyncGroupResponse> {
        let mut fx = Effects::default();
        let reply = self.sync_inner(ctx, req, &mut fx);
        settle(reply, fx.completed, |c| match c {
            Completed::Sync(r) => Ok(r),
            other => Err(Box::new(other)),
        })
    }

    fn sync_inner(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &SyncGroupRequest,
        fx: &mut Effects,
    ) -> Reply<SyncGroupResponse> {
        let version = ctx.version;
        let fail = |code: ErrorCode| Reply::Ready(sync_error(version, code));
        let Some(group) = self.groups.get_mut(req.group_id.as_str()) else {
            return fail(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        let member_id = req.member_id.as_str();
        let Some(index) = group.member_index(member_id) else {
            return fail(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if req.generation_id != group.generation {
            return fail(ErrorCode::ILLEGAL_GENERATION);
        }
        if version >= 5 {
            let type_differs = req
                .protocol_type
                .as_ref()
                .is_some_and(|t| group.protocol_type.as_deref() != Some(t.as_str()));
            let name_differs = req
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_deref() != Some(n.as_str()));
            if type_differs || name_differs {
                return fail(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ErrorCode::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => fail(ErrorCode::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                group.touch(index, ctx.now_ms);
                let assignment = group.members[index].assignment.clone();
                Reply::Ready(group.sync_response(assignment))
            }
            GroupState::CompletingRebalance => {
                group.touch(index, ctx.now_ms);
                let token = self.ids.token();
                let pending = Pending { token, version };
                if let Some(old) = group.members[index].sync.replace(pending) {
                    let response = sync_error(old.version, ErrorCode::REBALANCE_IN_PROGRESS);
                    fx.completed.push((old.token, Completed::Sync(response)));
                }
                if group.is_leader(member_id) {
                    for m in &mut group.members {
                        // The last entry for a member wins; a member the
                        // leader left out gets an empty assignment.
                        m.assignment = req
                            .assignments
                            .iter()
                            .rev()
                            .find(|a| a.member_id.as_str() == m.id)
                            .map(|a| a.assignment.clone())
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    for i in 0..group.members.len() {
                        if let Some(p) = group.members[i].sync.take() {
                            let assignment = group.members[i].assignment.clone();
                            let response = group.sync_response(assignment);
                            fx.completed.push((p.token, Completed::Sync(response)));
                        }
                    }
                }
                Reply::Pending(token)
            }
        }
    }

    /// Heartbeat: keeps a member's session alive, and tells it when to
    /// rejoin (REBALANCE_IN_PROGRESS).
    pub fn heartbeat(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &HeartbeatRequest,
    ) -> HeartbeatResponse {
        let code = match self.groups.get_mut(req.group_id.as_str()) {
            None => ErrorCode::UNKNOWN_MEMBER_ID,
            Some(group) => match group.member_index(req.member_id.as_str()) {
                None => ErrorCode::UNKNOWN_MEMBER_ID,
                Some(_) if req.generation_id != group.generation => ErrorCode::ILLEGAL_GENERATION,
                Some(index) => {
                    group.touch(index, ctx.now_ms);
                    match group.state {
                        GroupState::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
                        GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::NONE,
                        GroupState::Empty | GroupState::Dead => ErrorCode::UNKNOWN_MEMBER_ID,
                    }
                }
            },
        };
        HeartbeatResponse {
            error_code: code.code(),
            ..Default::default()
        }
    }

    /// LeaveGroup: v0-2 name one member, v3+ a batch (by member id, or by
    /// instance id when the member id is empty).
    pub fn leave(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &LeaveGroupRequest,
    ) -> (LeaveGroupResponse, Vec<(Token, Completed)>) {
        let mut fx = Effects::default();
        let leaving: Vec<(KStr, Option<KStr>)> = if ctx.version <= 2 {
            vec![(req.member_id.clone(), None)]
        } else {
            req.members
                .iter()
                .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
                .collect()
        };
        let mut group = self.groups.get_mut(req.group_id.as_str());
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let code = match group.as_mut() {
                None => ErrorCode::UNKNOWN_MEMBER_ID,
                Some(g) => g.leave(
                    member_id.as_str(),
                    instance_id.as_deref(),
                    ctx.now_ms,
                    &self.config,
                    &mut fx,
                ),
            };
            results.push(MemberResponse {
                member_id,
                group_instance_id: instance_id,
                error_code: code.code(),
                ..Default::default()
            });
        }
        let response = if ctx.version <= 2 {
            LeaveGroupResponse {
                error_code: results.first().map_or(0, |r| r.error_code),
                ..Default::default()
            }
        } else {
            LeaveGroupResponse {
                error_code: ErrorCode::NONE.code(),
                members: results,
                ..Default::default()
            }
        };
        (response, fx.completed)
    }

    /// ListGroups, with the v4 state filter and the v5 type filter (every
    /// group here is "classic").
    pub fn list_groups(
        &self,
        ctx: &RequestContext<'_>,
        req: &ListGroupsRequest,
    ) -> ListGroupsResponse {
        let states: &[KStr] = if ctx.version >= 4 {
            &req.states_filter
        } else {
            &[]
        };
        let types: &[KStr] = if ctx.version >= 5 {
            &req.types_filter
        } else {
            &[]
        };
        let classic_wanted =
            types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic"));
        let groups = self
            .groups
            .values()
            .filter(|_| classic_wanted)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| ListedGroup {
                group_id: KStr::from(g.id.as_str()),
                protocol_type: KStr::from(g.protocol_type.as_deref().unwrap_or("")),
                group_state: KStr::from_static(g.state.name()),
                group_type: KStr::from_static("classic"),
                ..Default::default()
            })
            .collect();
        ListGroupsResponse {
            error_code: ErrorCode::NONE.code(),
            groups,
            ..Default::default()
        }
    }

    /// DescribeGroups. A group that does not exist is "Dead", without error,
    /// as in Kafka. Member metadata and assignments are shown only when the
    /// group is Stable.
    pub fn describe_groups(
        &self,
        _ctx: &RequestContext<'_>,
        req: &DescribeGroupsRequest,
    ) -> DescribeGroupsResponse {
        let groups = req
            .groups
            .iter()
            .map(|id| match self.groups.get(id.as_str()) {
                None => DescribedGroup {
                    error_code: ErrorCode::NONE.code(),
                    group_id: id.clone(),
                    group_state: KStr::from_static(GroupState::Dead.name()),
                    ..Default::default()
                },
                Some(g) => {
                    let stable = g.state == GroupState::Stable;
                    let protocol = g.protocol_name.as_deref().unwrap_or("");
                    DescribedGroup {
                        error_code: ErrorCode::NONE.code(),
                        group_id: id.clone(),
                        group_state: KStr::from_static(g.state.name()),
                        protocol_type: KStr::from(g.protocol_type.as_deref().unwrap_or("")),
                        protocol_data: KStr::from(if stable { protocol } else { "" }),
                        members: g
                            .members
                            .iter()
                            .map(|m| DescribedGroupMember {
                                member_id: KStr::from(m.id.as_str()),
                                group_instance_id: m.instance_id.as_deref().map(KStr::from),
                                client_id: KStr::from(m.client_id.as_str()),
                                client_host: KStr::from(m.client_host.as_str()),
                                member_metadata: if stable {
                                    m.metadata(protocol)
                                } else {
                                    Bytes::new()
                                },
                                member_assignment: if stable {
                                    m.assignment.clone()
                                } else {
                                    Bytes::new()
                                },
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }
                }
            })
            .collect();
        DescribeGroupsResponse {
            groups,
            ..Default::default()
        }
    }

    /// DeleteGroups: only groups without members; their offsets go too.
    pub fn delete_groups(
        &mut self,
        _ctx: &RequestContext<'_>,
        req: &DeleteGroupsRequest,
    ) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(req.groups_names.len());
        for name in &req.groups_names {
            let code = match self.groups.get(name.as_str()) {
                None => ErrorCode::GROUP_ID_NOT_FOUND,
                Some(g) if g.state != GroupState::Empty || !g.members.is_empty() => {
                    ErrorCode::NON_EMPTY_GROUP
                }
                Some(_) => {
                    if let Some(g) = self.groups.remove(name.as_str()) {
                        if !g.offsets.is_empty() {
                            self.offsets_changes += 1;
                        }
                    }
                    ErrorCode::NONE
                }
            };
            results.push(DeletableGroupResult {
                group_id: name.clone(),
                error_code: code.code(),
                ..Default::default()
            });
        }
        DeleteGroupsResponse {
            results,
            ..Default::default()
        }
    }

    /// Runs every timeout due at `now_ms`: members-to-be and sessions
    /// expire, join and sync phases end, offsets of long-empty groups expire,
    /// and empty groups without offsets are removed. Call it at
    /// [`GroupCoordinator::next_deadline_ms`], or every few hundred ms.
    pub fn tick(&mut self, now_ms: u64) -> TickOutcome {
        let mut fx = Effects::default();
        let mut expired_offsets = 0;
        for group in self.groups.values_mut() {
            expired_offsets += group.tick(now_ms, &self.config, &mut fx);
        }
        let mut removed_groups = Vec::new();
        self.groups.retain(|id, g| {
            let remove = g.is_removable();
            if remove {
                removed_groups.push(id.clone());
            }
            !remove
        });
        if expired_offsets > 0 {
            self.offsets_changes += 1;
        }
        TickOutcome {
            completed: fx.completed,
            expired_members: fx.removed,
            removed_groups,
            expired_offsets,
        }
    }

    /// The earliest time at which [`GroupCoordinator::tick`] has work, if
    /// any. It changes with every request.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.groups
            .values()
            .filter_map(|g| g.next_deadline_ms(&self.config))
            .min()
    }

    /// The state of a group; `Dead` if there is none.
    pub fn state(&self, group_id: &str) -> GroupState {
        self.groups
            .get(group_id)
            .map_or(GroupState::Dead, |g| g.state)
    }

    /// The generation of a group, if it exists.
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation)
    }

    /// The member ids of a group, in join order.
    pub fn member_ids(&self, group_id: &str) -> Vec<String> {
        self.groups
            .get(group_id)
            .map(|g| g.members.iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default()
    }

    /// The leader of a group, if it has members.
    pub fn leader(&self, group_id: &str) -> Option<&str> {
        self.groups.get(group_id).and_then(|g| g.leader.as_deref())
    }

    /// Number of groups held, empty ones with offsets included.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use ferry_protocol::messages::leave_group_request::MemberIdentity;
    use ferry_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use ferry_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use ferry_protocol::messages::sync_group_request::SyncGroupRequestAssignment;

    const GROUP: &str = "g";
    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        }
    }

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::new(config(), 0xfeed_f00d_dead_beef)
    }

    fn ctx(version: i16, now_ms: u64) -> RequestContext<'static> {
        RequestContext {
            version,
            client_id: "client",
            client_host: "/127.0.0.1",
            now_ms,
        }
    }

    fn join_req(member_id: &str, protocols: &[(&str, &[u8])]) -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: GROUP.into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            member_id: member_id.into(),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(name, meta)| JoinGroupRequestProtocol {
                    name: (*name).into(),
                    metadata: Bytes::copy_from_slice(meta),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn range() -> Vec<(&'static str, &'static [u8])> {
        vec![("range", b"sub")]
    }

    fn ready<T: std::fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Ready(r) => r,
            Reply::Pending(t) => panic!("expected a ready reply, got pending {t:?}"),
        }
    }

    fn pending<T: std::fmt::Debug>(reply: Reply<T>) -> Token {
        match reply {
            Reply::Pending(t) => t,
            Reply::Ready(r) => panic!("expected a pending reply, got {r:?}"),
        }
    }

    fn join_completion(completed: &[(Token, Completed)], token: Token) -> &JoinGroupResponse {
        match completed.iter().find(|(t, _)| *t == token) {
            Some((_, Completed::Join(r))) => r,
            other => panic!("no join completion for {token:?}: {other:?} in {completed:?}"),
        }
    }

    fn sync_completion(completed: &[(Token, Completed)], token: Token) -> &SyncGroupResponse {
        match completed.iter().find(|(t, _)| *t == token) {
            Some((_, Completed::Sync(r))) => r,
            other => panic!("no sync completion for {token:?}: {other:?} in {completed:?}"),
        }
    }

    /// The v4+ two-step join: MEMBER_ID_REQUIRED, then the real join.
    fn new_member_id(c: &mut GroupCoordinator, now: u64) -> String {
        let r = ready(c.join(&ctx(7, now), &join_req("", &range())).reply);
        assert_eq!(r.error_code, ErrorCode::MEMBER_ID_REQUIRED.code());
        assert!(r.member_id.starts_with("client-"), "{:?}", r.member_id);
        r.member_id.to_string()
    }

    fn sync_req(
        member_id: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> SyncGroupRequest {
        SyncGroupRequest {
            group_id: GROUP.into(),
            generation_id: generation,
            member_id: member_id.into(),
            assignments: assignments
                .iter()
                .map(|(m, a)| SyncGroupRequestAssignment {
                    member_id: (*m).into(),
                    assignment: Bytes::copy_from_slice(a),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn heartbeat(
        c: &mut GroupCoordinator,
        member_id: &str,
        generation: i32,
        now: u64,
    ) -> ErrorCode {
        let req = HeartbeatRequest {
            group_id: GROUP.into(),
            generation_id: generation,
            member_id: member_id.into(),
            ..Default::default()
        };
        ErrorCode(c.heartbeat(&ctx(4, now), &req).error_code)
    }

    /// Joins one member into an empty group and syncs it: generation 1.
    fn stable_single(c: &mut GroupCoordinator, now: u64) -> String {
        let a = new_member_id(c, now);
        let r = ready(c.join(&ctx(7, now), &join_req(&a, &range())).reply);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.leader.as_str(), a);
        let s = c.sync(&ctx(5, now), &sync_req(&a, r.generation_id, &[(&a, b"A")]));
        assert_eq!(ready(s.reply).assignment.as_ref(), b"A");
        a
    }

    /// Two members in a stable group, generation 2: a is the leader.
    fn stable_pair(c: &mut GroupCoordinator, now: u64) -> (String, String) {
        let a = stable_single(c, now);
        let b = new_member_id(c, now);
        let b_token = pending(c.join(&ctx(7, now), &join_req(&b, &range())).reply);
        assert_eq!(c.state(GROUP), GroupState::PreparingRebalance);
        assert_eq!(heartbeat(c, &a, 1, now), ErrorCode::REBALANCE_IN_PROGRESS);
        let out = c.join(&ctx(7, now), &join_req(&a, &range()));
        let leader = ready(out.reply);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(leader.members.len(), 2);
        let follower = join_completion(&out.completed, b_token);
        assert_eq!(follower.generation_id, 2);
        assert!(follower.members.is_empty());
        assert_eq!(follower.leader.as_str(), a);

        let b_sync = pending(c.sync(&ctx(5, now), &sync_req(&b, 2, &[])).reply);
        let out = c.sync(&ctx(5, now), &sync_req(&a, 2, &[(&a, b"A"), (&b, b"B")]));
        assert_eq!(ready(out.reply).assignment.as_ref(), b"A");
        assert_eq!(
            sync_completion(&out.completed, b_sync).assignment.as_ref(),
            b"B"
        );
        assert_eq!(c.state(GROUP), GroupState::Stable);
        (a, b)
    }

    #[test]
    fn single_member_joins_and_syncs() {
        let mut c = coordinator();
        let a = stable_single(&mut c, 1_000);
        assert_eq!(c.state(GROUP), GroupState::Stable);
        assert_eq!(c.generation(GROUP), Some(1));
        assert_eq!(c.leader(GROUP), Some(a.as_str()));
        assert_eq!(heartbeat(&mut c, &a, 1, 2_000), ErrorCode::NONE);
    }

    #[test]
    fn member_ids_are_client_id_and_a_uuid_shape() {
        let mut c = coordinator();
        let id = new_member_id(&mut c, 0);
        assert_eq!(id, "client-feedf00d-dead-beef-0000-000000000001");
        let next = new_member_id(&mut c, 0);
        assert_ne!(id, next);
        // A different seed (a restart) never repeats an id.
        let mut c2 = GroupCoordinator::new(config(), 1);
        assert_ne!(new_member_id(&mut c2, 0), id);
    }

    #[test]
    fn old_versions_join_without_member_id_required() {
        let mut c = coordinator();
        let out = c.join(&ctx(3, 0), &join_req("", &range()));
        let r = ready(out.reply);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
    }

    #[test]
    fn two_members_join_then_one_leaves() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);

        // b leaves: a must rejoin, alone.
        let leave = LeaveGroupRequest {
            group_id: GROUP.into(),
            members: vec![MemberIdentity {
                member_id: b.as_str().into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (response, completed) = c.leave(&ctx(3, 100), &leave);
        assert!(completed.is_empty());
        assert_eq!(response.members[0].error_code, 0);
        assert_eq!(c.state(GROUP), GroupState::PreparingRebalance);
        assert_eq!(
            heartbeat(&mut c, &a, 2, 200),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        assert_eq!(heartbeat(&mut c, &b, 2, 200), ErrorCode::UNKNOWN_MEMBER_ID);

        let r = ready(c.join(&ctx(7, 300), &join_req(&a, &range())).reply);
        assert_eq!(r.generation_id, 3);
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.leader.as_str(), a);
        let s = ready(
            c.sync(&ctx(5, 300), &sync_req(&a, 3, &[(&a, b"all")]))
                .reply,
        );
        assert_eq!(s.assignment.as_ref(), b"all");
        assert_eq!(c.member_ids(GROUP), vec![a.clone()]);

        // v0 leave of the last member: the group empties, generation moves on.
        let leave = LeaveGroupRequest {
            group_id: GROUP.into(),
            member_id: a.as_str().into(),
            ..Default::default()
        };
        let (response, _) = c.leave(&ctx(0, 400), &leave);
        assert_eq!(response.error_code, 0);
        assert_eq!(c.state(GROUP), GroupState::Empty);
        assert_eq!(c.generation(GROUP), Some(4));
        let (response, _) = c.leave(&ctx(0, 500), &leave);
        assert_eq!(response.error_code, ErrorCode::UNKNOWN_MEMBER_ID.code());
    }

    #[test]
    fn leader_leaving_hands_leadership_on() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        let leave = LeaveGroupRequest {
            group_id: GROUP.into(),
            member_id: a.as_str().into(),
            ..Default::default()
        };
        c.leave(&ctx(1, 10), &leave);
        let r = ready(c.join(&ctx(7, 20), &join_req(&b, &range())).reply);
        assert_eq!(r.leader.as_str(), b);
        assert_eq!(r.members.len(), 1);
    }

    #[test]
    fn session_expiry_removes_a_silent_member() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        let session = u64::try_from(SESSION_MS).unwrap();
        // a keeps heartbeating, b goes silent.
        assert_eq!(heartbeat(&mut c, &a, 2, session / 2), ErrorCode::NONE);
        let t = c.tick(session - 1);
        assert!(t.expired_members.is_empty());
        assert_eq!(c.next_deadline_ms(), Some(session));
        let t = c.tick(session);
        assert_eq!(t.expired_members, vec![(GROUP.to_owned(), b.clone())]);
        assert_eq!(c.state(GROUP), GroupState::PreparingRebalance);
        assert_eq!(
            heartbeat(&mut c, &a, 2, session + 1),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        let r = ready(c.join(&ctx(7, session + 2), &join_req(&a, &range())).reply);
        assert_eq!((r.generation_id, r.members.len()), (3, 1));
    }

    #[test]
    fn member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        let late = new_member_id(&mut c, 1_000);
        let late_token = pending(c.join(&ctx(7, 1_000), &join_req(&late, &range())).reply);
        let a_token = pending(c.join(&ctx(7, 1_100), &join_req(&a, &range())).reply);
        // b heartbeats (so its session holds) but never rejoins.
        for now in (2_000..30_000).step_by(3_000) {
            assert_eq!(
                heartbeat(&mut c, &b, 2, now),
                ErrorCode::REBALANCE_IN_PROGRESS
            );
            assert!(c.tick(now).completed.is_empty());
        }
        let deadline = 1_000 + u64::try_from(REBALANCE_MS).unwrap();
        assert_eq!(c.next_deadline_ms(), Some(deadline));
        let t = c.tick(deadline);
        assert_eq!(t.expired_members, vec![(GROUP.to_owned(), b.clone())]);
        let leader = join_completion(&t.completed, a_token);
        assert_eq!(leader.generation_id, 3);
        assert_eq!(leader.members.len(), 2);
        assert_eq!(join_completion(&t.completed, late_token).generation_id, 3);
        assert_eq!(
            heartbeat(&mut c, &b, 3, deadline),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn late_joiner_triggers_a_rebalance() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        let cid = new_member_id(&mut c, 50);
        let c_token = pending(c.join(&ctx(7, 50), &join_req(&cid, &range())).reply);
        assert_eq!(c.state(GROUP), GroupState::PreparingRebalance);
        // The old members learn of it from their heartbeats.
        assert_eq!(
            heartbeat(&mut c, &a, 2, 60),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            heartbeat(&mut c, &b, 2, 60),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
        // A sync of the old generation during the rebalance is refused.
        let s = ready(c.sync(&ctx(5, 61), &sync_req(&b, 2, &[])).reply);
        assert_eq!(s.error_code, ErrorCode::REBALANCE_IN_PROGRESS.code());
        let b_token = pending(c.join(&ctx(7, 70), &join_req(&b, &range())).reply);
        let out = c.join(&ctx(7, 80), &join_req(&a, &range()));
        let leader = ready(out.reply);
        assert_eq!(leader.generation_id, 3);
        let ids: Vec<&str> = leader
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(ids, vec![a.as_str(), b.as_str(), cid.as_str()]);
        assert_eq!(out.completed.len(), 2);
        join_completion(&out.completed, b_token);
        join_completion(&out.completed, c_token);
    }

    #[test]
    fn follower_sync_waits_for_the_leader() {
        let mut c = coordinator();
        let a = new_member_id(&mut c, 0);
        let b = new_member_id(&mut c, 0);
        // a's join waits: b holds a member id and has not joined yet.
        let a_token = pending(c.join(&ctx(7, 0), &join_req(&a, &range())).reply);
        let out = c.join(&ctx(7, 1), &join_req(&b, &range()));
        let b_join = ready(out.reply);
        let a_join = join_completion(&out.completed, a_token);
        assert_eq!(a_join.leader.as_str(), a);
        assert_eq!(b_join.generation_id, 1);
        assert_eq!(c.state(GROUP), GroupState::CompletingRebalance);

        // The follower syncs first and waits, heartbeats fine meanwhile.
        let b_sync = pending(c.sync(&ctx(5, 2), &sync_req(&b, 1, &[])).reply);
        assert_eq!(heartbeat(&mut c, &b, 1, 3), ErrorCode::NONE);
        // Commits are refused until the assignment is out.
        let commit = commit_req(&b, 1, &[("t", 0, 5)]);
        let r = c.offset_commit(&ctx(8, 3), &commit);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::REBALANCE_IN_PROGRESS.code()
        );

        let out = c.sync(
            &ctx(5, 4),
            &sync_req(&a, 1, &[(&a, b"for a"), (&b, b"for b")]),
        );
        let a_sync = ready(out.reply);
        assert_eq!(a_sync.assignment.as_ref(), b"for a");
        assert_eq!(a_sync.protocol_name.as_deref(), Some("range"));
        assert_eq!(a_sync.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(out.completed.len(), 1);
        assert_eq!(
            sync_completion(&out.completed, b_sync).assignment.as_ref(),
            b"for b"
        );
        assert_eq!(c.state(GROUP), GroupState::Stable);
        // A repeated sync in Stable answers at once with the same assignment.
        let again = ready(c.sync(&ctx(5, 5), &sync_req(&b, 1, &[])).reply);
        assert_eq!(again.assignment.as_ref(), b"for b");
    }

    #[test]
    fn leader_that_never_syncs_is_removed_and_followers_rejoin() {
        let mut c = coordinator();
        let a = new_member_id(&mut c, 0);
        let b = new_member_id(&mut c, 0);
        pending(c.join(&ctx(7, 0), &join_req(&a, &range())).reply);
        ready(c.join(&ctx(7, 0), &join_req(&b, &range())).reply);
        let b_sync = pending(c.sync(&ctx(5, 1), &sync_req(&b, 1, &[])).reply);
        // The leader heartbeats (so its session holds) but never syncs.
        for now in (5_000..30_000).step_by(5_000) {
            assert_eq!(heartbeat(&mut c, &a, 1, now), ErrorCode::NONE);
            assert!(c.tick(now).completed.is_empty());
        }
        let deadline = u64::try_from(REBALANCE_MS).unwrap();
        assert_eq!(c.next_deadline_ms(), Some(deadline));
        let t = c.tick(deadline);
        assert_eq!(t.expired_members, vec![(GROUP.to_owned(), a.clone())]);
        let r = sync_completion(&t.completed, b_sync);
        assert_eq!(r.error_code, ErrorCode::REBALANCE_IN_PROGRESS.code());
        let r = ready(c.join(&ctx(7, deadline + 1), &join_req(&b, &range())).reply);
        assert_eq!((r.generation_id, r.leader.as_str()), (2, b.as_str()));
    }

    #[test]
    fn wrong_generation_and_unknown_members() {
        let mut c = coordinator();
        let (a, _b) = stable_pair(&mut c, 0);
        assert_eq!(heartbeat(&mut c, &a, 1, 10), ErrorCode::ILLEGAL_GENERATION);
        assert_eq!(heartbeat(&mut c, &a, 3, 10), ErrorCode::ILLEGAL_GENERATION);
        assert_eq!(
            heartbeat(&mut c, "nobody", 2, 10),
            ErrorCode::UNKNOWN_MEMBER_ID
        );
        let s = ready(c.sync(&ctx(5, 10), &sync_req(&a, 1, &[])).reply);
        assert_eq!(s.error_code, ErrorCode::ILLEGAL_GENERATION.code());
        let s = ready(c.sync(&ctx(5, 10), &sync_req("nobody", 2, &[])).reply);
        assert_eq!(s.error_code, ErrorCode::UNKNOWN_MEMBER_ID.code());
        let r = c.offset_commit(&ctx(8, 10), &commit_req(&a, 1, &[("t", 0, 1)]));
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::ILLEGAL_GENERATION.code()
        );
        let r = c.offset_commit(&ctx(8, 10), &commit_req("nobody", 2, &[("t", 0, 1)]));
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UNKNOWN_MEMBER_ID.code()
        );
        // A join naming an unknown member of an unknown group.
        let mut req = join_req("ghost", &range());
        req.group_id = "other".into();
        let r = ready(c.join(&ctx(7, 10), &req).reply);
        assert_eq!(r.error_code, ErrorCode::UNKNOWN_MEMBER_ID.code());
        assert_eq!(r.protocol_name, None);
        let r = ready(c.join(&ctx(6, 10), &req).reply);
        assert_eq!(r.protocol_name.as_deref(), Some(""), "non-null before v7");
        assert_eq!(c.state("other"), GroupState::Dead);
        // A heartbeat to a group that does not exist.
        let hb = HeartbeatRequest {
            group_id: "other".into(),
            generation_id: 1,
            member_id: "ghost".into(),
            ..Default::default()
        };
        assert_eq!(
            c.heartbeat(&ctx(4, 10), &hb).error_code,
            ErrorCode::UNKNOWN_MEMBER_ID.code()
        );
    }

    #[test]
    fn join_validation() {
        let mut c = coordinator();
        let mut req = join_req("", &range());
        req.group_id = "".into();
        let code = |c: &mut GroupCoordinator, req: &JoinGroupRequest| {
            ErrorCode(ready(c.join(&ctx(7, 0), req).reply).error_code)
        };
        assert_eq!(code(&mut c, &req), ErrorCode::INVALID_GROUP_ID);
        let mut req = join_req("", &range());
        req.session_timeout_ms = 10;
        assert_eq!(code(&mut c, &req), ErrorCode::INVALID_SESSION_TIMEOUT);
        req.session_timeout_ms = -1;
        assert_eq!(code(&mut c, &req), ErrorCode::INVALID_SESSION_TIMEOUT);
        let req = join_req("", &[]);
        assert_eq!(code(&mut c, &req), ErrorCode::INCONSISTENT_GROUP_PROTOCOL);

        // Protocol selection: the one most members prefer, among the common.
        let a = stable_single(&mut c, 0);
        let b = new_member_id(&mut c, 1);
        let mut other_type = join_req(&b, &range());
        other_type.protocol_type = "connect".into();
        assert_eq!(
            code(&mut c, &other_type),
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL
        );
        let disjoint = join_req(&b, &[("roundrobin", b"")]);
        assert_eq!(
            code(&mut c, &disjoint),
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL
        );
        let both: &[(&str, &[u8])] = &[("sticky", b"s"), ("range", b"r")];
        let b_token = pending(c.join(&ctx(7, 2), &join_req(&b, both)).reply);
        // a now prefers sticky too: sticky wins 2-0.
        let out = c.join(&ctx(7, 3), &join_req(&a, both));
        let leader = ready(out.reply);
        assert_eq!(leader.protocol_name.as_deref(), Some("sticky"));
        assert!(leader.members.iter().all(|m| m.metadata.as_ref() == b"s"));
        assert_eq!(
            join_completion(&out.completed, b_token)
                .protocol_name
                .as_deref(),
            Some("sticky")
        );
    }

    #[test]
    fn group_size_is_bounded() {
        let mut c = GroupCoordinator::new(
            GroupConfig {
                group_size_max: 2,
                ..config()
            },
            7,
        );
        new_member_id(&mut c, 0);
        new_member_id(&mut c, 0);
        let r = ready(c.join(&ctx(7, 0), &join_req("", &range())).reply);
        assert_eq!(r.error_code, ErrorCode::GROUP_MAX_SIZE_REACHED.code());
    }

    #[test]
    fn unused_member_ids_expire_and_empty_groups_go() {
        let mut c = coordinator();
        new_member_id(&mut c, 0);
        assert_eq!(c.group_count(), 1);
        let t = c.tick(u64::try_from(SESSION_MS).unwrap());
        assert_eq!(t.removed_groups, vec![GROUP.to_owned()]);
        assert_eq!(c.group_count(), 0);
        assert_eq!(c.next_deadline_ms(), None);
    }

    #[test]
    fn initial_rebalance_delay_waits_for_more_members() {
        let mut c = GroupCoordinator::new(
            GroupConfig {
                initial_rebalance_delay_ms: 3_000,
                ..config()
            },
            1,
        );
        let a = new_member_id(&mut c, 0);
        let a_token = pending(c.join(&ctx(7, 0), &join_req(&a, &range())).reply);
        assert_eq!(c.next_deadline_ms(), Some(3_000));
        let b = new_member_id(&mut c, 2_000);
        let b_token = pending(c.join(&ctx(7, 2_000), &join_req(&b, &range())).reply);
        // b's arrival pushed the end of the delay to 5 000.
        assert!(c.tick(4_999).completed.is_empty());
        let t = c.tick(5_000);
        assert_eq!(join_completion(&t.completed, a_token).members.len(), 2);
        assert_eq!(join_completion(&t.completed, b_token).generation_id, 1);
    }

    #[test]
    fn rejoin_without_changes_gets_the_current_generation() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        // A follower rejoining with the same metadata in Stable: no rebalance.
        let r = ready(c.join(&ctx(7, 10), &join_req(&b, &range())).reply);
        assert_eq!((r.generation_id, r.leader.as_str()), (2, a.as_str()));
        assert_eq!(c.state(GROUP), GroupState::Stable);
        // With new metadata it rebalances.
        let changed: &[(&str, &[u8])] = &[("range", b"new topics")];
        pending(c.join(&ctx(7, 20), &join_req(&b, changed)).reply);
        assert_eq!(c.state(GROUP), GroupState::PreparingRebalance);
        let out = c.join(&ctx(7, 30), &join_req(&a, &range()));
        let leader = ready(out.reply);
        let b_meta = leader
            .members
            .iter()
            .find(|m| m.member_id.as_str() == b)
            .unwrap();
        assert_eq!(b_meta.metadata.as_ref(), b"new topics");
    }

    fn commit_req(
        member_id: &str,
        generation: i32,
        offsets: &[(&str, i32, i64)],
    ) -> OffsetCommitRequest {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for &(topic, partition, offset) in offsets {
            let p = OffsetCommitRequestPartition {
                partition_index: partition,
                committed_offset: offset,
                committed_leader_epoch: 4,
                committed_metadata: Some(format!("m{offset}").into()),
                ..Default::default()
            };
            match topics.iter_mut().find(|t| t.name.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(OffsetCommitRequestTopic {
                    name: topic.into(),
                    partitions: vec![p],
                    ..Default::default()
                }),
            }
        }
        OffsetCommitRequest {
            group_id: GROUP.into(),
            generation_id_or_member_epoch: generation,
            member_id: member_id.into(),
            topics,
            ..Default::default()
        }
    }

    fn fetch_v7(topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
        OffsetFetchRequest {
            group_id: GROUP.into(),
            topics: topics.map(|ts| {
                ts.iter()
                    .map(|(name, parts)| OffsetFetchRequestTopic {
                        name: (*name).into(),
                        partition_indexes: parts.to_vec(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn commit_and_fetch_offsets() {
        let mut c = coordinator();
        let (a, _b) = stable_pair(&mut c, 0);
        let r = c.offset_commit(
            &ctx(8, 5_000),
            &commit_req(&a, 2, &[("t", 0, 10), ("t", 1, 20), ("u", 0, 30)]),
        );
        assert!(r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .all(|p| p.error_code == 0));
        assert_eq!(c.offsets_changes(), 1);
        let o = c.committed(GROUP, "t", 1).unwrap();
        assert_eq!(
            o,
            &CommittedOffset {
                offset: 20,
                leader_epoch: 4,
                metadata: "m20".into(),
                commit_timestamp_ms: 5_000,
            }
        );

        // v7: named partitions, unknown ones are -1 without error.
        let r = c.offset_fetch(
            &ctx(7, 6_000),
            &fetch_v7(Some(&[("t", &[0, 1, 2]), ("nope", &[0])])),
        );
        assert_eq!(r.error_code, 0);
        let got: Vec<(String, i32, i64, i32, Option<String>)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref().map(|m| m.to_string()),
                    )
                })
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t".into(), 0, 10, 4, Some("m10".into())),
                ("t".into(), 1, 20, 4, Some("m20".into())),
                ("t".into(), 2, -1, -1, Some(String::new())),
                ("nope".into(), 0, -1, -1, Some(String::new())),
            ]
        );
        // v7 with null topics: everything committed.
        let r = c.offset_fetch(&ctx(7, 6_000), &fetch_v7(None));
        let names: Vec<&str> = r.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["t", "u"]);
        assert_eq!(r.topics[0].partitions.len(), 2);

        // v8: several groups at once, one unknown.
        let req = OffsetFetchRequest {
            groups: vec![
                OffsetFetchRequestGroup {
                    group_id: GROUP.into(),
                    topics: Some(vec![OffsetFetchRequestTopics {
                        name: "u".into(),
                        partition_indexes: vec![0],
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                OffsetFetchRequestGroup {
                    group_id: "unknown".into(),
                    topics: None,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = c.offset_fetch(&ctx(8, 6_000), &req);
        assert_eq!(r.groups.len(), 2);
        assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 30);
        assert!(r.groups[1].topics.is_empty());
        assert_eq!(r.groups[1].error_code, 0);

        // Metadata too large.
        let mut big = commit_req(&a, 2, &[("t", 0, 11)]);
        big.topics[0].partitions[0].committed_metadata = Some("x".repeat(5000).into());
        let r = c.offset_commit(&ctx(8, 7_000), &big);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::OFFSET_METADATA_TOO_LARGE.code()
        );
        assert_eq!(c.committed(GROUP, "t", 0).unwrap().offset, 10);

        // Old versions: no leader epoch before v6; v1 carries its own timestamp.
        let mut v1 = commit_req(&a, 2, &[("t", 0, 12)]);
        v1.topics[0].partitions[0].commit_timestamp = 42;
        c.offset_commit(&ctx(1, 8_000), &v1);
        let o = c.committed(GROUP, "t", 0).unwrap();
        assert_eq!(
            (o.offset, o.leader_epoch, o.commit_timestamp_ms),
            (12, -1, 42)
        );
    }

    #[test]
    fn standalone_commits_only_while_the_group_is_empty() {
        let mut c = coordinator();
        // No group yet: generation -1 and no member creates it.
        let r = c.offset_commit(&ctx(8, 0), &commit_req("", -1, &[("t", 0, 7)]));
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        assert_eq!(c.state(GROUP), GroupState::Empty);
        assert_eq!(c.committed(GROUP, "t", 0).unwrap().offset, 7);
        // v0 has no generation at all.
        let r = c.offset_commit(&ctx(0, 0), &commit_req("ignored in v0", 99, &[("t", 0, 8)]));
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        // A generation for a group that does not exist is stale.
        let mut other = commit_req("m", 3, &[("t", 0, 1)]);
        other.group_id = "other".into();
        let r = c.offset_commit(&ctx(8, 0), &other);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::ILLEGAL_GENERATION.code()
        );
        // Once the group has members, standalone commits are refused.
        stable_single(&mut c, 10);
        let r = c.offset_commit(&ctx(8, 20), &commit_req("", -1, &[("t", 0, 9)]));
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UNKNOWN_MEMBER_ID.code()
        );
        assert_eq!(c.committed(GROUP, "t", 0).unwrap().offset, 8);
    }

    #[test]
    fn list_describe_and_delete_groups() {
        let mut c = coordinator();
        let (a, b) = stable_pair(&mut c, 0);
        let mut simple = commit_req("", -1, &[("t", 0, 1)]);
        simple.group_id = "simple".into();
        c.offset_commit(&ctx(8, 0), &simple);

        let r = c.list_groups(&ctx(5, 0), &ListGroupsRequest::default());
        let listed: Vec<(&str, &str, &str)> = r
            .groups
            .iter()
            .map(|g| {
                (
                    g.group_id.as_str(),
                    g.group_state.as_str(),
                    g.protocol_type.as_str(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![(GROUP, "Stable", "consumer"), ("simple", "Empty", "")]
        );
        let filtered = c.list_groups(
            &ctx(4, 0),
            &ListGroupsRequest {
                states_filter: vec!["empty".into()],
                ..Default::default()
            },
        );
        assert_eq!(filtered.groups.len(), 1);
        let typed = c.list_groups(
            &ctx(5, 0),
            &ListGroupsRequest {
                types_filter: vec!["consumer".into()],
                ..Default::default()
            },
        );
        assert!(typed.groups.is_empty(), "no KIP-848 groups here");

        let r = c.describe_groups(
            &ctx(5, 0),
            &DescribeGroupsRequest {
                groups: vec![GROUP.into(), "missing".into()],
                ..Default::default()
            },
        );
        let g = &r.groups[0];
        assert_eq!(
            (g.group_state.as_str(), g.protocol_data.as_str()),
            ("Stable", "range")
        );
        let members: Vec<(&str, &[u8], &[u8])> = g
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str(),
                    m.member_metadata.as_ref(),
                    m.member_assignment.as_ref(),
                )
            })
            .collect();
        assert_eq!(
            members,
            vec![
                (a.as_str(), &b"sub"[..], &b"A"[..]),
                (b.as_str(), &b"sub"[..], &b"B"[..])
            ]
        );
        assert_eq!(g.members[0].client_host.as_str(), "/127.0.0.1");
        assert_eq!(r.groups[1].group_state.as_str(), "Dead");
        assert_eq!(r.groups[1].error_code, 0);

        let r = c.delete_groups(
            &ctx(2, 0),
            &DeleteGroupsRequest {
                groups_names: vec![GROUP.into(), "simple".into(), "missing".into()],
                ..Default::default()
            },
        );
        let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![
                ErrorCode::NON_EMPTY_GROUP.code(),
                0,
                ErrorCode::GROUP_ID_NOT_FOUND.code()
            ]
        );
        assert_eq!(c.committed("simple", "t", 0), None);
    }

    #[test]
    fn offsets_expire_after_the_group_has_been_empty_for_the_retention() {
        let day = 24 * 60 * 60 * 1000;
        let mut c = GroupCoordinator::new(
            GroupConfig {
                offsets_retention_ms: day,
                ..config()
            },
            3,
        );
        let a = stable_single(&mut c, 0);
        c.offset_commit(&ctx(8, 0), &commit_req(&a, 1, &[("t", 0, 1)]));
        let leave = LeaveGroupRequest {
            group_id: GROUP.into(),
            member_id: a.as_str().into(),
            ..Default::default()
        };
        c.leave(&ctx(0, 1_000), &leave);
        assert_eq!(c.state(GROUP), GroupState::Empty);
        // A stable group keeps its offsets however old; an empty one for a day.
        assert_eq!(c.tick(day).expired_offsets, 0);
        assert_eq!(c.next_deadline_ms(), Some(day + 1_000));
        let t = c.tick(day + 1_000);
        assert_eq!(t.expired_offsets, 1);
        assert_eq!(t.removed_groups, vec![GROUP.to_owned()]);
    }

    #[test]
    fn delete_topic_drops_its_offsets() {
        let mut c = coordinator();
        c.offset_commit(
            &ctx(8, 0),
            &commit_req("", -1, &[("t", 0, 1), ("t", 1, 2), ("u", 0, 3)]),
        );
        assert_eq!(c.delete_topic_offsets("t"), 2);
        assert_eq!(c.committed(GROUP, "u", 0).unwrap().offset, 3);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut c = coordinator();
        let (a, _) = stable_pair(&mut c, 0);
        c.offset_commit(
            &ctx(8, 5),
            &commit_req(
                &a,
                2,
                &[("t", 0, 10), ("t", 7, 70), ("ü-topic", 2, i64::MAX)],
            ),
        );
        let mut simple = commit_req("", -1, &[("x", -1, -5)]);
        simple.group_id = "standalone".into();
        simple.topics[0].partitions[0].committed_metadata = None;
        c.offset_commit(&ctx(8, 6), &simple);
        let snapshot = c.snapshot();

        let mut d = GroupCoordinator::new(config(), 9);
        assert_eq!(d.restore(&snapshot, 100).unwrap(), 4);
        for (group, topic, partition) in [
            (GROUP, "t", 0),
            (GROUP, "t", 7),
            (GROUP, "ü-topic", 2),
            ("standalone", "x", -1),
        ] {
            assert_eq!(
                d.committed(group, topic, partition),
                c.committed(group, topic, partition)
            );
        }
        assert_eq!(d.committed("standalone", "x", -1).unwrap().metadata, "");
        assert_eq!(d.state(GROUP), GroupState::Empty);
        // Byte for byte the same once restored.
        assert_eq!(d.snapshot(), snapshot);
        // The restored consumer group keeps its protocol type, so its
        // offsets expire as a group's, from the restore time.
        let r = d.list_groups(&ctx(3, 0), &ListGroupsRequest::default());
        assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");

        // An empty coordinator's snapshot is valid too.
        let empty = GroupCoordinator::new(config(), 0).snapshot();
        assert_eq!(d.restore(&empty, 0).unwrap(), 0);
        assert_eq!(d.committed(GROUP, "t", 0), None);
    }

    #[test]
    fn corrupt_snapshots_are_refused_without_change() {
        let mut c = coordinator();
        c.offset_commit(&ctx(8, 0), &commit_req("", -1, &[("t", 0, 1)]));
        let good = c.snapshot().to_vec();
        let mut d = coordinator();
        d.offset_commit(&ctx(8, 0), &commit_req("", -1, &[("keep", 0, 1)]));

        assert_eq!(d.restore(b"nope", 0), Err(GroupError::SnapshotMagic));
        assert!(matches!(
            d.restore(b"FGOF", 0),
            Err(GroupError::SnapshotTruncated { .. })
        ));
        let mut flipped = good.clone();
        flipped[12] ^= 0x40;
        assert!(matches!(
            d.restore(&flipped, 0),
            Err(GroupError::SnapshotChecksum { .. })
        ));
        let mut version = good.clone();
        version[5] = 9;
        assert_eq!(d.restore(&version, 0), Err(GroupError::SnapshotVersion(9)));
        // Every truncation is an error, never a panic.
        for len in 0..good.len() {
            assert!(d.restore(&good[..len], 0).is_err(), "length {len}");
        }
        // A huge count with a valid checksum runs out of data, without
        // allocating for the count.
        let mut huge = good[..good.len() - 4].to_vec();
        huge[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            d.restore(&huge, 0),
            Err(GroupError::SnapshotTruncated { .. })
        ));
        assert_eq!(d.committed(GROUP, "keep", 0).unwrap().offset, 1);
    }

    /// Random choices read from a sequence proptest generates, so that a
    /// failing sequence of requests shrinks (toward fewer and smaller
    /// draws) and is kept in `proptest-regressions/`. Past its end every
    /// draw is 0.
    struct Draws {
        draws: Vec<u64>,
        at: usize,
    }

    impl Draws {
        fn below(&mut self, n: u64) -> u64 {
            let v = self.draws.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            v % n
        }
    }

    /// Random requests from a few clients: every pending token is completed
    /// exactly once, nothing is completed that was not pending, and once the
    /// clients stop, time alone completes everything and empties the group.
    #[test]
    fn every_pending_response_is_completed_exactly_once() {
        // Pending joins, pending syncs, and syncs completed with an
        // assignment: the sequences must reach all three.
        let seen_total = std::cell::RefCell::new([0usize; 3]);
        // A fixed seed: the coverage count below must not depend on luck.
        let config = proptest::test_runner::Config {
            cases: 100,
            ..Default::default()
        };
        let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
        let choices = proptest::collection::vec(proptest::num::u64::ANY, 3000);
        let result = runner.run(&choices, |draws| {
            let mut rng = Draws { draws, at: 0 };
            let mut seen = [0usize; 3];
            let mut c = coordinator();
            let mut outstanding: std::collections::BTreeSet<Token> = Default::default();
            let mut ids: Vec<String> = Vec::new();
            let mut now = 0u64;
            let settle = |outstanding: &mut std::collections::BTreeSet<Token>,
                          seen: &mut [usize; 3],
                          completed: Vec<(Token, Completed)>| {
                for (token, response) in completed {
                    if matches!(response, Completed::Sync(ref r) if r.error_code == 0) {
                        seen[2] += 1;
                    }
                    assert!(
                        outstanding.remove(&token),
                        "{token:?} completed twice or never pending"
                    );
                }
            };
            for _ in 0..500 {
                now += rng.below(1_500);
                let generation = c.generation(GROUP).unwrap_or(0) - i32::from(rng.below(6) == 0);
                let member = if ids.is_empty() || rng.below(8) == 0 {
                    String::new()
                } else {
                    ids[usize::try_from(rng.below(ids.len() as u64)).unwrap()].clone()
                };
                match rng.below(10) {
                    0 | 1 => {
                        let protocols: &[(&str, &[u8])] = if rng.below(10) == 0 {
                            &[("range", b"x")]
                        } else {
                            &[("range", b"y")]
                        };
                        let out = c.join(
                            &ctx(if rng.below(2) == 0 { 7 } else { 3 }, now),
                            &join_req(&member, protocols),
                        );
                        settle(&mut outstanding, &mut seen, out.completed);
                        match out.reply {
                            Reply::Pending(t) => {
                                seen[0] += 1;
                                assert!(outstanding.insert(t));
                            }
                            Reply::Ready(r) => {
                                if !r.member_id.is_empty()
                                    && !ids.contains(&r.member_id.to_string())
                                {
                                    ids.push(r.member_id.to_string());
                                }
                            }
                        }
                    }
                    2..=4 => {
                        let assignments: Vec<(&str, &[u8])> =
                            ids.iter().map(|i| (i.as_str(), &b"a"[..])).collect();
                        let out =
                            c.sync(&ctx(5, now), &sync_req(&member, generation, &assignments));
                        settle(&mut outstanding, &mut seen, out.completed);
                        match out.reply {
                            Reply::Pending(t) => {
                                seen[1] += 1;
                                assert!(outstanding.insert(t));
                            }
                            Reply::Ready(r) if r.error_code == 0 => seen[2] += 1,
                            Reply::Ready(_) => {}
                        }
                    }
                    5 | 6 => {
                        heartbeat(&mut c, &member, generation, now);
                    }
                    7 => {
                        let leave = LeaveGroupRequest {
                            group_id: GROUP.into(),
                            member_id: member.as_str().into(),
                            ..Default::default()
                        };
                        let (_, completed) = c.leave(&ctx(1, now), &leave);
                        settle(&mut outstanding, &mut seen, completed);
                    }
                    8 => {
                        c.offset_commit(
                            &ctx(8, now),
                            &commit_req(&member, generation, &[("t", 0, 1)]),
                        );
                    }
                    _ => {
                        let t = c.tick(now);
                        settle(&mut outstanding, &mut seen, t.completed);
                    }
                }
            }
            // Clients gone: the clock alone must finish every response.
            for _ in 0..10 {
                now += 60_000;
                let t = c.tick(now);
                settle(&mut outstanding, &mut seen, t.completed);
            }
            assert!(outstanding.is_empty(), "never completed: {outstanding:?}");
            assert!(c.member_ids(GROUP).is_empty());
            assert!(matches!(
                c.state(GROUP),
                GroupState::Empty | GroupState::Dead
            ));
            let mut total = seen_total.borrow_mut();
            for (t, n) in total.iter_mut().zip(seen) {
                *t += n;
            }
            Ok(())
        });
        result.unwrap();
        let seen = seen_total.into_inner();
        assert!(
            seen.iter().all(|&n| n >= 20),
            "too little exercised: {seen:?}"
        );
    }
}
