use super::*;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9100 }
substations:
  - { name: s1, address: 127.0.0.1:9001 }
  - { name: s2, address: "localhost:9002", weight: 2, drain: true }
probe: { path: /load, interval_ms: 500, timeout_ms: 250, unhealthy_after: 2, healthy_after: 1 }
selection: { algorithm: p2c, max_utilization: 0.9, default_request_kw: 11 }
"#;

fn err(text: &str) -> ConfigError {
    Config::parse(text).expect_err("config should be rejected")
}

fn with(replace: &str, by: &str) -> String {
    assert!(GOOD.contains(replace), "{replace}");
    GOOD.replace(replace, by)
}

#[test]
fn full_config_parses_into_the_internal_type() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.substations.len(), 2);
    assert_eq!(c.substations[1].weight, 2);
    assert!(c.substations[1].drain);
    assert_eq!(c.substations[1].address, "localhost:9002");
    assert_eq!(c.selection.algorithm, Algorithm::P2c);
    assert_eq!(c.probe.interval, Duration::from_millis(500));
}

#[test]
fn minimal_config_takes_the_documented_defaults() {
    let c = Config::parse("listen: 127.0.0.1:1\nsubstations: [{name: a, address: 127.0.0.1:2}]")
        .unwrap();
    assert_eq!(c.admin.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(c.probe.unhealthy_after, 2);
    assert_eq!(c.selection.algorithm, Algorithm::LeastLoad);
    assert_eq!(c.selection.max_utilization, 1.0);
    assert_eq!(c.selection.default_request_kw, 11.0);
    assert_eq!(c.substations[0].weight, 1);
}

#[test]
fn unknown_key_is_an_error_that_names_its_path() {
    let e = err(&with("weight: 2", "wieght: 2"));
    assert_eq!(e.path, "substations[1].wieght");
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(&with("interval_ms: 500", "interval: 500"));
    assert_eq!(e.path, "probe.interval");
}

#[test]
fn bad_values_name_path_and_value() {
    let cases = [
        (
            with("127.0.0.1:9001", "x:y"),
            "substations[0].address",
            "\"x:y\"",
        ),
        (
            with("name: s2", "name: s1"),
            "substations[1].name",
            "used twice",
        ),
        (
            with("localhost:9002", "127.0.0.1:9001"),
            "substations[1].address",
            "also the address",
        ),
        (with("weight: 2", "weight: 0"), "substations[1].weight", "0"),
        (
            with("max_utilization: 0.9", "max_utilization: 1.5"),
            "selection.max_utilization",
            "1.5",
        ),
        (
            with("algorithm: p2c", "algorithm: fastest"),
            "selection.algorithm",
            "fastest",
        ),
        (
            with("timeout_ms: 250", "timeout_ms: 900"),
            "probe.timeout_ms",
            "900",
        ),
        (
            with("unhealthy_after: 2", "unhealthy_after: 0"),
            "probe.unhealthy_after",
            "0",
        ),
        (
            with("listen: 127.0.0.1:8080", "listen: nowhere"),
            "listen",
            "nowhere",
        ),
        (
            with("default_request_kw: 11", "default_request_kw: -1"),
            "selection.default_request_kw",
            "-1",
        ),
    ];
    for (text, path, needle) in cases {
        let e = err(&text);
        assert_eq!(e.path, path, "{e}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    }
}

#[test]
fn empty_substation_list_and_bad_yaml_are_errors() {
    assert_eq!(
        err("listen: 127.0.0.1:1\nsubstations: []").path,
        "substations"
    );
    assert!(Config::parse("listen: [unclosed").is_err());
    assert!(Config::parse("").is_err());
}

#[test]
fn public_admin_address_without_token_is_refused() {
    let e = err(&with(
        "admin: { listen: 127.0.0.1:9100 }",
        "admin: { listen: 0.0.0.0:9100 }",
    ));
    assert_eq!(e.path, "admin.listen");
    assert!(e.message.contains("token"), "{e}");
}

#[test]
fn token_is_never_printed() {
    let admin = AdminConfig {
        listen: "127.0.0.1:1".parse().unwrap(),
        token: Some("hunter2".into()),
        token_env: Some("T".into()),
    };
    let printed = format!("{admin:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("redacted"));
}

#[test]
fn limits_have_defaults_and_ranges() {
    let c = Config::parse("listen: 127.0.0.1:1\nsubstations: [{name: a, address: 127.0.0.1:2}]")
        .unwrap();
    assert_eq!(c.limits.max_header_bytes, 32 * 1024);
    assert_eq!(c.limits.max_concurrent_requests, 10_000);
    let e = err(&with(
        "selection: {",
        "limits: { max_concurrent_requests: 0 }\nselection: {",
    ));
    assert_eq!(e.path, "limits.max_concurrent_requests");
}

#[test]
fn the_client_header_timeout_defaults_to_ten_seconds_and_is_bounded() {
    let c = Config::parse("listen: 127.0.0.1:1\nsubstations: [{name: a, address: 127.0.0.1:2}]")
        .unwrap();
    assert_eq!(c.limits.client_header_timeout, Duration::from_secs(10));
    let c = Config::parse(&with(
        "selection: {",
        "limits: { client_header_timeout_ms: 500 }\nselection: {",
    ))
    .unwrap();
    assert_eq!(c.limits.client_header_timeout, Duration::from_millis(500));
    for bad in ["99", "600001"] {
        let e = err(&with(
            "selection: {",
            &format!("limits: {{ client_header_timeout_ms: {bad} }}\nselection: {{"),
        ));
        assert_eq!(e.path, "limits.client_header_timeout_ms");
        assert_eq!(e.message, format!("{bad} is not in 100..=600000"));
    }
}

#[test]
fn parsing_resolves_no_names_but_checks_their_syntax() {
    // Resolution (and its errors) belongs to `discovery`; see its tests.
    let c = Config::parse(&with("localhost:9002", "no-such-host.invalid:9002")).unwrap();
    assert_eq!(c.substations[1].address, "no-such-host.invalid:9002");
    let e = err(&with("localhost:9002", "bad host:9002"));
    assert_eq!(e.path, "substations[1].address");
    let e = err(&with("localhost:9002", "localhost:http"));
    assert_eq!(e.path, "substations[1].address");
}

#[test]
fn access_log_is_off_by_default_and_json_unless_told() {
    assert_eq!(Config::parse(GOOD).unwrap().access_log, None);
    let on = format!("{GOOD}access_log: {{ path: /var/log/gridlb/access.log }}\n");
    let log = Config::parse(&on).unwrap().access_log.unwrap();
    assert_eq!(
        log.path,
        AccessLogPath::File("/var/log/gridlb/access.log".into())
    );
    assert_eq!(log.format, LogFormat::Json);
    let stdout = format!("{GOOD}access_log: {{ path: \"-\", format: logfmt }}\n");
    let log = Config::parse(&stdout).unwrap().access_log.unwrap();
    assert_eq!(
        (log.path, log.format),
        (AccessLogPath::Stdout, LogFormat::Logfmt)
    );
}

#[test]
fn bad_access_log_keys_name_their_path() {
    for (yaml, path) in [
        ("access_log: { path: x, format: xml }", "access_log.format"),
        ("access_log: { path: \"\" }", "access_log.path"),
        ("access_log: { path: /var/log/ }", "access_log.path"),
        ("access_log: { format: json }", "access_log"),
        (
            "access_log: { path: x, rotate: daily }",
            "access_log.rotate",
        ),
    ] {
        let e = err(&format!("{GOOD}{yaml}\n"));
        assert_eq!(e.path, path, "{yaml}: {e}");
    }
}
