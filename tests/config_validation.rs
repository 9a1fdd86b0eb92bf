//! Every config value is validated at start (issue 8.12): `bankswap run`
//! refuses a bad one with exit 2 and one `error:` line naming the key and
//! the reason, before it touches the root, and never prints a secret.

use std::fs;

use crate::support::{Run, World, run};

/// Runs `bankswap run` on a config of `body` plus a valid key and root.
fn run_with(w: &World, body: &str) -> Run {
    let config = w.path("agent.toml");
    let root = w.path("root");
    fs::write(
        &config,
        format!(
            "trusted_keys = [\"{}\"]\nroot = \"{}\"\n{body}\n",
            w.public("release"),
            root.display()
        ),
    )
    .expect("config");
    let out = run(["run", "--config", &config.display().to_string()]);
    assert!(!root.exists(), "a refused config must not touch the root");
    out
}

/// Asserts exit 2 and a first `error:` line that mentions every needle.
fn assert_refused(body: &str, needles: &[&str]) -> Run {
    let w = World::new();
    let out = run_with(&w, body);
    assert_eq!(
        out.code, 2,
        "expected exit 2 for\n{body}\nstderr: {}",
        out.stderr
    );
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error: "), "{}", out.stderr);
    for needle in needles {
        assert!(
            first.contains(needle),
            "`{first}` does not mention `{needle}`"
        );
    }
    out
}

const CONSOLE: &str = "console = \"https://127.0.0.1:1\"\n";

#[test]
fn a_health_http_that_is_not_an_http_url_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[health]\nhttp = \"htp//127.0.0.1:8080/health\""),
        &["[health] http", "not a URL"],
    );
    assert_refused(
        &format!("{CONSOLE}[health]\nhttp = \"ftp://127.0.0.1/health\""),
        &["[health] http", "http:// or https://"],
    );
}

#[test]
fn a_listen_address_without_a_port_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"http\"\naddress = \"localhost\""),
        &["[[listen]] http address", "host:port"],
    );
}

#[test]
fn a_listen_port_out_of_range_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"http\"\naddress = \"0.0.0.0:70000\""),
        &["[[listen]] http address", "port"],
    );
}

#[test]
fn a_relative_unix_socket_path_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"http\"\naddress = \"./app.sock\""),
        &["[[listen]] http address", "absolute"],
    );
}

#[test]
fn an_empty_listen_name_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"\"\naddress = \"127.0.0.1:8080\""),
        &["[[listen]] name", "LISTEN_FDNAMES"],
    );
}

#[test]
fn a_listen_name_with_a_colon_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"a:b\"\naddress = \"127.0.0.1:8080\""),
        &["[[listen]] name `a:b`", "LISTEN_FDNAMES"],
    );
}

#[test]
fn a_listen_mode_that_is_not_octal_permission_bits_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[[listen]]\nname = \"s\"\naddress = \"/run/app.sock\"\nmode = \"8899\""),
        &["[[listen]] s mode `8899`", "octal"],
    );
}

#[test]
fn a_syslog_address_without_udp_or_tcp_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[log]\nsyslog = \"http://loghost:514\""),
        &["[log] syslog", "udp or tcp"],
    );
    assert_refused(
        &format!("{CONSOLE}[log]\nsyslog = \"udp://loghost\""),
        &["[log] syslog"],
    );
}

#[test]
fn a_plain_http_console_is_refused_unless_allowed() {
    let out = assert_refused(
        "console = \"http://console.example.com\"",
        &[
            "console `http://console.example.com`",
            "allow_insecure_http = true",
        ],
    );
    assert!(out.stderr.contains("https://"), "{}", out.stderr);
}

#[test]
fn a_console_that_is_not_a_url_is_refused() {
    assert_refused(
        "console = \"console.example.com\"",
        &["console", "not a URL"],
    );
}

#[test]
fn a_malformed_proxy_url_never_prints_its_password() {
    let out = assert_refused(
        &format!("{CONSOLE}[proxy]\nurl = \"http://admin:s3cret@proxy host:3128\""),
        &["[proxy] url", "***@"],
    );
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    assert!(!out.stderr.contains("admin"), "{}", out.stderr);
}

#[test]
fn a_zero_timeout_is_refused() {
    assert_refused(
        &format!("{CONSOLE}[timeouts]\nrequest = \"0s\""),
        &["timeouts.request"],
    );
}
