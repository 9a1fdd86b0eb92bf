//! The console end to end: `bankswap console serve` on loopback HTTPS with a
//! test CA, asked by a real HTTPS client, fed by `bankswap publish`, and read
//! back by `bankswap console fleet`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::https::Http;
use crate::support::live::ConsoleProcess;
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, run, run_ok};

/// A world with a TLS CA and a console data folder holding release 1.0.0.
fn published_world() -> (World, PathBuf, TestCa) {
    let world = World::new();
    let ca = make_test_ca(&world.path("tls"));
    let data = world.path("console");
    let payload = world.payload("1.0.0", 3, 1000);
    world.publish(&data, &payload, "1.0.0", &[]);
    (world, data, ca)
}

fn quoted_sha256(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(bytes)))
}

fn manifest_file(data: &Path) -> PathBuf {
    data.join("v1/channels/stable/release.json")
}

#[test]
fn the_manifest_and_signature_carry_etags_and_revalidate_with_304() {
    let (world, data, ca) = published_world();
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let http = Http::new(&ca);
    let on_disk = fs::read(manifest_file(&data)).expect("manifest");

    let manifest = http.get(&console.url_of("/v1/channels/stable/release.json"), &[]);
    assert_eq!(manifest.status, 200, "{}", console.stderr());
    assert_eq!(manifest.body, on_disk);
    assert_eq!(manifest.header("etag"), quoted_sha256(&on_disk));
    let etag = manifest.header("etag");
    let again = http.get(
        &console.url_of("/v1/channels/stable/release.json"),
        &[("if-none-match", etag)],
    );
    assert_eq!((again.status, again.header("etag")), (304, etag));
    assert!(again.body.is_empty());
    let stale = http.get(
        &console.url_of("/v1/channels/stable/release.json"),
        &[("if-none-match", "\"old\"")],
    );
    assert_eq!(stale.status, 200);

    // A held request with nothing published ends with 304 when its wait does.
    let held = http.get(
        &console.url_of("/v1/channels/stable/release.json?wait=1"),
        &[("if-none-match", etag)],
    );
    assert_eq!(held.status, 304);

    let sig_on_disk =
        fs::read(data.join("v1/channels/stable/release.json.minisig")).expect("minisig");
    let sig = http.get(
        &console.url_of("/v1/channels/stable/release.json.minisig"),
        &[],
    );
    assert_eq!((sig.status, &sig.body), (200, &sig_on_disk));
    assert_eq!(sig.header("etag"), quoted_sha256(&sig_on_disk));
    let sig_etag = sig.header("etag");
    let sig_again = http.get(
        &console.url_of("/v1/channels/stable/release.json.minisig"),
        &[("if-none-match", sig_etag)],
    );
    assert_eq!(sig_again.status, 304);

    assert_eq!(
        http.get(&console.url_of("/v1/channels/beta/release.json"), &[])
            .status,
        404
    );
}

/// Waits until the console logs that it holds a request (so a publish after
/// this is one the held request must see, not one it read before waiting).
fn wait_held(console: &ConsoleProcess) {
    crate::support::live::wait_for("the console to hold the request", || {
        console.stderr().contains("holding the request")
    });
}

#[test]
fn a_held_request_returns_the_new_manifest_as_soon_as_it_is_published() {
    let (world, data, ca) = published_world();
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let http = Http::new(&ca);
    let first = http.get(&console.url_of("/v1/channels/stable/release.json"), &[]);
    let etag = first.header("etag").to_string();

    const WAIT: Duration = Duration::from_secs(5);
    let url = console.url_of(&format!(
        "/v1/channels/stable/release.json?wait={}",
        WAIT.as_secs()
    ));
    let started = Instant::now();
    let held = http.spawn_get(&url, &[("if-none-match", &etag)]);
    wait_held(&console);
    assert!(
        !held.is_finished(),
        "the request was answered instead of held"
    );

    world.publish(&data, &world.payload("1.1.0", 3, 1000), "1.1.0", &[]);
    let reply = http.finish(held);
    let waited = started.elapsed();
    let on_disk = fs::read(manifest_file(&data)).expect("manifest");
    assert_eq!(reply.status, 200, "{}", console.stderr());
    assert_eq!(reply.body, on_disk);
    assert_eq!(reply.header("etag"), quoted_sha256(&on_disk));
    assert_ne!(reply.header("etag"), etag);
    assert!(
        waited < WAIT,
        "answered after {waited:?}: at the end of the wait, not on publish"
    );
}

#[test]
fn artifacts_stream_whole_or_by_range() {
    let (world, data, ca) = published_world();
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let http = Http::new(&ca);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(manifest_file(&data)).expect("manifest")).expect("json");
    let path = manifest["artifact"]["path"]
        .as_str()
        .expect("artifact path");
    let bytes = fs::read(data.join("v1").join(path)).expect("artifact");
    let total = bytes.len();
    assert!(total > 20);
    let url = console.url_of(&format!("/v1/{path}"));

    let whole = http.get(&url, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.header("content-length"), total.to_string());
    assert_eq!(whole.header("accept-ranges"), "bytes");

    let tail = http.get(&url, &[("range", "bytes=10-")]);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, bytes[10..]);
    assert_eq!(
        tail.header("content-range"),
        format!("bytes 10-{}/{total}", total - 1)
    );
    assert_eq!(tail.header("content-length"), (total - 10).to_string());

    let middle = http.get(&url, &[("range", "bytes=5-9")]);
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, bytes[5..=9]);
    assert_eq!(middle.header("content-range"), format!("bytes 5-9/{total}"));

    let past = http.get(&url, &[("range", &format!("bytes={total}-"))]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{total}"));
}

#[test]
fn names_that_leave_their_folder_are_not_found() {
    let (world, data, ca) = published_world();
    // Files a traversal would reach if names were joined unchecked.
    fs::write(data.join("v1/release.json"), b"{\"secret\":true}").expect("decoy");
    fs::create_dir_all(data.join("v1/channels/.hidden")).expect("hidden channel");
    fs::copy(
        manifest_file(&data),
        data.join("v1/channels/.hidden/release.json"),
    )
    .expect("copy");
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let http = Http::new(&ca);
    for path in [
        "/v1/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/v1/artifacts/..%2Fchannels%2Fstable%2Frelease.json",
        "/v1/artifacts/%2Fetc%2Fpasswd",
        "/v1/artifacts/0000000000000000000000000000000000000000000000000000000000000000.tar",
        "/v1/channels/..%2Fchannels%2Fstable/release.json",
        "/v1/channels/%2E%2E/release.json",
        "/v1/channels/.hidden/release.json",
        "/v1/channels/a%2Fb/release.json",
        "/v1/channels/stable%00/release.json",
        "/etc/passwd",
    ] {
        let reply = http.get(&console.url_of(path), &[]);
        assert_eq!(reply.status, 404, "{path} answered {}", reply.status);
    }
    for agent in ["..%2Fx", "%2E%2E", "a%00b"] {
        let reply = http.post(&console.url_of(&format!("/v1/agents/{agent}/report")), "{}");
        assert_eq!(reply.status, 404, "agent {agent} answered {}", reply.status);
    }
}

/// The admin token of the tests that read the fleet.
const ADMIN_TOKEN: &str = "admin-token-for-the-fleet-0123";

#[test]
fn reports_are_kept_per_agent_and_shown_by_console_fleet() {
    let (world, data, ca) = published_world();
    let token_file = world.path("admin-token");
    fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("token file");
    let token_arg = token_file.display().to_string();
    // Agents that never enrolled report without a certificate: the legacy mode.
    let console = ConsoleProcess::start_with(
        &data,
        &ca,
        "127.0.0.1:0",
        &world.path("console.log"),
        &[
            "--allow-anonymous-reports",
            "--admin-token-file",
            &token_arg,
        ],
    );
    let http = Http::new(&ca);
    let report = |agent: &str, body: &str| {
        http.post(
            &console.url_of(&format!("/v1/agents/{agent}/report")),
            body.to_string(),
        )
    };
    assert_eq!(
        report(
            "agent-1",
            r#"{"version":"0.9.0","bank":"Bank2","phase":"trial"}"#
        )
        .status,
        204
    );
    let latest = r#"{"version":"1.0.0","bank":"Bank1","phase":"committed","pending":{"version":"1.1.0"},
                     "last_error":"<b>disk full</b>","uptime":12}"#;
    assert_eq!(
        report("agent-1", latest).status,
        204,
        "{}",
        console.stderr()
    );
    assert_eq!(report("agent-2", r#"{"version":null}"#).status, 204);
    assert_eq!(report("bad.id", "{}").status, 404);
    assert_eq!(report("agent-3", "not json").status, 400);
    assert_eq!(
        report(
            "agent-3",
            &format!("{{\"last_error\":\"{}\"}}", "x".repeat(17 * 1024))
        )
        .status,
        413
    );

    let out = run_ok([
        "console",
        "fleet",
        "--data",
        &data.display().to_string(),
        "--json",
    ]);
    let fleet: serde_json::Value = serde_json::from_str(&out.stdout).expect("fleet --json is JSON");
    let agents = fleet.as_array().expect("an array");
    assert_eq!(agents.len(), 2, "{fleet}");
    assert_eq!(agents[0]["agent_id"], "agent-1");
    assert_eq!(agents[0]["version"], "1.0.0");
    assert_eq!(agents[0]["bank"], "Bank1");
    assert_eq!(agents[0]["phase"], "committed");
    assert_eq!(agents[0]["pending"]["version"], "1.1.0");
    assert_eq!(agents[0]["last_error"], "<b>disk full</b>");
    assert!(
        agents[0]["remote"]
            .as_str()
            .expect("remote")
            .starts_with("127.0.0.1:")
    );
    assert_eq!(agents[1]["agent_id"], "agent-2");
    assert!(agents[1]["version"].is_null());

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = [("authorization", bearer.as_str())];
    let served: serde_json::Value =
        serde_json::from_slice(&http.get(&console.url_of("/v1/fleet"), &admin).body).expect("JSON");
    assert_eq!(served, fleet);
    let remote = run_ok([
        "console",
        "fleet",
        "--console",
        &console.url,
        "--ca-cert",
        &ca.ca_pem.display().to_string(),
        "--token-file",
        &token_arg,
        "--json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&remote.stdout).expect("JSON"),
        fleet
    );
    let table = run_ok(["console", "fleet", "--data", &data.display().to_string()]);
    assert!(
        table.stdout.contains("agent-1") && table.stdout.contains("Bank1"),
        "{}",
        table.stdout
    );

    let page = http.get(&console.url_of("/"), &admin);
    let page = String::from_utf8(page.body).expect("utf-8");
    assert!(
        page.contains("agent-1") && page.contains("&lt;b&gt;disk full&lt;/b&gt;"),
        "{page}"
    );
    assert!(!page.contains("<b>disk full"));
    assert!(page.contains("stable") && page.contains("1.0.0"));
}

#[test]
fn serving_without_tls_needs_insecure_http() {
    let world = World::new();
    let data = world.path("console").display().to_string();
    let out = run([
        "console",
        "serve",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(
        out.code, 2,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(line.contains("--insecure-http"), "{line}");
}

#[test]
fn a_taken_address_is_named_in_one_error_line() {
    let (world, data, ca) = published_world();
    let console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let address = console.url.trim_start_matches("https://").to_string();
    let out = run([
        "console".to_string(),
        "serve".into(),
        "--data".into(),
        data.display().to_string(),
        "--listen".into(),
        address.clone(),
        "--tls-cert".into(),
        ca.cert_pem.display().to_string(),
        "--tls-key".into(),
        ca.key_pem.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    assert!(
        line.contains(&format!("cannot listen on {address}")),
        "{line}"
    );
}

#[test]
fn sigterm_ends_held_requests_and_exits_0() {
    let (world, data, ca) = published_world();
    let mut console = ConsoleProcess::start(&data, &ca, "127.0.0.1:0", &world.path("console.log"));
    let http = Http::new(&ca);
    let etag = http
        .get(&console.url_of("/v1/channels/stable/release.json"), &[])
        .header("etag")
        .to_string();
    let held = http.spawn_get(
        &console.url_of("/v1/channels/stable/release.json?wait=300"),
        &[("if-none-match", &etag)],
    );
    wait_held(&console);
    assert!(!held.is_finished());

    assert_eq!(console.terminate(), Some(0), "{}", console.stderr());
    let status = http.finish(held).status;
    assert_eq!(status, 304, "a held request ends with 304 on shutdown");
}
