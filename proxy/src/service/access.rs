//! The access log line of one request, made when the request is over from what the request's
//! context saw (`crate::access_log` writes it).

use super::Session;
use super::{GridProxy, RequestCtx};
use crate::access_log::Record;
use std::time::SystemTime;

impl GridProxy {
    /// Hand this request's line to the access log, when the config turns it on.
    pub(super) fn access(&self, session: &Session, ctx: &RequestCtx, status: u16) {
        let Some(log) = &self.access_log else {
            return;
        };
        if self.table().config().access_log.is_none() {
            return;
        }
        let total = ctx.started.elapsed();
        let head = session.req_header();
        log.record(Record {
            time: SystemTime::now()
                .checked_sub(total)
                .unwrap_or_else(SystemTime::now),
            request_id: ctx
                .request_id
                .as_ref()
                .map_or_else(String::new, |id| id.as_str().to_string()),
            client: session.client_addr().map(|a| a.to_string()),
            method: head.method.as_str().to_string(),
            path: head.uri.path().to_string(),
            status,
            substation: ctx.attempts.target().map(|s| s.name.to_string()),
            kw: ctx.kw,
            attempts: ctx.attempts.tried().len(),
            upstream: ctx.upstream_time.elapsed(),
            total,
        });
    }
}
