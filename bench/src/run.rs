//! Sending a plan: each arrival is sent at its planned time (open loop), with at most
//! `concurrency` requests in flight; when every slot is busy the next arrival waits and is
//! counted late. The power goes both as `x-charge-kw` and in the JSON body.
//!
//! With [`Retry`], a refused vehicle comes back: after the answer's `Retry-After` (or a
//! constant wait), at most `max` times, and only while the demand lasts (so the run stays
//! bounded whatever a router says); each attempt is its own [`Record`] (`attempt` 1, 2, ...).
//!
//! HTTP is this crate's small client ([`crate::client`], keep-alive pooled). The run ends
//! when the plan is exhausted or on Ctrl-C, and then waits for the requests in flight (each
//! bounded by the timeout).

use crate::client::{Answer, Client};
use crate::demand::Demand;
use crate::progress::Progress;
use crate::stats::{Record, Tally};
use gridlb_protocol::{CHARGE_KW_HEADER, SUBSTATION_HEADER};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Where the requests go: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    /// Parse an `http://` URL (no TLS); the host is resolved now, the first address is used.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/charge"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("--url {url:?}: cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: {authority} has no address"))?;
        Ok(Target {
            url: url.to_string(),
            addr,
            path: path.to_string(),
        })
    }
}

/// How to send.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub demand: Demand,
    pub concurrency: usize,
    pub timeout: Duration,
    pub progress: bool,
    pub retry: Retry,
}

/// What a refused vehicle does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retry {
    /// Most retries per vehicle (0: a refusal is final).
    pub max: u32,
    /// Wait this long instead of the answer's `Retry-After`.
    pub constant: Option<Duration>,
}

impl Retry {
    /// How long to wait after `answer` (a `503`): the constant, else its `Retry-After`
    /// seconds, else one second.
    fn wait(&self, answer: &Answer) -> Duration {
        self.constant.unwrap_or_else(|| {
            let advised = answer
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok());
            Duration::from_secs(advised.unwrap_or(1))
        })
    }
}

/// Send the whole plan; returns when it started (Unix seconds) and how long it took.
pub async fn run(options: &Options, tally: Arc<Tally>) -> (f64, Duration) {
    let started_unix = gridlb_protocol::unix_now();
    let start = Instant::now();
    let progress = options
        .progress
        .then(|| Progress::start(options.demand, Arc::clone(&tally), start));
    tokio::select! {
        () = send_all(options, &tally, start) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("\nev-demand: interrupted, stopping"),
    }
    if let Some(p) = progress {
        p.stop().await;
    }
    (started_unix, start.elapsed())
}

async fn send_all(options: &Options, tally: &Arc<Tally>, start: Instant) {
    let client = Arc::new(Client::new(options.timeout));
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let target = Arc::new(options.target.clone());
    let mut tasks = JoinSet::new();
    for arrival in options.demand.arrivals() {
        tokio::time::sleep_until((start + arrival.at).into()).await;
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let sent_at = start.elapsed();
        let late = sent_at.saturating_sub(arrival.at);
        tally.sent.fetch_add(1, Relaxed);
        let (client, tally, target) = (Arc::clone(&client), Arc::clone(tally), Arc::clone(&target));
        let (retry, until) = (options.retry, options.demand.bound.duration);
        tasks.spawn(async move {
            let _slot = slot;
            let request = arrival.request;
            let mut sent_at = sent_at;
            for attempt in 0..=retry.max {
                let began = Instant::now();
                let answer = send(&client, &target, &request).await;
                let wait = answer
                    .as_ref()
                    .filter(|a| a.status == 503)
                    .map(|a| retry.wait(a));
                tally.record(Record {
                    sent_at,
                    late,
                    power_kw: request.power_kw,
                    duration_s: request.duration_s,
                    status: answer.as_ref().map(|a| a.status),
                    substation: answer.as_ref().and_then(substation_of),
                    latency: began.elapsed(),
                    attempt,
                });
                let Some(wait) = wait else { break };
                let again = start.elapsed() + wait;
                if attempt == retry.max || until.is_none_or(|u| again >= u) {
                    break;
                }
                tokio::time::sleep(wait).await;
                sent_at = start.elapsed();
                tally.sent.fetch_add(1, Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn send(
    client: &Client,
    target: &Target,
    request: &gridlb_protocol::ChargeRequest,
) -> Option<Answer> {
    let body = serde_json::to_vec(request).ok()?;
    let kw = request.power_kw.to_string();
    let headers = [
        ("content-type", "application/json"),
        (CHARGE_KW_HEADER, kw.as_str()),
    ];
    client
        .request(target.addr, "POST", &target.path, &headers, &body)
        .await
        .ok()
}

/// The substation that answered: gridlb's `x-gridlb-substation` header, else the
/// `substation` field of a substation's answer (what nginx and HAProxy pass through).
pub fn substation_of(answer: &Answer) -> Option<String> {
    if let Some(name) = answer.header(SUBSTATION_HEADER) {
        return Some(name.to_string());
    }
    answer.json()["substation"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_address_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/charge").expect("valid");
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/charge"));
        let t = Target::parse("http://127.0.0.1:9").expect("valid");
        assert_eq!(t.path, "/charge", "the path defaults to /charge");
        assert_eq!(
            Target::parse("http://localhost/x")
                .expect("valid")
                .addr
                .port(),
            80
        );
        assert!(Target::parse("https://127.0.0.1:1/").is_err());
    }
}
