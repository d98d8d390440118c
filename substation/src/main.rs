//! `substation`: run one simulated substation until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use substation::{Cli, Server};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the causes on one line, without anyhow's backtrace.
            eprintln!("substation: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.into_config()?;
    // Watch the signals before announcing the port, so a signal sent as soon as the line
    // appears is never handled by the default action.
    let mut signals = Signals::new()?;
    let server = Server::start(config.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Tests and scripts read this line to learn the port.
    println!("substation {} listening on {}", config.id, server.addr);
    let signal = signals.recv().await;
    log::info!("substation {}: {signal}, stopping", config.id);
    server.shutdown().await;
    Ok(())
}

/// SIGINT and SIGTERM, watched from creation on.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    /// Wait for SIGINT or SIGTERM; returns which came.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
