use super::*;
use crate::table::Report;
use gridlb_protocol::ReportVersion;
use pingora_load_balancing::Extensions;
use tokio::time::Instant;

pub(crate) fn backend(name: &str, port: u16, load: Option<f64>, capacity: f64) -> Backend {
    let addr = format!("127.0.0.1:{port}");
    let state = SubstationState::new(name, addr.parse().unwrap());
    if let Some(load) = load {
        state.offer(Report {
            version: ReportVersion { epoch: 1, seq: 1 },
            load_kw: load,
            capacity_kw: capacity,
            active_sessions: None,
            received_at: Instant::now(),
        });
    }
    let mut b = Backend::new(&addr).unwrap();
    b.ext = Extensions::new();
    b.ext.insert(state);
    b
}

fn selection(algorithm: Algorithm, backends: Vec<Backend>, seed: u64) -> Arc<GridSelection> {
    let config = SelectorConfig {
        settings: Settings::Fixed(algorithm, 1.0),
        rng: Arc::new(Rng::seeded(seed)),
    };
    Arc::new(GridSelection::build_with_config(
        &backends.into_iter().collect(),
        &config,
    ))
}

fn names(s: &GridSelection, kw: f64) -> Vec<String> {
    s.rank(kw)
        .into_iter()
        .map(|i| s.state(i).name.clone())
        .collect()
}

#[test]
fn least_load_prefers_lowest_utilisation_after_the_request() {
    // 50/100 = 0.5, 120/300 = 0.4, 600 kW at 0.45; a 50 kW request: 1.0, 0.567, 0.533.
    let s = selection(
        Algorithm::LeastLoad,
        vec![
            backend("a", 1, Some(50.0), 100.0),
            backend("b", 2, Some(120.0), 300.0),
            backend("c", 3, Some(270.0), 600.0),
        ],
        7,
    );
    assert_eq!(names(&s, 50.0), ["c", "b", "a"]);
}

#[test]
fn substations_without_report_or_room_are_never_candidates() {
    let s = selection(
        Algorithm::LeastLoad,
        vec![
            backend("blind", 1, None, 100.0),
            backend("full", 2, Some(95.0), 100.0),
            backend("ok", 3, Some(0.0), 100.0),
        ],
        1,
    );
    assert_eq!(names(&s, 10.0), ["ok"]);
    assert!(names(&s, 200.0).is_empty());
}

#[test]
fn draining_and_unhealthy_substations_are_skipped() {
    let s = selection(
        Algorithm::LeastLoad,
        vec![
            backend("a", 1, Some(0.0), 100.0),
            backend("b", 2, Some(0.0), 100.0),
            backend("c", 3, Some(50.0), 100.0),
        ],
        1,
    );
    s.state(0).set_config_drain(true);
    s.state(1).set_healthy(false);
    assert_eq!(names(&s, 1.0), ["c"]);
}

#[test]
fn ties_are_broken_at_random() {
    let s = selection(
        Algorithm::LeastLoad,
        vec![
            backend("a", 1, Some(0.0), 100.0),
            backend("b", 2, Some(0.0), 100.0),
        ],
        3,
    );
    let firsts: BTreeSet<String> = (0..50).map(|_| names(&s, 1.0)[0].clone()).collect();
    assert_eq!(
        firsts.len(),
        2,
        "both tied substations should come first sometimes"
    );
}

#[test]
fn p2c_puts_the_less_utilised_of_two_first_and_keeps_the_rest_as_fallback() {
    let s = selection(
        Algorithm::P2c,
        (0..5u16)
            .map(|i| backend(&format!("s{i}"), i + 1, Some(f64::from(i) * 10.0), 100.0))
            .collect(),
        11,
    );
    for _ in 0..100 {
        let order = s.rank(1.0);
        assert_eq!(order.len(), 5);
        let u = |i: usize| s.state(i).utilization_with(1.0).unwrap();
        assert!(u(order[0]) <= u(order[1]));
        assert!(order[2..].windows(2).all(|w| u(w[0]) <= u(w[1])));
    }
}

#[test]
fn round_robin_rotates_by_weight() {
    let mut heavy = backend("b", 2, Some(0.0), 100.0);
    heavy.weight = 2;
    let s = selection(
        Algorithm::RoundRobin,
        vec![backend("a", 1, Some(0.0), 100.0), heavy],
        1,
    );
    let firsts: Vec<String> = (0..6).map(|_| names(&s, 1.0)[0].clone()).collect();
    assert_eq!(firsts.iter().filter(|n| *n == "b").count(), 4);
}

#[test]
fn random_order_is_reproducible_from_the_seed() {
    let make = || {
        selection(
            Algorithm::Random,
            (0..6u16)
                .map(|i| backend(&format!("s{i}"), i + 1, Some(0.0), 100.0))
                .collect(),
            42,
        )
    };
    let (x, y) = (make(), make());
    for _ in 0..10 {
        assert_eq!(x.rank(1.0), y.rank(1.0));
    }
}

#[test]
fn iterator_yields_backends_in_rank_order() {
    let s = selection(
        Algorithm::LeastLoad,
        vec![
            backend("a", 1, Some(90.0), 100.0),
            backend("b", 2, Some(10.0), 100.0),
        ],
        1,
    );
    let mut it = s.iter(&request_key(5.0));
    assert_eq!(it.next().unwrap().addr.to_string(), "127.0.0.1:2");
    assert_eq!(it.next().unwrap().addr.to_string(), "127.0.0.1:1");
    assert!(it.next().is_none());
}
