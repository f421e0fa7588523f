//! Ferry's object-store layer: the WAL object format, the node-wide WAL
//! writer, ranged reads and recovery.
//!
//! # Layout
//!
//! - [`store`]: bucket URIs (`s3://…`, `file://…`) into an `ObjectStore`;
//!   [`FaultyStore`], a latency- and failure-injecting wrapper for tests;
//!   [`LatencyStore`], the S3 latency model a bucket URI can turn on
//!   (latency with a tail, 503s, 500s, stalls, per-prefix rate caps);
//!   [`is_slow_down`] and [`is_server_error`], which tell its errors and a
//!   real S3's apart from others.
//! - [`object`]: the versioned WAL object format (header, data, index,
//!   footer), its encoder and its checked decoders.
//! - [`runtime`]: [`IoRuntime`], the small tokio runtime beside the shards
//!   that every object-store call runs on.
//! - [`writer`]: [`WalWriter`] and its [`WalHandle`]: one object per node
//!   per `batch_interval`, uploads with retries, in-order acknowledgement,
//!   backpressure.
//! - [`reader`]: listing a node's objects, reading an index, ranged reads of
//!   entries; [`WalReader`] for callers that are not on tokio.
//! - [`compact`]: per-partition compacted objects, written from durable
//!   batches so that WAL objects can be deleted, and scanned at recovery.
//! - [`recovery`]: scanning a node's objects after a restart, and rebuilding
//!   each partition's log from them; scanning some partitions across every
//!   node's objects, and merging their histories by leader epoch
//!   ([`recovery::scan_partitions`], [`recovery::rebuild_fenced`]) for a
//!   new leader after a failover.
//! - [`cleanup`]: deleting a node's old WAL or handoff objects.
//! - [`stats`]: [`WalStats`], the counters behind the node's `/metrics`.
//! - [`error`]: [`WalError`] (with `is_retriable`) and [`FormatError`].
//!
//! # How a shard uses it
//!
//! Nothing here needs the caller to run on tokio. A glommio shard calls
//! `handle.append(entry)` and awaits the returned `futures_channel`
//! oneshot: it resolves with the entry's [`WalLocation`] once the object
//! holding it is durable. At start-up the node runs [`recovery::scan`] on an
//! [`IoRuntime`], rebuilds its partitions with [`recovery::rebuild`], and
//! starts the writer with `first_seq = recovery.next_seq`.

pub mod cleanup;
pub mod compact;
pub mod crc;
pub mod direct;
pub mod error;
pub mod hedge;
pub mod object;
pub mod reader;
pub mod recovery;
pub mod runtime;
pub mod stats;
pub mod store;
pub mod writer;

pub use error::{FormatError, WalError};
pub use hedge::{HedgeConfig, HedgedStore};
pub use object::{ExternalRef, IndexEntry, ObjectHeader, ObjectIndex, ProducerFields, WalEntry};
pub use reader::{WalObjectMeta, WalReader};
pub use recovery::{EpochStart, PartitionLog, PartitionsScan, RecoveredEntry, Recovery};
pub use runtime::IoRuntime;
pub use stats::{StoreStats, WalStats, WalStatsSnapshot};
pub use store::{
    is_server_error, is_slow_down, BucketUri, FaultWindow, FaultyStore, LatencyModel, LatencyStore,
    ModelFault, ReadFault,
};
pub use writer::{WalConfig, WalHandle, WalLocation, WalWriter};

#[cfg(test)]
mod tests {
    /// The handles cross threads: shards on other cores hold them.
    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<crate::WalHandle>();
        send_sync::<crate::WalReader>();
        send_sync::<crate::WalWriter>();
        send_sync::<crate::IoRuntime>();
        send_sync::<crate::WalError>();
    }
}
