//! The `gridlb` command line: run the proxy, check a config, or run the demo (the separate
//! `gridlb-demo` binary, so that the proxy does not link the substation simulator).

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridlb::config::Config;
use gridlb::discovery;
use gridlb::metrics::Metrics;
use gridlb::server::{self, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc rather than the system allocator: the request path allocates and frees small
/// buffers on every request, and glibc's malloc took a tenth of the proxy's CPU at full speed
/// (bench/RESULTS.md). Built without transparent huge pages (`no_thp`): a 2 MiB page stays
/// resident while any of it is in use, which kept most of a burst of connections' memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay` (its `include/mimalloc.h`, which `libmimalloc-sys`
/// builds but does not name this option of).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory waits before it goes back to the system (mimalloc's default: 1 s).
/// Not zero: a page that empties and fills again with every request would then cost a
/// `madvise` and a page fault per request (seen at one per request under load). An idle
/// proxy does not wait for the delay: `relieve` purges at once when the last connection ends.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

fn tune_allocator() {
    // SAFETY: sets a process-wide option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

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
    /// table of each substation's utilisation. Ctrl-C stops it. Runs the `gridlb-demo`
    /// binary found beside `gridlb` (or on the PATH); `gridlb demo --help` lists its options.
    #[command(disable_help_flag = true)]
    Demo {
        /// Options of the demo (`--rate`, `--duration`, `--algorithm`, `--seed`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Some(Command::Check) => check(cli.config),
        Some(Command::Demo { args }) => demo(args),
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
    discovery::resolve_all(&config).with_context(|| format!("{} is not valid", path.display()))?;
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
    let (server, _parts) = server::build(config, Some(path.clone()), &options, metrics)
        .with_context(|| format!("{} is not valid", path.display()))?;
    server.run_forever()
}

/// `gridlb demo ARGS`: run `gridlb-demo ARGS`, from beside this binary or from the PATH.
fn demo(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("gridlb-demo")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("gridlb-demo"));
    let status = std::process::Command::new(&program)
        .args(args)
        .status()
        .with_context(|| {
            format!(
                "cannot run {}: the demo is its own binary; build it with `cargo build -p gridlb-demo` \
                 (or run ./scripts/demo)",
                program.display()
            )
        })?;
    anyhow::ensure!(status.success(), "the demo ended with {status}");
    Ok(())
}
