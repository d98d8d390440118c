//! The `gridlb` command line: run the proxy, check a config, or run the demo.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridlb::config::Config;
use gridlb::metrics::Metrics;
use gridlb::server::{self, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// gridlb routes EV charging sessions to the substation with the most headroom.
///
/// Run it with a config file (`gridlb --config conf/gridlb.yaml`), validate a file
/// (`gridlb check --config FILE`), or see it work with no set-up at all (`gridlb demo`).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The YAML config file (see README, "Configuration").
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running gridlb that was sent SIGQUIT
    /// (Pingora's graceful upgrade: no connection is refused during the switch).
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Worker threads for the proxy (default: one per CPU).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file; exits non-zero and names the offending key when it is wrong.
    Check,
    /// Run three in-process substations, the proxy and generated EV demand, with a live
    /// table of each substation's utilisation. Ctrl-C stops it.
    Demo(gridlb::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws a table on the terminal: only warnings may interrupt it.
    let level = if matches!(cli.command, Some(Command::Demo(_))) {
        "warn"
    } else {
        "info"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Some(Command::Check) => check(cli.config),
        Some(Command::Demo(args)) => gridlb::demo::run(args),
        None => run(cli.config, cli.upgrade, cli.threads),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = path.context("check needs --config FILE")?;
    let config = Config::load(&path).with_context(|| format!("{} is not valid", path.display()))?;
    println!(
        "{} is valid: {} substation(s), algorithm {}, listen {}, admin {}",
        path.display(),
        config.substations.len(),
        config.selection.algorithm.as_str(),
        config.listen,
        config.admin.listen
    );
    Ok(())
}

fn run(path: Option<PathBuf>, upgrade: bool, threads: Option<usize>) -> anyhow::Result<()> {
    let path = path.context("--config FILE is required (or run `gridlb demo`)")?;
    let config = Config::load(&path).with_context(|| format!("{} is not valid", path.display()))?;
    let metrics =
        Arc::new(Metrics::new(prometheus::default_registry()).context("cannot register metrics")?);
    log::info!(
        "gridlb listening on {}, admin on {}, {} substation(s)",
        config.listen,
        config.admin.listen,
        config.substations.len()
    );
    let options = Options {
        upgrade,
        threads,
        upgrade_sock: None,
    };
    let (server, _grid) = server::build(config, Some(path), &options, metrics);
    server.run_forever()
}
