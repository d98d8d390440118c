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

/// One change to a generated grid, for the index-against-scan property.
#[derive(Debug, Clone)]
enum Change {
    /// A newer report of `load` (a fraction of the capacity) and a capacity choice.
    Report(usize, f64, usize),
    Reserve(usize, f64),
    Release(usize),
    Health(usize, bool),
    Drain(usize, bool),
    Eject(usize, u64),
    /// A session of `kw` that ends `ms` from now.
    Session(usize, f64, u64),
    Advance(u64),
}

fn change() -> impl proptest::strategy::Strategy<Value = Change> {
    use proptest::prelude::*;
    let at = 0usize..64;
    prop_oneof![
        3 => (at.clone(), 0.0f64..1.1, 0usize..6).prop_map(|(i, l, c)| Change::Report(i, l, c)),
        3 => (at.clone(), 0.5f64..120.0).prop_map(|(i, kw)| Change::Reserve(i, kw)),
        2 => (0usize..64).prop_map(Change::Release),
        1 => (at.clone(), any::<bool>()).prop_map(|(i, h)| Change::Health(i, h)),
        1 => (at.clone(), any::<bool>()).prop_map(|(i, d)| Change::Drain(i, d)),
        1 => (at.clone(), 1u64..400).prop_map(|(i, ms)| Change::Eject(i, ms)),
        2 => (at.clone(), 0.5f64..80.0, 1u64..600).prop_map(|(i, kw, ms)| Change::Session(i, kw, ms)),
        2 => (1u64..300).prop_map(Change::Advance),
    ]
}

/// Capacities with repeats (buckets of several substations) and odd ones (buckets of one).
const CAPACITIES: [f64; 6] = [100.0, 250.0, 250.0, 500.0, 333.3, 1000.0];

/// A report whose load is `fraction` of the capacity, rounded to tenths so that ties occur.
fn grid_report(seq: u64, fraction: f64, capacity_kw: f64) -> Report {
    Report {
        version: ReportVersion { epoch: 1, seq },
        load_kw: (capacity_kw * fraction * 10.0).round() / 10.0,
        capacity_kw,
        active_sessions: None,
        received_at: Instant::now(),
    }
}

/// Every chooseable substation's utilisation after `kw`, by the plain scan of every one.
fn reference(s: &GridSelection, n: usize, kw: f64, max_utilization: f64) -> Vec<(usize, f64)> {
    let now = Instant::now();
    (0..n)
        .filter_map(|i| Some((i, s.state(i).score(kw, max_utilization, now)?)))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever happens to the grid (reports, reservations and releases, health, drain,
    /// ejections, sessions that end, reports that age out, capacity caps): least-load's first
    /// choice has the lowest utilisation after the request of all substations a plain scan
    /// finds chooseable, there is one exactly when the scan finds any, and the full order
    /// offers every one of them once, by rising utilisation.
    #[test]
    fn least_load_index_agrees_with_scoring_every_substation(
        n in 1usize..40,
        caps in proptest::collection::vec(proptest::option::of(50.0f64..800.0), 40),
        changes in proptest::collection::vec(change(), 1..60),
        kws in proptest::collection::vec(0.5f64..150.0, 60),
        max_utilization in 0.5f64..=1.0,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _guard = rt.enter();
        let backends = (0..n)
            .map(|i| {
                let b = backend(&format!("s{i}"), i as u16 + 1, None, 0.0);
                let state = b.ext.get::<Arc<SubstationState>>().unwrap();
                state.configure(false, caps[i], std::time::Duration::from_millis(500));
                state.offer(grid_report(1, 0.05 * (i % 7) as f64, CAPACITIES[i % 6]));
                b
            })
            .collect();
        let config = SelectorConfig {
            settings: Settings::Fixed(Algorithm::LeastLoad, max_utilization),
            rng: Arc::new(Rng::seeded(n as u64)),
        };
        let s = Arc::new(GridSelection::build_with_config(&backends, &config));
        let mut held: Vec<Vec<crate::table::Reservation>> = (0..n).map(|_| Vec::new()).collect();
        let mut seq = 1;
        for (step, change) in changes.into_iter().enumerate() {
            match change {
                Change::Report(i, fraction, c) => {
                    seq += 1;
                    s.state(i % n).offer(grid_report(seq, fraction, CAPACITIES[c]));
                }
                Change::Reserve(i, kw) => {
                    if let Some(r) = s.state(i % n).try_reserve(kw, 1.0) {
                        held[i % n].push(r);
                    }
                }
                Change::Release(i) => drop(held[i % n].pop()),
                Change::Health(i, h) => s.state(i % n).set_healthy(h),
                Change::Drain(i, d) => s.state(i % n).set_config_drain(d),
                Change::Eject(i, ms) => {
                    s.state(i % n).eject(std::time::Duration::from_millis(ms));
                }
                Change::Session(i, kw, ms) => {
                    let now = Instant::now();
                    let ends = now + std::time::Duration::from_millis(ms);
                    let power = gridlb_protocol::Power::from_kw(kw).unwrap();
                    s.state(i % n).record_session(&format!("x{step}"), power, ends, now);
                }
                Change::Advance(ms) => {
                    rt.block_on(tokio::time::advance(std::time::Duration::from_millis(ms)));
                }
            }
            let kw = kws[step];
            let all = reference(&s, n, kw, max_utilization);
            let least = all.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
            match s.choose(kw) {
                None => proptest::prop_assert!(all.is_empty(), "none chosen among {all:?}"),
                Some(i) => {
                    let u = all.iter().find(|c| c.0 == i).map(|c| c.1);
                    proptest::prop_assert!(u.is_some(), "chose {i}, not chooseable: {all:?}");
                    let u = u.unwrap();
                    proptest::prop_assert!(close(u, least), "chose {u}, the least was {least}");
                }
            }
            let order = s.rank(kw);
            let us: Vec<f64> = order
                .iter()
                .map(|&i| all.iter().find(|c| c.0 == i).map_or(f64::NAN, |c| c.1))
                .collect();
            proptest::prop_assert_eq!(order.len(), all.len());
            proptest::prop_assert!(us.windows(2).all(|w| w[0] <= w[1] || close(w[0], w[1])), "{us:?}");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            proptest::prop_assert_eq!(sorted.len(), all.len());
        }
    }
}
