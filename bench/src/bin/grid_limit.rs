//! `grid-limit`: the omniscient least-load placement of a demand in simulated time (the limit
//! row of the spread and replica benchmarks; see `gridlb_bench::limit`). Writes what a real
//! run writes: the `load-sampler` CSV (`--out`), the `ev-demand` records (`--events`) and the
//! `ev-demand --json` summary on stdout, so the analysis treats it as one more router.

use anyhow::Context;
use clap::Parser;
use gridlb_bench::demand::{Bound, Demand, Profile};
use gridlb_bench::limit::{Grid, simulate};
use gridlb_bench::stats::{RunInfo, Summary, events_csv};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Replay the demand of `ev-demand` (same options, same seed, same arrivals) through a router
/// that knows every session's start and end the instant they happen, and sample the grid.
#[derive(Parser, Debug)]
#[command(name = "grid-limit", version, about, long_about)]
struct Cli {
    /// Peak arrivals per second of each stream (as ev-demand's --rate).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Length of the demand.
    #[arg(long, value_parser = gridlb_bench::parse_duration)]
    duration: Duration,
    #[arg(long, value_enum, default_value = "constant")]
    profile: Profile,
    /// Seed of a demand stream; repeat for several streams (merged), as the replica bench's.
    #[arg(long = "seed", required = true)]
    seeds: Vec<u64>,
    /// A substation, NAME=KW; repeat for each.
    #[arg(long = "capacity", required = true, value_parser = parse_grid)]
    grid: Vec<Grid>,
    /// Simulated seconds per real second (as the substations' --time-scale).
    #[arg(long)]
    time_scale: f64,
    /// Samples per second.
    #[arg(long, default_value_t = 20.0)]
    hz: f64,
    /// Sample this long (default: the duration and 2 s more, as the benchmark's sampler).
    #[arg(long, value_parser = gridlb_bench::parse_duration)]
    sample_for: Option<Duration>,
    /// Unix time of the start (default: now), so that the output lines up like a real run's.
    #[arg(long)]
    started_unix: Option<f64>,
    /// Write the samples here (load-sampler's CSV).
    #[arg(long)]
    out: PathBuf,
    /// Write every request and its answer here (ev-demand's CSV).
    #[arg(long)]
    events: PathBuf,
}

fn parse_grid(text: &str) -> Result<Grid, String> {
    let (name, kw) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=KW"))?;
    let capacity_kw: f64 = kw
        .parse()
        .ok()
        .filter(|k: &f64| k.is_finite() && *k > 0.0)
        .ok_or_else(|| format!("{text:?}: {kw:?} is not a positive number of kW"))?;
    Ok(Grid {
        name: name.to_string(),
        capacity_kw,
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.rate > 0.0 && cli.time_scale > 0.0 && cli.hz > 0.0,
        "--rate, --time-scale and --hz must be positive"
    );
    let demands: Vec<Demand> = cli
        .seeds
        .iter()
        .map(|&seed| Demand {
            rate: cli.rate,
            profile: cli.profile,
            bound: Bound {
                count: None,
                duration: Some(cli.duration),
            },
            seed,
        })
        .collect();
    let sample_for = cli
        .sample_for
        .unwrap_or(cli.duration + Duration::from_secs(2));
    let out = simulate(&demands, &cli.grid, cli.time_scale, cli.hz, sample_for);
    let start = cli.started_unix.unwrap_or_else(gridlb_protocol::unix_now);
    let mut csv = String::from("t_unix,substation,load_kw,capacity_kw,sessions\n");
    for sample in &out.samples {
        for (g, (load, n)) in cli.grid.iter().zip(&sample.loads) {
            csv.push_str(&format!(
                "{:.3},{},{load},{},{n}\n",
                start + sample.t,
                g.name,
                g.capacity_kw
            ));
        }
    }
    std::fs::write(&cli.out, csv).with_context(|| format!("cannot write {}", cli.out.display()))?;
    std::fs::write(&cli.events, events_csv(&out.records))
        .with_context(|| format!("cannot write {}", cli.events.display()))?;
    let info = RunInfo {
        target: "omniscient least-load (simulated)".into(),
        profile: cli.profile.as_str().to_string(),
        rate: cli.rate * cli.seeds.len() as f64,
        seed: cli.seeds[0],
        started_unix: start,
        elapsed: cli.duration,
    };
    let summary = Summary::of(&info, &out.records);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}
