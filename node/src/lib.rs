//! The Ferry broker.
//!
//! # Layout
//!
//! The folders are layers: each imports only the ones below it (no module
//! imports one that imports it back; `shared/tools/import-circles node/src`
//! checks it). Top to bottom:
//!
//! - [`broker`]: what faces clients. [`broker::server`] starts a node (one
//!   glommio executor, a shard, per core, joined by a channel mesh, each
//!   with its own SO_REUSEPORT listener or shard 0 accepting for all) and
//!   runs the retention and compaction timers; [`broker::conn`] serves one
//!   connection (reads into the shard's arena, a handler per frame, answers
//!   in request order, node-to-node RPCs as soon as ready);
//!   [`broker::api`] turns each Kafka request into its response;
//!   [`broker::configs`] is the admin API for topic and broker configs;
//!   [`broker::http`] serves `/metrics`. It hands each shard its
//!   [`shard::BrokerHooks`], the shard's only way up.
//! - [`shard`]: one core's partitions, log cache and replica cache, where
//!   each partition's requests go (owning shard, leader, proxy), handoff,
//!   read replicas, failover loading, compaction and retention;
//!   [`shard::partition`] is one partition's log (checks, offsets,
//!   idempotent producers, the high watermark); [`shard::deletion`] is the
//!   object-deletion pass.
//! - [`node`]: what every shard of a node shares ([`node::NodeCtx`]), and
//!   [`metrics`], its counters and histograms.
//! - [`group`]: the classic consumer-group coordinator as a state machine;
//!   [`group::coordinator`] runs it on shard 0 of the node leading the
//!   group's slot and keeps committed offsets in the bucket.
//! - [`storage`]: the durable log. [`storage::durable`] is what shards need
//!   from it (and an in-memory stand-in), [`storage::wal_log`] the real one
//!   over `ferry-wal` (WAL and handoff writers, recovery at start-up,
//!   loading partitions from every node's objects, compacted objects), and
//!   [`storage::refs`] which objects are still in use.
//! - [`cluster`]: views of the live nodes, the leadership rule, proxies by
//!   rendezvous hashing, leader epochs and the [`cluster::Coordinator`]
//!   trait (in process, or [`cluster::etcd`] over [`cluster::etcd_api`]);
//!   [`cluster::zone`], a client's zone; [`cluster::topics`], the topic
//!   table; [`cluster::rpc`], the node-to-node RPCs (handoff commit, replica
//!   read, forward).
//! - [`config`]: `server.properties` and AutoMQ's keys.
//! - [`arena`] (each shard's off-heap read arena), [`clock`] and [`prom`]
//!   (the one Prometheus text writer), below everything.
//!
//! A produce request goes: [`broker::conn::serve`] cuts and decodes the
//! frame, [`broker::api::handle`] splits it by partition,
//! [`shard::Shard::produce`] sends each part to the owning shard, where
//! [`shard::partition::PartitionLog`] checks and places the batch, the
//! durable log makes it durable, and the answer travels back the same way.
//! For a partition led in another zone the node is a proxy: the batches go
//! into its handoff object and the leader assigns offsets over RPC.
//! `ARCHITECTURE.md` at the repository root describes every path.

pub mod arena;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod group;
pub mod metrics;
pub mod node;
pub mod prom;
pub mod shard;
pub mod storage;
