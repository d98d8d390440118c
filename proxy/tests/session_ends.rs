//! Session-end awareness end to end: the real `gridlb` binary learns when each session it
//! routed ends (from the substation's `201`), answers a full grid's `503` with the time room is
//! expected, and counts ended power before the next report says so.

mod common;

use common::{Proxy, with_probe};
use gridlb_test_support::config::Probe;
use gridlb_test_support::launch::substation;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_grid_is_told_when_the_session_it_routed_ends() {
    let sub = substation("s1", 30.0, 1.0).await;
    // Probes far apart: what gridlb knows between them comes from the answers.
    let proxy = Proxy::start(&[("s1", sub.addr)], with_probe(Probe::every(30_000, 1000))).await;
    let first = proxy.charge("ev-1", 20.0, 4.0).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let booked = Instant::now();
    let refused = proxy.charge("ev-2", 20.0, 4.0).await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.header("x-gridlb-substation").is_none(),
        "gridlb answered the full grid itself"
    );
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(
        (3..=4).contains(&retry_after),
        "the session ends 4 s after booking, Retry-After {retry_after}"
    );
    // Once it has ended, gridlb routes the next one without a new report.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(booked.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = proxy.charge("ev-3", 20.0, 4.0).await;
    assert_eq!(after.status, 201, "{:?}", after.body);
}
