//! Proptest strategies for generated grids, shared by the selection properties next to the
//! code (`proxy/src/grid/tests.rs`) and in `proxy/tests/properties.rs`.
//!
//! Also the loads of requests ([`requests`]) and the versions of load reports as they might
//! arrive ([`report_versions`]).
//!
//! A generated grid is a list of [`SubSpec`]: per substation, a report (load, capacity) or
//! none yet, its health and whether it drains. [`grid_config`] writes the config of such a
//! grid; the test then builds gridlb's own grid from it and applies the health and reports
//! (this crate does not depend on gridlb, so that part stays with the tests).

use crate::config::{GridlbConfig, Selection, Substation};
use proptest::prelude::*;

/// The selection algorithms of the config.
pub const ALGORITHMS: [&str; 4] = ["least-load", "p2c", "round-robin", "random"];

/// One substation of a generated grid.
#[derive(Debug, Clone, PartialEq)]
pub struct SubSpec {
    /// `(load_kw, capacity_kw)` of its report, `None` when it has not reported.
    pub report: Option<(f64, f64)>,
    pub healthy: bool,
    pub drain: bool,
}

/// A substation that has reported with probability `reported` (a load anywhere in
/// `0..capacity`, a capacity in `10..1000` kW), healthy with probability 0.85, draining with
/// probability 0.15.
pub fn sub_spec(reported: f64) -> impl Strategy<Value = SubSpec> {
    (
        proptest::option::weighted(
            reported,
            (0.0f64..1.0, 10.0f64..1000.0).prop_map(|(f, cap)| (f * cap, cap)),
        ),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(report, healthy, drain)| SubSpec {
            report,
            healthy,
            drain,
        })
}

/// Any one of [`ALGORITHMS`].
pub fn algorithm() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(ALGORITHMS.to_vec())
}

/// Loads of requests: `count` of them, each in `kw` kW.
pub fn requests(
    kw: std::ops::Range<f64>,
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(kw, count)
}

/// Report versions `(epoch, seq)` as they might arrive, in any order and with repeats:
/// `count` of them, epochs below `epochs`, seqs below `seqs`.
pub fn report_versions(
    epochs: u64,
    seqs: u64,
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<(u64, u64)>> {
    proptest::collection::vec((0..epochs, 0..seqs), count)
}

/// The config of a generated grid: substation `s<i>` at `127.0.0.1:<first_port + i>` with
/// its drain flag, listening on `127.0.0.1:1` (never bound by the unit tests).
pub fn grid_config(
    subs: &[SubSpec],
    algorithm: &str,
    max_utilization: f64,
    first_port: u16,
) -> GridlbConfig {
    subs.iter()
        .enumerate()
        .fold(
            GridlbConfig::new().listen("127.0.0.1:1"),
            |config, (i, s)| {
                let port = first_port + u16::try_from(i).expect("a small grid");
                config.push(
                    Substation::new(format!("s{i}"), format!("127.0.0.1:{port}")).drain(s.drain),
                )
            },
        )
        .selection(Selection::algorithm(algorithm).max_utilization(max_utilization))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn a_generated_grid_config_names_every_substation_in_order() {
        let mut runner = TestRunner::deterministic();
        let subs: Vec<SubSpec> = (0..3)
            .map(|_| sub_spec(0.9).new_tree(&mut runner).expect("tree").current())
            .collect();
        let config = grid_config(&subs, "p2c", 0.8, 20000);
        let names: Vec<_> = config
            .substations
            .iter()
            .map(|s| s.address.as_str())
            .collect();
        assert_eq!(
            names,
            ["127.0.0.1:20000", "127.0.0.1:20001", "127.0.0.1:20002"]
        );
        assert_eq!(config.substations[1].drain, Some(subs[1].drain));
        assert!(config.to_yaml().contains("max_utilization: 0.8"));
    }

    proptest! {
        #[test]
        fn reports_never_exceed_their_capacity(s in sub_spec(0.85)) {
            if let Some((load, cap)) = s.report {
                prop_assert!(load >= 0.0 && load < cap && (10.0..1000.0).contains(&cap));
            }
        }
    }
}
