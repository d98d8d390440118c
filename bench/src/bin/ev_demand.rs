//! `ev-demand`: generate EV charging demand against a URL (gridlb, a substation, or any
//! peer in front of substations) and summarise what happened.

use anyhow::Context;
use clap::Parser;
use gridlb_bench::demand::{Bound, Demand, Profile};
use gridlb_bench::run::{self, Options, Target};
use gridlb_bench::stats::{RunInfo, Summary, Tally, events_csv};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Send EV charging sessions (`POST /charge`) as Poisson arrivals, with a mix of charger
/// powers (3.7 to 150 kW) and session durations, then print a summary: sent, accepted,
/// refused, errors, share per substation and latency percentiles.
///
/// The same seed and settings give the same demand. The run is bounded by --duration or
/// --count (whichever comes first; 30 s when neither is given).
#[derive(Parser, Debug)]
#[command(name = "ev-demand", version, about, long_about)]
struct Cli {
    /// Where to send, e.g. http://127.0.0.1:8080/charge (the path defaults to /charge).
    #[arg(long)]
    url: String,
    /// Peak arrivals per second (the profile shapes the rate below it).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Stop sending after this long (30s, 2m, 500ms).
    #[arg(long, value_parser = gridlb_bench::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many sessions.
    #[arg(long)]
    count: Option<u64>,
    /// How the rate moves over the run.
    #[arg(long, value_enum, default_value = "constant")]
    profile: Profile,
    /// Seed of the demand (same seed, same demand).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Most requests in flight at once; an arrival that finds none free waits (counted late).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Bound on each request (connect, send and answer).
    #[arg(long, value_parser = gridlb_bench::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Also write every request and its answer as CSV to this file.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ev-demand: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.rate.is_finite() && cli.rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(cli.count != Some(0), "--count must be at least 1");
    let duration = match (cli.duration, cli.count) {
        (None, None) => Some(Duration::from_secs(30)),
        (d, _) => d,
    };
    let demand = Demand {
        rate: cli.rate,
        profile: cli.profile,
        bound: Bound {
            count: cli.count,
            duration,
        },
        seed: cli.seed,
    };
    let options = Options {
        target: Target::parse(&cli.url)?,
        demand,
        concurrency: cli.concurrency,
        timeout: cli.timeout,
        progress: !cli.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tally = Arc::new(Tally::default());
    let (started_unix, elapsed) = runtime.block_on(run::run(&options, Arc::clone(&tally)));
    let records = tally.records();
    if let Some(path) = &cli.events {
        std::fs::write(path, events_csv(&records))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let info = RunInfo {
        target: cli.url.clone(),
        profile: cli.profile.as_str().to_string(),
        rate: cli.rate,
        seed: cli.seed,
        started_unix,
        elapsed,
    };
    let summary = Summary::of(&info, &records);
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.human());
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
