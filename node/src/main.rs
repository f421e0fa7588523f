//! The `ferry` binary: `ferry node --config server.properties` runs a node;
//! `ferry dev` runs the embedded default (a local directory as the bucket,
//! the coordinator in process).

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_node::config::Config;
use ferry_node::durable::DurableLog;
use ferry_node::node::NodeSettings;
use ferry_node::server;
use ferry_node::wal_log::WalLog;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How much data may wait for the bucket before producers are pushed back.
const WAL_INFLIGHT_BYTES_MAX: usize = 256 << 20;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A Kafka-compatible broker that keeps its data in S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from a server.properties file.
    Node {
        /// Kafka's properties format, with the keys in DESIGN.md.
        #[arg(long)]
        config: PathBuf,
        /// `key=value`, overriding the file; repeatable.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Run a local node on the embedded default: a directory as the bucket.
    Dev {
        /// Where the bucket directory goes.
        #[arg(long, default_value = "ferry-dev")]
        dir: PathBuf,
        /// The Kafka listener's port on 127.0.0.1.
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// `key=value`, overriding the defaults; repeatable.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let (mut config, dev) = match cli.command {
        Command::Node { config, overrides } => {
            let mut c =
                Config::load(&config).with_context(|| format!("reading {}", config.display()))?;
            for o in &overrides {
                c.apply_override(o)?;
            }
            (c, false)
        }
        Command::Dev {
            dir,
            port,
            overrides,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut c = Config::dev(&dir, port)?;
            for o in &overrides {
                c.apply_override(o)?;
            }
            (c, true)
        }
    };
    config.validate_for_node()?;
    for k in &config.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key, ignored");
    }
    run(&mut config, dev)
}

fn run(config: &mut Config, dev: bool) -> anyhow::Result<()> {
    let node_id = config.node_id.context("node.id is required")?;
    let wal_bucket = config
        .wal
        .clone()
        .or_else(|| config.data_buckets.first().cloned())
        .context("s3.wal.path or s3.data.buckets is required: where does the data go?")?;
    let uri = ferry_wal::BucketUri::parse(wal_bucket.uri())
        .with_context(|| format!("s3.wal.path {}", wal_bucket.redacted()))?;
    let store = uri.build_store().context("opening the bucket")?;
    let mut wal =
        ferry_wal::WalConfig::new(u32::try_from(node_id).context("node.id must not be negative")?);
    wal.batch_interval = Duration::from_millis(wal_bucket.batch_interval_ms);
    wal.max_bytes_in_batch = wal_bucket.batch_bytes_max as usize;
    wal.inflight_bytes_max = WAL_INFLIGHT_BYTES_MAX.max(2 * wal.max_bytes_in_batch);
    wal.validate()?;
    let started = std::time::Instant::now();
    let opened = WalLog::open(store, wal).context("recovering from the bucket")?;
    tracing::info!(
        objects = opened.objects_read,
        batches = opened.batches,
        topics = opened.topics.len(),
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let listener = config
        .listeners
        .first()
        .context("listeners is empty")?
        .clone();
    let listen: SocketAddr = listener
        .bind_address()
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("listeners: cannot resolve {}", listener.bind_address()))?;
    let cluster = if config.etcd_endpoints.is_empty() {
        ferry_node::node::ClusterJoin::Alone
    } else {
        ferry_node::node::ClusterJoin::Etcd {
            options: ferry_node::etcd::EtcdOptions::new(
                config.etcd_endpoints.clone(),
                config.cluster_id.clone(),
            ),
            runtime: opened.log.runtime(),
        }
    };
    let settings = NodeSettings {
        groups_snapshot: opened.groups.clone(),
        cluster,
        ..NodeSettings::from_config(config).context("node.id and listeners are required")?
    };
    let log = opened.log.clone();
    let node = server::start(
        settings,
        listen,
        log.clone(),
        opened.topics,
        opened.recovered,
    )?;
    if let Some(addr) = config.metrics_listener {
        let ctx = node.ctx.clone();
        let log2 = log.clone();
        let bound = ferry_node::http::serve_metrics(
            addr,
            Arc::new(move || ctx.metrics.render(&log2.render_metrics())),
        )?;
        tracing::info!(addr = %bound, "metrics at /metrics");
    }
    if dev {
        println!("ferry dev: one node, bucket {}", wal_bucket.redacted());
        println!("  bootstrap: {}", node.addr);
        println!("  try: kcat -b {} -L", node.addr);
    }
    node.wait();
    log.shutdown(Duration::from_secs(10));
    Ok(())
}
