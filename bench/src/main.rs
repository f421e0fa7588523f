//! The `ferry-bench` binary: parses the command line and hands over to the
//! library. `ferry-bench run --help` lists the settings.

use clap::Parser;
use ferry_bench::cli::{BlastArgs, Cli, Command, CostArgs, RunArgs, SweepArgs};
use ferry_bench::cost::{FerryUsage, Prices};
use ferry_bench::error::BenchError;
use ferry_bench::report::CostReport;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        op: "writing the JSON report",
        path: path.to_path_buf(),
        source,
    })
}

fn run(args: RunArgs) -> Result<(), BenchError> {
    let json = args.json.clone();
    let config = args.into_config()?;
    let report = ferry_bench::run::run(&config, std::env::args().collect())?;
    print!("{}", report.render_text());
    if let Some(path) = &json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn cost(args: CostArgs) -> Result<(), BenchError> {
    args.check()?;
    let prices = match &args.prices {
        Some(path) => Prices::load(path)?,
        None => Prices::default(),
    };
    let usage = FerryUsage {
        puts_per_sec: args.ferry_puts_per_sec,
        gets_per_sec: args.ferry_gets_per_sec,
        cross_zone_bytes_per_sec: args.ferry_cross_zone_mb_per_sec * 1e6,
        stored_bytes: args.stored_gb * prices.bytes_per_gb,
    };
    let report = CostReport::new(
        prices,
        args.produce_mb_per_sec * 1e6,
        args.consumer_groups,
        usage,
        &args.batch_interval_ms,
    );
    print!("{}", report.render_text());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<(), BenchError> {
    let config = args.into_config()?;
    let report = ferry_bench::sweep::sweep(&config, std::env::args().collect())?;
    let dir = ferry_bench::results::write_all(&report)?;
    println!("{}", dir.join("report.md").display());
    let failed = report.failures();
    if failed > 0 {
        return Err(BenchError::Node {
            what: "sweep".into(),
            reason: format!(
                "{failed} point(s) or peer(s) failed; see {}",
                dir.join("report.md").display()
            ),
        });
    }
    Ok(())
}

fn blast(args: BlastArgs) -> Result<(), BenchError> {
    let json = args.json.clone();
    let config = args.into_config()?;
    let report = ferry_bench::blast::blast(&config)?;
    print!("{}", report.render_text());
    if let Some(path) = &json {
        write_json(path, &report)?;
    }
    if !report.errors.is_empty() {
        return Err(BenchError::Node {
            what: "blast".into(),
            reason: format!("the broker answered partition errors: {:?}", report.errors),
        });
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Cost(args) => cost(args),
        Command::Sweep(args) => sweep(*args),
        Command::Blast(args) => blast(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
