//! A simulated grid substation: a plain hyper 1.x HTTP/1.1 server that books EV charging
//! sessions up to a capacity in kW, holds each session's power for its (time-scaled)
//! duration, and reports its load, as fixed by the wire contract in the design document.
//!
//! - [`config`]: command line and YAML file → validated [`Config`];
//! - [`grid`]: the ledger ([`Substation`]): booking, expiry, idempotency, the load report;
//! - [`http`]: routing and answers;
//! - [`metrics`]: the Prometheus families, in a registry per instance;
//! - [`server`]: the accept loop and graceful stop ([`Server`]).
//!
//! Run one in-process (as gridlb's demo and tests do):
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let config = substation::Config {
//!     id: "s1".into(),
//!     listen: "127.0.0.1:0".parse().expect("a literal address"),
//!     capacity_kw: 500.0,
//!     time_scale: 60.0,
//!     orca_form: Default::default(),
//!     max_session_kw: gridlb_protocol::MAX_SESSION_KW,
//!     max_duration_s: gridlb_protocol::MAX_DURATION_S,
//! };
//! let server = substation::Server::start(config).await?;
//! println!("{} on {}: {:?}", server.state.id(), server.addr, server.state.report());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod grid;
pub mod http;
pub mod metrics;
pub mod server;

pub use config::{Cli, Config, ConfigError};
pub use grid::Substation;
pub use server::Server;
