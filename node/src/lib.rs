//! The Ferry broker.
//!
//! # Layout
//!
//! - [`server`]: starts a node: one glommio executor (shard) per core, joined
//!   by a channel mesh, each with its own SO_REUSEPORT listener (or shard 0
//!   accepting for all, `ferry.accept=acceptor`); runs the retention and
//!   compaction timers.
//! - [`conn`]: one client connection: reads into the shard's arena, spawns a
//!   handler per frame at once, answers Kafka requests in request order and
//!   node-to-node RPCs as soon as they are ready; forwards group requests.
//! - [`api`]: the Kafka APIs, from decoded request to response body.
//! - [`shard`]: a shard's partitions, log cache and replica cache; where each
//!   partition's requests go (owning shard, leader, proxy); the handoff and
//!   read-replica paths, failover loading, compaction and retention.
//! - [`arena`]: each shard's off-heap read arena (anonymous mappings):
//!   connections read into it, and the log cache's batches are views of it.
//! - [`partition`]: one partition's log: checks, offsets, idempotent
//!   producers, the high watermark, where each batch lives.
//! - [`topics`]: the node-wide topic table, read by shards without locks.
//! - [`durable`]: what shards need from the WAL, and an in-memory stand-in;
//!   [`wal_log`] is the real one over `ferry-wal`: WAL and handoff writers,
//!   recovery at start-up, loading partitions from every node's objects,
//!   compacted objects, and deletion of objects nothing reads.
//! - [`cluster`]: views of the live nodes, the leadership rule, proxies by
//!   rendezvous hashing, leader epochs, and the [`cluster::Coordinator`]
//!   trait with its in-process implementation; [`etcd`] is the etcd one.
//! - [`zone`]: a client's zone, from its `client.id` or its address.
//! - [`rpc`]: node-to-node RPCs over the Kafka listener: handoff commit,
//!   replica read, forward.
//! - [`node`]: what every shard of a node shares.
//! - [`metrics`]: counters and latency histograms, in Prometheus format;
//!   [`http`] serves them at `/metrics`.
//! - [`config`]: `server.properties` and AutoMQ's keys.
//! - [`configs`]: topic and broker configs through the admin APIs
//!   (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs), per-topic
//!   overrides and their checks.
//! - [`group`]: the classic consumer-group coordinator, as a state machine;
//!   [`coordinator`] runs it on shard 0 of the node that leads the group's
//!   slot and persists committed offsets.
//!
//! A produce request goes: [`conn::serve`] cuts and decodes the frame,
//! [`api::handle`] splits it by partition, [`shard::Shard::produce`] sends
//! each part to the owning shard, where [`partition::PartitionLog`] checks
//! and places the batch, the durable log makes it durable, and the answer
//! travels back the same way. For a partition led in another zone the node
//! is a proxy: the batches go into its handoff object and the leader assigns
//! offsets over RPC. `ARCHITECTURE.md` at the repository root describes every
//! path.

pub mod api;
pub mod arena;
pub mod cluster;
pub mod config;
pub mod configs;
pub mod conn;
pub mod coordinator;
pub mod durable;
pub mod etcd;
pub mod etcd_api;
pub mod group;
pub mod http;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod refs;
pub mod rpc;
pub mod server;
pub mod shard;
pub mod topics;
pub mod wal_log;
pub mod zone;
