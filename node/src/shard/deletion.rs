//! The object-deletion pass (see [`crate::storage::refs`] for the rules): shard 0
//! runs it after every retention pass. It publishes this node's references,
//! reads every member's, and deletes the WAL and handoff objects none of
//! them refers to.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::storage::refs::{combine, meta_name, Refs, RefsFile};

/// Passes in a row that could not delete, after which a warning says why.
const BLOCKED_WARN_PASSES: u64 = 30;

/// Notes a pass that kept every object because of `why`: at debug level,
/// and as a warning every [`BLOCKED_WARN_PASSES`] passes in a row (objects
/// pile up meanwhile; `ferry_object_deletion_blocked_passes` counts them).
fn blocked(ctx: &crate::node::NodeCtx, why: &str) {
    let n = ctx
        .refs_blocked
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if n % BLOCKED_WARN_PASSES == 0 {
        tracing::warn!(
            passes = n,
            why,
            "no WAL or handoff object could be deleted for a while"
        );
    } else {
        tracing::debug!(why, "objects are kept for now");
    }
}

/// One pass of object deletion, run by shard 0 after every retention
/// pass: publishes this node's references, reads every member's, and
/// deletes what none of them refers to (see the module doc). Anything not
/// right (a member's file missing, stale or of another view, a failed
/// read) keeps every object until a later pass.
pub async fn collect(ctx: &crate::node::NodeCtx, now_ms: i64) {
    use crate::storage::durable::ObjectKind;
    if ctx.cluster.fenced() {
        return;
    }
    let view = ctx.cluster.view();
    let revision = view.revision();
    let topics = ctx.topics_version();
    let mut mine = Refs::default();
    let mut loaded = true;
    let mut at_ms = now_ms;
    for s in &ctx.shard_refs {
        let s = s.lock();
        loaded &= s.loaded && s.revision == revision && s.topics == topics;
        at_ms = at_ms.min(s.at_ms);
        mine.merge(&s.refs);
    }
    ctx.recovered_refs(&mut mine);
    let file = Arc::new(RefsFile {
        node: ctx.node_id,
        revision,
        topics,
        loaded,
        at_ms,
        refs: mine,
    });
    let version = u64::try_from(now_ms).unwrap_or(0);
    match ctx
        .durable
        .put_meta(&meta_name(ctx.node_id), version, file.encode())
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "publishing this node's object references failed");
            return;
        }
        Err(_) => return,
    }
    if !loaded {
        blocked(ctx, "this node is still loading partitions it leads");
        return;
    }
    let members: Vec<i32> = view.members().iter().map(|m| m.node_id).collect();
    let mut files = BTreeMap::new();
    files.insert(ctx.node_id, file);
    for &m in members.iter().filter(|&&m| m != ctx.node_id) {
        match ctx.durable.get_meta(&meta_name(m)).await {
            Ok(Ok(Some(data))) => match RefsFile::decode(&data) {
                Ok(f) => {
                    files.insert(m, Arc::new(f));
                }
                Err(e) => tracing::warn!(node = m, error = %e, "a node's object references"),
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(node = m, error = %e, "reading a node's object references failed");
                return;
            }
            Err(_) => return,
        }
    }
    let fresh_ms = i64::try_from(ctx.object_delete_age_ms / 2).unwrap_or(i64::MAX);
    let all = match combine(&members, &files, (revision, topics), now_ms, fresh_ms) {
        Ok(all) => all,
        Err(why) => {
            blocked(ctx, &why.to_string());
            return;
        }
    };
    ctx.refs_blocked
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let Ok(me) = u32::try_from(ctx.node_id) else {
        return;
    };
    let mut owners = vec![(ObjectKind::Wal, me), (ObjectKind::Handoff, me)];
    // The lowest node id of the view deletes for nodes that left it.
    if members.first() == Some(&ctx.node_id) {
        for kind in [ObjectKind::Wal, ObjectKind::Handoff] {
            match ctx.durable.object_owners(kind).await {
                Ok(Ok(found)) => owners.extend(
                    found
                        .into_iter()
                        .filter(|n| i32::try_from(*n).map_or(true, |n| !members.contains(&n)))
                        .map(|n| (kind, n)),
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "listing object owners failed"),
                Err(_) => return,
            }
        }
    }
    let age = std::time::Duration::from_millis(ctx.object_delete_age_ms);
    for (kind, node) in owners {
        let oldest = match kind {
            ObjectKind::Wal => all.wal.get(&node),
            ObjectKind::Handoff => all.handoff.get(&node),
        };
        let below = oldest.copied().unwrap_or(u64::MAX);
        match ctx
            .durable
            .delete_node_objects(kind, node, below, age)
            .await
        {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::info!(
                objects = n,
                node,
                kind = kind.prefix(),
                below,
                "deleted objects nothing refers to"
            ),
            Ok(Err(e)) => {
                tracing::warn!(node, kind = kind.prefix(), error = %e, "deleting objects failed")
            }
        }
    }
}
