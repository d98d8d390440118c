//! gridlb's YAML configuration, in two layers (as river does it): serde structs that mirror
//! the file exactly (`deny_unknown_fields`), and one validated [`Config`] that the rest of the
//! proxy uses. Every error names the path of the offending key and its value, for example
//! `substations[1].address: "x:y" is not host:port`.
//!
//! Defaults (a key left out of the file):
//! - `admin.listen` 127.0.0.1:9100, no token;
//! - `probe`: path `/load`, every 500 ms, timeout 250 ms, unhealthy after 2 failed or invalid
//!   probes, healthy again after 1 good one; a report counts for 3 probe intervals
//!   (`max_report_age_ms`);
//! - `selection`: `least-load`, `max_utilization` 1.0, `default_request_kw` 11;
//! - `upstream`: connect timeout 1 s, read timeout 10 s;
//! - `limits`: 32 KiB of request headers, 10 s to send them, 10 s to send a body, 10,000 requests at once, a
//!   session of at most the protocol's bounds (10⁹ kW, one week);
//! - `dns.refresh_ms` 30 s: how often substation host names are resolved again;
//! - a substation's `weight` 1, `drain` false, no `capacity_kw` (the reported one is used);
//! - `access_log` off; when on, `format` is `json`.
//!
//! This module does no I/O beyond reading the file (and the token's environment variable):
//! substation host names are checked for syntax here and resolved by `discovery`, which owns
//! DNS. A parse is therefore the same on every machine, and safe to fuzz.

use serde::Deserialize;
use std::net::SocketAddr;
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
    /// Peers whose `X-Forwarded-For` is believed; from anyone else it is replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// One line per request, when on (see `access_log.rs`).
    pub access_log: Option<AccessLogConfig>,
}

/// Where the access log goes and how its lines look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: AccessLogPath,
    pub format: LogFormat,
}

/// `access_log.path`: `-` is standard output, anything else a file (appended to, created
/// when missing; a relative path is relative to gridlb's working directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogPath {
    Stdout,
    File(std::path::PathBuf),
}

/// `access_log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs (Heroku's logfmt), values quoted when they need it.
    Logfmt,
}

/// An IP range, `addr/prefix` (a bare address is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match (self.addr, ip) {
            (V4(_), V6(v6)) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            (_, ip) => ip,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                masked(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (V6(net), V6(ip)) => masked(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

/// Whether `a` and `b` (numbers of `bits` bits) agree on their first `prefix` bits.
fn masked(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let prefix = u32::from(prefix).min(bits);
    prefix == 0 || (a ^ b) >> (bits - prefix) == 0
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR range (such as 10.0.0.0/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
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
    /// The address as written (`host:port`); resolved by `discovery`, never here.
    pub address: String,
    pub weight: usize,
    pub drain: bool,
    /// The most power this substation may be given: a report can lower the usable capacity
    /// below this, never raise it above. `None`: the reported capacity is used as it is.
    pub capacity_kw: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: usize,
    pub healthy_after: usize,
    /// A report older than this stops counting as knowledge: the substation is not chosen
    /// on it (it is probed again first, and a refusal never rests on it).
    pub max_report_age: Duration,
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
    /// A client must send a request's whole header block within this time (from accept for a
    /// connection's first request, from the first byte for later ones), else it gets `408`
    /// and the connection is closed (see `header_guard.rs`).
    pub client_header_timeout: Duration,
    /// A client must send its whole body within this time, else the connection is closed.
    pub client_read_timeout: Duration,
    /// Requests in progress at once; more are answered `503` at once.
    pub max_concurrent_requests: usize,
    /// The most power one session may ask for (kW); more is answered `400`.
    pub max_session_kw: f64,
    /// The longest session (seconds, as the request states them); longer is answered `400`.
    pub max_duration_s: f64,
}

mod raw;
mod validate;

impl Config {
    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        Config::parse(&text)
    }

    /// Parse and validate YAML text. Environment variables are read for `admin.token_env`;
    /// nothing else leaves the process (no DNS).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
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
        validate::validate(file)
    }
}

#[cfg(test)]
mod tests;
