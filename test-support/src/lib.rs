//! Test support for gridlb's test suites; a dev-dependency only, never shipped.
//!
//! One home for what the proxy's, the substation's and the bench's tests used to write each
//! on their own. It does not depend on the `gridlb` crate, so an integration test that uses
//! both sees a single copy of gridlb's types. Each module owns one thing:
//!
//! - [`ports`]: free loopback ports.
//! - [`wait`]: polling a condition within a limit, instead of sleeping and hoping.
//! - [`prom`]: the one parser of Prometheus text exposition (samples by full series, by name
//!   and a subset of labels, sums over the matches).
//! - [`config`]: typed builders of gridlb's YAML config (serde structs that mirror the file),
//!   so no test writes YAML by hand with `format!`.
//! - [`http`]: raw HTTP/1.1 over TCP: requests written byte for byte, answers read off the
//!   wire, the misbehaving test substation [`http::Double`] and the [`http::SlowLink`] relay.
//! - [`launch`]: the one way to run the `gridlb` binary (free ports, retry when a port was
//!   taken, captured log, signals, kill, respawn, upgrade) and in-process substations.
//! - [`fixtures`]: the proptest strategies of generated grids shared by the property tests.

pub mod config;
pub mod fixtures;
pub mod http;
pub mod launch;
pub mod ports;
pub mod prom;
pub mod wait;
