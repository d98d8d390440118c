//! The two line formats of the access log, and RFC 3339 time without a date crate.
//!
//! JSON: one object per line, absent values `null`. logfmt: `key=value` pairs in a fixed
//! order, a value quoted (with `\"`, `\\` and `\n`-style escapes) when it is empty or holds a
//! space, `=`, `"` or a control character; absent values are written empty (`substation=`),
//! which no substation name can be.

use super::Record;
use crate::config::LogFormat;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One line, with its newline.
pub fn line(record: &Record, format: LogFormat) -> String {
    match format {
        LogFormat::Json => json(record),
        LogFormat::Logfmt => logfmt(record),
    }
}

fn seconds(d: Duration) -> f64 {
    // Microseconds are plenty and keep lines short.
    (d.as_secs_f64() * 1e6).round() / 1e6
}

/// The JSON line's fields, in the order they are written.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    request_id: &'a str,
    client: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    substation: Option<&'a str>,
    kw: f64,
    attempts: usize,
    upstream_seconds: Option<f64>,
    duration_seconds: f64,
}

fn json(r: &Record) -> String {
    let line = JsonLine {
        time: rfc3339(r.time),
        request_id: &r.request_id,
        client: r.client.as_deref(),
        method: &r.method,
        path: &r.path,
        status: r.status,
        substation: r.substation.as_deref(),
        kw: r.kw,
        attempts: r.attempts,
        upstream_seconds: r.upstream.map(seconds),
        duration_seconds: seconds(r.total),
    };
    let mut out = serde_json::to_string(&line).expect("a JSON line always serialises");
    out.push('\n');
    out
}

fn logfmt(r: &Record) -> String {
    let mut out = String::with_capacity(256);
    let mut pair = |key: &str, value: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        quote_into(&mut out, value);
    };
    pair("time", &rfc3339(r.time));
    pair("request_id", &r.request_id);
    pair("client", r.client.as_deref().unwrap_or(""));
    pair("method", &r.method);
    pair("path", &r.path);
    pair("status", &r.status.to_string());
    pair("substation", r.substation.as_deref().unwrap_or(""));
    pair("kw", &r.kw.to_string());
    pair("attempts", &r.attempts.to_string());
    let upstream = r.upstream.map(|d| seconds(d).to_string());
    pair("upstream_seconds", upstream.as_deref().unwrap_or(""));
    pair("duration_seconds", &seconds(r.total).to_string());
    out.push('\n');
    out
}

/// Empty values stay bare (`key=`): an absent value, unambiguous since no value is empty.
fn quote_into(out: &mut String, value: &str) {
    let needs = value
        .chars()
        .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    if !needs {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-11-30T01:05:19.123Z`: UTC, milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_795_497_573_187),
            request_id: "r-1".into(),
            client: Some("127.0.0.1:5000".into()),
            method: "POST".into(),
            path: "/charge".into(),
            status: 201,
            substation: Some("s2".into()),
            kw: 22.0,
            attempts: 2,
            upstream: Some(Duration::from_micros(1500)),
            total: Duration::from_micros(2250),
        }
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_497_573_187)),
            "2026-11-24T05:19:33.187Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn json_line_has_every_field() {
        let line = line(&record(), LogFormat::Json);
        assert!(line.starts_with(r#"{"time":"2026-11-24T05:19:33.187Z","request_id":"r-1","#));
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["status"], 201);
        assert_eq!(v["substation"], "s2");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["upstream_seconds"], 0.0015);
        assert_eq!(v["duration_seconds"], 0.00225);
        let none = Record {
            substation: None,
            upstream: None,
            ..record()
        };
        let v: serde_json::Value = serde_json::from_str(&json(&none)).unwrap();
        assert!(v["substation"].is_null() && v["upstream_seconds"].is_null());
    }

    #[test]
    fn logfmt_line_quotes_only_what_needs_it() {
        assert_eq!(
            line(&record(), LogFormat::Logfmt),
            "time=2026-11-24T05:19:33.187Z request_id=r-1 client=127.0.0.1:5000 method=POST \
             path=/charge status=201 substation=s2 kw=22 attempts=2 upstream_seconds=0.0015 \
             duration_seconds=0.00225\n"
        );
        let odd = Record {
            path: "/a b\"c=\n".into(),
            substation: None,
            ..record()
        };
        let line = logfmt(&odd);
        assert!(line.contains(r#"path="/a b\"c=\n""#), "{line}");
        assert!(line.contains(" substation= kw=22"), "{line}");
    }
}
