//! Microbenchmarks of the hot path with 3, 16, 128 and 1024 substations: one selection
//! (`GridSelection::choose`, the first candidate, per algorithm; and `Admission::select`, which
//! adds Pingora's iteration and the reservation) and one report update
//! (`SubstationState::offer`, then the choice that brings least-load's index current: an
//! update only marks the substation, the next choice reads it again).
//!
//! Run with `cargo bench -p gridlb --bench selection`; `bench/scripts/micro` runs it and writes the
//! results to `bench/RESULTS.md`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gridlb::admission::Admission;
use gridlb::config::{Algorithm, Config};
use gridlb::metrics::Metrics;
use gridlb::selection::{GridSelection, Rng, SelectorConfig, Settings};
use gridlb::server::Parts;
use gridlb::table::{Report, SubstationState};
use gridlb_protocol::ReportVersion;
use pingora_load_balancing::Backend;
use pingora_load_balancing::selection::BackendSelection;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

const SIZES: [usize; 4] = [3, 16, 128, 1024];
const REQUEST_KW: f64 = 11.0;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 9000))
}

/// A report that leaves substation `i` between 0 % and 80 % used.
fn report(i: usize, seq: u64) -> Report {
    let capacity_kw = 200.0 + (i % 5) as f64 * 200.0;
    Report {
        version: ReportVersion { epoch: 1, seq },
        load_kw: capacity_kw * ((i * 37) % 80) as f64 / 100.0,
        capacity_kw,
        active_sessions: None,
        received_at: Instant::now(),
    }
}

fn selection(n: usize, algorithm: Algorithm) -> GridSelection {
    let backends = (0..n)
        .map(|i| {
            let state = SubstationState::new(&format!("s{i}"), addr(i));
            state.offer(report(i, 1));
            let mut b = Backend::new(&addr(i).to_string()).expect("a literal address");
            b.ext.insert(state);
            b
        })
        .collect();
    let config = SelectorConfig {
        settings: Settings::Fixed(algorithm, 1.0),
        rng: Arc::new(Rng::seeded(1)),
    };
    GridSelection::build_with_config(&backends, &config)
}

fn grid(n: usize, algorithm: Algorithm) -> (tokio::runtime::Runtime, Arc<Admission>) {
    let lines: String = (0..n)
        .map(|i| format!("  - {{ name: s{i}, address: \"{}\" }}\n", addr(i)))
        .collect();
    let config = Config::parse(&format!(
        // Reports stay young for the whole run (the default is three probe intervals): the
        // benchmark measures choosing among reported substations, not among aged-out ones.
        "listen: 127.0.0.1:1\nsubstations:\n{lines}probe: {{ max_report_age_ms: 600000 }}\nselection: {{ algorithm: {} }}\n",
        algorithm.as_str()
    ))
    .expect("generated config is valid");
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("fresh registry"));
    let grid = Parts::new(config, None, metrics, Rng::seeded(1))
        .expect("literal addresses")
        .admission;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(grid.pool().update_membership());
    for (i, s) in grid.table().snapshot().substations.iter().enumerate() {
        s.state.offer(report(i, 1));
    }
    (rt, grid)
}

fn choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("choose");
    for algorithm in [Algorithm::LeastLoad, Algorithm::P2c] {
        for n in SIZES {
            let s = selection(n, algorithm);
            group.bench_with_input(BenchmarkId::new(algorithm.as_str(), n), &n, |b, _| {
                b.iter(|| black_box(s.choose(black_box(REQUEST_KW))))
            });
        }
    }
    group.finish();
}

fn grid_select(c: &mut Criterion) {
    let mut group = c.benchmark_group("grid_select");
    for algorithm in [Algorithm::LeastLoad, Algorithm::P2c] {
        for n in SIZES {
            let (_rt, grid) = grid(n, algorithm);
            assert!(grid.select(REQUEST_KW, &[]).is_some(), "the grid has room");
            group.bench_with_input(BenchmarkId::new(algorithm.as_str(), n), &n, |b, _| {
                b.iter(|| black_box(grid.select(black_box(REQUEST_KW), &[])))
            });
        }
    }
    group.finish();
}

fn offer(c: &mut Criterion) {
    let mut group = c.benchmark_group("offer");
    for n in SIZES {
        // The substations of a selection: each accepted report marks the substation in
        // least-load's index, and the next choice reads it again; both are timed.
        let s = selection(n, Algorithm::LeastLoad);
        let mut seq = 1;
        group.bench_with_input(BenchmarkId::new("newer-then-choose", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                let i = (seq as usize) % n;
                black_box(s.state(i).offer(report(i, seq)));
                black_box(s.choose(black_box(REQUEST_KW)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, choose, grid_select, offer);
criterion_main!(benches);
