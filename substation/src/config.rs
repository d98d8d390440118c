//! Configuration of one substation, in two layers (as in river's `config/internal.rs`).
//!
//! - [`Cli`] (command-line flags) and the YAML file (`--config FILE`, keys `id`, `listen`,
//!   `capacity_kw`, `time_scale`, `max_session_kw`, `max_duration_s`, unknown keys refused) mirror what a user writes; every field
//!   is optional there.
//! - [`Config`] is the one validated type the rest of the crate uses. [`Cli::into_config`]
//!   reads the file, lets each given flag override the file's value, fills defaults
//!   (`time_scale` 1) and validates.
//!
//! Every error names the key and the value at fault, e.g.
//! `capacity_kw: -5 is not valid: must be a finite number greater than zero`; YAML errors carry
//! the key path found by `serde_path_to_error`.

use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// The largest capacity accepted, in kW (1 TW). Loads are kept in whole µkW in a `u64`, so
/// this bound keeps every sum exact and far from overflow.
pub const MAX_CAPACITY_KW: f64 = 1e9;

/// The validated configuration of one substation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The substation's name; it starts every session id ([`gridlb_protocol::SessionId`]).
    /// 1 to 64 characters out of `A-Z a-z 0-9 _ . -` ([`gridlb_protocol::SubstationName`]).
    pub id: String,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Power the substation can deliver at once, in kW (finite, > 0, at most [`MAX_CAPACITY_KW`]).
    pub capacity_kw: f64,
    /// Simulated seconds per real second (finite, > 0; default 1). A session of `duration_s`
    /// holds its power for `duration_s / time_scale` real seconds.
    pub time_scale: f64,
    /// The form of the ORCA header's text: the contract's `key=value` (default), or
    /// `key:value` for a grid balanced by Envoy, whose parser reads only that.
    pub orca_form: gridlb_protocol::OrcaTextForm,
    /// The most power one session may ask for, in kW (finite, > 0, at most the protocol's
    /// [`gridlb_protocol::MAX_SESSION_KW`], the default); more is answered `400`.
    pub max_session_kw: f64,
    /// The longest session, in simulated seconds (finite, > 0, at most the protocol's
    /// [`gridlb_protocol::MAX_DURATION_S`], one week, the default); longer is answered `400`.
    pub max_duration_s: f64,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {key}: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{0} is required (give --{flag} or `{0}:` in the config file)", flag = .0.replace('_', "-"))]
    Missing(&'static str),
    #[error("{key}: {value} is not valid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Command-line flags of the `substation` binary. Each flag overrides the same key of the
/// config file.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "substation",
    version,
    about = "Simulate one grid substation: book EV charging sessions up to a capacity in kW \
             and report the load (POST /charge, DELETE /charge/{id}, GET /load, /metrics, /healthz)"
)]
pub struct Cli {
    /// Name of the substation (e.g. s1); starts every session id. Letters, digits, `_ . -`.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Address to listen on, host:port (port 0 picks a free one; the chosen address is printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Capacity in kW: the most power all active sessions may draw together.
    #[arg(long, value_name = "KW", allow_negative_numbers = true)]
    pub capacity_kw: Option<f64>,
    /// Simulated seconds per real second [default: 1]; 60 makes a simulated minute last one
    /// real second.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub time_scale: Option<f64>,
    /// Write the ORCA header (`endpoint-load-metrics`) as `key:value`, the text form Envoy's
    /// parser reads, instead of the contract's `key=value`.
    #[arg(long)]
    pub orca_colon: bool,
    /// The most power one session may ask for, in kW [default: 1e9, the protocol's bound].
    #[arg(long, value_name = "KW", allow_negative_numbers = true)]
    pub max_session_kw: Option<f64>,
    /// The longest session, in simulated seconds [default: 604800, one week, the protocol's
    /// bound].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub max_duration_s: Option<f64>,
    /// YAML file with the keys id, listen, capacity_kw, time_scale, max_session_kw,
    /// max_duration_s; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The YAML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<String>,
    listen: Option<String>,
    capacity_kw: Option<f64>,
    time_scale: Option<f64>,
    max_session_kw: Option<f64>,
    max_duration_s: Option<f64>,
}

impl Cli {
    /// Merge the config file (if any) with the flags and validate the result.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let id = self.id.or(file.id).ok_or(ConfigError::Missing("id"))?;
        let listen = self
            .listen
            .or(file.listen)
            .ok_or(ConfigError::Missing("listen"))?;
        let capacity_kw = self
            .capacity_kw
            .or(file.capacity_kw)
            .ok_or(ConfigError::Missing("capacity_kw"))?;
        let config = Config {
            id,
            listen: parse_listen(&listen)?,
            capacity_kw,
            time_scale: self.time_scale.or(file.time_scale).unwrap_or(1.0),
            orca_form: if self.orca_colon {
                gridlb_protocol::OrcaTextForm::Colon
            } else {
                gridlb_protocol::OrcaTextForm::Equals
            },
            max_session_kw: self
                .max_session_kw
                .or(file.max_session_kw)
                .unwrap_or(gridlb_protocol::MAX_SESSION_KW),
            max_duration_s: self
                .max_duration_s
                .or(file.max_duration_s)
                .unwrap_or(gridlb_protocol::MAX_DURATION_S),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Check the invariants documented on each field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !gridlb_protocol::is_valid_substation_name(&self.id) {
            return Err(invalid(
                "id",
                format!("{:?}", self.id),
                "must be 1 to 64 characters out of A-Z a-z 0-9 _ . -",
            ));
        }
        let capacity = self.capacity_kw;
        if !(capacity.is_finite() && capacity > 0.0 && capacity <= MAX_CAPACITY_KW) {
            return Err(invalid(
                "capacity_kw",
                capacity.to_string(),
                "must be a finite number greater than zero and at most 1e9",
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(invalid(
                "time_scale",
                self.time_scale.to_string(),
                "must be a finite number greater than zero",
            ));
        }
        let kw = self.max_session_kw;
        if !(kw.is_finite() && kw > 0.0 && kw <= gridlb_protocol::MAX_SESSION_KW) {
            return Err(invalid(
                "max_session_kw",
                kw.to_string(),
                "must be a finite number greater than zero and at most 1e9",
            ));
        }
        let s = self.max_duration_s;
        if !(s.is_finite() && s > 0.0 && s <= gridlb_protocol::MAX_DURATION_S) {
            return Err(invalid(
                "max_duration_s",
                s.to_string(),
                "must be a finite number greater than zero and at most 604800 (one week)",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, value: String, reason: &'static str) -> ConfigError {
    ConfigError::Invalid { key, value, reason }
}

fn read_file(path: &PathBuf) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse_yaml(&text).map_err(|(key, message)| ConfigError::Parse {
        path: path.clone(),
        key,
        message,
    })
}

/// Parse the YAML text; on error, the key path and serde's message.
fn parse_yaml(text: &str) -> Result<FileConfig, (String, String)> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde_yaml already starts some messages with the path; say it once.
        let message = match message.strip_prefix(&format!("{key}: ")) {
            Some(rest) => rest.to_string(),
            None => message,
        };
        (key, message)
    })
}

/// `ip:port`, or `host:port` resolved now (first address).
fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                "listen",
                format!("{value:?}"),
                "expected a host:port address",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("substation").chain(args.iter().copied())).unwrap()
    }

    /// A YAML file in the temp directory, removed on drop.
    struct TempYaml(PathBuf);

    impl Drop for TempYaml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn yaml_file(text: &str) -> TempYaml {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("substation-{}-{n}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempYaml(path)
    }

    #[test]
    fn flags_alone_make_a_config_with_default_time_scale() {
        let config = cli(&[
            "--id",
            "s1",
            "--listen",
            "127.0.0.1:0",
            "--capacity-kw",
            "500",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.id, "s1");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.capacity_kw, 500.0);
        assert_eq!(config.time_scale, 1.0);
    }

    #[test]
    fn flags_override_the_file() {
        let file = yaml_file("id: s9\nlisten: 127.0.0.1:9001\ncapacity_kw: 100\ntime_scale: 60\n");
        let path = file.0.to_str().unwrap();
        let config = cli(&["--config", path, "--capacity-kw", "250"])
            .into_config()
            .unwrap();
        assert_eq!(config.id, "s9");
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.capacity_kw, 250.0);
        assert_eq!(config.time_scale, 60.0);
    }

    #[test]
    fn unknown_and_mistyped_file_keys_name_the_key() {
        let file = yaml_file("id: s1\ncapacity: 100\n");
        let err = cli(&["--config", file.0.to_str().unwrap()])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `capacity`"),
            "{err}"
        );

        let file = yaml_file("id: s1\ncapacity_kw: lots\n");
        let err = cli(&["--config", file.0.to_str().unwrap()])
            .into_config()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("capacity_kw:") && text.contains("lots"),
            "{text}"
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let err = cli(&["--listen", "127.0.0.1:0", "--capacity-kw", "5"])
            .into_config()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "id is required (give --id or `id:` in the config file)"
        );
        let err = cli(&["--id", "s1", "--listen", "127.0.0.1:0"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("capacity_kw is required (give --capacity-kw")
        );
    }

    #[test]
    fn bad_values_are_refused_with_key_and_value() {
        let cases: [(&[&str], &str); 9] = [
            (&["--capacity-kw", "-5"], "capacity_kw: -5 is not valid"),
            (&["--capacity-kw", "NaN"], "capacity_kw: NaN is not valid"),
            (&["--capacity-kw", "inf"], "capacity_kw: inf is not valid"),
            (&["--time-scale", "0"], "time_scale: 0 is not valid"),
            (&["--listen", "nowhere"], "listen: \"nowhere\" is not valid"),
            (&["--id", "s 1"], "id: \"s 1\" is not valid"),
            (&["--max-session-kw", "0"], "max_session_kw: 0 is not valid"),
            (
                &["--max-session-kw", "2e9"],
                "max_session_kw: 2000000000 is not valid",
            ),
            (
                &["--max-duration-s", "604801"],
                "max_duration_s: 604801 is not valid",
            ),
        ];
        for (extra, expected) in cases {
            let mut args = extra.to_vec();
            for (flag, value) in [
                ("--id", "s1"),
                ("--listen", "127.0.0.1:0"),
                ("--capacity-kw", "5"),
            ] {
                if !extra.contains(&flag) {
                    args.extend([flag, value]);
                }
            }
            let err = cli(&args).into_config().unwrap_err();
            assert!(err.to_string().starts_with(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_empty_file_is_an_empty_config() {
        let file = yaml_file("\n");
        let path = file.0.to_str().unwrap();
        let config = cli(&["--config", path, "--id", "a", "--listen", "[::1]:0"]).into_config();
        assert!(matches!(config, Err(ConfigError::Missing("capacity_kw"))));
    }
}
