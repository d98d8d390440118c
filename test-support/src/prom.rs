//! The one parser of the Prometheus text exposition format (version 0.0.4) in the tests.
//!
//! A page is read into [`Sample`]s: the metric name, the labels (with `\\`, `\"` and `\n`
//! unescaped in values), the value (`+Inf`, `-Inf` and `NaN` included) and the series as the
//! page wrote it (`name{a="b"}`), which is how a test names one series. `# HELP`, `# TYPE`
//! and other comments are skipped; an optional timestamp after the value is ignored. A line
//! that is not a sample is a test failure: the page under test is malformed.
//!
//! Lookups: by the full series ([`value`], [`metric`]), by name and a subset of labels in any
//! order ([`matching`]), and the sum over those ([`sum`]).

use std::collections::HashMap;

/// One sample line of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series as written: the name and, when there are labels, `{...}`.
    pub series: String,
    pub name: String,
    /// Label names and unescaped values, in the page's order.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every one of `labels` is among this sample's labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(n, v)| self.label(n) == Some(*v))
    }
}

/// Every sample of `page`, in order. Panics, naming the line, on a line that is not one.
pub fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).unwrap_or_else(|e| panic!("not a sample line ({e}): {l:?}")))
        .collect()
}

/// The samples of `page` keyed by their series as written.
pub fn by_series(page: &str) -> HashMap<String, f64> {
    samples(page)
        .into_iter()
        .map(|s| (s.series, s.value))
        .collect()
}

/// The value of the series written exactly `series` (`name{a="b"}`), `None` when absent.
pub fn value(page: &str, series: &str) -> Option<f64> {
    samples(page)
        .into_iter()
        .find(|s| s.series == series)
        .map(|s| s.value)
}

/// [`value`], 0 when the page does not have the series (as a counter not yet touched).
pub fn metric(page: &str, series: &str) -> f64 {
    value(page, series).unwrap_or(0.0)
}

/// The samples of metric `name` whose labels include every one of `labels`, in any order.
pub fn matching(page: &str, name: &str, labels: &[(&str, &str)]) -> Vec<Sample> {
    samples(page)
        .into_iter()
        .filter(|s| s.name == name && s.has_labels(labels))
        .collect()
}

/// The sum of [`matching`] samples (0 when there is none).
pub fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(page, name, labels).iter().map(|s| s.value).sum()
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let (labels, series_end) = if line[name_end..].starts_with('{') {
        parse_labels(line, name_end + 1)?
    } else {
        (Vec::new(), name_end)
    };
    let mut rest = line[series_end..].split_whitespace();
    let value = parse_value(rest.next().ok_or("no value")?)?;
    if let Some(ts) = rest.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if rest.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        series: line[..series_end].to_string(),
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels from byte `at` (just after `{`); returns them and the byte just after `}`.
fn parse_labels(line: &str, mut at: usize) -> Result<(Vec<(String, String)>, usize), String> {
    let bytes = line.as_bytes();
    let mut labels = Vec::new();
    loop {
        while at < bytes.len() && (bytes[at] == b',' || bytes[at] == b' ') {
            at += 1;
        }
        if at >= bytes.len() {
            return Err("unclosed labels".into());
        }
        if bytes[at] == b'}' {
            return Ok((labels, at + 1));
        }
        let eq = line[at..].find('=').ok_or("label without =")? + at;
        let key = line[at..eq].trim().to_string();
        if bytes.get(eq + 1) != Some(&b'"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        let mut chars = line[eq + 2..].char_indices();
        let end = loop {
            match chars.next().ok_or("unclosed label value")? {
                (i, '"') => break eq + 2 + i + 1,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        at = end;
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exposition as the `prometheus` crate writes it, with a timestamped and an escaped line.
    const PAGE: &str = r#"# HELP gridlb_requests_total Requests by substation and status.
# TYPE gridlb_requests_total counter
gridlb_requests_total{kind="charge",status="201",substation="s1"} 3
gridlb_requests_total{kind="charge",status="503",substation="s1"} 1
gridlb_requests_total{kind="charge",status="201",substation="s2"} 4
# HELP gridlb_request_duration_seconds Request duration.
# TYPE gridlb_request_duration_seconds histogram
gridlb_request_duration_seconds_bucket{le="0.005"} 2
gridlb_request_duration_seconds_bucket{le="+Inf"} 8
gridlb_request_duration_seconds_sum 0.125
gridlb_request_duration_seconds_count 8
gridlb_config_reloads_total{result="success"} 2
odd_labels{path="C:\\dir",quote="say \"hi\"",nl="a\nb"} -Inf
gauge_with_time 1.5e3 1700000000000

weird_value NaN
"#;

    #[test]
    fn a_full_series_is_found_as_written() {
        assert_eq!(
            value(PAGE, r#"gridlb_config_reloads_total{result="success"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(PAGE, "gridlb_request_duration_seconds_sum"),
            Some(0.125)
        );
        assert_eq!(value(PAGE, "gridlb_request_duration_seconds"), None);
        assert_eq!(
            metric(PAGE, r#"gridlb_config_reloads_total{result="failure"}"#),
            0.0
        );
    }

    #[test]
    fn inf_nan_exponents_and_timestamps_are_read() {
        assert_eq!(
            value(PAGE, r#"gridlb_request_duration_seconds_bucket{le="+Inf"}"#),
            Some(8.0)
        );
        assert_eq!(value(PAGE, "gauge_with_time"), Some(1500.0));
        assert!(value(PAGE, "weird_value").expect("present").is_nan());
        let bucket = &matching(
            PAGE,
            "gridlb_request_duration_seconds_bucket",
            &[("le", "+Inf")],
        );
        assert_eq!(bucket.len(), 1);
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let odd = &matching(PAGE, "odd_labels", &[])[0];
        assert_eq!(odd.label("path"), Some(r"C:\dir"));
        assert_eq!(odd.label("quote"), Some(r#"say "hi""#));
        assert_eq!(odd.label("nl"), Some("a\nb"));
        assert_eq!(odd.value, f64::NEG_INFINITY);
    }

    #[test]
    fn sums_go_over_a_label_subset_in_any_order() {
        assert_eq!(sum(PAGE, "gridlb_requests_total", &[]), 8.0);
        assert_eq!(
            sum(PAGE, "gridlb_requests_total", &[("substation", "s1")]),
            4.0
        );
        assert_eq!(
            sum(
                PAGE,
                "gridlb_requests_total",
                &[("substation", "s2"), ("status", "201")]
            ),
            4.0
        );
        assert_eq!(
            sum(PAGE, "gridlb_requests_total", &[("substation", "s3")]),
            0.0
        );
        // A name is matched whole, not as a prefix.
        assert_eq!(sum(PAGE, "gridlb_requests", &[]), 0.0);
    }

    #[test]
    fn comments_and_blank_lines_are_not_samples() {
        let all = samples(PAGE);
        assert_eq!(all.len(), 11);
        assert!(by_series(PAGE).contains_key("gridlb_request_duration_seconds_count"));
    }

    #[test]
    #[should_panic(expected = "not a sample line")]
    fn a_malformed_line_fails_the_test() {
        samples("metric{a=\"b\" 1\n");
    }
}
