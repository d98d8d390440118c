//! What only the proxy's integration tests need on top of `gridlb-test-support`: the running
//! gridlb ([`Proxy`], a [`Gridlb`] process with gridlb's own client in front of it) and
//! bookings made directly at a substation. Everything else (config builders, launching,
//! Prometheus text, raw HTTP, test doubles, waiting) comes from `gridlb_test_support`.
#![allow(dead_code)]

use gridlb_bench::client::{Answer, Client};
use gridlb_test_support::http::charge_body;
use gridlb_test_support::launch::{Gridlb, Launch};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use gridlb_test_support::config::{GridlbConfig, Probe};

pub fn client() -> Client {
    Client::new(Duration::from_secs(10))
}

/// Config sections with only this probe.
pub fn with_probe(probe: Probe) -> GridlbConfig {
    GridlbConfig::new().probe(probe)
}

/// A config of these substations `(name, address)` with the sections of `extra`.
pub fn config(subs: &[(&str, SocketAddr)], extra: &GridlbConfig) -> GridlbConfig {
    extra.clone().substations(subs)
}

/// A running `gridlb` process (see [`Gridlb`]) and a client for it.
pub struct Proxy {
    gridlb: Gridlb,
    client: Client,
}

impl Deref for Proxy {
    type Target = Gridlb;

    fn deref(&self) -> &Gridlb {
        &self.gridlb
    }
}

impl DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut Gridlb {
        &mut self.gridlb
    }
}

impl Proxy {
    /// Start gridlb over `subs` with the sections of `extra` and wait until it is ready
    /// (every substation probed once); see [`Gridlb::start`].
    pub async fn start(subs: &[(&str, SocketAddr)], extra: GridlbConfig) -> Proxy {
        Proxy::start_with(subs, extra, &Launch::default()).await
    }

    /// Like [`Proxy::start`], with launch options.
    pub async fn start_with(
        subs: &[(&str, SocketAddr)],
        extra: GridlbConfig,
        launch: &Launch,
    ) -> Proxy {
        Proxy {
            gridlb: Gridlb::start(&config(subs, &extra), launch).await,
            client: client(),
        }
    }

    /// Start gridlb and return at once, without waiting for it to be ready.
    pub fn spawn_with(subs: &[(&str, SocketAddr)], extra: GridlbConfig, launch: &Launch) -> Proxy {
        Proxy {
            gridlb: Gridlb::spawn(&config(subs, &extra), launch),
            client: client(),
        }
    }

    /// The config text for this process' addresses, `subs` and the sections of `extra`.
    pub fn yaml(&self, subs: &[(&str, SocketAddr)], extra: GridlbConfig) -> String {
        self.gridlb.yaml(&config(subs, &extra))
    }

    /// The text of `config` at this process' addresses.
    pub fn config_text(&self, config: &GridlbConfig) -> String {
        self.gridlb.yaml(config)
    }

    /// Replace the config file with `config` at this process' addresses.
    pub fn rewrite(&self, config: &GridlbConfig) {
        self.write_config(&self.config_text(config));
    }

    pub async fn reload(&self) -> Answer {
        self.admin_post("/reload").await
    }

    pub async fn admin_post(&self, path: &str) -> Answer {
        self.admin_request("POST", path, &[]).await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.admin_request("GET", path, &[]).await
    }

    /// Any request to the admin listener, with headers.
    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.client
            .request(self.admin, method, path, headers, b"")
            .await
            .expect("admin answers")
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json()
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.admin_get("/metrics").await.body).into_owned()
    }

    /// `POST /charge` through the proxy.
    pub async fn charge(&self, vehicle: &str, kw: f64, duration_s: f64) -> Answer {
        self.charge_with(vehicle, kw, duration_s, &[]).await
    }

    /// `POST /charge` through the proxy with extra headers.
    pub async fn charge_with(
        &self,
        vehicle: &str,
        kw: f64,
        duration_s: f64,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = charge_body(vehicle, kw, duration_s);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.client
            .request(self.listen, "POST", "/charge", &all, body.as_bytes())
            .await
            .expect("the proxy answers")
    }
}

/// The substation of a substation's `/status` entry.
pub fn entry<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["substations"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in status {status}"))
}

/// Book a session of an hour directly at a substation, behind the proxy's back.
pub async fn book_direct(addr: SocketAddr, kw: f64) -> Answer {
    book_direct_for(addr, kw, 3600.0).await
}

/// Book a session of `duration_s` directly at a substation, behind the proxy's back.
pub async fn book_direct_for(addr: SocketAddr, kw: f64, duration_s: f64) -> Answer {
    let body = charge_body("direct", kw, duration_s);
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
