use super::*;
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
    assert_eq!(s.score(20.0, 1.0), Some(0.7));
    let held = s
        .try_reserve(20.0, 1.0)
        .expect("room once the session ended");
    assert_eq!(s.utilization_with(0.0), Some(0.7));
    drop(held);
    // The next report corrects it: counting starts again from there.
    s.offer(report(1, 2, 60.0));
    assert_eq!(s.utilization_with(0.0), Some(0.6));
}
