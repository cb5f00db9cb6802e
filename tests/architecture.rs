//! Checks the crate graph of DESIGN.md and the house rules every module follows.
//!
//! rust-analyzer's `tidy` in spirit: the architecture is asserted by a test,
//! so a forbidden dependency edge or an undocumented module fails CI.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Workspace crates and the workspace crates each may depend on (normal
/// dependencies; dev-dependencies are free).
const ALLOWED: &[(&str, &[&str])] = &[
    ("ops", &[]),
    ("protocol", &[]),
    ("datasets", &[]),
    ("models", &["ops"]),
    ("storage", &["datasets"]),
    ("coordinator", &["protocol", "datasets", "storage"]),
    (
        "worker",
        &["protocol", "datasets", "models", "ops", "storage"],
    ),
    (
        "shoal",
        &[
            "ops",
            "models",
            "datasets",
            "protocol",
            "coordinator",
            "worker",
            "storage",
        ],
    ),
];

/// External crates that tie code to I/O, async runtimes or the network:
/// the pure crates must not depend on them.
const IO_CRATES: &[&str] = &["tokio", "quinn", "axum", "rusqlite", "hyper", "mio"];

/// Crates that must stay free of I/O and async runtimes.
const PURE: &[&str] = &["ops", "models", "datasets"];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (package name -> normal dependency names) from `cargo metadata`.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut graph = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_string())
            .collect();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn crate_graph_follows_design() {
    let graph = dependency_graph();
    let workspace: BTreeSet<&str> = ALLOWED.iter().map(|(name, _)| *name).collect();
    for (name, allowed) in ALLOWED {
        let deps = graph
            .get(*name)
            .unwrap_or_else(|| panic!("workspace crate `{name}` is missing"));
        for dep in deps {
            if workspace.contains(dep.as_str()) {
                assert!(
                    allowed.contains(&dep.as_str()),
                    "`{name}` depends on `{dep}`, which DESIGN.md forbids (allowed: {allowed:?})"
                );
            }
        }
    }
    for name in PURE {
        for dep in &graph[*name] {
            assert!(
                !IO_CRATES.contains(&dep.as_str()),
                "`{name}` must stay free of I/O and async runtimes but depends on `{dep}`"
            );
        }
    }
    assert!(
        !graph["coordinator"].contains("ops") && !graph["coordinator"].contains("models"),
        "the coordinator schedules work and does no numerics"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_says_what_it_is_for() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "ops",
        "models",
        "datasets",
        "protocol",
        "coordinator",
        "worker",
        "storage",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("read source file");
            !text.trim_start().starts_with("//!")
        })
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "modules without a leading `//!` line saying what they are for:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn unsafe_code_is_forbidden_outside_ops() {
    let root = workspace_root();
    for name in [
        "models",
        "datasets",
        "protocol",
        "coordinator",
        "worker",
        "storage",
    ] {
        let lib = std::fs::read_to_string(root.join(name).join("src/lib.rs")).expect("lib.rs");
        assert!(
            lib.contains("#![forbid(unsafe_code)]"),
            "{name}/src/lib.rs must forbid unsafe code"
        );
    }
    let main = std::fs::read_to_string(root.join("src/main.rs")).expect("main.rs");
    assert!(
        main.contains("#![forbid(unsafe_code)]"),
        "src/main.rs must forbid unsafe code"
    );
}
