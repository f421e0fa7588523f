//! The durable log: what shards need from it ([`durable`]), the real one
//! over `ferry-wal` ([`wal_log`]), and which objects are still in use
//! ([`refs`]). Below shards and groups; above the cluster layer (the topic
//! table).

pub mod durable;
pub mod refs;
pub mod wal_log;
