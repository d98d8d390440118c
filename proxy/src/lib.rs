//! gridlb: a Pingora reverse proxy that routes electric-vehicle charging sessions to the
//! substation with the most headroom, and never pushes a substation past its capacity.
//!
//! Map of the crate:
//! - [`config`]: the YAML file and its validation;
//! - [`table`]: the load table (newest report per substation, in-flight power, reservations);
//! - [`selection`]: Pingora `BackendSelection` with least-load, p2c and baselines;
//! - [`probe`]: the load probe, a Pingora `HealthCheck` that reads `GET /load`;
//! - [`discovery`]: Pingora `ServiceDiscovery` from the config (membership and drain);
//! - [`grid`]: the shared run-time state and reloads; [`reload`]: file watch and SIGHUP;
//! - [`service`]: the `ProxyHttp` implementation (admission, retries, headers), with
//!   [`affinity`] (Idempotency-Key routing) and [`gate`] (the concurrent-request cap);
//! - [`admin`] and [`status`]: the admin API; [`metrics`]: every Prometheus family;
//! - [`server`]: wiring into a Pingora server; [`demo`]: `gridlb demo`.

pub mod admin;
pub mod affinity;
pub mod client;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod gate;
pub mod grid;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod selection;
pub mod server;
pub mod service;
pub mod status;
pub mod table;
