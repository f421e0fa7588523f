//! Committed offsets: OffsetCommit and OffsetFetch, their checks, and the
//! expiry and deletion of a group's offsets.

use super::*;

impl GroupCoordinator {
    /// OffsetCommit. Generation -1 with no member id is a standalone commit,
    /// allowed while the group has no members; otherwise the member and its
    /// generation must be current.
    pub fn offset_commit(
        &mut self,
        ctx: &RequestContext<'_>,
        req: &OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let version = ctx.version;
        let generation = if version >= 1 {
            req.generation_id_or_member_epoch
        } else {
            -1
        };
        let member_id = if version >= 1 {
            req.member_id.as_str()
        } else {
            ""
        };
        let has_instance = version >= 7 && req.group_instance_id.is_some();
        let group_id = req.group_id.as_str();
        let now_ms = ctx.now_ms;

        let check = self.check_commit(group_id, generation, member_id, has_instance, now_ms);
        let metadata_max = self.config.offset_metadata_bytes_max;
        let mut stored = false;
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let code = if check.is_err() {
                    check
                } else if metadata.len() > metadata_max {
                    ErrorCode::OFFSET_METADATA_TOO_LARGE
                } else if let Some(group) = self.groups.get_mut(group_id) {
                    let commit_timestamp_ms = if version == 1 && p.commit_timestamp >= 0 {
                        p.commit_timestamp
                    } else {
                        i64::try_from(now_ms).unwrap_or(i64::MAX)
                    };
                    let offset = CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.to_owned(),
                        commit_timestamp_ms,
                    };
                    group
                        .offsets
                        .entry(t.name.to_string())
                        .or_default()
                        .insert(p.partition_index, offset);
                    stored = true;
                    ErrorCode::NONE
                } else {
                    ErrorCode::UNKNOWN_MEMBER_ID
                };
                partitions.push(OffsetCommitResponsePartition {
                    partition_index: p.partition_index,
                    error_code: code.code(),
                    ..Default::default()
                });
            }
            topics.push(OffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions,
                ..Default::default()
            });
        }
        if stored {
            self.offsets_changes += 1;
        }
        OffsetCommitResponse {
            topics,
            ..Default::default()
        }
    }

    pub(super) fn check_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        has_instance: bool,
        now_ms: u64,
    ) -> ErrorCode {
        if !self.groups.contains_key(group_id) {
            if generation >= 0 {
                // A generation of a group that does not exist: stale.
                return ErrorCode::ILLEGAL_GENERATION;
            }
            self.groups
                .insert(group_id.to_owned(), Group::new(group_id, now_ms));
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if generation >= 0 || !member_id.is_empty() || has_instance {
            let Some(index) = group.member_index(member_id) else {
                return ErrorCode::UNKNOWN_MEMBER_ID;
            };
            if generation != group.generation {
                return ErrorCode::ILLEGAL_GENERATION;
            }
            if group.state == GroupState::CompletingRebalance {
                // The member has not got its new assignment yet.
                return ErrorCode::REBALANCE_IN_PROGRESS;
            }
            group.touch(index, now_ms);
            ErrorCode::NONE
        } else if group.state != GroupState::Empty {
            // A standalone commit into a group that has members.
            ErrorCode::UNKNOWN_MEMBER_ID
        } else {
            ErrorCode::NONE
        }
    }

    /// OffsetFetch: v0-7 for one group, v8+ for several. Partitions with no
    /// committed offset get offset -1 and no error.
    pub fn offset_fetch(
        &self,
        ctx: &RequestContext<'_>,
        req: &OffsetFetchRequest,
    ) -> OffsetFetchResponse {
        if ctx.version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (&t.name, t.partition_indexes.as_slice()))
                            .collect::<Vec<_>>()
                    });
                    let topics = self
                        .fetch(g.group_id.as_str(), wanted)
                        .into_iter()
                        .map(|(name, partitions)| OffsetFetchResponseTopics {
                            name,
                            partitions: partitions
                                .into_iter()
                                .map(|(index, o)| OffsetFetchResponsePartitions {
                                    partition_index: index,
                                    committed_offset: o.map_or(-1, |o| o.offset),
                                    committed_leader_epoch: o.map_or(-1, |o| o.leader_epoch),
                                    metadata: Some(KStr::from(
                                        o.map_or("", |o| o.metadata.as_str()),
                                    )),
                                    error_code: ErrorCode::NONE.code(),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect();
                    OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        topics,
                        error_code: ErrorCode::NONE.code(),
                        ..Default::default()
                    }
                })
                .collect();
            return OffsetFetchResponse {
                groups,
                ..Default::default()
            };
        }
        let wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (&t.name, t.partition_indexes.as_slice()))
                .collect::<Vec<_>>()
        });
        let topics = self
            .fetch(req.group_id.as_str(), wanted)
            .into_iter()
            .map(|(name, partitions)| OffsetFetchResponseTopic {
                name,
                partitions: partitions
                    .into_iter()
                    .map(|(index, o)| OffsetFetchResponsePartition {
                        partition_index: index,
                        committed_offset: o.map_or(-1, |o| o.offset),
                        committed_leader_epoch: o.map_or(-1, |o| o.leader_epoch),
                        metadata: Some(KStr::from(o.map_or("", |o| o.metadata.as_str()))),
                        error_code: ErrorCode::NONE.code(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        OffsetFetchResponse {
            topics,
            error_code: ErrorCode::NONE.code(),
            ..Default::default()
        }
    }

    /// The offsets asked for (`None`: every committed one of the group).
    #[allow(clippy::type_complexity)]
    pub(super) fn fetch(
        &self,
        group_id: &str,
        wanted: Option<Vec<(&KStr, &[i32])>>,
    ) -> Vec<(KStr, Vec<(i32, Option<&CommittedOffset>)>)> {
        let offsets = self.groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, indexes)| {
                    let committed = offsets.and_then(|o| o.get(name.as_str()));
                    let partitions = indexes
                        .iter()
                        .map(|&i| (i, committed.and_then(|c| c.get(&i))))
                        .collect();
                    (name.clone(), partitions)
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|(name, partitions)| {
                    let partitions = partitions.iter().map(|(&i, o)| (i, Some(o))).collect();
                    (KStr::from(name.as_str()), partitions)
                })
                .collect(),
        }
    }

    /// One committed offset.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        self.groups
            .get(group_id)?
            .offsets
            .get(topic)?
            .get(&partition)
    }

    /// Drops every group's offsets for a deleted topic; returns how many.
    pub fn delete_topic_offsets(&mut self, topic: &str) -> usize {
        let mut dropped = 0;
        for g in self.groups.values_mut() {
            dropped += g.offsets.remove(topic).map_or(0, |p| p.len());
        }
        if dropped > 0 {
            self.offsets_changes += 1;
        }
        dropped
    }

    /// Grows whenever the committed offsets change (commit, expiry,
    /// deletion): the node snapshots when it differs from the value at its
    /// last snapshot.
    pub fn offsets_changes(&self) -> u64 {
        self.offsets_changes
    }
}
