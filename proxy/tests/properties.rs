//! Properties of the load table, selection and admission, beyond the ones next to the code
//! (`table/tests.rs`: the final report is the newest whatever the order):
//! - admission never routes to a substation it would overload, and never refuses while one
//!   has room; a request never goes back to a substation it tried;
//! - the view only ever moves forward, after every single report, and each report is
//!   classified (accepted, duplicate, stale) by its version alone;
//! - two arrival orders of the same reports, or several threads offering them at once, end
//!   at the same view;
//! - reservations add up exactly to the in-flight power and never pass the limit;
//! - least-load chooses a substation of lowest utilisation after the request;
//! - a request's retries offer every substation with room exactly once.
//!
//! And the fuzz corpus (fuzz/corpus/) replays through the parsers here, so the kept inputs
//! are checked by every test run, not only by `scripts/fuzz`.

use gridlb::admission::Admission;
use gridlb::config::Config;
use gridlb::metrics::Metrics;
use gridlb::selection::Rng;
use gridlb::server::Parts;
use gridlb::table::{Offer, Report, SubstationState};
use gridlb_protocol::{ChargeRequest, HeaderReport, LoadReport, ReportVersion};
use gridlb_test_support::fixtures::{
    SubSpec, algorithm, grid_config, report_versions, requests, sub_spec,
};
use proptest::prelude::*;
use std::sync::Arc;
use tokio::time::Instant;

fn state() -> Arc<SubstationState> {
    SubstationState::new("s1", "127.0.0.1:1".parse().expect("literal"))
}

/// A report whose load is a function of its version, so a mixed-up one would show.
fn report(epoch: u64, seq: u64) -> Report {
    Report {
        version: ReportVersion { epoch, seq },
        load_kw: (epoch * 1000 + seq) as f64,
        capacity_kw: 1e6,
        active_sessions: None,
        received_at: Instant::now(),
    }
}

fn versions() -> impl Strategy<Value = Vec<(u64, u64)>> {
    report_versions(4, 60, 1..60)
}

proptest! {
    #[test]
    fn the_view_only_moves_forward_after_every_report(offers in versions()) {
        let s = state();
        let mut newest: Option<(u64, u64)> = None;
        for (e, q) in offers {
            let result = s.offer(report(e, q));
            let expected = match newest {
                None => Offer::Accepted,
                Some(n) if (e, q) > n => Offer::Accepted,
                Some(n) if (e, q) == n => Offer::Duplicate,
                Some(_) => Offer::Stale,
            };
            prop_assert_eq!(result, expected);
            newest = newest.max(Some((e, q)));
            let (ne, nq) = newest.expect("set above");
            let held = s.report().expect("a report is held");
            prop_assert_eq!(held.version, ReportVersion { epoch: ne, seq: nq });
            prop_assert_eq!(held.load_kw, (ne * 1000 + nq) as f64);
        }
    }

    #[test]
    fn two_arrival_orders_end_at_the_same_view(
        (offers, shuffled) in versions().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (a, b) = (state(), state());
        for (e, q) in offers {
            a.offer(report(e, q));
        }
        for (e, q) in shuffled {
            b.offer(report(e, q));
        }
        let (a, b) = (a.report().expect("held"), b.report().expect("held"));
        prop_assert_eq!(a.version, b.version);
        prop_assert_eq!(a.load_kw, b.load_kw);
    }

    #[test]
    fn concurrent_offers_end_at_the_newest_report(offers in versions(), threads in 2usize..5) {
        let s = state();
        let chunk = offers.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for part in offers.chunks(chunk) {
                let s = &s;
                scope.spawn(move || {
                    for &(e, q) in part {
                        s.offer(report(e, q));
                    }
                });
            }
        });
        let (e, q) = *offers.iter().max().expect("non-empty");
        let held = s.report().expect("held");
        prop_assert_eq!(held.version, ReportVersion { epoch: e, seq: q });
        prop_assert_eq!(held.load_kw, (e * 1000 + q) as f64);
    }

    /// Reserve and release in any order: the in-flight power is exactly the sum of what is
    /// held (in milli-kW, rounded up per request), a reservation is granted exactly when it
    /// fits, and nothing is left once every guard is dropped.
    #[test]
    fn reservations_add_up_exactly_and_never_pass_the_limit(
        load in 0.0f64..900.0,
        max_utilization in 0.1f64..=1.0,
        ops in proptest::collection::vec((0.001f64..150.0, any::<bool>(), any::<prop::sample::Index>()), 1..80),
    ) {
        let s = state();
        s.offer(Report {
            version: ReportVersion { epoch: 1, seq: 1 },
            load_kw: load,
            capacity_kw: 1000.0,
            active_sessions: None,
            received_at: Instant::now(),
        });
        let limit = 1000.0 * max_utilization - load;
        let mut held: Vec<(u64, gridlb::table::Reservation)> = Vec::new();
        for (kw, release, which) in ops {
            if release && !held.is_empty() {
                held.swap_remove(which.index(held.len()));
            } else {
                let milli = (kw * 1000.0).ceil() as u64;
                let before: u64 = held.iter().map(|h| h.0).sum();
                let fits = (before + milli) as f64 / 1000.0 <= limit + 1e-9;
                match s.try_reserve(kw, max_utilization) {
                    Some(r) => {
                        prop_assert!(fits, "{kw} kW granted past the limit");
                        held.push((milli, r));
                    }
                    None => prop_assert!(!fits, "{kw} kW refused although it fit"),
                }
            }
            let sum: u64 = held.iter().map(|h| h.0).sum();
            prop_assert_eq!((s.in_flight_kw() * 1000.0).round() as u64, sum);
            prop_assert!(s.in_flight_kw() <= limit.max(0.0) + 1e-6);
        }
        held.clear();
        prop_assert_eq!(s.in_flight_kw(), 0.0);
    }
}

/// One generated substation, 90% of them with a report.
fn sub() -> impl Strategy<Value = SubSpec> {
    sub_spec(0.9)
}

fn grid(
    subs: &[SubSpec],
    algorithm: &str,
    max_utilization: f64,
) -> (tokio::runtime::Runtime, Arc<Admission>) {
    let yaml = grid_config(subs, algorithm, max_utilization, 30000).to_yaml();
    let config = Config::parse(&yaml).expect("generated config is valid");
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("fresh registry"));
    let grid = Parts::new(config, None, metrics, Rng::seeded(7))
        .expect("literal addresses")
        .admission;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(grid.pool().update_membership());
    for (s, live) in subs.iter().zip(&grid.table().snapshot().substations) {
        live.state.set_healthy(s.healthy);
        if let Some((load_kw, capacity_kw)) = s.report {
            live.state.offer(Report {
                version: ReportVersion { epoch: 1, seq: 1 },
                load_kw,
                capacity_kw,
                active_sessions: None,
                received_at: Instant::now(),
            });
        }
    }
    (rt, grid)
}

/// Utilisation after `kw` of every substation that may take it (healthy, not draining,
/// reported, with room), by name.
fn with_room(grid: &Admission, kw: f64, max_utilization: f64) -> Vec<(String, f64)> {
    grid.table()
        .snapshot()
        .substations
        .iter()
        .filter(|s| s.state.is_healthy() && !s.state.is_draining())
        .filter_map(|s| {
            let u = s.state.utilization_with(kw)?;
            (u <= max_utilization + 1e-9).then(|| (s.config.name.clone(), u))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn least_load_chooses_a_lowest_utilisation_after_the_request(
        subs in proptest::collection::vec(sub(), 1..8),
        requests in requests(0.5..200.0, 1..20),
        max_utilization in 0.5f64..=1.0,
    ) {
        let (_rt, grid) = grid(&subs, "least-load", max_utilization);
        let mut held = Vec::new();
        for kw in requests {
            let candidates = with_room(&grid, kw, max_utilization);
            match grid.select(kw, &[]) {
                Some(r) => {
                    let best = candidates.iter().map(|c| c.1).fold(f64::MAX, f64::min);
                    let chosen = candidates.iter().find(|c| c.0 == r.state().name);
                    prop_assert!(chosen.is_some(), "chose {} without room", r.state().name);
                    let u = chosen.map(|c| c.1).unwrap_or(f64::MAX);
                    prop_assert!(u <= best + 1e-12, "chose {u}, the lowest was {best}");
                    held.push(r);
                }
                None => prop_assert!(candidates.is_empty(), "refused with room at {candidates:?}"),
            }
        }
    }

    #[test]
    fn retries_offer_every_substation_with_room_exactly_once(
        subs in proptest::collection::vec(sub(), 1..8),
        kw in 0.5f64..100.0,
        algorithm in algorithm(),
    ) {
        let (_rt, grid) = grid(&subs, algorithm, 1.0);
        let mut expected: Vec<String> = with_room(&grid, kw, 1.0).into_iter().map(|c| c.0).collect();
        let mut tried = Vec::new();
        let mut offered = Vec::new();
        let mut held = Vec::new();
        while let Some(r) = grid.select(kw, &tried) {
            prop_assert!(!tried.contains(&r.state().addr), "offered {} twice", r.state().name);
            tried.push(r.state().addr);
            offered.push(r.state().name.clone());
            held.push(r);
            prop_assert!(offered.len() <= subs.len());
        }
        offered.sort();
        expected.sort();
        prop_assert_eq!(offered, expected);
    }
}

/// Kept fuzz inputs, by target.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kept inputs in {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect()
}

#[test]
fn kept_fuzz_inputs_replay_through_the_parsers() {
    for input in corpus("load_report") {
        if let Ok(r) = LoadReport::from_json(&input, "s1") {
            assert!(r.load_kw.is_finite() && r.load_kw >= 0.0 && r.capacity_kw > 0.0);
        }
        if let Ok(r) = HeaderReport::parse(&String::from_utf8_lossy(&input)) {
            assert!(r.load_kw.is_finite() && r.load_kw >= 0.0 && r.capacity_kw > 0.0);
        }
    }
    for input in corpus("charge_body") {
        if let Ok(r) = ChargeRequest::parse(&input) {
            assert_eq!(ChargeRequest::peek(&input).power_kw, Some(r.power_kw));
        }
    }
    for input in corpus("config_parse") {
        let text = String::from_utf8_lossy(&input);
        // Only IP literals in the kept configs: parsing them resolves no name.
        assert!(
            !text.contains("localhost") && !text.contains(".invalid"),
            "a kept config names a host"
        );
        match Config::parse(&text) {
            Ok(c) => assert!(!c.substations.is_empty()),
            Err(e) => assert!(!e.message.is_empty()),
        }
    }
}

// Admission over generated grids (moved here from the crate so that one grid fixture serves).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever the reports and requests: the chosen substation is healthy, not draining,
    /// has a report and is not pushed past `max_utilization`; and when nothing is chosen,
    /// no eligible substation had room.
    #[test]
    fn never_routes_to_a_substation_it_would_overload(
        subs in proptest::collection::vec(sub_spec(0.85), 1..8),
        requests in requests(0.5..300.0, 1..25),
        algorithm in algorithm(),
        max_utilization in 0.5f64..=1.0,
    ) {
        let (_rt, grid) = grid(&subs, algorithm, max_utilization);
        let mut held = Vec::new();
        for kw in requests {
            let snapshot = grid.table().snapshot();
            let room = snapshot.substations.iter().any(|s| {
                s.state.is_healthy() && !s.state.is_draining()
                    && s.state.utilization_with(kw).is_some_and(|u| u <= max_utilization + 1e-9)
            });
            match grid.select(kw, &[]) {
                Some(reservation) => {
                    let state = reservation.state();
                    prop_assert!(state.is_healthy() && !state.is_draining());
                    prop_assert!(state.report().is_some());
                    prop_assert!(state.utilization_with(0.0).unwrap_or(f64::MAX) <= max_utilization + 1e-6);
                    held.push(reservation);
                }
                None => prop_assert!(!room, "refused {kw} kW while a substation had room"),
            }
        }
    }
}

#[test]
fn a_request_never_goes_back_to_a_substation_it_tried() {
    let subs = vec![
        SubSpec {
            report: Some((0.0, 100.0)),
            healthy: true,
            drain: false
        };
        3
    ];
    let (_rt, grid) = grid(&subs, "least-load", 1.0);
    let mut tried = Vec::new();
    while let Some(r) = grid.select(1.0, &tried) {
        assert!(!tried.contains(&r.state().addr));
        tried.push(r.state().addr);
    }
    assert_eq!(tried.len(), 3);
}
