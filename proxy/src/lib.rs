//! gridlb: a Pingora reverse proxy that routes electric-vehicle charging sessions to the
//! substation with the most headroom, and never pushes a substation past its capacity.
//!
//! Map of the crate, in the order the dependencies run (each module uses only those above
//! it; `docs/design.md` draws the map):
//! - [`config`]: the YAML file and its validation (pure: no DNS, no I/O beyond the file);
//! - [`metrics`]: every Prometheus family, registered once; [`access_log`]: one line per
//!   request, written by a background service;
//! - [`sessions`]: the sessions this proxy routed, by end time (power ended since a report);
//! - [`table`]: the load table (the swapped snapshot, newest report per substation, in-flight
//!   power, reservations, health and drain) and the one door reports come in by;
//! - [`affinity`] (Idempotency-Key routing), [`gate`] (the concurrent-request cap),
//!   [`request_id`] (`x-request-id`, kept or made), [`names`] (the protocol's header names,
//!   made once) and [`header_guard`] (a request header's
//!   time and size, bounded before Pingora parses it); [`relieve`] (memory given back when
//!   connections end); [`home`] (a client connection served by the thread that waits for it);
//! - [`selection`]: Pingora `BackendSelection` with least-load, p2c and baselines;
//! - [`probe`]: the load probe, a Pingora `HealthCheck` that reads `GET /load`;
//! - [`discovery`]: DNS and Pingora `ServiceDiscovery` from the config;
//! - [`pool`]: Pingora's `LoadBalancer` over them, membership, the probe schedule, readiness;
//! - [`admission`]: choosing a substation and reserving its power; [`attempt`]: one
//!   request's upstream attempts as a typed state;
//! - [`reload`]: validated reloads and their triggers (file change, SIGHUP, DNS refresh);
//! - [`retry_after`]: when room for a refused request is expected;
//! - [`service`]: the client connections' requests, served on Pingora's HTTP/1 session;
//!   [`admin`], [`status`] and [`history`] (the
//!   status page's last minutes): the admin API;
//! - [`server`]: assembles every part ([`server::Parts`]) into a Pingora server.

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod affinity;
pub mod attempt;
pub mod call;
pub mod config;
pub mod discovery;
pub mod gate;
pub mod header_guard;
pub mod history;
pub mod home;
pub mod metrics;
pub mod names;
pub mod orphan;
pub mod pool;
pub mod probe;
pub mod relieve;
pub mod reload;
pub mod request_id;
pub mod retry_after;
pub mod selection;
pub mod server;
pub mod service;
pub mod sessions;
pub mod status;
pub mod table;
