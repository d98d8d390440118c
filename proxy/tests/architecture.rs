//! The shape of the crate, checked: the modules of `proxy/src` use each other one way only
//! (no import cycle, as docs/design.md draws it), and every module opens with `//!` saying what
//! it owns. (That the proxy does not link the substation simulator is checked by
//! `scripts/check-fast` with `cargo tree`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `proxy/src` and the other top-level modules its files name with
/// `crate::` (its own submodules' files included, their unit tests excluded).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("proxy/src") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let mut files = vec![path.clone()];
        files.extend(rust_files(&src.join(&module)));
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
        graph.insert(module, uses);
    }
    graph
}

/// The `.rs` files below `dir`, but unit tests (`tests.rs`).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.map(|e| e.expect("an entry").path()) {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
    out
}

/// A cycle through `module`, if there is one (depth-first search).
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    module: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|m| m == module) {
        let mut cycle = path[start..].to_vec();
        cycle.push(module.to_string());
        return Some(cycle);
    }
    path.push(module.to_string());
    for next in graph.get(module).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, next, path) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

#[test]
fn modules_import_each_other_one_way_only() {
    let graph = imports();
    assert!(graph.len() > 10, "found the modules: {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The bottom of the map uses nothing of the crate.
    assert!(graph["config"].is_empty(), "config: {:?}", graph["config"]);
    assert!(
        graph["metrics"].is_empty(),
        "metrics: {:?}",
        graph["metrics"]
    );
}

#[test]
fn every_module_opens_with_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = rust_files(&src);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        assert!(
            text.starts_with("//!"),
            "{} does not open with a `//!` comment",
            file.display()
        );
    }
}
