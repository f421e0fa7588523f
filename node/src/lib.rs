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
//!   with its own SO_REUSEPORT socket on every listener or shard 0 accepting
//!   for all) and runs the retention and compaction timers; [`broker::conn`]
//!   serves one connection (TLS, then reads into the shard's arena, a
//!   handler per frame, answers in request order, node-to-node RPCs as soon
//!   as ready, on the inter-broker listener only); [`broker::sasl`] is a
//!   connection's SASL state; [`broker::api`] turns each Kafka request into
//!   its response, after the ACL checks;
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
//! - [`security`]: TLS configurations from PEM (reloaded when their files
//!   change), principals, SASL PLAIN and SCRAM, Kafka's ACL model and
//!   authorizer, and the cluster's security document (credentials, ACLs).
//! - [`config`]: `server.properties` and AutoMQ's keys.
//! - [`arena`] (each shard's off-heap read arena), [`clock`] and [`prom`]
//!   (the one Prometheus text writer), below everything.
//!
//! A produce request, function by function:
//!
//! 1. [`broker::conn::serve`] reads the frame into the shard's arena and
//!    decodes it (the record batches stay slices of that frame);
//! 2. [`broker::api::handle`] dispatches it; `broker::api::produce` splits
//!    it by partition and calls [`shard::Shard::produce`] for each part;
//! 3. `Shard::produce` routes the partition ([`shard::Route`]): a partition
//!    of another shard goes over the channel mesh to its owner, one led in
//!    another zone to `shard::handoff` (the proxy: the batches go into this
//!    node's handoff object, then a [`cluster::rpc::HandoffCommit`] asks the
//!    leader for offsets), one led by a node of this zone back to the client
//!    as NOT_LEADER_OR_FOLLOWER;
//! 4. on the owning shard, `produce_local` then `append_batches`:
//!    [`shard::partition::PartitionLog::append_meta`] checks the producer's
//!    epoch and sequence, assigns offsets and returns the WAL entry;
//!    [`storage::durable::WalAppender::append`] queues it for the
//!    interval's WAL object ([`storage::wal_log::WalLog`] hands it to
//!    `ferry-wal`'s writer), and the shard's log cache is charged for it;
//! 5. when the object is in the bucket, the append's future resolves:
//!    `PartitionLog::made_durable` records where the batch is and moves the
//!    high watermark, which wakes `await_durable`;
//! 6. the acknowledgement goes back the same way: `append_batches` answers
//!    with the base offset, `broker::api::produce` joins the parts into the
//!    ProduceResponse, and `conn::serve` writes it in request order.
//!
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
pub mod security;
pub mod shard;
pub mod storage;
