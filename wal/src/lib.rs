//! Ferry's object-store layer. Nothing is built here yet.
//!
//! # Layout (planned, see the single-node and zones issues)
//!
//! This crate will own the WAL object format, the node-wide WAL writer that
//! gathers every shard's batches into one object per `batchInterval`, the
//! handoff objects a proxy writes for another zone's leader, and recovery of
//! partition state from committed objects. Until then it is deliberately
//! empty: no placeholder functions and no placeholder tests.
