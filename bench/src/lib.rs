//! Ferry's load generator and parameter sweeps. Nothing is built here yet.
//!
//! # Layout (planned, see the benchmark-suite issue)
//!
//! `ferry-bench` drives librdkafka producers and consumers per zone at a
//! fixed rate, records publish and end-to-end latency in HdrHistogram, and
//! sweeps `batchInterval` by `maxBytesInBatch` with a cost model. Until that
//! work lands this crate is deliberately empty.
