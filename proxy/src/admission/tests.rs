use super::*;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::Parts;
use crate::table::Report;
use gridlb_protocol::ReportVersion;
use gridlb_test_support::fixtures::{SubSpec, algorithm, grid_config, requests, sub_spec};
use proptest::prelude::*;
use tokio::time::Instant;

/// One substation of a generated grid, 85% of them with a report.
fn sub() -> impl Strategy<Value = SubSpec> {
    sub_spec(0.85)
}

fn grid(
    subs: &[SubSpec],
    algorithm: &str,
    max_utilization: f64,
) -> (tokio::runtime::Runtime, Arc<Admission>) {
    let yaml = grid_config(subs, algorithm, max_utilization, 20000).to_yaml();
    let config = Config::parse(&yaml).expect("generated config is valid");
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("fresh registry"));
    let parts = Parts::new(config, None, metrics, crate::selection::Rng::seeded(9))
        .expect("literal addresses");
    let grid = parts.admission;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever the reports and requests: the chosen substation is healthy, not draining,
    /// has a report and is not pushed past `max_utilization`; and when nothing is chosen,
    /// no eligible substation had room.
    #[test]
    fn never_routes_to_a_substation_it_would_overload(
        subs in proptest::collection::vec(sub(), 1..8),
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
