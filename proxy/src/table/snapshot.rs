//! The table as a whole: one [`Snapshot`] (the validated config, each configured substation's
//! resolved address and its [`SubstationState`]) in an `ArcSwap`, and the one door every load
//! report goes through ([`Table::ingest`]).
//!
//! A reload builds a new snapshot and swaps it in one step ([`Table::swap`]), so a request sees
//! either the old grid or the new one, never a mix. Substation state is keyed by name and
//! address: a substation that keeps both keeps its report, health and counters, whatever else
//! changes (weight, drain).

use super::{Offer, Report, Source, SubstationState};
use crate::config::{Config, SubstationConfig};
use crate::metrics::{Metrics, SubstationGauges};
use arc_swap::{ArcSwap, Guard};
use gridlb_protocol::ReportError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// A configured substation and its live state.
#[derive(Debug, Clone)]
pub struct Substation {
    pub config: SubstationConfig,
    pub state: Arc<SubstationState>,
}

impl Substation {
    /// The address `config.address` resolved to (also `state.addr`).
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }
}

/// The config and the substations it names, swapped as one.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub substations: Vec<Substation>,
}

impl Snapshot {
    pub fn find(&self, name: &str) -> Option<&Substation> {
        self.substations.iter().find(|s| s.config.name == name)
    }

    /// Build the snapshot of `config`, whose substations resolved to `addrs` (same order),
    /// keeping the state of every substation of `previous` with the same name and address.
    fn build(config: Arc<Config>, addrs: &[SocketAddr], previous: &[Substation]) -> Snapshot {
        let substations = config
            .substations
            .iter()
            .zip(addrs)
            .map(|(sc, &addr)| {
                let state = previous
                    .iter()
                    .find(|p| p.config.name == sc.name && p.addr() == addr)
                    .map(|p| Arc::clone(&p.state))
                    .unwrap_or_else(|| SubstationState::new(&sc.name, addr));
                state.configure(sc.drain, sc.capacity_kw, config.probe.max_report_age);
                Substation {
                    config: sc.clone(),
                    state,
                }
            })
            .collect();
        Snapshot {
            config,
            substations,
        }
    }

    /// The per-substation gauges, as the metrics want them.
    pub fn gauges(&self) -> Vec<SubstationGauges<'_>> {
        self.substations
            .iter()
            .map(|sub| {
                let state = &sub.state;
                let report = state.report();
                SubstationGauges {
                    name: &sub.config.name,
                    load_kw: report.as_ref().map(|r| r.load_kw),
                    capacity_kw: report.as_ref().map(|r| r.capacity_kw),
                    utilization: state.utilization_with(0.0),
                    report_age_s: report.map(|r| r.received_at.elapsed().as_secs_f64()),
                    in_flight_kw: state.in_flight_kw(),
                    healthy: state.is_healthy(),
                    draining: state.is_draining(),
                }
            })
            .collect()
    }

    /// One line for the log: each substation, its address, and the algorithm.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .substations
            .iter()
            .map(|s| {
                format!(
                    "{}@{}{}",
                    s.config.name,
                    s.addr(),
                    if s.config.drain { " (draining)" } else { "" }
                )
            })
            .collect();
        format!(
            "{} substation(s) [{}], algorithm {}",
            names.len(),
            names.join(", "),
            self.config.selection.algorithm.as_str()
        )
    }
}

/// What a [`Table::swap`] changed in membership.
#[derive(Debug, Default)]
pub struct Change {
    /// Substations that are new (or moved to another address): to be probed at once.
    pub added: bool,
    /// Substations that left (marked removed: no new requests while their own finish).
    pub removed: Vec<Arc<SubstationState>>,
}

/// How far (in seq, same epoch) an answer's report may overtake a probe's in a race.
const SEQ_RACE: u64 = 1 << 20;
/// Contradicting probe reports in a row that replace the held report.
const RESET_AFTER: u32 = 2;

/// The load table: the current snapshot, and where reports come in.
pub struct Table {
    snapshot: ArcSwap<Snapshot>,
    metrics: Arc<Metrics>,
}

impl Table {
    /// The table of `config`, whose substations resolved to `addrs` (same order).
    pub fn new(config: Config, addrs: &[SocketAddr], metrics: Arc<Metrics>) -> Table {
        Table {
            snapshot: ArcSwap::from_pointee(Snapshot::build(Arc::new(config), addrs, &[])),
            metrics,
        }
    }

    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.snapshot.load().config)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Swap in `config` (its substations resolved to `addrs`) in one step. Substations that
    /// left are marked removed before the swap, so no new request picks them; their series
    /// leave the metrics.
    pub fn swap(&self, config: Config, addrs: &[SocketAddr]) -> Change {
        let old = self.snapshot.load_full();
        let next = Snapshot::build(Arc::new(config), addrs, &old.substations);
        let kept = |state: &Arc<SubstationState>, among: &[Substation]| {
            among.iter().any(|s| Arc::ptr_eq(&s.state, state))
        };
        let removed: Vec<_> = old
            .substations
            .iter()
            .filter(|o| !kept(&o.state, &next.substations))
            .map(|o| Arc::clone(&o.state))
            .collect();
        for gone in &removed {
            gone.set_removed();
            self.metrics.forget(&gone.name);
        }
        let added = next
            .substations
            .iter()
            .any(|n| !kept(&n.state, &old.substations));
        self.snapshot.store(Arc::new(next));
        Change { added, removed }
    }

    /// The one door for load reports, from a probe or an answer's header alike: a valid
    /// report replaces the held one only if it is newer; a stale or invalid one is dropped and
    /// counted by source (and by reason).
    ///
    /// One bad report must not freeze the view: a held version far ahead of what the
    /// substation now says (an epoch of 2⁶⁴−1 once, or a restart whose epoch is lower, as
    /// after a clock step) would make every honest report stale for ever. So a *probe*
    /// report (asked for just now, of the substation itself) that contradicts the held one
    /// (a lower epoch, or a seq more than [`SEQ_RACE`] behind in the same epoch: more than
    /// any answer overtaking a probe could explain) counts; [`RESET_AFTER`] in a row replace
    /// the held report, and honest reports win again. Headers never reset.
    pub fn ingest(
        &self,
        state: &SubstationState,
        report: Result<Report, ReportError>,
        source: Source,
    ) -> Offer {
        let offer = match report {
            Ok(report) if source == Source::Probe => self.offer_probe(state, report),
            Ok(report) => state.offer(report),
            Err(e) => Offer::Rejected(e.reason()),
        };
        match offer {
            Offer::Stale => self.metrics.report_stale(&state.name, source.label()),
            Offer::Rejected(reason) => {
                self.metrics
                    .report_rejected(&state.name, source.label(), reason)
            }
            Offer::Accepted | Offer::Duplicate => {}
        }
        offer
    }

    /// [`Table::ingest`] of a probe report, with the reset of a contradicted report.
    fn offer_probe(&self, state: &SubstationState, report: Report) -> Offer {
        let version = report.version;
        let kept = report.clone();
        let offer = state.offer(report);
        if offer != Offer::Stale {
            state.contradictions.store(0, Relaxed);
            return offer;
        }
        let held = state.report().map(|r| r.version);
        let contradicts = held.is_some_and(|h| {
            version.epoch < h.epoch || (version.epoch == h.epoch && h.seq - version.seq > SEQ_RACE)
        });
        if !contradicts {
            state.contradictions.store(0, Relaxed);
            return offer;
        }
        if state.contradictions.fetch_add(1, Relaxed) + 1 < RESET_AFTER {
            return offer;
        }
        state.contradictions.store(0, Relaxed);
        log::warn!(
            "substation {}: held report {:?} contradicted by {RESET_AFTER} probes in a row, now {version:?}; replaced",
            state.name,
            held
        );
        state.replace(kept);
        self.metrics.report_reset(&state.name);
        Offer::Accepted
    }
}
