//! `gridlb demo` (the `gridlb-demo` binary, which `gridlb demo` runs): the whole system in one
//! process, with no set-up. A crate of its own so that the production proxy does not link the
//! substation simulator.
//!
//! Three substations of different capacity (200, 500 and 1000 kW) run in-process on free
//! loopback ports, the proxy in front of them, and the benchmarks' demand model
//! (`gridlb_bench::demand`: Poisson arrivals, the fleet's mix of chargers) sends EV charging
//! sessions through the proxy. Time is
//! scaled so that a session of an hour lasts six seconds. A table of each substation's
//! utilisation is redrawn twice a second (plain lines when stdout is not a terminal).
//! Ctrl-C, or the end of `--duration`, stops everything and prints a summary.

use async_trait::async_trait;
use clap::Parser;
use gridlb::config::Config;
use gridlb::metrics::Metrics;
use gridlb::server::{self, Options, Parts};
use gridlb::status::{Status, SubstationStatus};
use gridlb_bench::client::Client;
use gridlb_bench::demand::{Bound, Demand, Profile};
use gridlb_protocol::SUBSTATION_HEADER;
use pingora_core::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Simulated seconds per real second.
const TIME_SCALE: f64 = 600.0;
const CAPACITIES: [(&str, f64); 3] = [("s1", 200.0), ("s2", 500.0), ("s3", 1000.0)];

/// Run three in-process substations (200, 500 and 1000 kW), the proxy and generated EV
/// demand, with a live table of each substation's utilisation. Ctrl-C stops it.
#[derive(Parser, Debug, Clone)]
#[command(name = "gridlb demo", version, about, long_about)]
pub struct DemoArgs {
    /// New charging sessions per second (Poisson arrivals); about 14/s fills the grid.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Selection algorithm: least-load, p2c, round-robin or random.
    #[arg(long, default_value = "least-load")]
    pub algorithm: String,
    /// Seed of the demand generator (same seed, same demand).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the generator has seen.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    by_substation: Mutex<BTreeMap<String, u64>>,
}

fn main() -> std::process::ExitCode {
    let args = DemoArgs::parse();
    // The demo draws a table on the terminal: only warnings may interrupt it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridlb demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number"
    );
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut substations = Vec::new();
    for (name, capacity_kw) in CAPACITIES {
        let config = substation::Config {
            id: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            capacity_kw,
            time_scale: TIME_SCALE,
            orca_form: Default::default(),
            max_session_kw: gridlb_protocol::MAX_SESSION_KW,
            max_duration_s: gridlb_protocol::MAX_DURATION_S,
        };
        substations.push(side.block_on(substation::Server::start(config))?);
    }
    let (listen, admin) = (free_port()?, free_port()?);
    // The config as data, written out as YAML (the same file a user would write).
    let subs: Vec<serde_json::Value> = substations
        .iter()
        .map(|s| serde_json::json!({"name": s.state.id(), "address": s.addr.to_string()}))
        .collect();
    let file = serde_json::json!({
        "listen": listen.to_string(),
        "admin": {"listen": admin.to_string()},
        "substations": subs,
        "probe": {"interval_ms": 200, "timeout_ms": 150},
        "selection": {"algorithm": args.algorithm},
    });
    let yaml = serde_yaml::to_string(&file)?;
    let config = Config::parse(&yaml).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let metrics = Arc::new(Metrics::new(prometheus::default_registry())?);
    let (server, parts) = server::build(
        config,
        None,
        &Options {
            threads: Some(2),
            ..Options::default()
        },
        metrics,
    )?;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    side.spawn(generate(
        listen,
        args.clone(),
        Arc::clone(&tally),
        Arc::clone(&stop),
    ));
    side.spawn(draw(
        parts.clone(),
        Arc::clone(&tally),
        listen,
        admin,
        args.clone(),
    ));

    server.run(RunArgs {
        shutdown_signal: Box::new(DemoSignal {
            duration: args.duration,
        }),
    });

    stop.store(true, Relaxed);
    if std::io::stdout().is_terminal() {
        print!("\x1b[?25h");
    }
    println!("\n{}", summary(&parts.status(), &tally));
    for s in substations {
        side.block_on(s.shutdown());
    }
    side.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// A loopback port that was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

struct DemoSignal {
    duration: Option<f64>,
}

#[async_trait]
impl ShutdownSignalWatch for DemoSignal {
    async fn recv(&self) -> ShutdownSignal {
        let deadline = async {
            match self.duration {
                Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = deadline => {}
        }
        ShutdownSignal::FastShutdown
    }
}

/// Send the demand model's sessions (constant rate, Poisson arrivals) until stopped.
async fn generate(proxy: SocketAddr, args: DemoArgs, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let client = Arc::new(Client::new(Duration::from_secs(5)));
    let demand = Demand {
        rate: args.rate,
        profile: Profile::Constant,
        bound: Bound {
            count: None,
            duration: None,
        },
        seed: args.seed,
    };
    // Let the first probes land before the first session.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let start = tokio::time::Instant::now();
    for arrival in demand.arrivals() {
        if stop.load(Relaxed) {
            break;
        }
        tokio::time::sleep_until(start + arrival.at).await;
        let body = serde_json::to_vec(&arrival.request).unwrap_or_default();
        let (client, tally) = (Arc::clone(&client), Arc::clone(&tally));
        tokio::spawn(async move {
            tally.sent.fetch_add(1, Relaxed);
            match client
                .request(
                    proxy,
                    "POST",
                    "/charge",
                    &[("content-type", "application/json")],
                    &body,
                )
                .await
            {
                Ok(a) if a.status == 201 => {
                    tally.accepted.fetch_add(1, Relaxed);
                    let name = a.header(SUBSTATION_HEADER).unwrap_or("?").to_string();
                    *tally
                        .by_substation
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(name)
                        .or_default() += 1;
                }
                Ok(a) if a.status == 503 => {
                    tally.refused.fetch_add(1, Relaxed);
                }
                _ => {
                    tally.errors.fetch_add(1, Relaxed);
                }
            }
        });
    }
}

async fn draw(
    parts: Parts,
    tally: Arc<Tally>,
    listen: SocketAddr,
    admin: SocketAddr,
    args: DemoArgs,
) {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let every = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    loop {
        tokio::time::sleep(every).await;
        let status = parts.status();
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[?25l\x1b[H\x1b[2J");
            out.push_str(&format!(
                "gridlb demo · proxy http://{listen}/charge · status page http://{admin}/ · Ctrl-C stops\n\
                 algorithm {} · {:.0} sessions/s · one hour of charging lasts {:.0} s · t = {:.0} s\n\n",
                args.algorithm,
                args.rate,
                3600.0 / TIME_SCALE,
                started.elapsed().as_secs_f64()
            ));
        }
        out.push_str(&table(&status.substations, tty));
        out.push_str(&counts(&tally));
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

fn table(subs: &[SubstationStatus], tty: bool) -> String {
    let mut out = String::new();
    if tty {
        out.push_str("substation  capacity      load  utilisation                            sessions  health\n");
    }
    for s in subs {
        let (load, cap) = s
            .report
            .as_ref()
            .map(|r| (r.load_kw, r.capacity_kw))
            .unwrap_or((0.0, 0.0));
        let u = s.utilization.unwrap_or(0.0);
        let filled = ((u.clamp(0.0, 1.0)) * 30.0).round() as usize;
        let bar = format!("{}{}", "█".repeat(filled), "░".repeat(30 - filled));
        let health = if s.draining {
            "draining"
        } else if s.healthy {
            "healthy"
        } else {
            "down"
        };
        out.push_str(&format!(
            "{:<10} {:>6.0} kW {:>7.1} kW  {bar} {:>5.1}%  {:>8}  {health}\n",
            s.name,
            cap,
            load,
            u * 100.0,
            s.sessions_routed
        ));
    }
    out
}

fn counts(t: &Tally) -> String {
    format!(
        "sent {}  accepted {}  refused (grid full) {}  errors {}\n",
        t.sent.load(Relaxed),
        t.accepted.load(Relaxed),
        t.refused.load(Relaxed),
        t.errors.load(Relaxed)
    )
}

fn summary(status: &Status, tally: &Tally) -> String {
    let by = tally
        .by_substation
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let shares: Vec<String> = by.iter().map(|(name, n)| format!("{name}={n}")).collect();
    format!(
        "demo summary: {}accepted by substation: {}\n{}",
        counts(tally),
        shares.join(" "),
        table(&status.substations, false)
    )
}
