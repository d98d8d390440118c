//! gridlb's YAML configuration, in two layers (as river does it): serde structs that mirror
//! the file exactly (`deny_unknown_fields`), and one validated [`Config`] that the rest of the
//! proxy uses. Every error names the path of the offending key and its value, for example
//! `substations[1].address: "x:y" is not host:port`.
//!
//! Defaults (a key left out of the file):
//! - `admin.listen` 127.0.0.1:9100, no token;
//! - `probe`: path `/load`, every 500 ms, timeout 250 ms, unhealthy after 2 failed or invalid
//!   probes, healthy again after 1 good one;
//! - `selection`: `least-load`, `max_utilization` 1.0, `default_request_kw` 11;
//! - `upstream`: connect timeout 1 s, read timeout 10 s;
//! - `limits`: 32 KiB of request headers, 10 s to send a body, 10,000 requests at once;
//! - `dns.refresh_ms` 30 s: how often substation host names are resolved again;
//! - a substation's `weight` 1, `drain` false.

use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// A configuration error: where in the file, and what is wrong there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The key path, e.g. `substations[1].address`; `file` for errors about the whole file.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The selection algorithm, see `selection.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    LeastLoad,
    P2c,
    RoundRobin,
    Random,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::LeastLoad => "least-load",
            Algorithm::P2c => "p2c",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Random => "random",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: AdminConfig,
    pub substations: Vec<SubstationConfig>,
    pub probe: ProbeConfig,
    pub selection: SelectionConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    /// How often host names in substation addresses are resolved again.
    pub dns_refresh: Duration,
}

#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token guarding mutating admin routes, read from `token_env` at load.
    pub token: Option<String>,
    pub token_env: Option<String>,
}

/// The token is never printed, also not by `{:?}`.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubstationConfig {
    pub name: String,
    /// The address as written (`host:port`), for display.
    pub address: String,
    /// The address it resolved to at load.
    pub addr: SocketAddr,
    pub weight: usize,
    pub drain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: usize,
    pub healthy_after: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectionConfig {
    pub algorithm: Algorithm,
    pub max_utilization: f64,
    pub default_request_kw: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// Protection against clients that send too much or too slowly.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Larger request headers (all names and values) are answered `431`.
    pub max_header_bytes: usize,
    /// A client must send its whole body within this time, else the connection is closed.
    pub client_read_timeout: Duration,
    /// Requests in progress at once; more are answered `503` at once.
    pub max_concurrent_requests: usize,
}

mod raw;

impl Config {
    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        Config::parse(&text)
    }

    /// Parse and validate YAML text. Environment variables are read for `admin.token_env`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, &resolve)
    }

    /// [`Config::parse`] with another resolver of substation addresses (`path`, `host:port`):
    /// for tools and fuzzing that must not do network I/O.
    pub fn parse_with(text: &str, resolver: &Resolver) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let file: raw::File = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." || path.is_empty() {
                "file".to_string()
            } else {
                path
            };
            // serde_yaml prefixes its message with the parent's path: say it once.
            let message = e.inner().to_string();
            let message = match message.split_once(": ") {
                Some((head, rest)) if path.starts_with(head) => rest.to_string(),
                _ => message,
            };
            ConfigError::new(path, message)
        })?;
        validate(file, resolver)
    }
}

/// Resolves a substation address (`host:port`) given at a key path.
pub type Resolver = dyn Fn(&str, &str) -> Result<SocketAddr, ConfigError>;

fn validate(file: raw::File, resolver: &Resolver) -> Result<Config, ConfigError> {
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
        substations: substations(file.substations, resolver)?,
        probe: probe(file.probe)?,
        selection: selection(file.selection)?,
        upstream: upstream(file.upstream)?,
        limits: limits(file.limits)?,
        dns_refresh: dns(file.dns)?,
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

fn substations(
    raw: Vec<raw::Substation>,
    resolver: &Resolver,
) -> Result<Vec<SubstationConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "substations",
            "at least one substation is needed",
        ));
    }
    let mut out: Vec<SubstationConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("substations[{i}].{key}");
        if !valid_name(&s.name) {
            return Err(ConfigError::new(
                at("name"),
                format!("{:?} must be 1 to 64 of A-Z a-z 0-9 _ . -", s.name),
            ));
        }
        if out.iter().any(|o| o.name == s.name) {
            return Err(ConfigError::new(
                at("name"),
                format!("{:?} is used twice", s.name),
            ));
        }
        let addr = resolver(&at("address"), &s.address)?;
        if let Some(other) = out.iter().find(|o| o.addr == addr) {
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
            addr,
            weight: s.weight as usize,
            drain: s.drain,
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
    Ok(ProbeConfig {
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
        client_read_timeout: Duration::from_millis(raw.client_read_timeout_ms),
        max_concurrent_requests: raw.max_concurrent_requests as usize,
    })
}

fn dns(raw: raw::Dns) -> Result<Duration, ConfigError> {
    if !(100..=3_600_000).contains(&raw.refresh_ms) {
        return Err(range("dns.refresh_ms", raw.refresh_ms, "100..=3600000"));
    }
    Ok(Duration::from_millis(raw.refresh_ms))
}

fn range(path: &str, value: u64, range: &str) -> ConfigError {
    ConfigError::new(path, format!("{value} is not in {range}"))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn socket_addr(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::new(path, format!("{s:?} is not ip:port")))
}

/// Resolve `host:port`; a host name must resolve to exactly one address, because one
/// substation is one address (a name behind several would hide which one holds the load).
/// The exception is a name whose addresses are all loopback (`localhost` as 127.0.0.1 and
/// ::1): one host, so the IPv4 address is taken.
pub fn resolve(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(ConfigError::new(path, format!("{s:?} is not host:port")));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ConfigError::new(path, format!("{s:?} is not host:port")));
    }
    let mut addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| ConfigError::new(path, format!("{s:?} does not resolve: {e}")))?
        .collect();
    addrs.sort();
    addrs.dedup();
    // `localhost` often has both 127.0.0.1 and ::1: one host, so one substation.
    if addrs.len() > 1 && addrs.iter().all(|a| a.ip().is_loopback()) {
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.truncate(1);
    }
    match addrs.as_slice() {
        [one] => Ok(*one),
        [] => Err(ConfigError::new(
            path,
            format!("{s:?} resolves to no address"),
        )),
        many => Err(ConfigError::new(
            path,
            format!(
                "{s:?} resolves to {} addresses ({}); one substation is one address, list each as its own substation",
                many.len(),
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
