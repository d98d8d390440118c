//! Orphaned bookings: a substation that was sent a booking but whose answer never came (it
//! timed out, or the connection broke) may have booked it anyway, and then holds power for a
//! session nobody has an id for. The client was told the request failed, so gridlb settles
//! the outcome itself, off the request path:
//!
//! 1. every booking goes upstream with an `Idempotency-Key` (the client's, or one gridlb
//!    makes), so asking again is safe: the substation replays its first answer if it booked,
//!    and books now if it had not (then that booking is cancelled too);
//! 2. gridlb asks again, with the same key and body, waiting longer than for the original;
//! 3. a `201` answer's session (if it belongs to that substation) is cancelled with `DELETE`.
//!
//! A `201` whose session id does not start with the answering substation's name is not
//! passed on (the client gets `502`): a client holding it would cancel another substation's
//! session. What that substation booked under the id it gave is cancelled there with `DELETE`
//! ([`Orphans::cancel`]).
//!
//! Outcomes are counted in `gridlb_orphans_total{result}`: `cancelled`, `not_booked` (the
//! substation refused the second ask: nothing is held), `unresolved` (no answer again; logged
//! with the key, so an operator can settle it).

use crate::call::{Caller, Request};
use crate::metrics::Metrics;
use crate::table::SubstationState;
use bytes::Bytes;
use gridlb_protocol::{ChargeAccepted, IDEMPOTENCY_HEADER, SessionId};
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read while settling (a charge answer is a few hundred bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// What was left hanging: where, under which key, with which body.
pub struct Orphan {
    pub substation: Arc<SubstationState>,
    pub key: String,
    pub body: Bytes,
}

pub struct Orphans {
    caller: Arc<Caller>,
}

impl Orphans {
    /// Settling on the connections of `caller`.
    pub fn new(caller: Arc<Caller>) -> Self {
        Orphans { caller }
    }

    /// Settle `orphan` in the background, waiting at most `patience` for each answer.
    pub fn settle(self: &Arc<Self>, orphan: Orphan, patience: Duration, metrics: Arc<Metrics>) {
        self.spawn(orphan, patience, metrics, None);
    }

    /// Cancel, in the background, the session `session_id` that `orphan.substation` booked
    /// (and named wrongly): `DELETE` at that substation, whatever the id's prefix says.
    pub fn cancel(
        self: &Arc<Self>,
        orphan: Orphan,
        session_id: String,
        patience: Duration,
        metrics: Arc<Metrics>,
    ) {
        self.spawn(orphan, patience, metrics, Some(session_id));
    }

    fn spawn(
        self: &Arc<Self>,
        orphan: Orphan,
        patience: Duration,
        metrics: Arc<Metrics>,
        session_id: Option<String>,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = match session_id {
                Some(id) => this.delete(&orphan, &id, patience).await,
                None => this.resolve(&orphan, patience).await,
            };
            if result == "unresolved" {
                log::warn!(
                    "substation {}: the outcome of booking {:?} is unknown (no answer twice)",
                    orphan.substation.name,
                    orphan.key
                );
            } else {
                log::info!(
                    "substation {}: booking {:?} whose answer was lost: {result}",
                    orphan.substation.name,
                    orphan.key
                );
            }
            metrics.orphan(result);
        });
    }

    async fn resolve(&self, orphan: &Orphan, patience: Duration) -> &'static str {
        let headers = [
            (IDEMPOTENCY_HEADER, orphan.key.as_bytes()),
            ("content-type", b"application/json".as_slice()),
        ];
        let ask = Request {
            method: "POST",
            path: "/charge",
            headers: &headers,
            body: &orphan.body,
            connect_timeout: patience,
            timeout: patience,
            max_body: MAX_ANSWER,
        };
        let addr = orphan.substation.addr;
        let answer = match tokio::time::timeout(patience * 2, self.caller.call(addr, &ask)).await {
            Ok(Ok(answer)) => answer,
            _ => return "unresolved",
        };
        if answer.status != 201 {
            return "not_booked";
        }
        let Ok(accepted) = serde_json::from_slice::<ChargeAccepted>(&answer.body) else {
            return "unresolved";
        };
        if SessionId::owner(&accepted.session_id) != Some(orphan.substation.name.as_str()) {
            return "unresolved";
        }
        self.delete(orphan, &accepted.session_id, patience).await
    }

    async fn delete(&self, orphan: &Orphan, session_id: &str, patience: Duration) -> &'static str {
        let cancel = Request {
            method: "DELETE",
            path: &format!("/charge/{session_id}"),
            headers: &[],
            body: b"",
            connect_timeout: patience,
            timeout: patience,
            max_body: MAX_ANSWER,
        };
        let addr = orphan.substation.addr;
        match tokio::time::timeout(patience * 2, self.caller.call(addr, &cancel)).await {
            Ok(Ok(a)) if a.status == 200 || a.status == 404 => "cancelled",
            _ => "unresolved",
        }
    }
}
