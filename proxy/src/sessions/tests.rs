use super::*;
use proptest::prelude::*;

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn kw(kw: f64) -> Power {
    Power::from_kw(kw).unwrap()
}

#[test]
fn nothing_has_ended_right_after_a_report() {
    let t0 = Instant::now();
    let s = Sessions::default();
    s.record("s1-a", kw(11.0), at(t0, 1000), t0);
    s.mark_report(t0);
    assert_eq!(s.ended_since_report(at(t0, 999)), Power::ZERO);
    assert_eq!(s.ended_since_report(at(t0, 1000)), kw(11.0));
}

#[test]
fn a_newer_report_starts_the_count_again() {
    let t0 = Instant::now();
    let s = Sessions::default();
    s.record("s1-a", kw(11.0), at(t0, 100), t0);
    s.record("s1-b", kw(22.0), at(t0, 300), t0);
    s.mark_report(t0);
    assert_eq!(s.ended_since_report(at(t0, 200)), kw(11.0));
    s.mark_report(at(t0, 250));
    assert_eq!(s.ended_since_report(at(t0, 260)), Power::ZERO);
    assert_eq!(s.ended_since_report(at(t0, 400)), kw(22.0));
}

#[test]
fn a_deleted_session_is_not_subtracted_when_its_end_comes() {
    let t0 = Instant::now();
    let s = Sessions::default();
    s.record("s1-a", kw(50.0), at(t0, 100), t0);
    assert_eq!(s.forget("s1-a"), Some(kw(50.0)));
    s.mark_report(at(t0, 10));
    assert_eq!(s.ended_since_report(at(t0, 200)), Power::ZERO);
    assert_eq!(s.forget("s1-a"), None);
}

#[test]
fn room_comes_when_enough_known_sessions_have_ended() {
    let t0 = Instant::now();
    let s = Sessions::default();
    s.record("s1-a", kw(10.0), at(t0, 3000), t0);
    s.record("s1-b", kw(10.0), at(t0, 1000), t0);
    s.record("s1-c", kw(10.0), at(t0, 2000), t0);
    assert_eq!(s.room_in(kw(15.0), t0), Some(Duration::from_secs(2)));
    assert_eq!(s.room_in(kw(5.0), t0), Some(Duration::from_secs(1)));
    assert_eq!(s.room_in(kw(31.0), t0), None);
    assert_eq!(s.room_in(Power::ZERO, t0), Some(Duration::ZERO));
}

#[test]
fn a_201_names_its_session_and_its_end() {
    let t0 = Instant::now();
    let mut h = http::HeaderMap::new();
    h.insert("location", "/charge/s1-abc".parse().unwrap());
    h.insert(
        gridlb_protocol::SESSION_REMAINING_HEADER,
        "1.5".parse().unwrap(),
    );
    assert_eq!(accepted(&h, t0), Some(("s1-abc".to_string(), at(t0, 1500))));
    h.insert(
        gridlb_protocol::SESSION_REMAINING_HEADER,
        "NaN".parse().unwrap(),
    );
    assert_eq!(accepted(&h, t0), None);
}

/// One session of the model: start and end (ms), power (W), whether this replica routed it,
/// and when (ms), if ever, another replica deleted it.
#[derive(Debug, Clone)]
struct Model {
    start: u64,
    end: u64,
    w: u64,
    known: bool,
    deleted_elsewhere: Option<u64>,
}

fn model() -> impl Strategy<Value = Model> {
    (
        0u64..1000,
        1u64..3000,
        1u64..200_000,
        any::<bool>(),
        prop::option::weighted(0.2, 0u64..3000),
    )
        .prop_map(|(start, len, w, known, del)| Model {
            start,
            end: start + len,
            w,
            known,
            deleted_elsewhere: del.map(|d| start + d % len),
        })
}

fn active(m: &Model, t: u64) -> bool {
    m.start <= t && t < m.end && m.deleted_elsewhere.is_none_or(|d| t < d)
}

proptest! {
    /// The report is made and received at `r`; sessions start by then. At `now`, the
    /// estimate (reported load minus power ended since, never below zero) is never below the
    /// truth by more than the known sessions another replica deleted, and equals the report
    /// when nothing known has ended.
    #[test]
    fn estimate_is_below_the_truth_only_by_what_a_replica_cannot_know(
        sessions in prop::collection::vec(model(), 0..40),
        r in 1000u64..1500,
        later in 0u64..3000,
    ) {
        let t0 = Instant::now();
        let s = Sessions::default();
        for (i, m) in sessions.iter().enumerate() {
            if m.known {
                s.record(&format!("s1-{i}"), Power::from_watts(m.w), at(t0, m.end), at(t0, m.start));
            }
        }
        let report_w: u64 = sessions.iter().filter(|m| active(m, r)).map(|m| m.w).sum();
        s.mark_report(at(t0, r));
        let now = r + later;
        let ended = s.ended_since_report(at(t0, now)).as_watts();
        let estimate = report_w.saturating_sub(ended);
        let truth: u64 = sessions.iter().filter(|m| active(m, now)).map(|m| m.w).sum();
        let unknowable: u64 = sessions
            .iter()
            .filter(|m| m.known && m.deleted_elsewhere.is_some_and(|d| d <= now) && m.end > r)
            .map(|m| m.w)
            .sum();
        prop_assert!(estimate + unknowable >= truth, "estimate {estimate} truth {truth}");
        if sessions.iter().all(|m| !m.known || m.end > now) {
            prop_assert_eq!(estimate, report_w);
        }
        if sessions.iter().all(|m| m.known && m.deleted_elsewhere.is_none()) {
            prop_assert_eq!(estimate, truth);
        }
    }
}
