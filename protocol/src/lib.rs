//! The wire contract between gridlb, its substations and the clients that book charging
//! sessions, as fixed by the design document.
//!
//! This crate owns the types that cross a process boundary and nothing else: the load report a
//! substation publishes (as JSON on `GET /load` and as the `x-substation-load` header on every
//! `/charge` answer), the charge request and its answers, and the header names. It has no I/O
//! and no async runtime so that the proxy, the substation and the load generators share one
//! definition, one parser and one set of validation rules.
//!
//! It also owns the vocabulary around them, each rule written once:
//! - [`Power`]: power in memory, whole watts (the wire carries f64 kW);
//! - [`SubstationName`]: 1 to 64 of `A-Z a-z 0-9 _ . -`;
//! - [`SessionId`]: the session-id format and its owner prefix;
//! - [`IdempotencyKey`]: 1 to 255 visible ASCII characters;
//! - [`RequestId`]: the `x-request-id` header, 1 to 128 visible ASCII characters;
//! - [`rng`]: SplitMix64, plain ([`SplitMix64`]) and lock-free ([`SharedRng`]);
//! - [`unix_now`]: wall-clock seconds;
//! - [`OrcaLoadReport`]: ORCA's text load report (`endpoint-load-metrics`).
//!
//! Invariants the parsers enforce (a report or request that breaks one is rejected with an
//! error that names the field):
//! - a report's load is finite and not negative, its capacity finite and positive;
//! - a charge request's power and duration are finite and positive.
//!
//! Report ordering follows the design: a receiver keeps, per substation, the report with the
//! greatest `(epoch, seq)` ([`ReportVersion`]); a new epoch wins whatever its seq.

mod charge;
mod clock;
mod key;
mod name;
mod orca;
mod power;
mod report;
mod request_id;
pub mod rng;
mod session;
mod token;

pub use charge::{
    CHARGER_MIX, ChargeAccepted, ChargeError, ChargeRequest, ErrorBody, MAX_DURATION_S,
    MAX_SESSION_KW, Peek, parse_charge_kw,
};
pub use clock::unix_now;
pub use key::{IdempotencyKey, KeyError, MAX_KEY_LEN};
pub use name::{MAX_NAME_LEN, NameError, SubstationName, is_valid_substation_name};
pub use orca::{ORCA_HEADER, OrcaError, OrcaLoadReport, TextForm as OrcaTextForm};
pub use power::{Power, PowerError};
pub use report::{HeaderReport, LoadReport, ReportError, ReportVersion};
pub use request_id::{MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, RequestId, RequestIdError};
pub use rng::{SharedRng, SplitMix64, mix};
pub use session::{RandomnessError, SessionId, random_bits};

/// Header carrying a substation's load report on every `/charge` answer.
pub const LOAD_HEADER: &str = "x-substation-load";
/// Header naming the substation that answered, added by the proxy.
pub const SUBSTATION_HEADER: &str = "x-gridlb-substation";
/// Header of a `201` answer: real seconds until the session it booked ends (the same as the
/// body's `remaining_s`), so a proxy learns it without reading the body.
pub const SESSION_REMAINING_HEADER: &str = "x-session-remaining-s";
/// Header a client may use to state the requested power in kW.
pub const CHARGE_KW_HEADER: &str = "x-charge-kw";
/// Header that makes a `POST /charge` idempotent at the substation.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Largest accepted `/charge` body (bytes); larger bodies get `413`.
pub const MAX_CHARGE_BODY: usize = 16 * 1024;
/// Largest load report body (bytes) a receiver reads; larger ones are invalid.
pub const MAX_REPORT_BODY: usize = 16 * 1024;
