//! The physical limit of spreading a demand: an omniscient least-load placement in simulated
//! time, the first row of every spread and replica table.
//!
//! The router of this simulation knows the instant each session starts and ends (no network,
//! no report lag, no other replica) and puts each new session on the substation whose
//! utilisation after it is lowest, refusing only when no substation has room for it. Sessions
//! hold their power for `duration_s / time_scale` real seconds, as the substation simulator's
//! do. It replays exactly the arrivals of the real run (the same [`Demand`]s, merged when there
//! are several streams) and samples every substation at the real run's rate, writing the same
//! files as a real run (the `load-sampler` CSV, the `ev-demand` records), so that the analysis
//! computes its figures by the same code. Placement is greedy and cannot move running sessions,
//! as no real router can: it is the limit of routers, not of an offline packing.

use crate::demand::{Arrival, Demand};
use crate::stats::Record;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Slack of the capacity rule (an exact fit is not refused for rounding).
const TOLERANCE_KW: f64 = 1e-6;

/// A substation of the simulated grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub name: String,
    pub capacity_kw: f64,
}

/// One sample of the grid: seconds from the start, and per substation (in order) load and
/// active sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub loads: Vec<(f64, u64)>,
}

/// What the simulation produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub records: Vec<Record>,
    pub samples: Vec<Sample>,
}

/// A running session: when it ends (seconds from the start, as bits for ordering), where and
/// how much.
type Running = Reverse<(u64, usize, u64)>;

/// Replay `demands` (merged in order of arrival) on `grid` and sample it `hz` times a second
/// from 0 to `sample_for`.
pub fn simulate(
    demands: &[Demand],
    grid: &[Grid],
    time_scale: f64,
    hz: f64,
    sample_for: Duration,
) -> Outcome {
    let mut arrivals: Vec<Arrival> = demands.iter().flat_map(Demand::arrivals).collect();
    arrivals.sort_by_key(|a| a.at);
    let mut load = vec![0.0f64; grid.len()];
    let mut active = vec![0u64; grid.len()];
    let mut running: BinaryHeap<Running> = BinaryHeap::new();
    let mut out = Outcome::default();
    let ticks = (sample_for.as_secs_f64() * hz).floor() as u64;
    let mut next_tick = 0u64;
    let mut arrivals = arrivals.into_iter().peekable();
    loop {
        let tick_t = (next_tick <= ticks).then(|| next_tick as f64 / hz);
        let arrival_t = arrivals.peek().map(|a| a.at.as_secs_f64());
        match (tick_t, arrival_t) {
            (None, None) => break,
            (Some(t), a) if a.is_none_or(|a| t < a) => {
                expire(t, &mut load, &mut active, &mut running);
                out.samples.push(Sample {
                    t,
                    loads: load.iter().copied().zip(active.iter().copied()).collect(),
                });
                next_tick += 1;
            }
            _ => {
                let arrival = arrivals.next().expect("peeked just above");
                let t = arrival.at.as_secs_f64();
                expire(t, &mut load, &mut active, &mut running);
                let kw = arrival.request.power_kw;
                let chosen = place(grid, &load, kw);
                if let Some(i) = chosen {
                    let w = (kw * 1000.0).ceil() as u64;
                    load[i] += w as f64 / 1000.0;
                    active[i] += 1;
                    let end = t + arrival.request.duration_s / time_scale;
                    running.push(Reverse((end.to_bits(), i, w)));
                }
                out.records.push(Record {
                    sent_at: arrival.at,
                    late: Duration::ZERO,
                    power_kw: kw,
                    duration_s: arrival.request.duration_s,
                    status: Some(if chosen.is_some() { 201 } else { 503 }),
                    substation: chosen.map(|i| grid[i].name.clone()),
                    latency: Duration::ZERO,
                    attempt: 0,
                });
            }
        }
    }
    out
}

/// End every session due by `t`.
fn expire(t: f64, load: &mut [f64], active: &mut [u64], running: &mut BinaryHeap<Running>) {
    while let Some(Reverse((end, i, w))) = running.peek().copied() {
        if f64::from_bits(end) > t {
            break;
        }
        running.pop();
        load[i] = (load[i] - w as f64 / 1000.0).max(0.0);
        active[i] -= 1;
    }
}

/// The substation with the lowest utilisation after adding `kw` among those with room for it
/// (the first of equals).
fn place(grid: &[Grid], load: &[f64], kw: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, g) in grid.iter().enumerate() {
        if load[i] + kw > g.capacity_kw + TOLERANCE_KW {
            continue;
        }
        let u = (load[i] + kw) / g.capacity_kw;
        if best.is_none_or(|(_, b)| u < b) {
            best = Some((i, u));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{Bound, Profile};

    fn grid() -> Vec<Grid> {
        [("s1", 200.0), ("s2", 500.0), ("s3", 1000.0)]
            .map(|(n, c)| Grid {
                name: n.into(),
                capacity_kw: c,
            })
            .to_vec()
    }

    fn demand(seed: u64) -> Demand {
        Demand {
            rate: 40.0,
            profile: Profile::RushHour,
            bound: Bound {
                count: None,
                duration: Some(Duration::from_secs(20)),
            },
            seed,
        }
    }

    #[test]
    fn refuses_only_when_no_substation_has_room_and_never_overloads() {
        let g = grid();
        let out = simulate(&[demand(1)], &g, 1200.0, 20.0, Duration::from_secs(20));
        assert_eq!(out.records.len(), demand(1).plan().len());
        for s in &out.samples {
            for (i, (load, _)) in s.loads.iter().enumerate() {
                assert!(*load <= g[i].capacity_kw + 1e-6);
            }
        }
        assert!(out.records.iter().any(|r| r.status == Some(503)));
        assert_eq!(out.samples.len(), 401);
    }

    #[test]
    fn least_load_places_on_the_lowest_utilisation_after() {
        let g = grid();
        assert_eq!(place(&g, &[0.0, 0.0, 0.0], 10.0), Some(2));
        assert_eq!(place(&g, &[0.0, 0.0, 990.0], 11.0), Some(1));
        assert_eq!(place(&g, &[200.0, 500.0, 1000.0], 1.0), None);
    }

    #[test]
    fn several_streams_are_merged_in_order_of_arrival() {
        let g = grid();
        let out = simulate(
            &[demand(1), demand(2)],
            &g,
            1200.0,
            20.0,
            Duration::from_secs(20),
        );
        assert_eq!(
            out.records.len(),
            demand(1).plan().len() + demand(2).plan().len()
        );
        assert!(out.records.windows(2).all(|w| w[0].sent_at <= w[1].sent_at));
    }
}
