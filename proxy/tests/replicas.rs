//! Several gridlb replicas over the same substations, with no coordination between them.

mod common;

use common::{Proxy, with_probe};
use gridlb_bench::demand::{SplitMix64, session};
use gridlb_protocol::Power;
use gridlb_test_support::config::Probe;
use gridlb_test_support::launch::substation;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Three replicas, nine concurrent clients, the grid filled to the last session.
///
/// Sessions last an hour (no expiry during the test), so a replica's view of a substation can
/// only lag behind the truth by load it has not heard of yet, never by load that has left:
/// a refusal must then mean that no substation had room, which is checked against the
/// substations themselves at the moment each refusal arrives (load only grows, so room at that
/// moment is at least the room there was when the replica decided). The allowance is the power
/// of the replica's other requests in flight, which hold reservations it must not give twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_overbook_and_never_refuse_while_there_is_room() {
    let subs = Arc::new(vec![
        substation("s1", 200.0, 1.0).await,
        substation("s2", 500.0, 1.0).await,
        substation("s3", 1000.0, 1.0).await,
    ]);
    let lines = [
        ("s1", subs[0].addr),
        ("s2", subs[1].addr),
        ("s3", subs[2].addr),
    ];
    let probes = with_probe(Probe::every(200, 150));
    let replicas = Arc::new(vec![
        Proxy::start(&lines, probes.clone()).await,
        Proxy::start(&lines, probes.clone()).await,
        Proxy::start(&lines, probes).await,
    ]);
    // Power (in W) each replica has in flight.
    let in_flight: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let mut workers = Vec::new();
    for w in 0..9usize {
        let (subs, replicas, in_flight) = (
            Arc::clone(&subs),
            Arc::clone(&replicas),
            Arc::clone(&in_flight),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(w as u64 + 1);
            let proxy = &replicas[w % 3];
            let (mut accepted, mut refused_in_a_row) = (0u32, 0u32);
            for n in 0..200u64 {
                let kw = session(&mut rng, n).power_kw;
                let watts = Power::from_kw(kw).expect("a charger power").as_watts();
                let others_at_send = in_flight[w % 3].fetch_add(watts, SeqCst);
                let a = proxy.charge(&format!("w{w}-{n}"), kw, 3600.0).await;
                let others_at_answer = in_flight[w % 3].fetch_sub(watts, SeqCst) - watts;
                let allowance = others_at_send.max(others_at_answer) as f64 / 1000.0;
                match a.status {
                    201 => {
                        accepted += 1;
                        refused_in_a_row = 0;
                    }
                    503 => {
                        let room: Vec<f64> = subs.iter().map(|s| s.state.report().capacity_kw - s.state.report().load_kw).collect();
                        assert!(
                            room.iter().all(|r| *r < kw + allowance),
                            "replica {} refused {kw} kW while the substations had room {room:?} ({allowance} kW of its own in flight)",
                            w % 3
                        );
                        refused_in_a_row += 1;
                        if refused_in_a_row == 8 {
                            break;
                        }
                    }
                    other => panic!("status {other}: {:?}", a.json()),
                }
                for s in subs.iter() {
                    let r = s.state.report();
                    assert!(r.load_kw <= r.capacity_kw, "{} booked past capacity: {r:?}", s.state.id());
                }
            }
            accepted
        }));
    }
    let mut accepted = Vec::new();
    for w in workers {
        accepted.push(w.await.expect("worker"));
    }
    // Every replica took sessions, and the grid ended (nearly) full: less room left anywhere
    // than the smallest charger that was still being refused eight times in a row.
    let per_replica: Vec<u32> = (0..3)
        .map(|r| accepted.iter().skip(r).step_by(3).sum())
        .collect();
    assert!(
        per_replica.iter().all(|n| *n > 0),
        "sessions per replica {per_replica:?}"
    );
    let room: f64 = subs
        .iter()
        .map(|s| s.state.report().capacity_kw - s.state.report().load_kw)
        .sum();
    eprintln!("sessions per replica {per_replica:?}, {room:.1} kW of 1700 left");
    assert!(room < 0.1 * 1700.0, "{room} kW left unused in a full grid");
}
