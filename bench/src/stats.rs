//! What a run saw: live counters for the progress line, one [`Record`] per request, and the
//! [`Summary`] made from them at the end (counts, share per substation, latency percentiles).
//!
//! Outcomes: `2xx` is accepted, `503` is refused (the grid, or every substation tried, had no
//! room), anything else (another status, a connect failure, a timeout) is an error: the
//! generator only sends valid requests, so a `4xx` is a fault somewhere too.
//!
//! Percentiles use the nearest-rank method over every answered request (refusals included:
//! a refusal is an answer the client waited for).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One request and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it was sent, from the start of the run.
    pub sent_at: Duration,
    /// How late that was against the plan (waiting for a concurrency slot).
    pub late: Duration,
    pub power_kw: f64,
    pub duration_s: f64,
    /// `None` when no answer came (connect failure, timeout).
    pub status: Option<u16>,
    /// The substation that answered, when the answer says.
    pub substation: Option<String>,
    pub latency: Duration,
    /// 0 for a vehicle's first request, n for its n-th retry after a refusal.
    pub attempt: u32,
}

impl Record {
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn refused(&self) -> bool {
        self.status == Some(503)
    }
}

/// Counters shared by the senders and the progress line, and every record.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    records: Mutex<Vec<Record>>,
}

impl Tally {
    pub fn record(&self, record: Record) {
        let counter = if record.accepted() {
            &self.accepted
        } else if record.refused() {
            &self.refused
        } else {
            &self.errors
        };
        counter.fetch_add(1, Relaxed);
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    pub fn in_flight(&self) -> u64 {
        let done =
            self.accepted.load(Relaxed) + self.refused.load(Relaxed) + self.errors.load(Relaxed);
        self.sent.load(Relaxed).saturating_sub(done)
    }

    /// Every record, in order of sending.
    pub fn records(&self) -> Vec<Record> {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        records.sort_by_key(|r| r.sent_at);
        records
    }
}

/// One substation's part of the accepted sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub accepted: u64,
    /// Of all accepted sessions.
    pub share: f64,
    /// Power of the sessions it took, in kW.
    pub kw: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The end-of-run summary (`--json` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub target: String,
    pub profile: String,
    pub rate: f64,
    pub seed: u64,
    /// When the run started (Unix seconds); `sent_at` of every record counts from there.
    pub started_unix: f64,
    pub elapsed_s: f64,
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    /// Requests sent more than 10 ms after their planned time (all concurrency slots busy).
    pub late: u64,
    /// Answers by status (`"error"` for no answer).
    pub statuses: BTreeMap<String, u64>,
    pub substations: BTreeMap<String, Share>,
    pub latency_ms: Latency,
    /// Energy of the accepted sessions (power × duration), in simulated kWh.
    pub energy_booked_kwh: f64,
    /// Requests that were retries of a refused vehicle (`--retries`), and how many of them
    /// were accepted.
    pub retries_sent: u64,
    pub retries_accepted: u64,
    /// Requests per accepted session (every vehicle's attempts, accepted or not, over the
    /// sessions accepted).
    pub attempts_per_accepted: Option<f64>,
}

/// The run's settings, for the summary's header.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    pub profile: String,
    pub rate: f64,
    pub seed: u64,
    pub started_unix: f64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn of(info: &RunInfo, records: &[Record]) -> Summary {
        let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count() as u64;
        let accepted = count(&|r| r.accepted());
        let refused = count(&|r| r.refused());
        let mut statuses = BTreeMap::new();
        let mut substations: BTreeMap<String, Share> = BTreeMap::new();
        for r in records {
            let key = r
                .status
                .map_or_else(|| "error".to_string(), |s| s.to_string());
            *statuses.entry(key).or_insert(0) += 1;
            if r.accepted() {
                let name = r.substation.clone().unwrap_or_else(|| "?".into());
                let share = substations.entry(name).or_insert(Share {
                    accepted: 0,
                    share: 0.0,
                    kw: 0.0,
                });
                share.accepted += 1;
                share.kw += r.power_kw;
            }
        }
        for share in substations.values_mut() {
            share.share = share.accepted as f64 / accepted.max(1) as f64;
        }
        let answered: Vec<f64> = records
            .iter()
            .filter(|r| r.status.is_some())
            .map(|r| r.latency.as_secs_f64() * 1e3)
            .collect();
        Summary {
            target: info.target.clone(),
            profile: info.profile.clone(),
            rate: info.rate,
            seed: info.seed,
            started_unix: info.started_unix,
            elapsed_s: info.elapsed.as_secs_f64(),
            sent: records.len() as u64,
            accepted,
            refused,
            errors: records.len() as u64 - accepted - refused,
            late: count(&|r| r.late > Duration::from_millis(10)),
            statuses,
            substations,
            latency_ms: latency(answered),
            energy_booked_kwh: records
                .iter()
                .filter(|r| r.accepted())
                .map(|r| r.power_kw * r.duration_s / 3600.0)
                .sum(),
            retries_sent: count(&|r| r.attempt > 0),
            retries_accepted: count(&|r| r.attempt > 0 && r.accepted()),
            attempts_per_accepted: (accepted > 0).then(|| records.len() as f64 / accepted as f64),
        }
    }

    /// A few lines for a person.
    pub fn human(&self) -> String {
        let shares: Vec<String> = self
            .substations
            .iter()
            .map(|(name, s)| format!("{name} {} ({:.1}%)", s.accepted, s.share * 100.0))
            .collect();
        let l = &self.latency_ms;
        format!(
            "ev-demand summary: {} · {} profile · peak {}/s · seed {} · {:.1} s\n\
             sent {}  accepted {}  refused {}  errors {}  late {}\n\
             accepted by substation: {}\n\
             latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}\n\
             energy booked: {:.0} kWh\n",
            self.target,
            self.profile,
            self.rate,
            self.seed,
            self.elapsed_s,
            self.sent,
            self.accepted,
            self.refused,
            self.errors,
            self.late,
            if shares.is_empty() {
                "none".to_string()
            } else {
                shares.join("  ")
            },
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean,
            self.energy_booked_kwh
        )
    }
}

/// Nearest-rank percentiles of `samples` (milliseconds); zeros when empty.
pub fn latency(mut samples: Vec<f64>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    Latency {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        p999: rank(0.999),
        max: samples[samples.len() - 1],
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
    }
}

/// The records as CSV
/// (`sent_at_s,late_ms,power_kw,duration_s,status,substation,latency_ms,attempt`), for the
/// spread benchmark.
pub fn events_csv(records: &[Record]) -> String {
    let mut out = String::from(
        "sent_at_s,late_ms,power_kw,duration_s,status,substation,latency_ms,attempt\n",
    );
    for r in records {
        out.push_str(&format!(
            "{:.6},{:.3},{},{},{},{},{:.3},{}\n",
            r.sent_at.as_secs_f64(),
            r.late.as_secs_f64() * 1e3,
            r.power_kw,
            r.duration_s,
            r.status
                .map_or_else(|| "error".to_string(), |s| s.to_string()),
            r.substation.as_deref().unwrap_or(""),
            r.latency.as_secs_f64() * 1e3,
            r.attempt
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Option<u16>, substation: Option<&str>, ms: u64) -> Record {
        Record {
            sent_at: Duration::from_millis(ms),
            late: Duration::ZERO,
            power_kw: 11.0,
            duration_s: 3600.0,
            attempt: 0,
            status,
            substation: substation.map(str::to_string),
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = latency((1..=100).map(f64::from).collect());
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(latency(vec![]).p99, 0.0);
        assert_eq!(latency(vec![3.0]).p50, 3.0);
    }

    #[test]
    fn summary_counts_outcomes_and_shares() {
        let records = vec![
            record(Some(201), Some("s1"), 1),
            record(Some(201), Some("s1"), 2),
            record(Some(201), Some("s2"), 3),
            record(Some(503), None, 4),
            record(Some(400), None, 5),
            record(None, None, 6),
        ];
        let info = RunInfo {
            target: "t".into(),
            profile: "constant".into(),
            rate: 1.0,
            seed: 1,
            started_unix: 0.0,
            elapsed: Duration::from_secs(1),
        };
        let s = Summary::of(&info, &records);
        assert_eq!((s.sent, s.accepted, s.refused, s.errors), (6, 3, 1, 2));
        assert_eq!(s.substations["s1"].accepted, 2);
        assert!((s.substations["s2"].share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.statuses["error"], 1);
        assert_eq!(s.latency_ms.max, 5.0, "no answer has no latency");
        assert!((s.energy_booked_kwh - 33.0).abs() < 1e-9);
    }
}
