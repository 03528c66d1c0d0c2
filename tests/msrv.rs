//! The MSRV written in the root `Cargo.toml` holds for every crate of the
//! workspace and every dependency it resolves to (clippy's
//! `incompatible_msrv` lint checks our own code against it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text
        .trim()
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn no_dependency_needs_a_newer_rust_than_the_workspace_msrv() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let root = packages
        .iter()
        .find(|p| p["name"] == "tower-llm")
        .expect("root package");
    let msrv = version(root["rust_version"].as_str().expect("rust-version is set"));
    let too_new: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needed = version(p["rust_version"].as_str()?);
            (needed > msrv).then(|| format!("{} {} needs {:?}", p["name"], p["version"], needed))
        })
        .collect();
    assert!(too_new.is_empty(), "above the MSRV {msrv:?}: {too_new:?}");
    let members = metadata["workspace_members"].as_array().unwrap();
    for member in members {
        let package = packages.iter().find(|p| &p["id"] == member).unwrap();
        assert_eq!(
            package["rust_version"], root["rust_version"],
            "{} must inherit the workspace rust-version",
            package["name"]
        );
    }
}
