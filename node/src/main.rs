//! The `ferry` binary: `ferry node --config server.properties` runs a node;
//! `ferry dev` runs the embedded default (a local directory as the bucket,
//! the coordinator in process).

mod dev_secure;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_node::broker::server;
use ferry_node::config::Config;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::DurableLog;
use ferry_node::storage::wal_log::WalLog;
use std::net::SocketAddr;
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
        /// The Kafka listener's port on 127.0.0.1 (the first node's; the
        /// others take the ports after it).
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// Zones (az1, az2, ...), each with its own nodes, all in this
        /// process, sharing the bucket and an in-process coordinator.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
        zones: u16,
        /// Nodes in each zone.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
        nodes_per_zone: u16,
        /// `key=value`, overriding the defaults; repeatable.
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Clients connect with SASL_SSL (SCRAM, an `admin` user whose
        /// password is printed) and nodes call each other over mutual TLS;
        /// a CA and the node certificate are made under `<dir>/secure`.
        #[arg(long)]
        secure: bool,
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
    let mut layout = (1u16, 1u16);
    let mut dev_security: Option<dev_secure::DevSecure> = None;
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
            zones,
            nodes_per_zone,
            overrides,
            secure,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut c = Config::dev(&dir, port)?;
            if secure {
                let s = dev_secure::prepare(&dir)?;
                s.configure(&mut c, port)?;
                dev_security = Some(s);
            }
            if zones * nodes_per_zone > 1 {
                // Several nodes share the machine's cores.
                c.set("ferry.shards", "1")?;
            }
            for o in &overrides {
                c.apply_override(o)?;
            }
            layout = (zones, nodes_per_zone);
            (c, true)
        }
    };
    config.validate_for_node()?;
    for k in &config.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key, ignored");
    }
    if layout.0 * layout.1 > 1 {
        return run_zones(&config, layout.0, layout.1, dev_security.as_ref());
    }
    run(&mut config, dev, dev_security.as_ref())
}

/// `ferry dev --zones N [--nodes-per-zone M]`: N zones (az1...) of M nodes,
/// in this process, on consecutive ports, with one bucket and an in-process
/// coordinator.
fn run_zones(
    base: &Config,
    zones: u16,
    per_zone: u16,
    secure: Option<&dev_secure::DevSecure>,
) -> anyhow::Result<()> {
    let coordinator = ferry_node::cluster::LocalCoordinator::with_zone_cidrs(
        ferry_node::cluster::zone::ZoneTable::from_config(base).text(),
    )?;
    let first = base.listeners.first().context("listeners is empty")?.port;
    let mut nodes = Vec::new();
    for z in 0..zones {
        for n in 0..per_zone {
            let k = z * per_zone + n;
            let mut c = base.clone();
            c.set("node.id", &k.to_string())?;
            c.set("broker.rack", &format!("az{}", z + 1))?;
            let port = first.checked_add(k).context("ports past 65535")?;
            // The first listener takes this node's port; any other (the
            // inter-broker listener of `--secure`) a free one.
            let listeners: Vec<String> = base
                .listeners
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let p = if i == 0 { port } else { 0 };
                    format!("{}://127.0.0.1:{p}", l.name)
                })
                .collect();
            c.set("listeners", &listeners.join(","))?;
            c.reset("advertised.listeners")?;
            if let Some(m) = base.metrics_listener.filter(|m| m.port() != 0) {
                c.set(
                    "ferry.metrics.listener",
                    &format!("{}:{}", m.ip(), m.port() + k),
                )?;
            }
            let started = start_node(
                &c,
                ferry_node::node::ClusterJoin::Local(coordinator.clone()),
            )?;
            if k == 0 {
                if let Some(text) = &started.zone_cidrs {
                    // The value set at run time before a restart.
                    futures_lite::future::block_on(started.node.ctx.cluster.set_zone_cidrs(text))?;
                }
            }
            if let Some(s) = secure {
                s.seed_admin(&started.node.ctx)?;
            }
            nodes.push((format!("az{}", z + 1), started));
        }
    }
    println!(
        "ferry dev: {zones} zones, {per_zone} node(s) each, one process; bucket {}",
        base.wal.as_ref().map_or_else(String::new, |w| w.redacted())
    );
    for z in 1..=zones {
        let zone = format!("az{z}");
        let addrs: Vec<String> = nodes
            .iter()
            .filter(|(nz, _)| *nz == zone)
            .map(|(_, s)| s.node.addr.to_string())
            .collect();
        println!(
            "  zone {zone}: bootstrap {}  client.id automq_az={zone}&<your-app>",
            addrs.join(",")
        );
    }
    match (secure, nodes.first()) {
        (Some(sec), Some((_, s))) => sec.print(&s.node.addr.to_string()),
        (None, Some((_, s))) => println!(
            "  try: kcat -b {} -X client.id=automq_az=az1 -L",
            s.node.addr
        ),
        _ => {}
    }
    for (_, s) in &nodes {
        if let Some(m) = s.metrics {
            println!(
                "  metrics of node {}: http://{m}/metrics",
                s.node.ctx.node_id
            );
        }
    }
    let mut logs = Vec::new();
    for (_, s) in nodes {
        logs.push(s.log.clone());
        s.node.wait();
    }
    for log in logs {
        log.shutdown(Duration::from_secs(10));
    }
    Ok(())
}

/// A started node, with its log and metrics address.
struct Started {
    node: server::RunningNode,
    log: Arc<WalLog>,
    metrics: Option<SocketAddr>,
    /// `automq.zone.cidr.blocks` as kept in the bucket, if it was set at
    /// run time.
    zone_cidrs: Option<String>,
}

fn run(
    config: &mut Config,
    dev: bool,
    secure: Option<&dev_secure::DevSecure>,
) -> anyhow::Result<()> {
    let cluster = if config.etcd_endpoints.is_empty() {
        ferry_node::node::ClusterJoin::Alone
    } else {
        ferry_node::node::ClusterJoin::Pending
    };
    let started = start_node(config, cluster)?;
    if dev {
        let wal = config
            .wal
            .as_ref()
            .map_or_else(String::new, |w| w.redacted());
        println!("ferry dev: one node, bucket {wal}");
        println!("  bootstrap: {}", started.node.addr);
        match secure {
            Some(s) => {
                s.seed_admin(&started.node.ctx)?;
                s.print(&started.node.addr.to_string());
            }
            None => println!("  try: kcat -b {} -L", started.node.addr),
        }
    }
    let log = started.log.clone();
    started.node.wait();
    log.shutdown(Duration::from_secs(10));
    Ok(())
}

/// Recovers one node's log from the bucket and starts it in `cluster`
/// (`ClusterJoin::Pending`: etcd per the config, on the log's runtime).
fn start_node(config: &Config, cluster: ferry_node::node::ClusterJoin) -> anyhow::Result<Started> {
    let node_id = config.node_id.context("node.id is required")?;
    let wal_bucket = config
        .wal
        .clone()
        .or_else(|| config.data_buckets.first().cloned())
        .context("s3.wal.path or s3.data.buckets is required: where does the data go?")?;
    let uri = wal_bucket.parsed.clone();
    let store = uri.build_store().context("opening the bucket")?;
    // Deadlines, hedging and the PUT limit, under every writer and reader.
    let store_stats = std::sync::Arc::new(ferry_wal::StoreStats::default());
    let hedge = ferry_wal::HedgeConfig {
        hedge: uri.hedging() && config.hedge_max_extra_percent > 0,
        max_extra_percent: config.hedge_max_extra_percent,
        ..ferry_wal::HedgeConfig::default()
    };
    tracing::info!(
        hedge = hedge.hedge,
        max_extra_percent = hedge.max_extra_percent,
        "S3 requests"
    );
    let store: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(
        ferry_wal::HedgedStore::with_stats(store, hedge, store_stats.clone()),
    );
    let mut wal =
        ferry_wal::WalConfig::new(u32::try_from(node_id).context("node.id must not be negative")?);
    wal.batch_interval = wal_bucket.parsed.batch_interval;
    wal.max_bytes_in_batch = wal_bucket.parsed.max_bytes_in_batch;
    wal.inflight_bytes_max = WAL_INFLIGHT_BYTES_MAX.max(2 * wal.max_bytes_in_batch);
    wal.validate()?;
    let started = std::time::Instant::now();
    // The handoff writer takes `automq.zonerouter.channels`'s batch
    // settings; its objects go to the WAL's bucket.
    let handoff = config.zonerouter_channels.first().map(|channel| {
        let mut h = wal.clone();
        h.batch_interval = channel.parsed.batch_interval;
        h.max_bytes_in_batch = channel.parsed.max_bytes_in_batch;
        let same_bucket = channel.parsed.location == uri.location;
        if !same_bucket {
            tracing::warn!(
                channel = %channel.redacted(),
                "automq.zonerouter.channels names another bucket; handoff objects go to the WAL's bucket, with the channel's batchInterval and maxBytesInBatch"
            );
        }
        h
    });
    if let Some(h) = &handoff {
        h.validate()?;
    }
    let options = ferry_node::storage::wal_log::RecoveryOptions {
        accept_lost: config.accept_lost_objects.clone(),
        store_stats: Some(store_stats),
    };
    let opened = WalLog::open_with_options(store, wal, handoff, options)
        .context("recovering from the bucket")?;
    tracing::info!(
        objects = opened.objects_read,
        batches = opened.batches,
        topics = opened.topics.len(),
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let cluster = match cluster {
        ferry_node::node::ClusterJoin::Pending => ferry_node::node::ClusterJoin::Etcd {
            options: ferry_node::cluster::etcd::EtcdOptions::new(
                config.etcd_endpoints.clone(),
                config.cluster_id.clone(),
            ),
            runtime: opened.log.runtime(),
        },
        other => other,
    };
    let mut settings = NodeSettings {
        groups_snapshot: opened.groups.clone(),
        blocked: opened.blocked,
        cluster,
        ..NodeSettings::from_config(config)?
    };
    // A value set at run time (and kept in the bucket) wins over the
    // configured one, as Kafka's dynamic broker configs do.
    if let Some(stored) = &opened.zone_cidrs {
        settings.zone_cidrs = stored.clone();
    }
    let stored_zone_cidrs = opened.zone_cidrs.clone();
    let log = opened.log.clone();
    let inter = config
        .listeners
        .iter()
        .zip(&config.listener_security)
        .find(|(l, _)| l.name == config.inter_broker_listener);
    if let Some((l, sec)) = inter {
        let authenticated = sec
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth == ferry_node::config::ClientAuth::Required);
        if !authenticated && !config.etcd_endpoints.is_empty() {
            tracing::warn!(listener = %l.name, protocol = %l.protocol,
                "node-to-node calls are not authenticated: anyone who reaches this listener \
                 can call as a node; use an SSL listener with ssl.client.auth=required");
        }
    }
    let node = server::start(settings, log.clone(), opened.topics, opened.recovered)?;
    let mut metrics = None;
    if let Some(addr) = config.metrics_listener {
        let ctx = node.ctx.clone();
        let log2 = log.clone();
        let bound = ferry_node::broker::http::serve_metrics(
            addr,
            Arc::new(move || {
                use ferry_node::prom::{Exposition, Kind};
                let mut extra = log2.render_metrics();
                ctx.traffic.render(&ctx.zone, &mut extra);
                let mut e = Exposition::new();
                e.single(
                    "ferry_object_deletion_blocked_passes",
                    Kind::Gauge,
                    ctx.refs_blocked.load(std::sync::atomic::Ordering::Relaxed),
                );
                e.single("ferry_partitions_blocked", Kind::Gauge, ctx.blocked_count());
                extra.push_str(&e.finish());
                ctx.metrics.render(&extra)
            }),
        )?;
        tracing::info!(addr = %bound, node = node_id, "metrics at /metrics");
        metrics = Some(bound);
    }
    Ok(Started {
        node,
        log,
        metrics,
        zone_cidrs: stored_zone_cidrs,
    })
}
