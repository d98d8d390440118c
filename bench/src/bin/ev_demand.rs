//! `ev-demand`: generate EV charging demand against a URL (gridlb, a substation, or any
//! peer in front of substations) and summarise what happened.
//!
//! It also states its own demand model (`--describe`, and `model` in the `--json` summary):
//! the charger and duration mixes, the mean session and each profile's mean rate, so that the
//! benchmark analyses take these numbers from the tool that draws from them.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gridlb_bench::demand::{AC_DURATIONS, Bound, DC_DURATIONS, DC_FROM_KW, Demand, Profile};
use gridlb_bench::run::{self, Options, Retry, Target};
use gridlb_bench::stats::{RunInfo, Summary, Tally, events_csv};
use serde::Serialize;
use std::collections::BTreeMap;
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
    #[arg(long, required_unless_present = "describe")]
    url: Option<String>,
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
    /// A refused vehicle comes back up to this many times, after the answer's Retry-After
    /// (while the demand lasts).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// With --retries: wait this long instead of the Retry-After.
    #[arg(long, value_parser = gridlb_bench::parse_duration)]
    retry_constant: Option<Duration>,
    /// Print the demand model as JSON (charger and duration mixes, mean session energy,
    /// each profile's mean rate) and send nothing.
    #[arg(long)]
    describe: bool,
}

/// A value of a mix and how common it is.
#[derive(Serialize)]
struct Weighted {
    value: f64,
    weight: f64,
}

/// The demand model, as `--describe` prints it and the `--json` summary carries it.
#[derive(Serialize)]
struct Model {
    /// Charger powers (kW) and their weights.
    charger_mix_kw: Vec<Weighted>,
    /// Powers from this one up are DC fast chargers (and draw from `dc_durations_s`).
    dc_from_kw: f64,
    /// AC session durations (simulated seconds) and their weights.
    ac_durations_s: Vec<Weighted>,
    /// DC session durations (simulated seconds) and their weights.
    dc_durations_s: Vec<Weighted>,
    /// Mean power of a session (kW).
    mean_power_kw: f64,
    /// Mean duration of a session (simulated seconds).
    mean_duration_s: f64,
    /// Mean energy of a session (kW x simulated seconds): by Little's law, the mean load is
    /// the arrival rate (per simulated second) times this.
    mean_session_energy_kw_s: f64,
    /// Per profile: the mean arrival rate over a run as a fraction of the peak `--rate`.
    profile_mean_factor: BTreeMap<&'static str, f64>,
}

impl Model {
    fn new() -> Model {
        let weighted = |mix: &[(f64, f64)]| {
            mix.iter()
                .map(|&(value, weight)| Weighted { value, weight })
                .collect()
        };
        let mean = |mix: &[(f64, f64)]| {
            mix.iter().map(|(v, w)| v * w).sum::<f64>() / mix.iter().map(|(_, w)| w).sum::<f64>()
        };
        let powers = &gridlb_protocol::CHARGER_MIX;
        let total_weight: f64 = powers.iter().map(|(_, w)| w).sum();
        let duration = |kw: f64| {
            if kw >= DC_FROM_KW {
                mean(&DC_DURATIONS)
            } else {
                mean(&AC_DURATIONS)
            }
        };
        let over_powers = |f: &dyn Fn(f64) -> f64| {
            powers.iter().map(|&(kw, w)| w * f(kw)).sum::<f64>() / total_weight
        };
        Model {
            charger_mix_kw: weighted(powers),
            dc_from_kw: DC_FROM_KW,
            ac_durations_s: weighted(&AC_DURATIONS),
            dc_durations_s: weighted(&DC_DURATIONS),
            mean_power_kw: mean(powers),
            mean_duration_s: over_powers(&duration),
            mean_session_energy_kw_s: over_powers(&|kw| kw * duration(kw)),
            profile_mean_factor: Profile::value_variants()
                .iter()
                .map(|p| (p.as_str(), p.mean_factor()))
                .collect(),
        }
    }
}

/// The `--json` output: the run's summary and the model it drew from.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    model: Model,
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
    if cli.describe {
        println!("{}", serde_json::to_string_pretty(&Model::new())?);
        return Ok(());
    }
    let url = cli.url.clone().context("--url is required")?;
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
        target: Target::parse(&url)?,
        demand,
        concurrency: cli.concurrency,
        timeout: cli.timeout,
        progress: !cli.quiet,
        retry: Retry {
            max: cli.retries,
            constant: cli.retry_constant,
        },
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
        target: url,
        profile: cli.profile.as_str().to_string(),
        rate: cli.rate,
        seed: cli.seed,
        started_unix,
        elapsed,
    };
    let summary = Summary::of(&info, &records);
    if cli.json {
        let output = Output {
            summary: &summary,
            model: Model::new(),
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print!("{}", summary.human());
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
