//! Deleting a node's objects that nothing reads any more: WAL objects
//! (`wal/<node>/<seq>.wal`) and handoff objects (`handoff/<node>/<seq>.wal`)
//! alike, both named by [`crate::reader::object_key`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::{debug, warn};

use crate::error::WalError;
use crate::reader::{node_prefix, parse_seq};

/// Deletes at once at most this many objects.
const DELETES_INFLIGHT_MAX: usize = 8;

/// Deletes the objects of `node_id` under `prefix` whose sequence number is
/// below `below_seq` and that were last modified at least `min_age` ago, and
/// answers how many it deleted. Keys under the node's folder that are not
/// object names are left alone; an object already gone counts as deleted.
///
/// The object with the highest sequence number is never deleted: a node
/// starting again numbers its objects after the highest it finds, so a
/// sequence number, and a key, is never used twice (other nodes cache what
/// an object's key held).
///
/// The age is a guard against a clock or a caller that is wrong about
/// `below_seq`: an object younger than `min_age` is never deleted.
/// On a failed LIST or DELETE it answers the first error (objects deleted
/// before it stay deleted; the next pass finds the rest).
pub async fn delete_objects(
    store: &dyn ObjectStore,
    prefix: &str,
    node_id: u32,
    below_seq: u64,
    min_age: Duration,
) -> Result<usize, WalError> {
    let folder = node_prefix(prefix, node_id);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // None: nothing can be old enough (min_age reaches before 1970).
    let cutoff_ms = now_ms
        .checked_sub(min_age.as_millis())
        .and_then(|c| i64::try_from(c).ok());
    let listed: Vec<_> = store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| WalError::store("LIST", folder.to_string(), e))?;
    let newest = listed.iter().filter_map(|m| parse_seq(&m.location)).max();
    let doomed: Vec<_> = listed
        .into_iter()
        .filter(|m| {
            let old_enough = cutoff_ms.is_some_and(|c| m.last_modified.timestamp_millis() <= c);
            old_enough && parse_seq(&m.location).is_some_and(|s| s < below_seq && Some(s) != newest)
        })
        .map(|m| m.location)
        .collect();
    let results: Vec<_> = futures_util::stream::iter(doomed)
        .map(|key| async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    debug!(object_key = %key, "deleted");
                    Ok(())
                }
                Err(e) => {
                    warn!(object_key = %key, error = %e, "could not delete an object");
                    Err(WalError::store("DELETE", key.to_string(), e))
                }
            }
        })
        .buffer_unordered(DELETES_INFLIGHT_MAX)
        .collect()
        .await;
    let mut deleted = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(()) => deleted += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::object_key;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::PutPayload;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    async fn keys(store: &InMemory) -> Vec<String> {
        let mut k: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        k.sort();
        k
    }

    #[test]
    fn deletes_only_old_objects_of_the_node_below_the_seq() {
        rt().block_on(async {
            let store = InMemory::new();
            for (prefix, node, seq) in [
                ("handoff", 1, 1),
                ("handoff", 1, 2),
                ("handoff", 1, 3),
                ("handoff", 2, 1),
                ("wal", 1, 1),
            ] {
                store
                    .put(
                        &object_key(prefix, node, seq),
                        PutPayload::from_static(b"x"),
                    )
                    .await
                    .expect("put");
            }
            store
                .put(
                    &Path::from("handoff/1/notes.txt"),
                    PutPayload::from_static(b"x"),
                )
                .await
                .expect("put");
            // Too young: nothing goes.
            let n = delete_objects(&store, "handoff", 1, 3, Duration::from_secs(3600))
                .await
                .expect("delete");
            assert_eq!(n, 0);
            assert_eq!(keys(&store).await.len(), 6);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let n = delete_objects(&store, "handoff", 1, 3, Duration::from_millis(10))
                .await
                .expect("delete");
            assert_eq!(n, 2);
            assert_eq!(
                keys(&store).await,
                vec![
                    "handoff/1/00000000000000000003.wal",
                    "handoff/1/notes.txt",
                    "handoff/2/00000000000000000001.wal",
                    "wal/1/00000000000000000001.wal",
                ]
            );
            // A huge age deletes nothing and does not overflow.
            let n = delete_objects(&store, "handoff", 1, u64::MAX, Duration::MAX)
                .await
                .expect("delete");
            assert_eq!(n, 0);
            // Nothing refers to any of them: all go but the newest, which
            // keeps the node's numbering going after a restart.
            let n = delete_objects(&store, "handoff", 1, u64::MAX, Duration::from_millis(10))
                .await
                .expect("delete");
            assert_eq!(n, 0, "only the newest was left");
            let n = delete_objects(&store, "wal", 1, u64::MAX, Duration::from_millis(10))
                .await
                .expect("delete");
            assert_eq!(n, 0, "a node's only object stays");
            assert!(keys(&store)
                .await
                .contains(&"handoff/1/00000000000000000003.wal".to_string()));
        });
    }
}
