//! The Ferry broker. Nothing is built here yet.
//!
//! # Layout (planned, see the single-node issue)
//!
//! Shards (one glommio executor per core), connections, partitions, the
//! per-shard log cache, consumer groups, the zone router, the coordinator
//! client and metrics, and the `ferry` binary. Until that work lands this
//! crate is deliberately empty: no placeholder functions and no placeholder
//! tests.
