//! Ferry's load generator, `ferry-bench`: librdkafka producers and consumers
//! against any Kafka-compatible broker, at a fixed rate corrected for
//! coordinated omission or as fast as possible, with publish and end-to-end
//! latency in HdrHistogram; the cost model that prices a workload for
//! Kafka and for Ferry; and sweeps of Ferry's batch settings.
//!
//! # Layout
//!
//! - [`blast`]: `ferry-bench blast`: one pre-encoded Produce request sent
//!   again and again over raw connections, to load a broker without
//!   librdkafka's per-record CPU.
//! - [`cli`]: the command line (`run`, `cost`, `sweep`, `blast`) and the checked
//!   [`cli::RunConfig`] and [`sweep::SweepConfig`].
//! - [`run`]: one run against a broker: topic, consumers, producers, the load,
//!   the progress line, the drain, the [`report::Report`].
//! - [`pacer`]: each record's intended send time; the coordinated-omission
//!   correction.
//! - [`recorder`]: the warm-up and measured window, and what each completion
//!   (delivery report, consumer receipt) adds to latency and throughput.
//! - [`stats`]: latency histograms, percentiles, throughput arithmetic.
//! - [`payload`]: the stamp at the start of every record (run, producer,
//!   sequence, intended send time) and the filler after it.
//! - [`clock`]: the run's monotonic clock and its Unix origin.
//! - [`cost`]: prices (with a file format) and $/month for Kafka RF=3, Kafka
//!   with follower fetching and Ferry; the handoff break-even rate.
//! - [`machine`]: the CPU, cores, kernel and OS a run happened on.
//! - [`report`]: the run's and the cost model's results, as JSON and text.
//! - [`sweep`]: `ferry-bench sweep`: a fresh `ferry dev` per
//!   `batchInterval` x `maxBytesInBatch` point with the S3 latency model, the
//!   load in process, `/metrics` sampled; the same load against peers.
//! - [`prom`]: scraping `/metrics` and rates over the measured window.
//! - [`results`]: the sweep's report, its cost-latency frontier, CSV and
//!   Markdown, and the results directory.
//! - [`plots`]: the sweep's SVG plots (plotters).
//! - [`error`]: [`error::BenchError`], which names the flag, file or client
//!   call that failed.
//!
//! A record's latency goes: [`pacer::Pacer`] fixes its intended time,
//! the sender in [`run`] writes it into the record ([`payload::Stamp`]),
//! and the delivery callback and the consumer read it back and hand
//! `(intended, now)` to a [`recorder::Recorder`].

pub mod blast;
pub mod cli;
pub mod clock;
pub mod cost;
pub mod error;
pub mod machine;
pub mod pacer;
pub mod payload;
pub mod plots;
pub mod prom;
pub mod recorder;
pub mod report;
pub mod results;
pub mod run;
pub mod stats;
pub mod sweep;
