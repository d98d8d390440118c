//! Typed builders of gridlb's YAML config, so that tests never write YAML by hand.
//!
//! [`GridlbConfig`] and its sections mirror the file (`proxy/src/config/raw.rs`, DESIGN.md's
//! "Config"): every key a test does not set is left out of the text
//! (`skip_serializing_if`), so gridlb's own defaults apply exactly as for a hand-written
//! file. [`GridlbConfig::to_yaml`] serialises with `serde_yaml`. The builder only writes what
//! it is told; whether the result is a valid config is gridlb's to say (tests write invalid
//! ones on purpose).

use serde::Serialize;
use std::fmt::Display;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GridlbConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    pub substations: Vec<Substation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// `access_log: { path, format }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessLog {
    pub path: String,
    /// `json` or `logfmt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `admin: { listen, token_env }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// One `substations[]` entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Substation {
    pub name: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_kw: Option<f64>,
}

/// `probe: { path, interval_ms, timeout_ms, unhealthy_after, healthy_after }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_report_age_ms: Option<u64>,
}

/// `selection: { algorithm, max_utilization, default_request_kw }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    /// `least-load`, `p2c`, `round-robin` or `random`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_request_kw: Option<f64>,
}

/// `upstream: { connect_timeout_ms, read_timeout_ms }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Upstream {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
}

/// `limits: { max_header_bytes, client_header_timeout_ms, client_read_timeout_ms, ... }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_header_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_read_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_kw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<f64>,
}

/// `dns: { refresh_ms }`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
}

impl GridlbConfig {
    /// An empty config: no listen address, no substations, no sections.
    pub fn new() -> GridlbConfig {
        GridlbConfig::default()
    }

    pub fn listen(mut self, addr: impl Display) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    /// `admin.listen`, keeping any `token_env` already set.
    pub fn admin(mut self, addr: impl Display) -> Self {
        self.admin.get_or_insert_with(Admin::default).listen = Some(addr.to_string());
        self
    }

    /// `admin.token_env`: the variable that holds the admin token.
    pub fn admin_token_env(mut self, var: impl Display) -> Self {
        self.admin.get_or_insert_with(Admin::default).token_env = Some(var.to_string());
        self
    }

    /// One more substation `{ name, address }`.
    pub fn substation(self, name: impl Display, address: impl Display) -> Self {
        self.push(Substation::new(name, address))
    }

    /// One more substation, as built.
    pub fn push(mut self, substation: Substation) -> Self {
        self.substations.push(substation);
        self
    }

    /// A substation `{ name, address }` for each pair.
    pub fn substations<N: Display, A: Display>(self, subs: &[(N, A)]) -> Self {
        subs.iter()
            .fold(self, |config, (name, addr)| config.substation(name, addr))
    }

    /// The substation called `name`, to change it. Panics when there is none.
    pub fn substation_mut(&mut self, name: &str) -> &mut Substation {
        self.substations
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no substation {name} in the config"))
    }

    pub fn probe(mut self, probe: Probe) -> Self {
        self.probe = Some(probe);
        self
    }

    pub fn selection(mut self, selection: Selection) -> Self {
        self.selection = Some(selection);
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    pub fn dns(mut self, dns: Dns) -> Self {
        self.dns = Some(dns);
        self
    }

    /// `trusted_proxies`: peers whose `X-Forwarded-For` gridlb believes.
    pub fn trusted_proxy(mut self, range: impl Display) -> Self {
        self.trusted_proxies.push(range.to_string());
        self
    }

    /// `access_log: { path, format }` (`path` `-` is standard output).
    pub fn access_log(mut self, path: impl Display, format: impl Display) -> Self {
        self.access_log = Some(AccessLog {
            path: path.to_string(),
            format: Some(format.to_string()),
        });
        self
    }

    /// These sections (probe, selection, upstream, limits, dns, access_log) where `other`
    /// sets them.
    pub fn with_sections(mut self, other: &GridlbConfig) -> Self {
        macro_rules! take {
            ($($field:ident),*) => {
                $(if other.$field.is_some() {
                    self.$field = other.$field.clone();
                })*
            };
        }
        take!(probe, selection, upstream, limits, dns, access_log);
        self.trusted_proxies
            .extend(other.trusted_proxies.iter().cloned());
        self
    }

    /// The config as YAML text.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a config of strings and numbers serialises")
    }
}

impl Substation {
    pub fn new(name: impl Display, address: impl Display) -> Substation {
        Substation {
            name: name.to_string(),
            address: address.to_string(),
            ..Substation::default()
        }
    }

    pub fn weight(mut self, weight: u64) -> Self {
        self.weight = Some(weight);
        self
    }

    pub fn drain(mut self, drain: bool) -> Self {
        self.drain = Some(drain);
        self
    }
}

impl Probe {
    /// A probe every `interval_ms` that gives up after `timeout_ms`.
    pub fn every(interval_ms: u64, timeout_ms: u64) -> Probe {
        Probe {
            interval_ms: Some(interval_ms),
            timeout_ms: Some(timeout_ms),
            ..Probe::default()
        }
    }

    pub fn unhealthy_after(mut self, n: u64) -> Self {
        self.unhealthy_after = Some(n);
        self
    }

    pub fn max_report_age_ms(mut self, ms: u64) -> Self {
        self.max_report_age_ms = Some(ms);
        self
    }

    pub fn healthy_after(mut self, n: u64) -> Self {
        self.healthy_after = Some(n);
        self
    }

    pub fn path(mut self, path: impl Display) -> Self {
        self.path = Some(path.to_string());
        self
    }
}

impl Selection {
    pub fn algorithm(algorithm: impl Display) -> Selection {
        Selection {
            algorithm: Some(algorithm.to_string()),
            ..Selection::default()
        }
    }

    pub fn max_utilization(mut self, max: f64) -> Self {
        self.max_utilization = Some(max);
        self
    }

    pub fn default_request_kw(mut self, kw: f64) -> Self {
        self.default_request_kw = Some(kw);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(config: &GridlbConfig) -> serde_yaml::Value {
        serde_yaml::from_str(&config.to_yaml()).expect("valid YAML")
    }

    #[test]
    fn unset_keys_are_left_out() {
        let config = GridlbConfig::new()
            .listen("127.0.0.1:8080")
            .substation("s1", "127.0.0.1:9001");
        let expected: serde_yaml::Value = serde_yaml::from_str(
            "listen: 127.0.0.1:8080\nsubstations: [{ name: s1, address: 127.0.0.1:9001 }]",
        )
        .expect("literal");
        assert_eq!(parsed(&config), expected);
    }

    #[test]
    fn every_section_is_written_as_the_file_spells_it() {
        let mut config = GridlbConfig::new()
            .listen("127.0.0.1:8080")
            .admin("127.0.0.1:9100")
            .admin_token_env("GRIDLB_ADMIN_TOKEN")
            .substation("s1", "127.0.0.1:9001")
            .push(Substation::new("s2", "127.0.0.1:9002").weight(2))
            .probe(
                Probe::every(500, 250)
                    .path("/load")
                    .unhealthy_after(2)
                    .healthy_after(1),
            )
            .selection(
                Selection::algorithm("least-load")
                    .max_utilization(1.0)
                    .default_request_kw(11.0),
            )
            .upstream(Upstream {
                connect_timeout_ms: Some(500),
                ..Upstream::default()
            })
            .limits(Limits {
                max_header_bytes: Some(4096),
                ..Limits::default()
            })
            .dns(Dns {
                refresh_ms: Some(1000),
            });
        config.substation_mut("s1").drain = Some(true);
        let expected: serde_yaml::Value = serde_yaml::from_str(
            r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9100, token_env: GRIDLB_ADMIN_TOKEN }
substations:
  - { name: s1, address: 127.0.0.1:9001, drain: true }
  - { name: s2, address: 127.0.0.1:9002, weight: 2 }
probe: { path: /load, interval_ms: 500, timeout_ms: 250, unhealthy_after: 2, healthy_after: 1 }
selection: { algorithm: least-load, max_utilization: 1.0, default_request_kw: 11.0 }
upstream: { connect_timeout_ms: 500 }
limits: { max_header_bytes: 4096 }
dns: { refresh_ms: 1000 }
"#,
        )
        .expect("literal");
        assert_eq!(parsed(&config), expected);
    }

    #[test]
    fn sections_are_taken_from_another_config() {
        let sections = GridlbConfig::new().probe(Probe::every(100, 80));
        let config = GridlbConfig::new()
            .listen("127.0.0.1:1")
            .selection(Selection::algorithm("p2c"))
            .with_sections(&sections);
        assert_eq!(config.probe.and_then(|p| p.interval_ms), Some(100));
        assert_eq!(
            config.selection.and_then(|s| s.algorithm).as_deref(),
            Some("p2c")
        );
    }
}
