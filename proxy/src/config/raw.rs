//! The file as written: serde structs that mirror the YAML exactly (`deny_unknown_fields`),
//! with the documented defaults. `config.rs` turns them into the validated `Config`.

use super::{Algorithm, LogFormat};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: String,
    #[serde(default)]
    pub admin: Admin,
    pub substations: Vec<Substation>,
    #[serde(default)]
    pub probe: Probe,
    #[serde(default)]
    pub selection: Selection,
    #[serde(default)]
    pub upstream: Upstream,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub dns: Dns,
    /// Peers whose `X-Forwarded-For` is believed (IP addresses or CIDR ranges).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub access_log: Option<AccessLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    pub path: String,
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub refresh_ms: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Dns { refresh_ms: 30_000 }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Substation {
    pub name: String,
    pub address: String,
    #[serde(default = "one")]
    pub weight: u64,
    #[serde(default)]
    pub drain: bool,
    /// The most power this substation may be given, whatever it reports (optional).
    pub capacity_kw: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub unhealthy_after: u64,
    pub healthy_after: u64,
    /// Default: three probe intervals (see `validate.rs`).
    pub max_report_age_ms: Option<u64>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            path: "/load".into(),
            interval_ms: 500,
            timeout_ms: 250,
            unhealthy_after: 2,
            healthy_after: 1,
            max_report_age_ms: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selection {
    pub algorithm: Algorithm,
    pub max_utilization: f64,
    pub default_request_kw: f64,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            algorithm: Algorithm::LeastLoad,
            max_utilization: 1.0,
            default_request_kw: 11.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            connect_timeout_ms: 1000,
            read_timeout_ms: 10_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_header_bytes: u64,
    pub client_header_timeout_ms: u64,
    pub client_read_timeout_ms: u64,
    pub max_concurrent_requests: u64,
    pub max_session_kw: f64,
    pub max_duration_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            client_header_timeout_ms: 10_000,
            client_read_timeout_ms: 10_000,
            max_concurrent_requests: 10_000,
            max_session_kw: gridlb_protocol::MAX_SESSION_KW,
            max_duration_s: gridlb_protocol::MAX_DURATION_S,
        }
    }
}

fn one() -> u64 {
    1
}
