//! Validation: from the file as written ([`raw`]) to the [`Config`] the proxy uses. Every
//! check names the key path and the value it refused. Pure: no DNS, no I/O.

use super::{
    AccessLogConfig, AccessLogPath, AdminConfig, Config, ConfigError, LimitsConfig, ProbeConfig,
    SelectionConfig, SubstationConfig, UpstreamConfig, raw,
};
use gridlb_protocol::{Power, SubstationName};
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn validate(file: raw::File) -> Result<Config, ConfigError> {
    let listen = socket_addr("listen", &file.listen)?;
    let admin = admin(file.admin)?;
    if admin.listen == listen {
        return Err(ConfigError::new(
            "admin.listen",
            format!("{} is also the proxy's listen address", admin.listen),
        ));
    }
    Ok(Config {
        listen,
        admin,
        substations: substations(file.substations)?,
        probe: probe(file.probe)?,
        selection: selection(file.selection)?,
        upstream: upstream(file.upstream)?,
        limits: limits(file.limits)?,
        dns_refresh: dns(file.dns)?,
        trusted_proxies: file
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse()
                    .map_err(|e| ConfigError::new(format!("trusted_proxies[{i}]"), e))
            })
            .collect::<Result<_, _>>()?,
        access_log: file.access_log.map(access_log).transpose()?,
    })
}

fn access_log(raw: raw::AccessLog) -> Result<AccessLogConfig, ConfigError> {
    let path = match raw.path.as_str() {
        "-" => AccessLogPath::Stdout,
        "" => {
            return Err(ConfigError::new(
                "access_log.path",
                "\"\" is neither \"-\" (standard output) nor a file path",
            ));
        }
        p if p.ends_with('/') || p.contains('\0') => {
            return Err(ConfigError::new(
                "access_log.path",
                format!("{p:?} is not a file path"),
            ));
        }
        p => AccessLogPath::File(p.into()),
    };
    Ok(AccessLogConfig {
        path,
        format: raw.format,
    })
}

fn admin(raw: raw::Admin) -> Result<AdminConfig, ConfigError> {
    let listen = match raw.listen {
        Some(s) => socket_addr("admin.listen", &s)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9100)),
    };
    let token = raw
        .token_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|t| !t.is_empty());
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(ConfigError::new(
            "admin.listen",
            format!(
                "{listen} is not a loopback address and no token is configured; set admin.token_env \
                 to the name of an environment variable that holds the token"
            ),
        ));
    }
    Ok(AdminConfig {
        listen,
        token,
        token_env: raw.token_env,
    })
}

fn substations(raw: Vec<raw::Substation>) -> Result<Vec<SubstationConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "substations",
            "at least one substation is needed",
        ));
    }
    let mut out: Vec<SubstationConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("substations[{i}].{key}");
        if let Err(e) = SubstationName::parse(&s.name) {
            return Err(ConfigError::new(at("name"), e.to_string()));
        }
        if out.iter().any(|o| o.name == s.name) {
            return Err(ConfigError::new(
                at("name"),
                format!("{:?} is used twice", s.name),
            ));
        }
        host_port(&at("address"), &s.address)?;
        if let Some(other) = out.iter().find(|o| same_address(&o.address, &s.address)) {
            return Err(ConfigError::new(
                at("address"),
                format!("{:?} is also the address of {}", s.address, other.name),
            ));
        }
        if !(1..=1000).contains(&s.weight) {
            return Err(ConfigError::new(
                at("weight"),
                format!("{} is not in 1..=1000", s.weight),
            ));
        }
        out.push(SubstationConfig {
            name: s.name,
            address: s.address,
            weight: s.weight as usize,
            drain: s.drain,
            capacity_kw: capacity(&at("capacity_kw"), s.capacity_kw)?,
        });
    }
    Ok(out)
}

fn probe(raw: raw::Probe) -> Result<ProbeConfig, ConfigError> {
    if !raw.path.starts_with('/') || raw.path.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            "probe.path",
            format!("{:?} is not an absolute path", raw.path),
        ));
    }
    if !(10..=60_000).contains(&raw.interval_ms) {
        return Err(range("probe.interval_ms", raw.interval_ms, "10..=60000"));
    }
    if raw.timeout_ms == 0 || raw.timeout_ms > raw.interval_ms {
        return Err(ConfigError::new(
            "probe.timeout_ms",
            format!(
                "{} must be at least 1 and at most probe.interval_ms ({})",
                raw.timeout_ms, raw.interval_ms
            ),
        ));
    }
    for (key, v) in [
        ("probe.unhealthy_after", raw.unhealthy_after),
        ("probe.healthy_after", raw.healthy_after),
    ] {
        if !(1..=100).contains(&v) {
            return Err(range(key, v, "1..=100"));
        }
    }
    let max_report_age_ms = raw.max_report_age_ms.unwrap_or(3 * raw.interval_ms);
    if !(raw.interval_ms..=600_000).contains(&max_report_age_ms) {
        return Err(ConfigError::new(
            "probe.max_report_age_ms",
            format!(
                "{max_report_age_ms} must be at least probe.interval_ms ({}) and at most 600000",
                raw.interval_ms
            ),
        ));
    }
    Ok(ProbeConfig {
        max_report_age: Duration::from_millis(max_report_age_ms),
        path: raw.path,
        interval: Duration::from_millis(raw.interval_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
        unhealthy_after: raw.unhealthy_after as usize,
        healthy_after: raw.healthy_after as usize,
    })
}

fn selection(raw: raw::Selection) -> Result<SelectionConfig, ConfigError> {
    if !(raw.max_utilization > 0.0 && raw.max_utilization <= 1.0) {
        return Err(ConfigError::new(
            "selection.max_utilization",
            format!("{} is not in (0, 1]", raw.max_utilization),
        ));
    }
    if !(raw.default_request_kw.is_finite() && raw.default_request_kw > 0.0) {
        return Err(ConfigError::new(
            "selection.default_request_kw",
            format!("{} is not a positive number", raw.default_request_kw),
        ));
    }
    Ok(SelectionConfig {
        algorithm: raw.algorithm,
        max_utilization: raw.max_utilization,
        default_request_kw: raw.default_request_kw,
    })
}

fn upstream(raw: raw::Upstream) -> Result<UpstreamConfig, ConfigError> {
    if !(1..=60_000).contains(&raw.connect_timeout_ms) {
        return Err(range(
            "upstream.connect_timeout_ms",
            raw.connect_timeout_ms,
            "1..=60000",
        ));
    }
    if !(1..=600_000).contains(&raw.read_timeout_ms) {
        return Err(range(
            "upstream.read_timeout_ms",
            raw.read_timeout_ms,
            "1..=600000",
        ));
    }
    Ok(UpstreamConfig {
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        read_timeout: Duration::from_millis(raw.read_timeout_ms),
    })
}

fn limits(raw: raw::Limits) -> Result<LimitsConfig, ConfigError> {
    if !(1024..=1_048_576).contains(&raw.max_header_bytes) {
        return Err(range(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            "1024..=1048576",
        ));
    }
    if !(100..=600_000).contains(&raw.client_header_timeout_ms) {
        return Err(range(
            "limits.client_header_timeout_ms",
            raw.client_header_timeout_ms,
            "100..=600000",
        ));
    }
    if !(100..=600_000).contains(&raw.client_read_timeout_ms) {
        return Err(range(
            "limits.client_read_timeout_ms",
            raw.client_read_timeout_ms,
            "100..=600000",
        ));
    }
    if !(1..=1_000_000).contains(&raw.max_concurrent_requests) {
        return Err(range(
            "limits.max_concurrent_requests",
            raw.max_concurrent_requests,
            "1..=1000000",
        ));
    }
    Ok(LimitsConfig {
        max_header_bytes: raw.max_header_bytes as usize,
        client_header_timeout: Duration::from_millis(raw.client_header_timeout_ms),
        client_read_timeout: Duration::from_millis(raw.client_read_timeout_ms),
        max_concurrent_requests: raw.max_concurrent_requests as usize,
        max_session_kw: bounded(
            "limits.max_session_kw",
            raw.max_session_kw,
            gridlb_protocol::MAX_SESSION_KW,
        )?,
        max_duration_s: bounded(
            "limits.max_duration_s",
            raw.max_duration_s,
            gridlb_protocol::MAX_DURATION_S,
        )?,
    })
}

/// A positive limit no larger than the protocol's own.
fn bounded(path: &str, value: f64, max: f64) -> Result<f64, ConfigError> {
    if !(value.is_finite() && value > 0.0 && value <= max) {
        return Err(ConfigError::new(
            path,
            format!("{value} is not in (0, {max}]"),
        ));
    }
    Ok(value)
}

fn dns(raw: raw::Dns) -> Result<Duration, ConfigError> {
    if !(100..=3_600_000).contains(&raw.refresh_ms) {
        return Err(range("dns.refresh_ms", raw.refresh_ms, "100..=3600000"));
    }
    Ok(Duration::from_millis(raw.refresh_ms))
}

/// A configured capacity: a positive number of kW a `Power` can hold.
fn capacity(path: &str, kw: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match kw {
        Some(kw) if !(kw.is_finite() && kw > 0.0 && Power::from_kw(kw).is_ok()) => {
            Err(ConfigError::new(
                path,
                format!("{kw} is not a positive number of kW up to 1e9"),
            ))
        }
        other => Ok(other),
    }
}

fn range(path: &str, value: u64, range: &str) -> ConfigError {
    ConfigError::new(path, format!("{value} is not in {range}"))
}

fn socket_addr(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::new(path, format!("{s:?} is not ip:port")))
}

/// Check that `s` is `host:port` (an IP literal, or a host name and a port); the name is
/// resolved later, by `discovery`.
pub(crate) fn host_port(path: &str, s: &str) -> Result<(), ConfigError> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || ConfigError::new(path, format!("{s:?} is not host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Two addresses as written that are certainly the same: equal text, or equal IP literals.
/// (Names that resolve to the same address are caught by `discovery` after resolving.)
fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
        || matches!((a.parse::<SocketAddr>(), b.parse::<SocketAddr>()), (Ok(x), Ok(y)) if x == y)
}
