//! Sampling substations' `GET /load`: the ground truth of the spread benchmark, taken from
//! the substations themselves rather than from any router's belief.
//!
//! Every tick (a fixed rate, missed ticks skipped rather than bunched) asks every substation
//! at once and writes one CSV row per answer: `t_unix,substation,load_kw,capacity_kw,sessions`,
//! where `t_unix` is the tick's wall-clock time (Unix seconds), so that it lines up with
//! `ev-demand`'s records. A failed fetch writes nothing for that
//! substation and is counted.

use crate::client::Client;
use gridlb_protocol::{LoadReport, unix_now};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// One substation to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub name: String,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Watched {
    type Err = String;

    /// `NAME=HOST:PORT`.
    fn from_str(s: &str) -> Result<Watched, String> {
        let (name, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=HOST:PORT"))?;
        let addr = addr
            .parse()
            .map_err(|e| format!("{s:?}: {addr:?} is not an address: {e}"))?;
        Ok(Watched {
            name: name.to_string(),
            addr,
        })
    }
}

/// What a sampling run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sampled {
    pub ticks: u64,
    pub failures: u64,
}

/// Sample `watched` `hz` times a second for `duration` (or until Ctrl-C), writing CSV to `out`.
pub async fn sample(
    watched: &[Watched],
    hz: f64,
    duration: Duration,
    out: &mut impl Write,
) -> std::io::Result<Sampled> {
    let client = Arc::new(Client::new(Duration::from_secs_f64(
        (1.0 / hz).clamp(0.05, 2.0),
    )));
    writeln!(out, "t_unix,substation,load_kw,capacity_kw,sessions")?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / hz));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut done = Sampled::default();
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut deadline => break,
            _ = &mut ctrl_c => break,
        }
        let t = unix_now();
        let fetches: Vec<_> = watched
            .iter()
            .map(|w| {
                let (client, w) = (Arc::clone(&client), w.clone());
                tokio::spawn(async move { fetch(&client, &w).await })
            })
            .collect();
        for (w, fetch) in watched.iter().zip(fetches) {
            match fetch.await.ok().flatten() {
                Some(r) => writeln!(
                    out,
                    "{t:.4},{},{},{},{}",
                    w.name, r.load_kw, r.capacity_kw, r.active_sessions
                )?,
                None => done.failures += 1,
            }
        }
        done.ticks += 1;
    }
    out.flush()?;
    Ok(done)
}

async fn fetch(client: &Client, w: &Watched) -> Option<LoadReport> {
    let answer = client
        .request(w.addr, "GET", "/load", &[], b"")
        .await
        .ok()?;
    (answer.status == 200)
        .then(|| LoadReport::from_json(&answer.body, &w.name).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_substations_are_name_equals_address() {
        let w: Watched = "s1=127.0.0.1:9001".parse().expect("valid");
        assert_eq!((w.name.as_str(), w.addr.port()), ("s1", 9001));
        assert!("127.0.0.1:9001".parse::<Watched>().is_err());
        assert!("s1=nowhere".parse::<Watched>().is_err());
    }
}
