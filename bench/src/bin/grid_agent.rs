//! `grid-agent`: HAProxy's `agent-check` fed with each substation's headroom.
//!
//! HAProxy's agent check connects to a TCP port and reads one line; a percentage there sets
//! the server's weight relative to its configured weight (HAProxy manual, `agent-check`).
//! For each `--agent LISTEN=SUBSTATION`, this tool listens on LISTEN and answers every
//! connection with `up N%`, N being the substation's free capacity in percent
//! (`100 × (capacity − load) / capacity`, from a fresh `GET /load`), or `down` when the
//! substation does not answer. With weights proportional to capacity in HAProxy's config,
//! the effective weight is proportional to the free kW: the best HAProxy can do with
//! `leastconn`, which otherwise sees only connections.

use anyhow::Context;
use clap::Parser;
use gridlb_bench::client::Client;
use gridlb_protocol::LoadReport;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Answer HAProxy agent checks with each substation's headroom (`up N%`).
#[derive(Parser, Debug)]
#[command(name = "grid-agent", version, about)]
struct Cli {
    /// LISTEN_ADDR=SUBSTATION_ADDR (repeat for each substation).
    #[arg(long = "agent", required = true, value_name = "LISTEN=SUBSTATION")]
    agents: Vec<String>,
    /// Stop after this long.
    #[arg(long, value_parser = gridlb_bench::parse_duration, default_value = "1h")]
    duration: Duration,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grid-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let pairs = cli
        .agents
        .iter()
        .map(|a| {
            let (listen, sub) = a
                .split_once('=')
                .with_context(|| format!("--agent {a:?} is not LISTEN=SUBSTATION"))?;
            Ok((listen.parse::<SocketAddr>()?, sub.parse::<SocketAddr>()?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Arc::new(Client::new(Duration::from_millis(500)));
        for (listen, substation) in pairs {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("grid-agent for {substation} on {}", listener.local_addr()?);
            tokio::spawn(serve(listener, substation, Arc::clone(&client)));
        }
        tokio::select! {
            () = tokio::time::sleep(cli.duration) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}

async fn serve(listener: TcpListener, substation: SocketAddr, client: Arc<Client>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let line = match headroom(&client, substation).await {
                Some(free) => format!("up {}%\n", (free * 100.0).floor().clamp(0.0, 100.0)),
                None => "down\n".to_string(),
            };
            let _ = conn.write_all(line.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Free capacity as a fraction of capacity, from the substation's own report (validated by
/// the protocol's parser, so a malformed report counts as no answer).
async fn headroom(client: &Client, substation: SocketAddr) -> Option<f64> {
    let answer = client
        .request(substation, "GET", "/load", &[], b"")
        .await
        .ok()?;
    if answer.status != 200 {
        return None;
    }
    LoadReport::parse(&answer.body).ok().map(|r| r.headroom())
}
