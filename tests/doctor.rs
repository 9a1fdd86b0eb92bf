//! `bankswap doctor` (SPEC §12): one line per check, `ok` or `FAIL` with the
//! fix, exit 1 when any fails. One test per failure that loopback, a small
//! tmpfs or a clock moved by faketime can make, and an all-green run against a
//! live console.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::support::live::{ConsoleProcess, Live};
use crate::support::proxy::ConnectProxy;
use crate::support::tls::TestCa;
use crate::support::tmpfs::on_small_tmpfs;
use crate::support::{Run, World, mode_of, run, run_ok};

/// Writes an agent config; `ca` is the `[tls] ca_certs` entry, if any.
fn config(w: &World, console: &str, ca: Option<&Path>, key: &str) -> PathBuf {
    let path = w.path("agent.toml");
    let tls = ca.map_or_else(String::new, |ca| {
        format!("[tls]\nca_certs = [\"{}\"]\n", ca.display())
    });
    fs::write(
        &path,
        format!(
            "console = \"{console}\"\nroot = \"{}\"\ntrusted_keys = [\"{key}\"]\n{tls}",
            w.path("root").display(),
        ),
    )
    .expect("config");
    path
}

fn doctor(config: &Path) -> Run {
    run(["doctor", "--config", &config.display().to_string()])
}

/// The line of check `name`; asserts it exists.
fn line<'a>(out: &'a Run, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l[6.min(l.len())..].starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no `{name}` line:\n{}", out.stdout))
}

/// Asserts exit 1 and that check `name` failed saying `needle`.
fn assert_check_fails(out: &Run, name: &str, needle: &str) {
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let l = line(out, name);
    assert!(
        l.starts_with("FAIL  ") && l.contains(needle) && l.contains("fix: "),
        "{name}: want FAIL with `{needle}` and a fix, got `{l}`"
    );
}

/// [`assert_check_fails`], and the line's fix says `fix`.
fn assert_check_fails_with_fix(out: &Run, name: &str, needle: &str, fix: &str) {
    assert_check_fails(out, name, needle);
    assert!(line(out, name).contains(fix), "{}", out.stdout);
}

/// A live console with release 1.0.0, and an initialised root.
fn live_with_release() -> Live {
    let live = Live::new();
    live.publish_sleeper("1.0.0");
    live
}

fn init(config: &Path) {
    run_ok(["init", "--config", &config.display().to_string()]);
}

/// The config of an agent of `live` (its console, CA and release key) with `extra`
/// TOML appended, its root initialised.
fn live_config(live: &Live, extra: &str) -> PathBuf {
    let config = config(
        &live.w,
        &live.console.url,
        Some(&live.ca.ca_pem),
        &live.w.public("release"),
    );
    let mut text = fs::read_to_string(&config).expect("config");
    text.push_str(extra);
    fs::write(&config, text).expect("config");
    init(&config);
    config
}

#[test]
fn all_checks_pass_against_a_live_console() {
    let live = live_with_release();
    let config = live_config(&live, "");
    let out = doctor(&config);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for name in [
        "config",
        "trusted keys",
        "root",
        "dns",
        "tcp",
        "tls",
        "clock",
        "manifest",
        "syslog",
    ] {
        assert!(line(&out, name).starts_with("ok    "), "{}", out.stdout);
    }
    assert!(line(&out, "manifest").contains("1.0.0"), "{}", out.stdout);
    assert!(
        line(&out, "clock").contains("of the console"),
        "{}",
        out.stdout
    );
    // Read-only: doctor took no lock and wrote nothing the agent owns.
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
}

#[test]
fn a_renewed_server_certificate_is_still_trusted_with_the_kept_ca() {
    let mut live = live_with_release();
    let config = live_config(&live, "");
    let ca_before = fs::read(&live.ca.ca_pem).expect("ca.pem");
    let cert_before = fs::read(&live.ca.cert_pem).expect("server.pem");
    let tls = live.w.path("tls");
    let out = run_ok(["console", "cert", "--out", &tls.display().to_string()]);
    assert!(out.stdout.contains("renewed"), "{}", out.stdout);
    assert_eq!(
        fs::read(&live.ca.ca_pem).expect("ca.pem"),
        ca_before,
        "the CA changed"
    );
    assert_ne!(
        fs::read(&live.ca.cert_pem).expect("server.pem"),
        cert_before
    );
    assert_eq!(mode_of(&tls.join("ca.key")), 0o600);
    let addr = live.console.addr.clone();
    live.console.terminate();
    live.console = ConsoleProcess::start(&live.data, &live.ca, &addr, &live.w.path("console.log"));
    let out = doctor(&config);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn unknown_ca_says_add_it_to_tls_ca_certs() {
    let live = live_with_release();
    let config = config(&live.w, &live.console.url, None, &live.w.public("release"));
    init(&config);
    let out = doctor(&config);
    assert_check_fails_with_fix(&out, "tls", "unknown CA", "[tls] ca_certs");
}

#[test]
fn wrong_host_name_is_named() {
    let w = World::new();
    let tls = w.path("tls");
    run_ok([
        "console",
        "cert",
        "--out",
        &tls.display().to_string(),
        "--name",
        "other.example",
    ]);
    let ca = TestCa {
        ca_pem: tls.join("ca.pem"),
        cert_pem: tls.join("server.pem"),
        key_pem: tls.join("server.key"),
    };
    fs::create_dir_all(w.path("data")).expect("data");
    let console =
        ConsoleProcess::start(&w.path("data"), &ca, "127.0.0.1:0", &w.path("console.log"));
    let config = config(&w, &console.url, Some(&ca.ca_pem), &w.public("release"));
    init(&config);
    let out = doctor(&config);
    assert_check_fails(&out, "tls", "not valid for the host name 127.0.0.1");
}

/// A CA and a server certificate for 127.0.0.1 that expired in 2021.
fn expired_ca(dir: &Path) -> TestCa {
    fs::create_dir_all(dir).expect("dir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "expired test CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("cert");
    let ca = TestCa {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
    };
    fs::write(&ca.ca_pem, ca_cert.pem()).expect("write");
    fs::write(&ca.cert_pem, cert.pem()).expect("write");
    fs::write(&ca.key_pem, key.serialize_pem()).expect("write");
    ca
}

#[test]
fn expired_certificate_is_named() {
    let w = World::new();
    let ca = expired_ca(&w.path("tls"));
    fs::create_dir_all(w.path("data")).expect("data");
    let console =
        ConsoleProcess::start(&w.path("data"), &ca, "127.0.0.1:0", &w.path("console.log"));
    let config = config(&w, &console.url, Some(&ca.ca_pem), &w.public("release"));
    init(&config);
    let out = doctor(&config);
    assert_check_fails(&out, "tls", "has expired");
}

#[test]
fn unreachable_console_fails_tcp() {
    let w = World::new();
    // Port 1 on loopback: nothing listens (tcpmux is long dead).
    let config = config(&w, "https://127.0.0.1:1", None, &w.public("release"));
    init(&config);
    let out = doctor(&config);
    assert_check_fails(&out, "tcp", "cannot connect to the console at 127.0.0.1:1");
}

#[test]
fn unknown_console_host_fails_dns() {
    let w = World::new();
    let config = config(
        &w,
        "https://no-such-host.invalid:8443",
        None,
        &w.public("release"),
    );
    init(&config);
    let out = doctor(&config);
    assert_check_fails(&out, "dns", "no-such-host.invalid");
    // Without an address, TCP is not tried.
    assert!(
        !out.stdout
            .lines()
            .any(|l| l[6.min(l.len())..].starts_with("tcp:")),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_key_file_fails_trusted_keys() {
    let w = World::new();
    let bad = w.path("bad.pub");
    fs::write(&bad, "untrusted comment: nope\nnot base64 at all\n").expect("bad key");
    let config = config(&w, "https://127.0.0.1:1", None, &bad.display().to_string());
    let out = doctor(&config);
    assert_check_fails(&out, "trusted keys", "bad.pub");
}

#[test]
fn manifest_signed_by_another_key_fails_verification() {
    let live = live_with_release();
    live.w.keygen("other");
    let config = config(
        &live.w,
        &live.console.url,
        Some(&live.ca.ca_pem),
        &live.w.public("other"),
    );
    init(&config);
    let out = doctor(&config);
    assert_check_fails(&out, "manifest", "");
    assert!(line(&out, "tls").starts_with("ok    "), "{}", out.stdout);
}

#[test]
fn group_writable_root_fails_with_chmod_fix() {
    let w = World::new();
    let config = config(&w, "https://127.0.0.1:1", None, &w.public("release"));
    init(&config);
    let root = w.path("root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = doctor(&config);
    assert_check_fails_with_fix(&out, "root", "mode 0777", "chmod 0700");
}

#[test]
fn missing_root_says_init() {
    let w = World::new();
    let config = config(&w, "https://127.0.0.1:1", None, &w.public("release"));
    let out = doctor(&config);
    assert_check_fails_with_fix(&out, "root", "does not exist", "bankswap init");
}

#[test]
fn unreachable_proxy_fails_before_the_console() {
    let live = live_with_release();
    let config = live_config(&live, "[proxy]\nurl = \"http://127.0.0.1:1\"\n");
    let out = doctor(&config);
    assert_check_fails(
        &out,
        "proxy tcp",
        "cannot connect to the proxy at 127.0.0.1:1",
    );
}

#[test]
fn syslog_server_not_listening_fails() {
    let live = live_with_release();
    let config = live_config(&live, "[log]\nsyslog = \"tcp://127.0.0.1:1\"\n");
    let out = doctor(&config);
    assert_check_fails(&out, "syslog", "cannot connect to the syslog server");
    assert!(
        line(&out, "manifest").starts_with("ok    "),
        "{}",
        out.stdout
    );
}

#[test]
fn a_proxy_refusing_the_credentials_is_named() {
    let live = live_with_release();
    let proxy = ConnectProxy::start("agent", "s3cret");
    let password = live.w.path("proxy-password");
    fs::write(&password, "wrong\n").expect("password file");
    let config = live_config(
        &live,
        &format!(
            "[proxy]\nurl = \"http://127.0.0.1:{}\"\nusername = \"agent\"\npassword_file = \"{}\"\n",
            proxy.port,
            password.display()
        ),
    );
    let out = doctor(&config);
    assert!(
        line(&out, "proxy tcp").starts_with("ok    "),
        "{}",
        out.stdout
    );
    assert_check_fails_with_fix(
        &out,
        "proxy + tls",
        "the proxy refused the credentials",
        "check [proxy] username and password_file",
    );
    assert!(
        proxy.refused.load(Ordering::SeqCst) >= 1,
        "the proxy was asked"
    );
    assert_eq!(proxy.tunnels.load(Ordering::SeqCst), 0);
}

#[test]
fn a_root_with_too_little_free_space_fails_with_how_much_to_free() {
    let w = World::new();
    // The root on a 16 MiB tmpfs: less than the 64 MiB doctor wants free.
    let config = w.path("agent.toml");
    fs::write(
        &config,
        format!(
            "console = \"https://127.0.0.1:1\"\nroot = \"{}\"\ntrusted_keys = [\"{}\"]\n",
            w.path("mnt/root").display(),
            w.public("release"),
        ),
    )
    .expect("config");
    let read = on_small_tmpfs(
        &w,
        "16m",
        &[("C", &config)],
        r#""$B" init --config "$C"
code=0; "$B" doctor --config "$C" > "$O/doctor" 2> "$O/stderr" || code=$?
echo "$code" > "$O/code"
"#,
    );
    let out = Run {
        code: read("code").trim().parse().expect("exit code"),
        stdout: read("doctor"),
        stderr: read("stderr"),
    };
    assert_check_fails_with_fix(&out, "root", "MiB free", "free at least 64 MiB");
    let root = line(&out, "root");
    assert!(root.contains("mnt/root has 1"), "{root}");
}

#[test]
fn an_expired_agent_certificate_says_enroll_again_with_a_new_token() {
    // Certificates of 2 minutes; the console's own server certificate lasts years.
    let live = Live::with_console_args(&["--cert-lifetime", "2m"]);
    live.publish_sleeper("1.0.0");
    let token = live.w.path("token");
    let out = run_ok([
        "console",
        "token",
        "create",
        "--data",
        &live.data.display().to_string(),
    ]);
    fs::write(&token, out.stdout).expect("token file");
    // A top-level key: before the `[tls]` table of the config.
    let config = config(
        &live.w,
        &live.console.url,
        Some(&live.ca.ca_pem),
        &live.w.public("release"),
    );
    let text = fs::read_to_string(&config).expect("config");
    let token_line = format!("enrollment_token_file = \"{}\"\n", token.display());
    fs::write(&config, format!("{token_line}{text}")).expect("config");
    init(&config);
    let root = live.w.path("root");
    run_ok([
        "console",
        "enroll",
        "--root",
        &root.display().to_string(),
        "--console",
        &live.console.url,
        "--token-file",
        &token.display().to_string(),
        "--ca-cert",
        &live.ca.ca_pem.display().to_string(),
    ]);
    let now = doctor(&config);
    assert!(
        line(&now, "certificate").starts_with("ok    "),
        "{}",
        now.stdout
    );

    // An hour later (faketime): the agent was off past its certificate's lifetime.
    let out: Run = Command::new("faketime")
        .args(["-f", "+1h", env!("CARGO_BIN_EXE_bankswap")])
        .args(["doctor", "--config", &config.display().to_string()])
        .env_remove("BANKSWAP_LOG")
        .output()
        .expect("faketime runs (Debian package faketime)")
        .into();
    assert_check_fails_with_fix(
        &out,
        "certificate",
        "the agent certificate expired at",
        "bankswap console token create",
    );
    let certificate = line(&out, "certificate");
    assert!(
        certificate.contains("enroll again") && certificate.contains(&token.display().to_string()),
        "{certificate}"
    );
    // The console's certificate is still good; only this clock, an hour ahead
    // of the console's, fails besides.
    assert!(line(&out, "tls").starts_with("ok    "), "{}", out.stdout);
    let failed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL  "))
        .collect();
    assert_eq!(failed.len(), 2, "{}", out.stdout);
    assert!(line(&out, "clock").starts_with("FAIL  "), "{}", out.stdout);
}

/// Whether `cert` is still valid `seconds` from now (`openssl x509 -checkend`).
fn valid_in(cert: &Path, seconds: u64) -> bool {
    Command::new("openssl")
        .args(["x509", "-noout", "-checkend", &seconds.to_string(), "-in"])
        .arg(cert)
        .stdout(Stdio::null())
        .status()
        .expect("openssl runs")
        .success()
}

#[test]
fn console_cert_makes_a_ten_year_ca_and_a_one_year_server_certificate_from_now() {
    let w = World::new();
    let tls = w.path("tls");
    run_ok(["console", "cert", "--out", &tls.display().to_string()]);
    const DAY: u64 = 86_400;
    let (ca, server) = (tls.join("ca.pem"), tls.join("server.pem"));
    assert!(valid_in(&ca, 9 * 365 * DAY), "the CA lasts 10 years");
    assert!(
        !valid_in(&ca, 11 * 365 * DAY),
        "the CA lasts 10 years, not more"
    );
    assert!(
        valid_in(&server, 360 * DAY),
        "the server certificate lasts a year"
    );
    assert!(!valid_in(&server, 370 * DAY), "a year, not more");
    // Valid from about now (an hour's slack for clock skew), not from 1975.
    let start = Command::new("openssl")
        .args(["x509", "-noout", "-startdate", "-in"])
        .arg(&server)
        .output()
        .expect("openssl runs");
    let start = String::from_utf8_lossy(&start.stdout).to_string();
    let year: u64 = start
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|y| y.parse().ok())
        .unwrap_or_else(|| panic!("no year in {start}"));
    let this_year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / (365 * DAY + DAY / 4);
    assert!(year + 1 >= this_year, "valid from {start}");
    assert_eq!(
        mode_of(&tls.join("ca.key")),
        0o600,
        "the CA key is kept, 0600"
    );
}
