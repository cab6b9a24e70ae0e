//! The core stays free of I/O: no async runtime, database, HTTP or MQTT
//! crate may be in its dependency tree. Read from the workspace's
//! `Cargo.lock` (what `cargo tree -p access-core` shows), so adding such a
//! dependency, even through another crate, fails here.

use std::collections::{BTreeMap, BTreeSet};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "rusqlite",
    "actix",
    "actix-web",
    "actix-rt",
    "rumqttc",
    "rumqttd",
    "reqwest",
    "hyper",
    "h2",
];

/// `name -> dependency names` from a Cargo.lock (one version per name is
/// enough here: a forbidden crate is forbidden in any version).
fn lock_graph(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let mut name = None;
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in package.lines().map(str::trim) {
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_string());
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line == "]" {
                in_deps = false;
            } else if in_deps {
                // `"name"`, or `"name version"` when several versions exist.
                let d = line.trim_matches(|c| c == '"' || c == ',');
                deps.push(d.split(' ').next().unwrap_or(d).to_string());
            }
        }
        if let Some(n) = name {
            graph.entry(n).or_insert_with(Vec::new).extend(deps);
        }
    }
    graph
}

fn tree_of(graph: &BTreeMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(graph.get(&n).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_core_depends_on_no_io_crate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let lock = std::fs::read_to_string(path).expect("the workspace's Cargo.lock");
    let graph = lock_graph(&lock);
    // The reading itself is checked: the server does pull these in.
    let server = tree_of(&graph, "reference-server");
    assert!(server.contains("tokio") && server.contains("rusqlite"));
    let core = tree_of(&graph, "access-core");
    assert!(core.contains("jiff"), "{core:?}");
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|c| core.contains(**c)).collect();
    assert!(found.is_empty(), "access-core depends on {found:?}");
}
