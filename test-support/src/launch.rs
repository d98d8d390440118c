//! The one way tests run gridlb and substations.
//!
//! [`Gridlb`] runs the real `gridlb` binary on a [`GridlbConfig`] whose `listen` and
//! `admin.listen` it sets to free loopback ports. A port that was free when chosen may be
//! taken (by another test's connection) before gridlb binds it; [`Gridlb::start`] then starts
//! it again on other ports, three times at most. The child's stderr goes to a log file that
//! is printed when a test panics; the process is killed and its files removed on drop.
//! Readiness is `GET /readyz` answering `200` on the admin listener.
//!
//! [`substation`] starts an in-process substation on port 0.

use crate::config::GridlbConfig;
use crate::http::raw_request;
use crate::ports::free_ports;
use crate::wait::{wait_blocking, wait_every};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long gridlb may take to become ready.
pub const READY_LIMIT: Duration = Duration::from_secs(20);

/// How often readiness is asked for.
const READY_POLL: Duration = Duration::from_millis(50);

/// An in-process substation on a free loopback port.
pub async fn substation(name: &str, capacity_kw: f64, time_scale: f64) -> substation::Server {
    substation::Server::start(substation::Config {
        id: name.to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        capacity_kw,
        time_scale,
        orca_form: Default::default(),
        max_session_kw: gridlb_protocol::MAX_SESSION_KW,
        max_duration_s: gridlb_protocol::MAX_DURATION_S,
    })
    .await
    .expect("substation starts on a free port")
}

/// The path of the workspace binary `name`, built beside the running test: cargo's
/// `CARGO_BIN_EXE_<name>` when set, else `target/<profile>/<name>`.
pub fn binary(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Send a signal (`"HUP"`, `"QUIT"`, ...) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// How to launch gridlb, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Environment variables of the child process.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` of the child (default `info`).
    pub log_level: Option<String>,
}

/// A running `gridlb` process.
pub struct Gridlb {
    child: Mutex<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl Gridlb {
    /// Start gridlb on `config` (its `listen` and `admin.listen` set to free ports) and wait
    /// until it is ready, starting it again when it could not bind a port.
    pub async fn start(config: &GridlbConfig, launch: &Launch) -> Gridlb {
        for _ in 0..3 {
            let gridlb = Gridlb::spawn(config, launch);
            let settled = wait_every(READY_POLL, READY_LIMIT, || async {
                !gridlb.is_running() || gridlb.is_ready().await
            })
            .await;
            assert!(
                settled.is_some(),
                "gridlb was not ready in 20 s:\n{}",
                gridlb.log()
            );
            if gridlb.is_running() {
                return gridlb;
            }
            let log = gridlb.log();
            assert!(
                log.contains("in use"),
                "gridlb exited before it was ready:\n{log}"
            );
            eprintln!("gridlb could not bind a port, starting it again:\n{log}");
        }
        panic!("gridlb could not bind its ports three times");
    }

    /// Start gridlb on `config` with free listen and admin ports and return at once.
    pub fn spawn(config: &GridlbConfig, launch: &Launch) -> Gridlb {
        let [listen, admin] = free_ports();
        let config = config.clone().listen(listen).admin(admin);
        let stem = format!("gridlb-test-{}-{}", std::process::id(), listen.port());
        let config_path = std::env::temp_dir().join(format!("{stem}.yaml"));
        let log_path = std::env::temp_dir().join(format!("{stem}.log"));
        std::fs::write(&config_path, config.to_yaml()).expect("write config");
        let child = spawn_gridlb(&config_path, &log_path, launch);
        Gridlb {
            child: Mutex::new(child),
            listen,
            admin,
            config_path,
            log_path,
        }
    }

    /// Whether `/readyz` answers `200` now.
    pub async fn is_ready(&self) -> bool {
        let request = format!(
            "GET /readyz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.admin
        );
        raw_request(self.admin, request.as_bytes(), Duration::from_secs(10))
            .await
            .is_some_and(|a| a.status == 200)
    }

    /// Wait until `/readyz` answers `200`; panics if the process exits first or after 20 s.
    pub async fn wait_until_ready(&self) {
        let settled = wait_every(READY_POLL, READY_LIMIT, || async {
            !self.is_running() || self.is_ready().await
        })
        .await;
        assert!(
            settled.is_some(),
            "gridlb was not ready in 20 s:\n{}",
            self.log()
        );
        if let Ok(Some(status)) = self.child().try_wait() {
            panic!(
                "gridlb exited with {status} before it was ready:\n{}",
                self.log()
            );
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `config` with this process' listen and admin addresses, as YAML.
    pub fn yaml(&self, config: &GridlbConfig) -> String {
        self.with_addresses(config).to_yaml()
    }

    /// `config` with this process' listen and admin addresses.
    pub fn with_addresses(&self, config: &GridlbConfig) -> GridlbConfig {
        config.clone().listen(self.listen).admin(self.admin)
    }

    /// Replace the config file (atomically, as an editor or Kubernetes would).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Send a signal (`"HUP"`, `"QUIT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Start a second gridlb on the same config with `--upgrade`, to take over this one's
    /// sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        Command::new(binary("gridlb"))
            .arg("--config")
            .arg(&self.config_path)
            .args(["--threads", "2", "--upgrade"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the upgrading gridlb")
    }

    /// Wait for the process to exit (after SIGQUIT, say); false if it is still running.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        wait_blocking(Duration::from_millis(20), limit, || !self.is_running())
    }

    /// Kill the process at once (SIGKILL, like a crash) and reap it.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start a new process on the same config file (same listen addresses), without waiting
    /// for it to be ready. The old one must be gone (see [`Gridlb::kill`]).
    pub fn respawn(&mut self, launch: &Launch) {
        *self.child() = spawn_gridlb(&self.config_path, &self.log_path, launch);
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// Everything the process (and its respawns) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Gridlb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gridlb log ({}) ---\n{}", self.listen, self.log());
        }
        self.kill();
        let _ = std::fs::remove_file(&self.config_path);
        let _ = std::fs::remove_file(&self.log_path);
    }
}

fn spawn_gridlb(config_path: &Path, log_path: &Path, launch: &Launch) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open log");
    let mut command = Command::new(binary("gridlb"));
    command
        .arg("--config")
        .arg(config_path)
        .args(["--threads", "2"])
        .env("RUST_LOG", launch.log_level.as_deref().unwrap_or("info"))
        .stdout(Stdio::null())
        .stderr(log);
    for (name, value) in &launch.env {
        command.env(name, value);
    }
    command.spawn().expect("spawn gridlb")
}
