//! Unit tests of the ledger, with explicit instants (and tokio's paused clock for the reaper).

use super::*;
use crate::metrics::parse_text;

fn request(power_kw: f64, duration_s: f64) -> ChargeRequest {
    ChargeRequest {
        vehicle_id: "ev-1".to_string(),
        power_kw,
        duration_s,
    }
}

fn accepted(booking: Booking) -> (ChargeAccepted, LoadReport) {
    match booking {
        Booking::Accepted { answer, report } => (answer, report),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn metric(substation: &Substation, series: &str) -> f64 {
    let text = String::from_utf8(substation.metrics().encode().unwrap()).unwrap();
    parse_text(&text).get(series).copied().unwrap_or(f64::NAN)
}

#[test]
fn booking_fills_to_the_capacity_edge_then_refuses_with_retry_after() {
    let s = Substation::new("s1", 500.0, 1.0);
    let t0 = Instant::now();
    for i in 1..=45 {
        let (answer, report) = accepted(s.book(&request(11.0, 100.0), None, t0));
        assert_eq!(answer.load_kw, 11.0 * i as f64);
        assert_eq!(report.active_sessions, i);
    }
    // 495 kW booked: 5 kW fits exactly, then nothing does.
    let (answer, _) = accepted(s.book(&request(5.0, 30.0), None, t0));
    assert_eq!(answer.load_kw, 500.0);
    match s.book(&request(11.0, 10.0), None, t0 + secs(2)) {
        Booking::Refused {
            retry_after_s,
            free,
            report,
        } => {
            // The 5 kW session ends at t0+30, freeing 5 kW: not enough for 11. The 11 kW
            // sessions end at t0+100, so 98 s from t0+2.
            assert_eq!(retry_after_s, 98);
            assert_eq!(free, Power::ZERO);
            assert_eq!(report.load_kw, 500.0);
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(s.report().load_kw, 500.0);
}

#[test]
fn retry_after_is_rounded_up_and_at_least_one_second() {
    let s = Substation::new("s1", 10.0, 1.0);
    let t0 = Instant::now();
    accepted(s.book(&request(10.0, 2.5), None, t0));
    let retry = |at| match s.book(&request(1.0, 1.0), None, at) {
        Booking::Refused { retry_after_s, .. } => retry_after_s,
        other => panic!("expected Refused, got {other:?}"),
    };
    assert_eq!(retry(t0), 3);
    assert_eq!(retry(t0 + Duration::from_millis(2400)), 1);
}

#[test]
fn sessions_expire_after_duration_over_time_scale() {
    let s = Substation::new("s1", 100.0, 60.0);
    let t0 = Instant::now();
    accepted(s.book(&request(20.0, 600.0), None, t0)); // 600 simulated s = 10 real s
    accepted(s.book(&request(30.0, 1200.0), None, t0)); // 20 real s
    assert_eq!(s.next_end(), Some(t0 + secs(10)));
    assert_eq!(s.expire_due(t0 + Duration::from_millis(9999)), 0);
    assert_eq!(s.expire_due(t0 + secs(10)), 1);
    assert_eq!(s.expire_due(t0 + secs(25)), 1);
    let report = s.report();
    assert_eq!((report.load_kw, report.active_sessions), (0.0, 0));
    assert_eq!(
        metric(&s, "substation_sessions_ended_total{reason=\"expired\"}"),
        2.0
    );
    // 20 kW × 600 s + 30 kW × 1200 s = 3.333.. + 10 kWh.
    let kwh = metric(&s, "substation_energy_delivered_kwh_total");
    assert!(
        (kwh - (20.0 * 600.0 + 30.0 * 1200.0) / 3600.0).abs() < 1e-9,
        "{kwh}"
    );
}

#[test]
fn seq_rises_by_exactly_one_per_change_of_load() {
    let s = Substation::new("s1", 100.0, 1.0);
    let t0 = Instant::now();
    let seq0 = s.report().seq;
    let (a, report) = accepted(s.book(&request(10.0, 5.0), None, t0));
    assert_eq!(report.seq, seq0 + 1);
    let (b, report) = accepted(s.book(&request(10.0, 50.0), None, t0));
    assert_eq!(report.seq, seq0 + 2);
    // A refusal and a report change nothing.
    assert!(matches!(
        s.book(&request(90.0, 5.0), None, t0),
        Booking::Refused { .. }
    ));
    assert_eq!(s.report().seq, seq0 + 2);
    // An expiry is one change, a delete another.
    assert_eq!(s.expire_due(t0 + secs(6)), 1);
    let ended = s.end(&b.session_id, t0 + secs(7));
    assert_eq!(ended.unwrap().report.seq, seq0 + 4);
    assert!(s.end(&a.session_id, t0 + secs(7)).is_none());
    assert_eq!(s.report().seq, seq0 + 4);
    assert_eq!(metric(&s, "substation_report_seq"), (seq0 + 4) as f64);
}

#[test]
fn delete_frees_the_power_and_an_unknown_id_is_none() {
    let s = Substation::new("s1", 50.0, 1.0);
    let t0 = Instant::now();
    let (answer, _) = accepted(s.book(&request(22.0, 3600.0), None, t0));
    let ended = s.end(&answer.session_id, t0 + secs(1800)).unwrap();
    assert_eq!(ended.freed, Power::from_watts(22_000));
    assert_eq!(ended.report.load_kw, 0.0);
    assert!(s.end(&answer.session_id, t0 + secs(1801)).is_none());
    assert!(s.end("s1-1-999", t0).is_none());
    // Half an hour at 22 kW.
    assert_eq!(metric(&s, "substation_energy_delivered_kwh_total"), 11.0);
}

#[test]
fn session_ids_are_distinct_and_name_their_substation() {
    let s = Substation::new("north-east-1", 50.0, 1.0);
    let (a, _) = accepted(s.book(&request(1.0, 1.0), None, Instant::now()));
    let (b, _) = accepted(s.book(&request(1.0, 1.0), None, Instant::now()));
    assert_ne!(a.session_id, b.session_id);
    for id in [&a.session_id, &b.session_id] {
        assert_eq!(SessionId::owner(id), Some("north-east-1"));
        assert_eq!(SessionId::parse(id).unwrap().substation(), "north-east-1");
    }
}

#[test]
fn a_fraction_of_a_watt_books_a_whole_watt() {
    let s = Substation::new("s1", 0.002, 1.0);
    let t0 = Instant::now();
    accepted(s.book(&request(0.0001, 60.0), None, t0));
    accepted(s.book(&request(0.0001, 60.0), None, t0));
    assert_eq!(s.report().load_kw, 0.002);
    assert!(matches!(
        s.book(&request(0.0001, 60.0), None, t0),
        Booking::Refused { free, .. } if free == Power::ZERO
    ));
}

#[test]
fn idempotent_replay_books_once_until_the_session_ends() {
    let s = Substation::new("s1", 50.0, 1.0);
    let t0 = Instant::now();
    let (first, _) = accepted(s.book(&request(11.0, 10.0), Some(&key("k1")), t0));
    match s.book(&request(11.0, 10.0), Some(&key("k1")), t0 + secs(1)) {
        Booking::Replay { answer, report } => {
            assert_eq!(answer, first);
            assert_eq!((report.load_kw, report.active_sessions), (11.0, 1));
        }
        other => panic!("expected Replay, got {other:?}"),
    }
    assert_eq!(
        metric(
            &s,
            "substation_sessions_total{result=\"idempotent_replay\"}"
        ),
        1.0
    );
    // Once the session has ended the key is forgotten and books anew.
    let (again, _) = accepted(s.book(&request(11.0, 10.0), Some(&key("k1")), t0 + secs(11)));
    assert_ne!(again.session_id, first.session_id);
    assert!(s.lock().keys.len() == 1);
}

#[test]
fn a_refused_key_is_not_remembered() {
    let s = Substation::new("s1", 10.0, 1.0);
    let t0 = Instant::now();
    accepted(s.book(&request(10.0, 5.0), None, t0));
    assert!(matches!(
        s.book(&request(5.0, 5.0), Some(&key("k")), t0),
        Booking::Refused { .. }
    ));
    accepted(s.book(&request(5.0, 5.0), Some(&key("k")), t0 + secs(5)));
}

#[test]
fn fractional_powers_sum_exactly() {
    let s = Substation::new("s1", 22.2, 1.0);
    let t0 = Instant::now();
    let ids: Vec<String> = (0..3)
        .map(|_| accepted(s.book(&request(7.4, 60.0), None, t0)).0.session_id)
        .collect();
    assert_eq!(s.report().load_kw, 22.2);
    for id in &ids {
        s.end(id, t0);
    }
    assert_eq!(s.report().load_kw, 0.0);
}

#[test]
fn every_instance_gets_its_own_epoch_that_json_keeps_exact() {
    let epochs: Vec<u64> = (0..100)
        .map(|_| Substation::new("s", 1.0, 1.0).epoch())
        .collect();
    for pair in epochs.windows(2) {
        assert!(pair[1] > pair[0]);
    }
    assert!(epochs.iter().all(|e| *e < (1 << 53)));
}

#[tokio::test(start_paused = true)]
async fn the_reaper_ends_sessions_on_time_without_requests() {
    let s = Substation::new("s1", 100.0, 10.0);
    let reaper = tokio::spawn(s.clone().expire_sessions());
    let t0 = Instant::now();
    accepted(s.book(&request(40.0, 300.0), None, t0)); // 30 real s
    tokio::time::sleep(secs(5)).await;
    accepted(s.book(&request(10.0, 50.0), None, Instant::now())); // ends at t0+10, sooner
    tokio::time::sleep_until(t0 + Duration::from_millis(10_001)).await;
    tokio::task::yield_now().await;
    assert_eq!(s.lock().load, Power::from_watts(40_000));
    tokio::time::sleep_until(t0 + Duration::from_millis(30_001)).await;
    tokio::task::yield_now().await;
    assert_eq!(s.lock().load, Power::ZERO);
    assert_eq!(s.lock().seq, 4);
    reaper.abort();
}
