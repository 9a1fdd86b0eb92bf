//! Fleet identity end to end (SPEC §10, issue 11): agents enroll with a
//! one-time token through the real binary (`console enroll`, the same code
//! `run` calls), report over mTLS, renew, and are revoked; the console
//! refuses spoofed, anonymous and revoked reports with a reason.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use reqwest::Method;

use crate::static_host::Nginx;
use crate::support::https::{Http, Reply};
use crate::support::live::{AgentProcess, AgentSettings, ConsoleProcess, Live, wait_for};
use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, assert_fails_with, run, run_ok};

/// A console with an agent CA, issuing 2-minute certificates.
struct Fleet {
    world: World,
    data: PathBuf,
    ca: TestCa,
    console: ConsoleProcess,
}

impl Fleet {
    fn start(extra: &[&str]) -> Fleet {
        let world = World::new();
        let ca = make_test_ca(&world.path("tls"));
        let data = world.path("console");
        let payload = world.payload("1.0.0", 2, 100);
        world.publish(&data, &payload, "1.0.0", &[]);
        let mut args = vec!["--cert-lifetime", "2m"];
        args.extend_from_slice(extra);
        let console = ConsoleProcess::start_with(
            &data,
            &ca,
            "127.0.0.1:0",
            &world.path("console.log"),
            &args,
        );
        Fleet {
            world,
            data,
            ca,
            console,
        }
    }

    fn data_arg(&self) -> String {
        self.data.display().to_string()
    }

    /// A new enrollment token in a file.
    fn token(&self, name: &str, extra: &[&str]) -> PathBuf {
        let data = self.data_arg();
        let mut args = vec!["console", "token", "create", "--data", &data];
        args.extend_from_slice(extra);
        let out = run_ok(args);
        let token = out.stdout.trim().to_string();
        assert!(token.len() > 32, "{token}");
        let file = self.world.path(name);
        fs::write(&file, format!("{token}\n")).expect("token file");
        file
    }

    /// `console enroll` for the agent of `root`.
    fn enroll(&self, root: &Path, token: &Path) -> crate::support::Run {
        fs::create_dir_all(root).expect("root");
        run([
            "console".to_string(),
            "enroll".into(),
            "--root".into(),
            root.display().to_string(),
            "--console".into(),
            self.console.url.clone(),
            "--token-file".into(),
            token.display().to_string(),
            "--ca-cert".into(),
            self.ca.ca_pem.display().to_string(),
        ])
    }

    /// `console renew` of `root`, which must succeed.
    fn renew(&self, root: &Path, force: bool) -> crate::support::Run {
        let out = self.try_renew(root, force);
        assert_eq!(out.code, 0, "renew failed: {}", out.stderr);
        out
    }

    /// `console renew` of `root`, any outcome.
    fn try_renew(&self, root: &Path, force: bool) -> crate::support::Run {
        let mut args = vec![
            "console".to_string(),
            "renew".into(),
            "--root".into(),
            root.display().to_string(),
            "--console".into(),
            self.console.url.clone(),
            "--ca-cert".into(),
            self.ca.ca_pem.display().to_string(),
        ];
        if force {
            args.push("--force".into());
        }
        run(args)
    }

    /// A client presenting the identity stored in `root`.
    fn client_of(&self, root: &Path) -> Http {
        Http::with_identity(&self.ca, &identity_pem(root))
    }

    fn report(&self, http: &Http, agent: &str, body: &str) -> Reply {
        http.post(
            &self.console.url_of(&format!("/v1/agents/{agent}/report")),
            body.to_string(),
        )
    }

    fn fleet(&self) -> serde_json::Value {
        let out = run_ok(["console", "fleet", "--data", &self.data_arg(), "--json"]);
        serde_json::from_str(&out.stdout).expect("fleet JSON")
    }

    fn agents(&self) -> serde_json::Value {
        let out = run_ok(["console", "agents", "--data", &self.data_arg(), "--json"]);
        serde_json::from_str(&out.stdout).expect("agents JSON")
    }
}

fn agent_id(root: &Path) -> String {
    fs::read_to_string(root.join("agent-id"))
        .expect("agent-id")
        .trim()
        .to_string()
}

fn identity_pem(root: &Path) -> Vec<u8> {
    let mut pem = fs::read(root.join("identity/key.pem")).expect("key.pem");
    pem.extend(fs::read(root.join("identity/cert.pem")).expect("cert.pem"));
    pem
}

fn error_line(out: &crate::support::Run) -> String {
    out.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {}", out.stderr))
        .to_string()
}

#[test]
fn enrollment_with_a_used_expired_or_forged_token_is_refused() {
    let fleet = Fleet::start(&[]);
    let token = fleet.token("token", &[]);
    let first = fleet.world.path("agent-1");
    let out = fleet.enroll(&first, &token);
    assert_eq!(out.code, 0, "{out:?}\n{}", fleet.console.stderr());
    let key_mode = fs::metadata(first.join("identity/key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is the agent's only");
    let key = fs::read_to_string(first.join("identity/key.pem")).expect("key");
    assert!(
        !fleet
            .console
            .stderr()
            .contains(key.lines().nth(1).expect("key line")),
        "the key is never logged"
    );

    let second = fleet.world.path("agent-2");
    let used = fleet.enroll(&second, &token);
    assert_fails_with(&used, "the enrollment token was already used");
    assert!(error_line(&used).contains("enrolling with"), "{used:?}");

    let expired = fleet.token("expired", &["--expires", "0s"]);
    assert_fails_with(
        &fleet.enroll(&second, &expired),
        "the enrollment token expired",
    );

    let forged = fleet.world.path("forged");
    fs::write(
        &forged,
        "bsenroll-0000000000000000000000000000000000000000\n",
    )
    .expect("forged");
    assert_fails_with(
        &fleet.enroll(&second, &forged),
        "the enrollment token is not one this console issued",
    );
    assert!(!second.join("identity/cert.pem").exists());

    // The HTTP answer says the same, as JSON, with 403.
    let http = Http::new(&fleet.ca);
    let reply = http.call(
        Method::POST,
        &fleet.console.url_of("/v1/enroll"),
        &[("content-type", "application/json")],
        br#"{"token":"bsenroll-forged","agent_id":"x","csr":"none"}"#,
    );
    assert_eq!(reply.status, 403);
    assert!(reply.error().contains("not one this console issued"));

    // Only the first agent enrolled; a token with --uses 2 enrolls two.
    let agents = fleet.agents();
    assert_eq!(agents.as_array().expect("array").len(), 1, "{agents}");
    assert_eq!(agents[0]["agent_id"], agent_id(&first).as_str());
    assert_eq!(agents[0]["state"], "active");
    let twice = fleet.token("twice", &["--uses", "2"]);
    assert_eq!(fleet.enroll(&second, &twice).code, 0);
    let third = fleet.world.path("agent-3");
    assert_eq!(fleet.enroll(&third, &twice).code, 0);
    assert_fails_with(
        &fleet.enroll(&fleet.world.path("agent-4"), &twice),
        "already used",
    );
}

#[test]
fn spoofed_and_anonymous_reports_are_refused_and_leave_the_real_row() {
    let fleet = Fleet::start(&[]);
    let (real, other) = (fleet.world.path("real"), fleet.world.path("other"));
    assert_eq!(fleet.enroll(&real, &fleet.token("t1", &[])).code, 0);
    assert_eq!(fleet.enroll(&other, &fleet.token("t2", &[])).code, 0);
    let (real_id, other_id) = (agent_id(&real), agent_id(&other));

    let as_real = fleet.client_of(&real);
    let good = r#"{"version":"1.0.0","bank":"Bank1","phase":"committed"}"#;
    assert_eq!(fleet.report(&as_real, &real_id, good).status, 204);
    let before = fleet.fleet();

    // The other agent's valid certificate, the real agent's id: 403.
    let as_other = fleet.client_of(&other);
    let spoof = r#"{"version":"<script>x</script>","bank":"Bank9"}"#;
    let reply = fleet.report(&as_other, &real_id, spoof);
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .error()
            .contains(&format!("names agent {other_id}, not {real_id}")),
        "{}",
        reply.error()
    );
    // No certificate: 401; an invented id without one grows nothing either.
    let anonymous = Http::new(&fleet.ca);
    assert_eq!(fleet.report(&anonymous, &real_id, spoof).status, 401);
    let invented = fleet.report(&anonymous, "invented-1", good);
    assert_eq!(invented.status, 401);
    assert!(invented.error().contains("client certificate"));
    assert_eq!(fleet.fleet(), before, "the real row is unchanged");
    assert_eq!(before.as_array().expect("array").len(), 1);
}

#[test]
fn an_enrolled_agent_renews_and_keeps_reporting_until_revoked() {
    let fleet = Fleet::start(&[]);
    let root = fleet.world.path("agent");
    assert_eq!(fleet.enroll(&root, &fleet.token("t", &[])).code, 0);
    let id = agent_id(&root);
    let report = r#"{"version":"1.0.0"}"#;
    let first = identity_pem(&root);

    // Just enrolled: two thirds of 2 minutes have not passed.
    let out = fleet.renew(&root, false);
    assert!(out.stdout.contains("not due"), "{}", out.stdout);
    assert_eq!(identity_pem(&root), first);

    fleet.renew(&root, true);
    let second = identity_pem(&root);
    assert_ne!(second, first, "a new key and certificate");
    assert!(!root.join("identity/cert.new.pem").exists());
    assert_eq!(
        fleet.report(&fleet.client_of(&root), &id, report).status,
        204
    );
    // The certificate before stays good until the agent is on the next one.
    let with_first = Http::with_identity(&fleet.ca, &first);
    assert_eq!(fleet.report(&with_first, &id, report).status, 204);

    fleet.renew(&root, true);
    let live = fleet.client_of(&root);
    assert_eq!(fleet.report(&live, &id, report).status, 204);
    let replaced = fleet.report(&with_first, &id, report);
    assert_eq!(replaced.status, 403);
    assert!(
        replaced.error().contains("replaced"),
        "{}",
        replaced.error()
    );
    let agents = fleet.agents();
    assert!(agents[0]["last_seen"].is_u64(), "{agents}");
    assert!(agents[0]["cert_expiry"].as_u64().expect("expiry") > 0);

    // Revoked from the command line: the open connection's next request is refused.
    run_ok([
        "console",
        "agents",
        "revoke",
        &id,
        "--data",
        &fleet.data_arg(),
    ]);
    let refused = fleet.report(&live, &id, report);
    assert_eq!(refused.status, 403);
    assert!(refused.error().contains("revoked"), "{}", refused.error());
    let renewal = fleet.try_renew(&root, true);
    assert_fails_with(&renewal, "revoked");
    assert_eq!(fleet.agents()[0]["state"], "revoked");
    let table = run_ok(["console", "agents", "--data", &fleet.data_arg()]);
    assert!(table.stdout.contains(&id) && table.stdout.contains("revoked"));

    // A revoked id cannot enroll again until forgotten.
    assert_fails_with(
        &fleet.enroll(&root, &fleet.token("again", &[])),
        "is revoked",
    );
    run_ok([
        "console",
        "agents",
        "forget",
        &id,
        "--data",
        &fleet.data_arg(),
    ]);
    assert_eq!(fleet.agents().as_array().expect("array").len(), 0);
    assert_eq!(fleet.enroll(&root, &fleet.token("new", &[])).code, 0);
}

#[test]
fn channel_files_need_a_certificate_only_with_require_client_cert() {
    let open = Fleet::start(&[]);
    let anonymous = Http::new(&open.ca);
    let manifest = open.console.url_of("/v1/channels/stable/release.json");
    assert_eq!(anonymous.get(&manifest, &[]).status, 200);

    let strict = Fleet::start(&["--require-client-cert"]);
    let anonymous = Http::new(&strict.ca);
    let manifest = strict.console.url_of("/v1/channels/stable/release.json");
    assert_eq!(anonymous.get(&manifest, &[]).status, 401);
    let root = strict.world.path("agent");
    // Enrollment itself needs no certificate.
    assert_eq!(strict.enroll(&root, &strict.token("t", &[])).code, 0);
    let enrolled = strict.client_of(&root);
    assert_eq!(enrolled.get(&manifest, &[]).status, 200);
    run_ok([
        "console",
        "agents",
        "revoke",
        &agent_id(&root),
        "--data",
        &strict.data_arg(),
    ]);
    assert_eq!(enrolled.get(&manifest, &[]).status, 403);
}

#[test]
fn anonymous_reports_are_stored_only_when_allowed_and_never_for_enrolled_ids() {
    let fleet = Fleet::start(&["--allow-anonymous-reports"]);
    let anonymous = Http::new(&fleet.ca);
    assert_eq!(fleet.report(&anonymous, "legacy-1", "{}").status, 204);
    let root = fleet.world.path("agent");
    assert_eq!(fleet.enroll(&root, &fleet.token("t", &[])).code, 0);
    let reply = fleet.report(&anonymous, &agent_id(&root), "{}");
    assert_eq!(reply.status, 401);
    assert!(reply.error().contains("is enrolled"), "{}", reply.error());
    let ids: Vec<String> = fleet
        .fleet()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["agent_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["legacy-1"]);
}

/// Waits until the fleet of the console data `data` shows agent `id` on `version`.
fn wait_reported(data: &str, id: &str, version: &str) {
    wait_for(&format!("the report of {version}"), || {
        let out = run_ok(["console", "fleet", "--data", data, "--json"]);
        let fleet: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        fleet
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["agent_id"] == id && e["version"] == version)
    });
}

/// An agent on root `agent` of `live` that enrolls with a fresh one-time token
/// (kept in `enrollment-token`).
fn enrolling_agent(live: &Live) -> AgentProcess {
    let data = live.data.display().to_string();
    let token = run_ok(["console", "token", "create", "--data", &data])
        .stdout
        .trim()
        .to_string();
    let token_file = live.w.path("enrollment-token");
    fs::write(&token_file, format!("{token}\n")).expect("token file");
    live.agent(
        "agent",
        &format!(
            "enrollment_token_file = \"{}\"\n[health]\ngrace = \"1s\"\n",
            token_file.display()
        ),
    )
}

#[test]
fn run_enrolls_with_its_token_and_reports_over_mtls() {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    let data = live.data.display().to_string();
    let agent = enrolling_agent(&live);
    // The log first: `status` on a root no agent holds yet would take its lock.
    agent.wait_log("running version=1.0.0");
    agent.wait_committed("1.0.0");
    let root = live.w.path("agent");
    let id = agent_id(&root);
    let mode = fs::metadata(root.join("identity/key.pem"))
        .expect("the agent's key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !agent.log().contains("PRIVATE KEY"),
        "the key is never logged"
    );
    // The console takes no anonymous reports: this one came with the certificate.
    wait_reported(&data, &id, "1.0.0");
    let out = run_ok(["console", "agents", "--data", &data, "--json"]);
    let agents: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(agents[0]["agent_id"], id.as_str());
    assert!(agents[0]["last_seen"].is_u64(), "{agents}");

    // Revoked: the console refuses it, and its payload keeps running.
    run_ok(["console", "agents", "revoke", &id, "--data", &data]);
    let http = Http::with_identity(&live.ca, &identity_pem(&root));
    let reply = http.post(
        &live.console.url_of(&format!("/v1/agents/{id}/report")),
        "{}",
    );
    assert_eq!(reply.status, 403);
    assert_eq!(agent.status()["active_version"], "1.0.0");

    // A second agent with the spent token: refused with the reason, and its
    // payload runs all the same.
    let second = live.agent(
        "second",
        &format!(
            "enrollment_token_file = \"{}\"\n[health]\ngrace = \"1s\"\n",
            live.w.path("enrollment-token").display()
        ),
    );
    second.wait_log("the enrollment token was already used");
    second.wait_log("running version=1.0.0");
    second.wait_committed("1.0.0");
    assert!(!live.w.path("second/identity/cert.pem").exists());
}

#[test]
fn nginx_requiring_a_client_certificate_serves_an_enrolled_agent_and_refuses_a_stranger() {
    let fleet = Fleet::start(&[]);
    let root = fleet.world.path("agent");
    assert_eq!(fleet.enroll(&root, &fleet.token("t", &[])).code, 0);
    let dir = fleet.world.script_payload("1.0.0", "exec sleep 1000");
    fleet.world.publish(&fleet.data, &dir, "1.0.0", &[]);
    // The agent CA, exported from the console's data folder, is all nginx needs.
    let nginx = Nginx::start_with(
        &fleet.data,
        &fleet.ca,
        &fleet.world.path("nginx"),
        &format!(
            "ssl_verify_client on; ssl_client_certificate {};",
            fleet.data.join("agent-ca/ca.pem").display()
        ),
    );
    let url = format!("https://localhost:{}", nginx.port);
    let stranger = Http::new(&fleet.ca).get(&format!("{url}/v1/channels/stable/release.json"), &[]);
    assert_eq!(
        stranger.status, 400,
        "nginx refuses a client without a certificate"
    );
    let agent = AgentProcess::start(
        &fleet.world,
        &fleet.ca,
        &root,
        &AgentSettings {
            console: &url,
            extra: "[health]\ngrace = \"1s\"\n",
        },
    );
    // The log first: `status` on a root no agent holds yet would take its lock.
    agent.wait_log("running version=1.0.0");
    agent.wait_committed("1.0.0");
}

#[test]
fn an_expired_certificate_is_refused_with_403_and_what_to_do() {
    let fleet = Fleet::start(&[]);
    let root = fleet.world.path("agent");
    assert_eq!(fleet.enroll(&root, &fleet.token("t", &[])).code, 0);
    let id = agent_id(&root);
    // A certificate of this agent, signed by the agent CA, that expired long ago
    // (what an agent powered off past its certificate's lifetime holds).
    let ca_key = rcgen::KeyPair::from_pem(
        &fs::read_to_string(fleet.data.join("agent-ca/ca.key")).expect("CA key"),
    )
    .expect("CA key");
    let ca_cert = rcgen::CertificateParams::from_ca_cert_pem(
        &fs::read_to_string(fleet.data.join("agent-ca/ca.pem")).expect("CA cert"),
    )
    .expect("CA params")
    .self_signed(&ca_key)
    .expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id.as_str());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 2);
    let expired = params.signed_by(&key, &ca_cert, &ca_key).expect("cert");
    let pem = format!("{}{}", key.serialize_pem(), expired.pem());
    let http = Http::with_identity(&fleet.ca, pem.as_bytes());
    let reply = fleet.report(&http, &id, "{}");
    assert_eq!(reply.status, 403);
    let reason = reply.error();
    assert!(
        reason.contains("expired at 2020-01-02") && reason.contains("enroll again"),
        "{reason}"
    );
    assert_eq!(fleet.fleet().as_array().expect("array").len(), 0);

    // Stored in the root (the agent was off past its renewal): `status` and
    // `doctor` say it expired, and exactly what to do.
    let identity = root.join("identity");
    fs::write(identity.join("key.pem"), key.serialize_pem()).expect("key");
    fs::write(identity.join("cert.pem"), expired.pem()).expect("cert");
    let root_arg = root.display().to_string();
    let status = run_ok(["status", "--root", &root_arg, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    let cert = &status["certificate"];
    assert_eq!(cert["state"], "expired", "{status}");
    assert_eq!(cert["not_after"], "2020-01-02T00:00:00Z", "{status}");
    let hint = cert["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains("bankswap console token create")
            && hint.contains("enrollment_token_file")
            && hint.contains("restart the agent"),
        "{hint}"
    );
    let text = run_ok(["status", "--root", &root_arg]).stdout;
    assert!(
        text.contains("cert:       expired until 2020-01-02"),
        "{text}"
    );

    let config = fleet.world.path("agent.toml");
    fs::write(
        &config,
        format!(
            "console = \"{}\"\nroot = \"{root_arg}\"\ntrusted_keys = [\"{}\"]\n[tls]\nca_certs = [\"{}\"]\n",
            fleet.console.url,
            fleet.world.public("release"),
            fleet.ca.ca_pem.display()
        ),
    )
    .expect("config");
    let out = run(["doctor", "--config", &config.display().to_string()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL  certificate:"))
        .unwrap_or_else(|| panic!("no certificate line:\n{}", out.stdout));
    assert!(
        line.contains("expired at 2020-01-02")
            && line.contains("fix:")
            && line.contains("bankswap console token create"),
        "{line}"
    );
}

#[test]
fn an_agent_reporting_in_a_loop_is_rate_limited() {
    let fleet = Fleet::start(&[]);
    let root = fleet.world.path("agent");
    assert_eq!(fleet.enroll(&root, &fleet.token("t", &[])).code, 0);
    let id = agent_id(&root);
    let http = fleet.client_of(&root);
    // MAX_REPORTS_PER_WINDOW (60) a minute are stored; the 61st is refused.
    let statuses: Vec<u16> = (0..61)
        .map(|i| {
            fleet
                .report(&http, &id, &format!("{{\"last_error\":\"report {i}\"}}"))
                .status
        })
        .collect();
    assert!(statuses[..60].iter().all(|s| *s == 204), "{statuses:?}");
    assert_eq!(statuses[60], 429);
    assert_eq!(fleet.fleet()[0]["last_error"], "report 59");
}

#[test]
fn a_running_agent_renews_its_certificate_and_downloads_and_reports_with_the_new_one() {
    // 60 s is the shortest `--cert-lifetime`: the agent renews after 40 s.
    // `--require-client-cert`: the manifest and the artifact need a valid
    // certificate too, so a staging that kept the first client would fail.
    let live = Live::with_console_args(&["--cert-lifetime", "60s", "--require-client-cert"]);
    live.publish_sleeper("1.0.0");
    let data = live.data.display().to_string();
    let agent = enrolling_agent(&live);
    agent.wait_committed("1.0.0");
    let id = agent_id(&live.w.path("agent"));
    let expiry = || {
        let out = run_ok(["console", "agents", "--data", &data, "--json"]);
        let agents: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        agents[0]["cert_expiry"].as_u64().expect("expiry")
    };
    let enrolled = expiry();

    let first = agent.status()["certificate"].clone();
    assert_eq!(first["state"], "valid", "{first}");
    agent.wait_log("agent certificate renewed");
    assert!(expiry() > enrolled, "the console recorded a later expiry");
    let renewed = agent.status()["certificate"].clone();
    assert!(
        renewed["not_after"].as_str() > first["not_after"].as_str(),
        "{renewed}"
    );
    // Once the first certificate expired, only the new one can report (this
    // console takes no anonymous reports and refuses expired certificates).
    wait_for("the first certificate to expire", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            > enrolled
    });
    // Staged after the renewal: the artifact comes over the renewed certificate.
    let v2 = live.w.payload("2.0.0", 4, 64 * 1024);
    live.w.publish(&live.data, &v2, "2.0.0", &[]);
    agent.wait_committed("2.0.0");
    assert!(!agent.log().contains("staging failed"), "{}", agent.log());
    wait_reported(&data, &id, "2.0.0");
}
