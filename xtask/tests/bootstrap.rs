//! `cargo xtask` must build on a machine with nothing but rustup stable,
//! since it is what installs the BPF toolchain. So nothing it depends on may
//! need that toolchain: no crate of this workspace (lb-user's build script
//! compiles the XDP program), and nothing from outside crates.io. This reads
//! the real dependency graph from `cargo metadata`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde_json::{json, Value};

/// Workspace crates xtask may use: light, shared, crates.io-only, no build
/// script. None today.
const LIGHT_WORKSPACE_CRATES: &[&str] = &[];

/// crates.io crates that build BPF programs or need LLVM: never in xtask's
/// graph, whatever brings them in.
fn needs_bpf_toolchain(name: &str) -> bool {
    name.starts_with("aya")
        || name.starts_with("llvm-sys")
        || name.starts_with("libbpf")
        || name == "bpf-linker"
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn has_build_script(package: &Value) -> bool {
    package["targets"].as_array().into_iter().flatten().any(|t| {
        t["kind"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k == "custom-build")
    })
}

/// Why `root`'s build would need more than crates.io and rustup stable: one
/// line per offending crate it reaches (dev-dependencies counted for `root`
/// itself, since `cargo test -p xtask` builds them too). `light` names the
/// workspace crates it may use.
fn violations(metadata: &Value, root: &str, light: &[&str]) -> Vec<String> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| id.as_str().expect("member id"))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let root_id = members
        .iter()
        .copied()
        .find(|id| packages[id]["name"] == root)
        .unwrap_or_else(|| panic!("{root} is not a workspace member"));

    let mut seen = BTreeSet::from([root_id]);
    let mut queue = VecDeque::from([(root_id, vec![root.to_owned()])]);
    let mut found = Vec::new();
    if has_build_script(packages[root_id]) {
        found.push(format!("{root} itself has a build script"));
    }
    while let Some((id, path)) = queue.pop_front() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let counted = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| id == root_id || kind["kind"].is_null() || kind["kind"] == "build");
            let dep_id = dep["pkg"].as_str().expect("pkg");
            if !counted || !seen.insert(dep_id) {
                continue;
            }
            let package = packages[dep_id];
            let name = package["name"].as_str().expect("name");
            let mut path = path.clone();
            path.push(name.to_owned());
            let via = path.join(" -> ");
            if members.contains(dep_id) {
                if !light.contains(&name) {
                    found.push(format!("workspace crate {name} ({via})"));
                } else if has_build_script(package) {
                    found.push(format!("workspace crate {name} has a build script ({via})"));
                }
            } else if needs_bpf_toolchain(name) {
                found.push(format!("{name} builds BPF programs or needs LLVM ({via})"));
            } else if !package["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("registry+"))
            {
                found.push(format!("{name} is not from crates.io ({via})"));
            }
            queue.push_back((dep_id, path));
        }
    }
    found
}

#[test]
fn xtask_builds_without_the_bpf_toolchain() {
    let found = violations(&metadata(), "xtask", LIGHT_WORKSPACE_CRATES);
    assert!(
        found.is_empty(),
        "xtask must build before setup has installed the BPF toolchain, but it reaches:\n{}",
        found.join("\n")
    );
}

/// The check fires on the real graph: the bench, which does need the
/// toolchain, is flagged for lb-user (whose build script builds the XDP
/// program).
#[test]
fn the_check_flags_a_crate_that_needs_the_toolchain() {
    let found = violations(&metadata(), "lb-bench", LIGHT_WORKSPACE_CRATES);
    assert!(
        found.iter().any(|v| v.starts_with("workspace crate lb-user ")),
        "{found:?}"
    );
}

#[test]
fn the_check_flags_build_scripts_and_other_sources_in_a_made_up_graph() {
    const CRATES_IO: Option<&str> = Some("registry+https://github.com/rust-lang/crates.io-index");
    let package = |id: &str, source: Option<&str>, build_script: bool| {
        let mut targets = vec![json!({"kind": ["lib"]})];
        if build_script {
            targets.push(json!({"kind": ["custom-build"]}));
        }
        json!({"id": id, "name": id, "source": source, "targets": targets})
    };
    let dep = |pkg: &str, kind: Option<&str>| json!({"pkg": pkg, "dep_kinds": [{"kind": kind}]});
    let metadata = |xtask_build_script: bool| {
        json!({
            "packages": [
                package("xtask", None, xtask_build_script),
                package("heavy", None, true),
                package("shared", None, true),
                package("clap", CRATES_IO, true),
                package("gitdep", Some("git+https://example.invalid/x"), false),
                package("devonly", CRATES_IO, false),
                package("aya-build", CRATES_IO, true),
            ],
            "workspace_members": ["xtask", "heavy", "shared"],
            "resolve": {"nodes": [
                {"id": "xtask", "deps": [dep("clap", None), dep("heavy", Some("dev")), dep("shared", None)]},
                {"id": "clap", "deps": [dep("gitdep", Some("build")), dep("devonly", Some("dev"))]},
                {"id": "heavy", "deps": []},
                {"id": "shared", "deps": [dep("aya-build", Some("build"))]},
                {"id": "gitdep", "deps": []},
                {"id": "devonly", "deps": []},
                {"id": "aya-build", "deps": []},
            ]},
        })
    };
    assert_eq!(
        violations(&metadata(false), "xtask", &["shared"]),
        [
            "workspace crate heavy (xtask -> heavy)",
            "workspace crate shared has a build script (xtask -> shared)",
            "gitdep is not from crates.io (xtask -> clap -> gitdep)",
            "aya-build builds BPF programs or needs LLVM (xtask -> shared -> aya-build)",
        ],
        "a crates.io build script (clap) and a dependency's dev-dependency are fine"
    );
    let own = violations(&metadata(true), "xtask", &["shared"]);
    assert_eq!(own[0], "xtask itself has a build script");
    assert!(violations(&metadata(false), "xtask", &[])
        .contains(&"workspace crate shared (xtask -> shared)".to_owned()));
}
