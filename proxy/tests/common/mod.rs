//! Test harness: in-process substations on port 0, the real `gridlb` binary in front of them
//! on free loopback ports, and a client. Everything started here is stopped on drop.
#![allow(dead_code)]

use gridlb::client::{Answer, Client};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub async fn substation(name: &str, capacity_kw: f64, time_scale: f64) -> substation::Server {
    substation::Server::start(substation::Config {
        id: name.to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        capacity_kw,
        time_scale,
    })
    .await
    .expect("substation starts on a free port")
}

pub fn free_port() -> SocketAddr {
    gridlb::demo::free_port().expect("a free loopback port")
}

pub fn client() -> Client {
    Client::new(Duration::from_secs(10))
}

/// A running `gridlb` process.
pub struct Proxy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
    client: Client,
}

/// `substations` lines for a config, one per `(name, address)`.
pub fn substation_lines(subs: &[(&str, SocketAddr)]) -> String {
    subs.iter()
        .map(|(name, addr)| format!("  - {{ name: {name}, address: \"{addr}\" }}\n"))
        .collect()
}

impl Proxy {
    /// Start gridlb over `subs` with `extra` YAML (probe/selection sections) and wait until
    /// it is ready (every substation probed once).
    pub async fn start(subs: &[(&str, SocketAddr)], extra: &str) -> Proxy {
        let (listen, admin) = (free_port(), free_port());
        let yaml = format!(
            "listen: \"{listen}\"\nadmin: {{ listen: \"{admin}\" }}\nsubstations:\n{}{extra}\n",
            substation_lines(subs)
        );
        let stem = format!("gridlb-test-{}-{}", std::process::id(), listen.port());
        let config_path = std::env::temp_dir().join(format!("{stem}.yaml"));
        let log_path = std::env::temp_dir().join(format!("{stem}.log"));
        std::fs::write(&config_path, yaml).expect("write config");
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_gridlb"))
            .arg("--config")
            .arg(&config_path)
            .args(["--threads", "2"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gridlb");
        let mut proxy = Proxy {
            child,
            listen,
            admin,
            config_path,
            log_path,
            client: client(),
        };
        proxy.wait_ready().await;
        proxy
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gridlb exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok(a) = self
                .client
                .request(self.admin, "GET", "/readyz", &[], b"")
                .await
            {
                if a.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gridlb was not ready in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The config text for these listen addresses, `subs` and `extra` YAML.
    pub fn yaml(&self, subs: &[(&str, SocketAddr)], extra: &str) -> String {
        format!(
            "listen: \"{}\"\nadmin: {{ listen: \"{}\" }}\nsubstations:\n{}{extra}\n",
            self.listen,
            self.admin,
            substation_lines(subs)
        )
    }

    /// Replace the config file (atomically, as an editor or Kubernetes would).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    pub async fn reload(&self) -> Answer {
        self.admin_post("/reload").await
    }

    pub async fn admin_post(&self, path: &str) -> Answer {
        self.client
            .request(self.admin, "POST", path, &[], b"")
            .await
            .expect("admin answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`"HUP"`, `"QUIT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Start a second gridlb on the same config with `--upgrade`, to take over this one's
    /// sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_gridlb"))
            .arg("--config")
            .arg(&self.config_path)
            .args(["--threads", "2", "--upgrade"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the upgrading gridlb")
    }

    /// Wait for the process to exit (after SIGQUIT, say); false if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `POST /charge` through the proxy.
    pub async fn charge(&self, vehicle: &str, kw: f64, duration_s: f64) -> Answer {
        let body =
            format!(r#"{{"vehicle_id":"{vehicle}","power_kw":{kw},"duration_s":{duration_s}}}"#);
        self.client
            .request(
                self.listen,
                "POST",
                "/charge",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await
            .expect("the proxy answers")
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.client
            .request(self.admin, "GET", path, &[], b"")
            .await
            .expect("admin answers")
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json()
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.admin_get("/metrics").await.body).into_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gridlb log ({}) ---\n{}", self.listen, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
        let _ = std::fs::remove_file(&self.log_path);
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The value of one series in a Prometheus text page (0 when absent).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The substation of a substation's `/status` entry.
pub fn entry<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["substations"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in status {status}"))
}

/// Book a session directly at a substation, behind the proxy's back.
pub async fn book_direct(addr: SocketAddr, kw: f64) -> Answer {
    let body = format!(r#"{{"vehicle_id":"direct","power_kw":{kw},"duration_s":3600}}"#);
    client()
        .request(
            addr,
            "POST",
            "/charge",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
        .expect("substation answers")
}
