//! Request ids and the access log end to end: the real `gridlb` binary in front of in-process
//! substations (or a test double that records what reached it), and the lines it writes, read
//! back from the file and parsed as JSON and as logfmt, across a `SIGUSR1` reopen after a
//! rename and a reload that changes the format and the path.

mod common;

use common::{Proxy, client, with_probe};
use gridlb_test_support::config::{GridlbConfig, Probe};
use gridlb_test_support::http::{Double, Reply, report_header, report_json};
use gridlb_test_support::launch::substation;
use gridlb_test_support::wait::wait_every;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn probes() -> GridlbConfig {
    with_probe(Probe::every(100, 80))
}

/// A fresh directory for one test's log files.
fn log_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gridlb-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the log directory");
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait (at most 5 s) until `path` holds `n` lines; returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    wait_every(
        Duration::from_millis(50),
        Duration::from_secs(5),
        || async { lines(path).len() >= n },
    )
    .await;
    let got = lines(path);
    assert_eq!(got.len(), n, "{}: {got:#?}", path.display());
    got
}

/// A logfmt line as key/value pairs (values unquoted and unescaped).
fn logfmt(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("{line}"));
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i + 1,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("{line}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated quote in {line}"),
                }
            };
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key.to_string(), value);
        rest = after.trim_start();
    }
    out
}

fn is_rfc3339_utc(time: &str) -> bool {
    let b = time.as_bytes();
    time.len() == 24
        && time.ends_with('Z')
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && time[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_describe_each_request_and_sigusr1_reopens_the_file_after_a_rename() {
    let s1 = substation("s1", 500.0, 1.0).await;
    let dir = log_dir("access-json");
    let path = dir.join("access.log");
    let proxy = Proxy::start(
        &[("s1", s1.addr)],
        probes().access_log(path.display(), "json"),
    )
    .await;

    let booked = proxy
        .charge_with("ev-1", 22.0, 600.0, &[("x-request-id", "client-1")])
        .await;
    assert_eq!(booked.status, 201);
    let full = proxy.charge("ev-2", 900.0, 600.0).await;
    assert_eq!(full.status, 503);
    let lost = client()
        .request(proxy.listen, "GET", "/elsewhere", &[], b"")
        .await
        .unwrap();
    assert_eq!(lost.status, 404);

    let got = wait_lines(&path, 3).await;
    let json: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // Lines are written after the answers, so not necessarily in the order of the requests.
    let by_status = |status: u64| {
        json.iter()
            .find(|l| l["status"] == status)
            .unwrap_or_else(|| panic!("no {status} line in {json:#?}"))
    };
    let first = by_status(201);
    assert!(is_rfc3339_utc(first["time"].as_str().unwrap()), "{first}");
    assert_eq!(first["request_id"], "client-1");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        (&first["method"], &first["path"], &first["status"]),
        (&"POST".into(), &"/charge".into(), &201.into())
    );
    assert_eq!(
        (&first["substation"], &first["kw"]),
        (&"s1".into(), &22.0.into())
    );
    assert_eq!(first["attempts"], 1);
    let upstream = first["upstream_seconds"].as_f64().unwrap();
    let total = first["duration_seconds"].as_f64().unwrap();
    assert!(upstream > 0.0 && upstream <= total, "{first}");
    // The proxy's own refusal: nothing sent upstream, its id as the answer said.
    let refused = by_status(503);
    assert_eq!(
        (&refused["status"], &refused["kw"]),
        (&503.into(), &900.0.into())
    );
    assert!(refused["substation"].is_null() && refused["upstream_seconds"].is_null());
    assert_eq!(refused["attempts"], 0);
    assert_eq!(refused["request_id"], full.header("x-request-id").unwrap());
    assert_eq!(by_status(404)["path"], "/elsewhere");

    // logrotate's way: rename, then SIGUSR1; the old file keeps its lines, new ones go to a
    // new file by the configured name.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    proxy.signal("USR1");
    wait_every(
        Duration::from_millis(20),
        Duration::from_secs(5),
        || async { path.exists() },
    )
    .await;
    let after = proxy
        .charge_with("ev-3", 11.0, 600.0, &[("x-request-id", "after-rotation")])
        .await;
    assert_eq!(after.status, 201);
    let new = wait_lines(&path, 1).await;
    let line: serde_json::Value = serde_json::from_str(&new[0]).unwrap();
    assert_eq!(line["request_id"], "after-rotation");
    assert_eq!(lines(&rotated).len(), 3);
    assert!(proxy.log().contains("SIGUSR1"), "{}", proxy.log());
    // Nothing was dropped, and the counter is on the page from the start.
    let page = proxy.metrics().await;
    assert_eq!(
        gridlb_test_support::prom::value(&page, "gridlb_access_log_dropped_total"),
        Some(0.0),
        "{page}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_lines_parse_and_a_reload_switches_format_and_path() {
    let s1 = substation("s1", 500.0, 1.0).await;
    let dir = log_dir("access-logfmt");
    let first_path = dir.join("first.log");
    let config = probes().access_log(first_path.display(), "logfmt");
    let proxy = Proxy::start(&[("s1", s1.addr)], config).await;

    assert_eq!(proxy.charge("ev-1", 11.0, 600.0).await.status, 201);
    let spaced = client()
        .request(
            proxy.listen,
            "GET",
            "/a%20b",
            &[("x-request-id", "a b")],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(spaced.status, 404);
    let got = wait_lines(&first_path, 2).await;
    let parsed: Vec<_> = got.iter().map(|l| logfmt(l)).collect();
    let by_status = |status: &str| {
        parsed
            .iter()
            .find(|l| l["status"] == status)
            .unwrap_or_else(|| panic!("no {status} line in {parsed:#?}"))
    };
    let booked = by_status("201");
    assert!(is_rfc3339_utc(&booked["time"]), "{booked:?}");
    assert_eq!(booked["status"], "201");
    assert_eq!(booked["substation"], "s1");
    assert_eq!(booked["kw"], "11");
    assert_eq!(booked["attempts"], "1");
    assert!(booked["upstream_seconds"].parse::<f64>().unwrap() > 0.0);
    assert_eq!(booked["request_id"].len(), 32);
    let other = by_status("404");
    assert_eq!(
        (other["path"].as_str(), other["status"].as_str()),
        ("/a%20b", "404")
    );
    assert_eq!(
        (
            other["substation"].as_str(),
            other["upstream_seconds"].as_str()
        ),
        ("", "")
    );
    assert_eq!(other["request_id"], spaced.header("x-request-id").unwrap());

    // A reload to JSON in another file: new lines there, the first file keeps its two.
    let second_path = dir.join("second.log");
    let switched = probes()
        .substation("s1", s1.addr)
        .access_log(second_path.display(), "json");
    proxy.rewrite(&switched);
    assert_eq!(proxy.reload().await.status, 200);
    // The writer follows the config within one flush tick.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(proxy.charge("ev-2", 11.0, 600.0).await.status, 201);
    let json = wait_lines(&second_path, 1).await;
    let line: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(line["status"], 201);
    assert_eq!(lines(&first_path).len(), 2);

    // Without the key the log is off.
    proxy.rewrite(&probes().substation("s1", s1.addr));
    assert_eq!(proxy.reload().await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(proxy.charge("ev-3", 11.0, 600.0).await.status, 201);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lines(&second_path).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_access_log_stops_the_start_naming_the_key() {
    let s1 = substation("s1", 500.0, 1.0).await;
    let config = probes().access_log("/proc/gridlb-cannot/access.log", "json");
    let proxy = Proxy::spawn_with(&[("s1", s1.addr)], config, &Default::default());
    assert!(proxy.wait_exit(Duration::from_secs(10)), "{}", proxy.log());
    assert!(proxy.log().contains("access_log.path"), "{}", proxy.log());
}

/// A substation double that accepts every booking and records the request.
async fn recording_substation() -> Double {
    Double::start(|seen| match seen.path() {
        "/load" => Reply::new(200, report_json("s1", 1, 1, 0.0, 500.0)),
        _ => Reply::new(
            201,
            r#"{"session_id":"s1-0123456789abcdef0123456789abcdef"}"#,
        )
        .header("x-substation-load", report_header(1, 2, 0.0, 500.0)),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_sent_upstream_and_returned_on_every_answer() {
    let double = recording_substation().await;
    let proxy = Proxy::start(&[("s1", double.addr)], probes()).await;

    // The client's valid id is kept, travels upstream and comes back.
    let kept = proxy
        .charge_with("ev-1", 11.0, 600.0, &[("x-request-id", "client-abc.42")])
        .await;
    assert_eq!(kept.status, 201);
    assert_eq!(kept.header("x-request-id"), Some("client-abc.42"));
    let upstream = double.requests_to("/charge");
    assert_eq!(upstream[0].header("x-request-id"), Some("client-abc.42"));

    // An invalid one (a space, too long) is replaced, upstream and in the answer alike.
    let long = "x".repeat(129);
    for bad in ["has space", long.as_str()] {
        let replaced = proxy
            .charge_with("ev-2", 11.0, 600.0, &[("x-request-id", bad)])
            .await;
        let id = replaced.header("x-request-id").unwrap().to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let last = double.requests_to("/charge").pop().unwrap();
        assert_eq!(last.header("x-request-id"), Some(id.as_str()));
    }

    // Made ones are unique.
    let mut made = HashSet::new();
    for i in 0..50 {
        let answer = proxy.charge(&format!("ev-{i}"), 1.0, 60.0).await;
        made.insert(answer.header("x-request-id").unwrap().to_string());
    }
    assert_eq!(made.len(), 50);

    // The proxy's own errors carry it in the header and in the JSON body.
    let too_big = proxy
        .charge_with("ev-9", 900.0, 600.0, &[("x-request-id", "big-one")])
        .await;
    assert_eq!(too_big.status, 503);
    assert_eq!(too_big.header("x-request-id"), Some("big-one"));
    assert_eq!(too_big.json()["request_id"], "big-one");
    let not_found = client()
        .request(proxy.listen, "GET", "/nowhere", &[], b"")
        .await
        .unwrap();
    let id = not_found.header("x-request-id").unwrap();
    assert_eq!(not_found.json()["request_id"], id);
    let bad_kw = proxy
        .charge_with(
            "ev-9",
            1.0,
            600.0,
            &[("x-charge-kw", "-1"), ("x-request-id", "neg")],
        )
        .await;
    assert_eq!(
        (bad_kw.status, bad_kw.json()["request_id"].as_str()),
        (400, Some("neg"))
    );
}
