use super::*;
use gridlb_protocol::ReportVersion;
use proptest::prelude::*;

fn state() -> Arc<SubstationState> {
    SubstationState::new("s1", "127.0.0.1:1".parse().unwrap())
}

fn report(epoch: u64, seq: u64, load: f64) -> Report {
    Report {
        version: ReportVersion { epoch, seq },
        load_kw: load,
        capacity_kw: 100.0,
        active_sessions: None,
        received_at: Instant::now(),
    }
}

#[test]
fn stale_report_does_not_replace_newer_one() {
    let s = state();
    assert_eq!(s.offer(report(1, 5, 50.0)), Offer::Accepted);
    assert_eq!(s.offer(report(1, 4, 10.0)), Offer::Stale);
    assert_eq!(s.offer(report(1, 5, 10.0)), Offer::Duplicate);
    assert_eq!(s.report().unwrap().load_kw, 50.0);
}

#[test]
fn new_epoch_replaces_whatever_its_seq() {
    let s = state();
    s.offer(report(1, 900, 80.0));
    assert_eq!(s.offer(report(2, 0, 0.0)), Offer::Accepted);
    assert_eq!(s.report().unwrap().load_kw, 0.0);
}

#[test]
fn no_report_means_no_reservation() {
    assert!(state().try_reserve(1.0, 1.0).is_none());
    assert_eq!(state().utilization_with(1.0), None);
}

#[test]
fn reservations_never_exceed_the_limit_and_release_on_drop() {
    let s = state();
    s.offer(report(1, 1, 60.0));
    let a = s.try_reserve(30.0, 1.0).expect("90 of 100 fits");
    assert!(
        s.try_reserve(11.0, 1.0).is_none(),
        "101 of 100 must not fit"
    );
    let b = s.try_reserve(10.0, 1.0).expect("exactly 100 fits");
    assert!((s.utilization_with(0.0).unwrap() - 1.0).abs() < 1e-9);
    drop((a, b));
    assert_eq!(s.in_flight_kw(), 0.0);
    assert!(s.try_reserve(10.0, 0.69).is_none(), "70% is past a 69% cap");
}

#[test]
fn concurrent_reservations_cannot_share_the_last_room() {
    let s = state();
    s.offer(report(1, 1, 0.0));
    let held: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..50)
                        .filter_map(|_| s.try_reserve(1.0, 1.0))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(held.len(), 100);
}

proptest! {
    /// Whatever order reports arrive in, the table ends with the greatest version.
    #[test]
    fn order_of_arrival_never_matters(mut versions in proptest::collection::vec((0u64..4, 0u64..50), 1..40)) {
        let s = state();
        for &(e, q) in &versions {
            s.offer(report(e, q, (e * 100 + q) as f64));
        }
        versions.sort();
        let (e, q) = *versions.last().unwrap();
        let held = s.report().unwrap();
        prop_assert_eq!(held.version, ReportVersion { epoch: e, seq: q });
        prop_assert_eq!(held.load_kw, (e * 100 + q) as f64);
    }
}

/// A table of one substation `s1` (capacity as configured), with a private registry.
fn table(capacity_kw: Option<f64>) -> (Table, Arc<SubstationState>) {
    use crate::config::Config;
    use crate::metrics::Metrics;
    use gridlb_test_support::config::{GridlbConfig, Probe, Substation};
    let mut sub = Substation::new("s1", "127.0.0.1:1");
    sub.capacity_kw = capacity_kw;
    let yaml = GridlbConfig::new()
        .listen("127.0.0.1:2")
        .push(sub)
        .probe(Probe::every(100, 50))
        .to_yaml();
    let config = Config::parse(&yaml).expect("a valid config");
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("fresh registry"));
    let table = Table::new(config, &["127.0.0.1:1".parse().unwrap()], metrics);
    let state = Arc::clone(&table.snapshot().substations[0].state);
    (table, state)
}

#[tokio::test(start_paused = true)]
async fn a_report_older_than_the_limit_is_not_planned_with() {
    let (_table, s) = table(None);
    s.offer(report(1, 1, 10.0));
    assert!(s.score(5.0, 1.0, Instant::now()).is_some());
    // probe.max_report_age defaults to three intervals: 300 ms here.
    tokio::time::advance(std::time::Duration::from_millis(300)).await;
    assert!(s.score(5.0, 1.0, Instant::now()).is_some(), "at the limit");
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    assert!(s.score(5.0, 1.0, Instant::now()).is_none());
    assert!(s.try_reserve(5.0, 1.0).is_none());
    s.offer(report(1, 2, 10.0));
    assert!(
        s.try_reserve(5.0, 1.0).is_some(),
        "a new report counts again"
    );
}

#[tokio::test]
async fn a_report_can_lower_the_configured_capacity_but_never_raise_it() {
    let (_table, s) = table(Some(50.0));
    let mut claim = report(1, 1, 0.0);
    claim.capacity_kw = 1e12;
    s.offer(claim);
    let held = s.try_reserve(50.0, 1.0).expect("50 of 50 fits");
    assert!(
        s.try_reserve(1.0, 1.0).is_none(),
        "50 kW configured is all there is"
    );
    let mut lower = report(1, 2, 0.0);
    lower.capacity_kw = 20.0;
    s.offer(lower);
    assert_eq!(s.usable_capacity_kw(20.0), 20.0);
    assert!(
        (s.utilization_with(0.0).unwrap() - 2.5).abs() < 1e-9,
        "50 kW of 20"
    );
    drop(held);
}

#[tokio::test]
async fn a_poisoned_epoch_gives_way_to_honest_probes() {
    let (table, s) = table(None);
    table.ingest(&s, Ok(report(7, 3, 10.0)), Source::Probe);
    table.ingest(&s, Ok(report(u64::MAX, 0, 0.0)), Source::Probe);
    assert_eq!(s.report().unwrap().version.epoch, u64::MAX);
    // Headers never reset; one contradicting probe is not enough (it may be a race).
    for _ in 0..5 {
        assert_eq!(
            table.ingest(&s, Ok(report(7, 4, 40.0)), Source::Header),
            Offer::Stale
        );
    }
    assert_eq!(
        table.ingest(&s, Ok(report(7, 5, 50.0)), Source::Probe),
        Offer::Stale
    );
    assert_eq!(
        table.ingest(&s, Ok(report(7, 6, 60.0)), Source::Probe),
        Offer::Accepted
    );
    assert_eq!(s.report().unwrap().load_kw, 60.0);
    assert_eq!(
        table.ingest(&s, Ok(report(7, 7, 70.0)), Source::Header),
        Offer::Accepted
    );
}

#[tokio::test]
async fn a_restart_with_a_lower_epoch_wins_within_two_probes() {
    let (table, s) = table(None);
    table.ingest(&s, Ok(report(1_700_000_000, 40, 80.0)), Source::Probe);
    // The clock stepped back: the new process's epoch is lower.
    table.ingest(&s, Ok(report(1_600_000_000, 0, 0.0)), Source::Probe);
    table.ingest(&s, Ok(report(1_600_000_000, 0, 0.0)), Source::Probe);
    assert_eq!(s.report().unwrap().version.epoch, 1_600_000_000);
}

#[tokio::test]
async fn a_probe_overtaken_by_answers_resets_nothing() {
    let (table, s) = table(None);
    table.ingest(&s, Ok(report(3, 100, 10.0)), Source::Header);
    for seq in 90..99 {
        assert_eq!(
            table.ingest(&s, Ok(report(3, seq, 9.0)), Source::Probe),
            Offer::Stale
        );
    }
    assert_eq!(s.report().unwrap().version.seq, 100);
}

#[tokio::test(start_paused = true)]
async fn the_same_version_again_keeps_a_quiet_substation_s_report_young() {
    let (_table, s) = table(None);
    s.offer(report(1, 1, 10.0));
    for _ in 0..10 {
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        assert_eq!(s.offer(report(1, 1, 10.0)), Offer::Duplicate);
    }
    assert!(
        s.score(5.0, 1.0, Instant::now()).is_some(),
        "confirmed every 200 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ejection_backs_off_longer_each_time_and_resets_on_an_accepted_session() {
    let (_table, s) = table(None);
    s.offer(report(1, 1, 0.0));
    let base = std::time::Duration::from_millis(100);
    assert_eq!(s.eject(base), base);
    assert!(
        s.score(1.0, 1.0, Instant::now()).is_none(),
        "out of the choice"
    );
    tokio::time::advance(base).await;
    s.offer(report(1, 2, 0.0));
    assert!(
        s.score(1.0, 1.0, Instant::now()).is_some(),
        "back after its time"
    );
    assert_eq!(s.eject(base), base * 2);
    assert_eq!(s.eject(base), base * 4);
    s.accepted();
    assert_eq!(
        s.eject(base),
        base,
        "an accepted session resets the back-off"
    );
    for _ in 0..20 {
        s.eject(base);
    }
    assert_eq!(s.eject(base), MAX_EJECTION);
}

#[tokio::test(start_paused = true)]
async fn power_of_sessions_ended_since_the_report_is_not_counted() {
    let s = state();
    let now = Instant::now();
    let ends = now + std::time::Duration::from_secs(5);
    s.sessions
        .record("s1-a", Power::from_kw(40.0).unwrap(), ends, now);
    s.offer(report(1, 1, 90.0));
    assert!(s.try_reserve(20.0, 1.0).is_none());
    assert_eq!(s.utilization_with(0.0), Some(0.9));
    assert_eq!(
        s.room_in(20.0, 1.0, now),
        Some(std::time::Duration::from_secs(5))
    );
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    assert_eq!(s.utilization_with(0.0), Some(0.5));
    assert_eq!(s.score(20.0, 1.0, Instant::now()), Some(0.7));
    let held = s
        .try_reserve(20.0, 1.0)
        .expect("room once the session ended");
    assert_eq!(s.utilization_with(0.0), Some(0.7));
    drop(held);
    // The next report corrects it: counting starts again from there.
    s.offer(report(1, 2, 60.0));
    assert_eq!(s.utilization_with(0.0), Some(0.6));
}
