//! The Ferry broker.
//!
//! # Layout
//!
//! - [`server`]: starts a node: one glommio executor (shard) per core, each
//!   with its own SO_REUSEPORT listener, joined by a channel mesh.
//! - [`conn`]: one client connection: frames in, handlers spawned at once,
//!   responses out in request order.
//! - [`api`]: the Kafka APIs, from decoded request to response body.
//! - [`shard`]: a shard's partitions and log cache, and the messages shards
//!   send each other for partitions they do not own.
//! - [`arena`]: each shard's off-heap read arena (anonymous mappings):
//!   connections read into it, and the log cache's batches are views of it.
//! - [`partition`]: one partition's log: checks, offsets, idempotent
//!   producers, the high watermark, cached batch bytes.
//! - [`topics`]: the node-wide topic table, read by shards without locks.
//! - [`durable`]: what shards need from the WAL, and an in-memory stand-in;
//!   [`wal_log`] is the real one over `ferry-wal`, with recovery at start-up
//!   and deletion of WAL objects nothing reads any more.
//! - [`node`]: what every shard of a node shares.
//! - [`metrics`]: counters and latency histograms, in Prometheus format;
//!   [`http`] serves them at `/metrics`.
//! - [`config`]: `server.properties` and AutoMQ's keys.
//! - [`configs`]: topic and broker configs through the admin APIs
//!   (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs), per-topic
//!   overrides and their checks.
//! - [`group`]: the classic consumer-group coordinator, as a state machine;
//!   [`coordinator`] runs it on shard 0 and persists committed offsets.
//!
//! A produce request goes: [`conn::serve`] cuts and decodes the frame,
//! [`api::handle`] splits it by partition, [`shard::Shard::produce`] sends
//! each part to the owning shard, where [`partition::PartitionLog::append`]
//! checks and places the batch, the durable log makes it durable, and the
//! answer travels back the same way.

pub mod api;
pub mod arena;
pub mod cluster;
pub mod config;
pub mod configs;
pub mod conn;
pub mod coordinator;
pub mod durable;
pub mod etcd;
pub mod group;
pub mod http;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod rpc;
pub mod server;
pub mod shard;
pub mod topics;
pub mod wal_log;
pub mod zone;
