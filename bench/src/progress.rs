//! The live progress line on stderr: a bar (share of the count or of the duration done) and
//! the counts so far. Redrawn in place four times a second on a terminal; a plain line every
//! five seconds otherwise (CI logs).

use crate::demand::Demand;
use crate::stats::Tally;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WIDTH: usize = 24;

pub struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    pub fn start(demand: Demand, tally: Arc<Tally>, start: Instant) -> Progress {
        let (stop, mut stopped) = oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let every = Duration::from_millis(if tty { 250 } else { 5000 });
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(every) => {}
                }
                let text = line(&demand, &tally, start.elapsed());
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r\x1b[2K{text}")
                } else {
                    writeln!(err, "{text}")
                };
                let _ = err.flush();
            }
            let text = line(&demand, &tally, start.elapsed());
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}{text}",
                if tty { "\r\x1b[2K" } else { "" }
            );
        });
        Progress { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The share of the run done, in `[0, 1]`.
pub fn done(demand: &Demand, sent: u64, elapsed: Duration) -> f64 {
    let by_count = demand.bound.count.map(|c| sent as f64 / c.max(1) as f64);
    let by_time = demand
        .bound
        .duration
        .map(|d| elapsed.as_secs_f64() / d.as_secs_f64().max(1e-9));
    by_count
        .into_iter()
        .chain(by_time)
        .fold(0.0, f64::max)
        .clamp(0.0, 1.0)
}

fn line(demand: &Demand, tally: &Tally, elapsed: Duration) -> String {
    let sent = tally.sent.load(Relaxed);
    let fraction = done(demand, sent, elapsed);
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}% {:>6.1}s  sent {sent}  accepted {}  refused {}  errors {}  in flight {}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0,
        elapsed.as_secs_f64(),
        tally.accepted.load(Relaxed),
        tally.refused.load(Relaxed),
        tally.errors.load(Relaxed),
        tally.in_flight()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{Bound, Profile};

    #[test]
    fn progress_is_the_furthest_of_count_and_time() {
        let d = Demand {
            rate: 1.0,
            profile: Profile::Constant,
            bound: Bound {
                count: Some(100),
                duration: Some(Duration::from_secs(10)),
            },
            seed: 1,
        };
        assert_eq!(done(&d, 50, Duration::from_secs(2)), 0.5);
        assert_eq!(done(&d, 10, Duration::from_secs(8)), 0.8);
        assert_eq!(done(&d, 500, Duration::from_secs(80)), 1.0);
    }
}
