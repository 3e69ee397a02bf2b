//! The fuzz properties on the committed seed corpus, so `cargo test` (and
//! CI) checks them without libFuzzer: every file under `fuzz/seeds/TARGET/`
//! goes through the same property function its fuzz target runs
//! (`fuzz/src/lib.rs` and its modules, included here as a module; its
//! `mod` lines resolve beside it, under `fuzz/src/`), whole and cut at every
//! length, since a prefix of a seed is an input of its own.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_properties;

use std::path::PathBuf;

type Property = fn(&[u8]);

const TARGETS: [(&str, Property); 6] = [
    ("http_request", fuzz_properties::http_request),
    ("http_response", fuzz_properties::http_response),
    ("sse", fuzz_properties::sse),
    ("lines", fuzz_properties::lines),
    ("jsonrpc", fuzz_properties::jsonrpc),
    ("endpoint", fuzz_properties::endpoint),
];

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn seeds_of(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir().join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a seed entry").path();
            let bytes = std::fs::read(&path).expect("a readable seed");
            (path.display().to_string(), bytes)
        })
        .collect();
    seeds.sort();
    seeds
}

fn run_target(target: &str, property: Property) {
    let seeds = seeds_of(target);
    assert!(seeds.len() >= 3, "{target} has {} seeds", seeds.len());
    for (name, bytes) in &seeds {
        // A failed property panics with its own message; the name says
        // which seed (and cut) to replay with the fuzz target.
        for cut in (0..bytes.len()).chain([bytes.len()]) {
            let input = &bytes[..cut];
            if let Err(panic) = std::panic::catch_unwind(|| property(input)) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                panic!("{name} cut at {cut} of {}: {why}", bytes.len());
            }
        }
    }
}

#[test]
fn every_seed_directory_is_a_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    targets.sort();
    assert_eq!(dirs, targets);
}

#[test]
fn http_request_seeds_hold_the_properties() {
    run_target(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn http_response_seeds_hold_the_properties() {
    run_target(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn sse_seeds_hold_the_properties() {
    run_target(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn lines_seeds_hold_the_properties() {
    run_target(TARGETS[3].0, TARGETS[3].1);
}

#[test]
fn jsonrpc_seeds_hold_the_properties() {
    run_target(TARGETS[4].0, TARGETS[4].1);
}

#[test]
fn endpoint_seeds_hold_the_properties() {
    run_target(TARGETS[5].0, TARGETS[5].1);
}
