//! Push after idle (issue 8.1): a held `release.json?wait=` request survives
//! every client and server timeout, so a publish after any idle period reaches
//! the agent at once. Short, named limits (`[timeouts]`, `console serve
//! --max-wait`) make "longer than every timeout" a matter of seconds.

use std::time::Duration;

use crate::support::https::Http;
use crate::support::live::Live;
use crate::support::tls::make_test_ca;
use crate::support::{World, run, wait};

/// The console's `--max-wait`: it ends every hold after this and answers 304.
const CONSOLE_MAX_WAIT: &str = "2s";

/// Agent limits, all shorter than [`IDLE`]. The poll interval is long, so
/// only push (never polling or a retry after an error) can beat
/// [`LEARN_DEADLINE`].
const AGENT_LIMITS: &str = "poll_interval = \"120s\"\n\
    [timeouts]\n\
    connect = \"2s\"\n\
    request = \"2s\"\n\
    held_margin = \"1s\"\n\
    max_wait = \"3s\"\n\
    rate_window = \"1s\"\n\
    download = \"30s\"\n\
    [health]\n\
    grace = \"1s\"\n";

/// How long the agent stays idle before the publish, on purpose
/// ([`wait::hold`]): longer than every limit above, which is the claim under
/// test (a hold survives every timeout), not a guess at how long something takes.
/// The longest of them is a held request's whole life, `max_wait` + `held_margin`
/// = 4 s; one more second is enough to be longer than all.
const IDLE: Duration = Duration::from_secs(5);

/// Push is promised within 1 s; this is generous for a loaded machine yet far
/// below what polling (120 s) or a backed-off retry would take.
const LEARN_DEADLINE: Duration = Duration::from_secs(8);

#[test]
fn a_publish_after_an_idle_longer_than_every_timeout_is_pushed_at_once() {
    let live = Live::with_console_args(&["--max-wait", CONSOLE_MAX_WAIT]);
    live.publish_sleeper("1.0.0");
    let agent = live.agent("root", AGENT_LIMITS);
    agent.wait_committed("1.0.0");

    wait::hold(IDLE);
    let status = agent.status();
    assert!(
        status["last_error"].is_null(),
        "a normal hold is no error: {status}"
    );
    let log = agent.log();
    assert!(
        !log.contains("timed out") && !log.contains("unreachable"),
        "held requests were cut while idle:\n{log}"
    );

    let scheduled_before = agent.log().matches("release scheduled").count();
    live.publish_sleeper("2.0.0");
    let learned = wait::until(LEARN_DEADLINE, || {
        (agent.log().matches("release scheduled").count() > scheduled_before).then_some(())
    });
    assert!(
        learned.is_some(),
        "the agent did not learn of 2.0.0 within {LEARN_DEADLINE:?} after {IDLE:?} idle:\n{}",
        agent.log()
    );
    agent.wait_committed("2.0.0");
}

#[test]
fn the_console_ends_a_hold_at_its_max_wait() {
    let live = Live::with_console_args(&["--max-wait", "1s"]);
    live.publish_sleeper("1.0.0");
    let http = Http::new(&live.ca);
    let url = live.console.url_of("/v1/channels/stable/release.json");
    let etag = http.get(&url, &[]).header("etag").to_string();
    // The client's own timeout is 30 s: only the console's 1 s cap ends this.
    let reply = http.get(&format!("{url}?wait=300"), &[("if-none-match", &etag)]);
    assert_eq!(reply.status, 304);
}

#[test]
fn a_bad_max_wait_is_a_usage_error() {
    let w = World::new();
    let ca = make_test_ca(&w.path("tls"));
    let out = run([
        "console",
        "serve",
        "--data",
        &w.path("data").display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &ca.cert_pem.display().to_string(),
        "--tls-key",
        &ca.key_pem.display().to_string(),
        "--max-wait",
        "soon",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--max-wait"), "{}", out.stderr);
}
