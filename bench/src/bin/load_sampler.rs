//! `load-sampler`: sample substations' `GET /load` at a fixed rate into CSV, for the spread
//! benchmark. Stops by itself after --duration (or on Ctrl-C).

use anyhow::Context;
use clap::Parser;
use gridlb_bench::sampler::{Watched, sample};
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Duration;

/// Sample every substation's load report at a fixed rate; one CSV row per substation and
/// tick: t_s,substation,load_kw,capacity_kw,sessions.
#[derive(Parser, Debug)]
#[command(name = "load-sampler", version, about)]
struct Cli {
    /// A substation to sample, NAME=HOST:PORT (repeat for each).
    #[arg(long = "substation", required = true, value_name = "NAME=ADDR")]
    substations: Vec<Watched>,
    /// Samples per second.
    #[arg(long, default_value_t = 20.0)]
    hz: f64,
    /// How long to sample.
    #[arg(long, value_parser = gridlb_bench::parse_duration)]
    duration: Duration,
    /// The CSV file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-sampler: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.hz.is_finite() && (0.1..=1000.0).contains(&cli.hz),
        "--hz must be between 0.1 and 1000"
    );
    let file = std::fs::File::create(&cli.out)
        .with_context(|| format!("cannot create {}", cli.out.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime.block_on(sample(
        &cli.substations,
        cli.hz,
        cli.duration,
        &mut BufWriter::new(file),
    ))?;
    eprintln!(
        "load-sampler: {} ticks, {} failed fetches, written to {}",
        done.ticks,
        done.failures,
        cli.out.display()
    );
    Ok(())
}
