//! The fleet page in a real headless browser (issue 12 item 4): Debian's
//! `chromium`, driven over the DevTools protocol, logs in through the form of
//! a real console that real agents report to, and the test reads the live
//! DOM: versions and phases per agent, the real cause of an automatic
//! rollback, a stale marker, filters, sorting, a hostile version shown as
//! text, and the phone-width layout. Screenshots at 1280 and 400 px go to
//! `target/screenshots/`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::support::https::Http;
use crate::support::live::{AgentProcess, AgentSettings, ConsoleProcess, DEADLINE, wait_for};
use crate::support::tls::make_test_ca;
use crate::support::{World, run_ok};

/// The `--admin-token-file` token the browser logs in with.
const TOKEN: &str = "fleet-page-admin-token-0123456789";

/// The console's `--stale-after` here: long enough that agents polling every
/// 2 s never look stale, short enough that a stopped one soon does.
const STALE_AFTER: &str = "20s";

/// A trial that ends fast: a payload that exits is rolled back within a second.
const FAST_TRIAL: &str = "[health]\ngrace = \"1s\"\nmax_failures = 3\n";

/// A version string no release could carry, reported straight to the console.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";

#[test]
fn the_fleet_page_shows_the_fleet_live_and_filters_sorts_and_escapes_it() {
    let Some(chromium) = find_chromium() else {
        println!(
            "fleet_page: SKIPPED: no `chromium` on PATH (scripts/setup-test-deps.sh installs Debian's)"
        );
        return;
    };
    let world = World::new();
    let ca = make_test_ca(&world.path("tls"));
    let data = world.path("console-data");
    fs::create_dir_all(&data).expect("data");
    let token_file = world.path("admin-token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let sleeper = world.script_payload("1.0.0", "exec sleep 1000");
    world.publish(&data, &sleeper, "1.0.0", &[]);
    world.publish(&data, &sleeper, "1.0.0", &["--channel", "beta"]);
    let console = ConsoleProcess::start_with(
        &data,
        &ca,
        "127.0.0.1:0",
        &world.path("console.log"),
        &[
            "--allow-anonymous-reports",
            "--admin-token-file",
            &token_file.display().to_string(),
            "--stale-after",
            STALE_AFTER,
            // Short holds: every agent reports after each check, every few seconds.
            "--max-wait",
            "1s",
        ],
    );
    let agent = |name: &str, extra: &str| {
        AgentProcess::start(
            &world,
            &ca,
            &world.path(name),
            &AgentSettings {
                console: &console.url,
                extra,
            },
        )
    };
    // The steady agent enrolls: the console knows its host name from then on.
    let token = run_ok([
        "console",
        "token",
        "create",
        "--data",
        &data.display().to_string(),
    ]);
    let token_file = world.path("enrollment-token");
    fs::write(&token_file, token.stdout.trim()).expect("enrollment token");
    let steady = agent(
        "steady",
        &format!(
            "enrollment_token_file = \"{}\"\n{FAST_TRIAL}",
            token_file.display()
        ),
    );
    let mut stopped = agent("stopped", FAST_TRIAL);
    let beta = agent("beta", &format!("channel = \"beta\"\n{FAST_TRIAL}"));
    for a in [&steady, &stopped, &beta] {
        a.wait_committed("1.0.0");
    }
    // beta gets a release that dies at once: rolled back by the agent itself.
    let dying = world.script_payload("1.1.0", "echo dying; exit 3");
    world.publish(&data, &dying, "1.1.0", &["--channel", "beta"]);
    beta.wait_until("1.1.0 rolled back and marked bad", || {
        let s = beta.status();
        s["active_version"] == "1.0.0"
            && s["bad_versions"]
                .as_array()
                .is_some_and(|b| b.iter().any(|v| v["version"] == "1.1.0"))
    });
    let ids = [&steady, &stopped, &beta].map(|a| {
        a.status()["agent_id"]
            .as_str()
            .expect("agent id")
            .to_string()
    });
    let [steady_id, stopped_id, beta_id] = &ids;
    stopped.terminate();
    let http = Http::new(&ca);
    let hostile = json!({"version": HOSTILE, "channel": "stable", "phase": "committed"});
    let reply = http.post(
        &console.url_of("/v1/agents/hostile/report"),
        hostile.to_string(),
    );
    assert_eq!(reply.status, 204, "{}", console.stderr());

    // The page's policy forbids inline script; its script is served by the console.
    let bearer = format!("Bearer {TOKEN}");
    let page = http.get(&console.url_of("/"), &[("authorization", &bearer)]);
    let policy = page.header("content-security-policy");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    let script = http.get(&console.url_of("/assets/fleet.js"), &[]);
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").starts_with("text/javascript"));

    let mut browser = Browser::start(&chromium, &world.path("chromium"));
    log_in(&mut browser, &console.url_of("/"));
    browser.wait(
        "the fleet rendered after login",
        "location.pathname === '/' && Number(document.body.dataset.refreshes) >= 1 \
         && document.querySelectorAll('#agents tbody tr[data-agent]').length === 4",
    );

    // Each agent's row: versions, phases, the real cause of the rollback.
    assert_eq!(cell(&mut browser, steady_id, "version"), "1.0.0");
    assert_eq!(cell(&mut browser, steady_id, "phase"), "committed");
    assert_eq!(cell(&mut browser, steady_id, "channel"), "stable");
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    assert_eq!(cell(&mut browser, steady_id, "hostname"), hostname.trim());
    assert_eq!(
        cell(&mut browser, beta_id, "hostname"),
        "—",
        "never enrolled"
    );
    assert_eq!(
        cell(&mut browser, steady_id, "agent_version"),
        env!("CARGO_PKG_VERSION"),
        "the agent build reported"
    );
    assert_eq!(cell(&mut browser, beta_id, "channel"), "beta");
    assert_eq!(cell(&mut browser, beta_id, "version"), "1.0.0");
    assert_eq!(cell(&mut browser, beta_id, "previous_version"), "1.1.0");
    assert_eq!(cell(&mut browser, beta_id, "bad_versions"), "1.1.0");
    let error = cell(&mut browser, beta_id, "last_error");
    assert!(
        error.starts_with("trial") && error.contains("1.1.0 rolled back"),
        "the real cause, not the bad-version note: {error}"
    );
    assert!(!error.contains("marked bad by this agent"), "{error}");
    // Each channel: its current and previous release; no rollout endpoint here.
    assert_eq!(
        channel_part(&mut browser, "beta", "current"),
        "1.1.0 (seq 2)"
    );
    assert_eq!(
        channel_part(&mut browser, "beta", "previous"),
        "1.0.0 (seq 1)"
    );
    assert_eq!(
        channel_part(&mut browser, "stable", "current"),
        "1.0.0 (seq 1)"
    );
    assert_eq!(
        browser.eval("document.querySelector('.no-rollouts').textContent"),
        "No rollouts."
    );

    // A hostile version is text: no element made, no script run.
    assert_eq!(cell(&mut browser, "hostile", "version"), HOSTILE);
    assert_eq!(
        browser.eval("document.querySelectorAll('#agents tbody img, #agents tbody script').length"),
        0
    );
    assert_eq!(browser.eval("typeof window.pwned"), "undefined");

    // Filters narrow the table: by channel, by text, by version.
    set_filter(&mut browser, "filter-channel", "beta");
    assert_eq!(shown(&mut browser), vec![beta_id.clone()]);
    set_filter(&mut browser, "filter-channel", "");
    set_filter(&mut browser, "filter-text", "ROLLED BACK");
    assert_eq!(shown(&mut browser), vec![beta_id.clone()]);
    set_filter(&mut browser, "filter-text", "");
    set_filter(&mut browser, "filter-version", "1.0.0");
    let mut on_one = shown(&mut browser);
    on_one.sort();
    let mut expected = vec![steady_id.clone(), stopped_id.clone(), beta_id.clone()];
    expected.sort();
    assert_eq!(on_one, expected);
    set_filter(&mut browser, "filter-version", "");
    assert_eq!(shown(&mut browser).len(), 4);

    // Sorting by last seen (whole seconds): once the steady agent reported
    // after the stopped one did, and the page has refreshed since, the
    // stopped one sorts before it, and after it on a second click.
    let reported_at = |id: &str| {
        let fleet = http.get(&console.url_of("/v1/fleet"), &[("authorization", &bearer)]);
        fleet
            .json()
            .as_array()
            .expect("fleet")
            .iter()
            .find(|a| a["agent_id"] == id)
            .and_then(|a| a["reported_at"].as_u64())
            .expect("reported_at")
    };
    let last_report = reported_at(stopped_id);
    wait_for(
        "a report of the steady agent after the stopped one's last",
        || reported_at(steady_id) > last_report,
    );
    let refreshes = browser.eval("Number(document.body.dataset.refreshes)");
    browser.wait(
        "a refresh of the page",
        &format!("Number(document.body.dataset.refreshes) > {refreshes}"),
    );
    let seen_times = "[...document.querySelectorAll('#agents tbody tr[data-agent] td[data-col=\"last_seen\"] time')].map(t => t.dateTime)";
    let position = |rows: &[String], id: &str| rows.iter().position(|r| r == id).expect("row");
    let click_last_seen = "document.querySelector('#agents th[data-col=\"last_seen\"] button').click(); \
                           document.querySelector('#agents th[data-col=\"last_seen\"]').getAttribute('aria-sort')";
    assert_eq!(browser.eval(click_last_seen), "ascending");
    let rows = shown(&mut browser);
    assert!(
        position(&rows, stopped_id) < position(&rows, steady_id),
        "{rows:?}"
    );
    let times: Vec<String> = serde_json::from_value(browser.eval(seen_times)).expect("times");
    assert!(times.is_sorted(), "{times:?}");
    assert_eq!(browser.eval(click_last_seen), "descending");
    let rows = shown(&mut browser);
    assert!(
        position(&rows, stopped_id) > position(&rows, steady_id),
        "{rows:?}"
    );
    let times: Vec<String> = serde_json::from_value(browser.eval(seen_times)).expect("times");
    assert!(times.iter().rev().is_sorted(), "{times:?}");

    // The stopped agent turns stale by itself (the page refreshes); the others report on.
    browser.wait(
        "the stale marker on the stopped agent",
        &format!(
            "!!document.querySelector('#agents tr.stale[data-agent=\"{stopped_id}\"] .stale-marker')"
        ),
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('#agents tr[data-agent=\"{steady_id}\"]').classList.contains('stale')"
        )),
        false,
        "an agent that reports every few seconds is not stale"
    );
    set_filter(&mut browser, "filter-state", "stale");
    let stale = shown(&mut browser);
    assert!(
        stale.contains(stopped_id) && !stale.contains(steady_id),
        "{stale:?}"
    );
    set_filter(&mut browser, "filter-state", "");

    // Rollouts as the /v1/rollouts contract gives them (that endpoint is
    // another branch's: the browser's requests to it are answered here):
    // wave bars, a halt banner whose reason is text, the buttons by state.
    browser.serve_rollouts(&rollouts_fixture());
    browser.wait(
        "the rollouts rendered",
        "!!document.querySelector('.channel[data-channel=\"stable\"] .rollout[data-state=\"running\"]')",
    );
    let count = |browser: &mut Browser, channel: &str, percent: u32, part: &str| {
        let js = format!(
            "(document.querySelector('.channel[data-channel=\"{channel}\"] .wave[data-percent=\"{percent}\"] .seg-{part}') || {{dataset: {{}}}}).dataset.count || '0'"
        );
        browser.eval(&js).as_str().unwrap_or_default().to_string()
    };
    for (part, expected) in [
        ("committed", "4"),
        ("trial", "2"),
        ("staging", "1"),
        ("failed", "1"),
        ("notyet", "2"),
    ] {
        assert_eq!(count(&mut browser, "stable", 10, part), expected, "{part}");
    }
    assert_eq!(count(&mut browser, "stable", 1, "committed"), "1");
    assert_eq!(
        count(&mut browser, "stable", 50, "committed"),
        "0",
        "not yet open"
    );
    let halt =
        browser.eval("document.querySelector('.channel[data-channel=\"beta\"] .halt').textContent");
    assert_eq!(halt, json!(format!("Halted: {HOSTILE}")));
    assert_eq!(
        browser.eval("document.querySelectorAll('.rollout img, .rollout script').length"),
        0
    );
    let buttons = |browser: &mut Browser, channel: &str| {
        let js = format!(
            "[...document.querySelectorAll('.channel[data-channel=\"{channel}\"] .actions button')].map(b => b.dataset.action).join(' ')"
        );
        browser.eval(&js)
    };
    assert_eq!(buttons(&mut browser, "stable"), "pause abort");
    assert_eq!(buttons(&mut browser, "beta"), "resume abort");
    assert_eq!(
        buttons(&mut browser, "edge"),
        "abort",
        "a rollout with only a channel still renders"
    );
    // The pause button posts the session's CSRF token, as the page's forms do.
    let csrf = browser.eval("document.querySelector('input[name=csrf]').value");
    browser.eval("document.querySelector('.channel[data-channel=\"stable\"] button.rollout-pause').click(); true");
    browser.wait(
        "the pause answered",
        "document.getElementById('status').textContent.includes('pause stable: done')",
    );
    let posted: Vec<&Value> = browser
        .rollout_requests
        .iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(
        posted[0]["url"],
        console.url_of("/v1/rollouts/stable/pause")
    );
    assert_eq!(
        posted[0]["postData"],
        json!(format!("csrf={}", csrf.as_str().expect("csrf")))
    );

    let shots = screenshots_dir();
    let wide = shots.join("fleet-page-1280.png");
    browser.screenshot(&wide);
    // Phone width: rows become cards, nothing wider than the screen.
    browser.size(400, 860, true);
    browser.wait(
        "the card layout",
        "getComputedStyle(document.querySelector('#agents thead')).display === 'none'",
    );
    let overflow = browser.eval("document.documentElement.scrollWidth");
    assert!(
        overflow.as_u64().is_some_and(|w| w <= 400),
        "the page is {overflow} px wide at 400"
    );
    let narrow = shots.join("fleet-page-400.png");
    browser.screenshot(&narrow);
    println!(
        "fleet_page: screenshots {} and {}",
        wide.display(),
        narrow.display()
    );

    let errors = browser.eval("window.__pageErrors");
    assert_eq!(errors, json!([]), "script errors or CSP violations");
    drop(beta);
    drop(steady);
}

/// The pause and resume buttons against a real console with a real rollout
/// in progress (ten simulated agents, `bankswap simulate-agents`), checked
/// through `/v1/rollouts` rather than through what the page says.
#[test]
fn the_pause_and_resume_buttons_act_on_a_real_rollout() {
    let Some(chromium) = find_chromium() else {
        println!("fleet_page: SKIPPED: no `chromium` on PATH");
        return;
    };
    let world = World::new();
    let ca = make_test_ca(&world.path("tls"));
    let data = world.path("console-data");
    let token_file = world.path("admin-token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let payload = world.payload("1.0.0", 2, 100);
    world.publish(&data, &payload, "1.0.0", &[]);
    let console = ConsoleProcess::start_with(
        &data,
        &ca,
        "127.0.0.1:0",
        &world.path("console.log"),
        &[
            "--allow-anonymous-reports",
            "--admin-token-file",
            &token_file.display().to_string(),
        ],
    );
    let mut simulated = KillOnDrop(
        crate::support::bankswap()
            .args(["simulate-agents", "--console", &console.url, "--ca-cert"])
            .arg(&ca.ca_pem)
            .args(["--trust", &world.public("release")])
            .args(["--agents", "10", "--prefix", "page"])
            .args(["--version", "1.0.0", "--sequence", "1", "--wait", "20s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulate-agents"),
    );
    let http = Http::new(&ca);
    let get = |path: &str| -> Value {
        http.send(
            reqwest::Method::GET,
            &console.url_of(path),
            Some(TOKEN),
            b"",
        )
        .json()
    };
    wait_for("ten simulated agents reporting", || {
        get("/v1/fleet").as_array().is_some_and(|a| a.len() == 10)
    });
    // A long soak: the rollout stays running (wave 10 %) while the test clicks.
    let next = world.payload("2.0.0", 2, 100);
    world.publish(
        &data,
        &next,
        "2.0.0",
        &["--waves", "10%,100%", "--soak", "10m"],
    );
    let state = |get: &dyn Fn(&str) -> Value| {
        get("/v1/rollouts")["rollouts"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    wait_for("the rollout running", || state(&get) == "running");

    let mut browser = Browser::start(&chromium, &world.path("chromium"));
    log_in(&mut browser, &console.url_of("/"));
    browser.wait(
        "the running rollout on the page",
        "!!document.querySelector('.channel[data-channel=\"stable\"] button.rollout-pause')",
    );
    browser.eval("document.querySelector('.channel[data-channel=\"stable\"] button.rollout-pause').click(); true");
    wait_for("the console's rollout paused by the button", || {
        state(&get) == "paused"
    });
    browser.wait(
        "the resume button",
        "!!document.querySelector('.channel[data-channel=\"stable\"] button.rollout-resume')",
    );
    let paused = get("/v1/rollouts")["rollouts"][0].clone();
    assert!(
        paused["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("paused by")))),
        "{paused:#}"
    );
    browser.eval("document.querySelector('.channel[data-channel=\"stable\"] button.rollout-resume').click(); true");
    wait_for("the console's rollout resumed by the button", || {
        state(&get) == "running"
    });
    let errors = browser.eval("window.__pageErrors");
    assert_eq!(errors, json!([]), "script errors or CSP violations");
    let _ = simulated.0.kill();
}

/// A child process killed when the test ends, whatever happens.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `/v1/rollouts` answer in the agreed shape: a running rollout on stable,
/// a halted one on beta whose reason is hostile text, and one on a channel
/// with nothing but its name (every other field missing).
fn rollouts_fixture() -> Value {
    json!({"rollouts": [
        {
            "channel": "stable", "sequence": 12, "version": "1.5.0", "previous_version": "1.4.2",
            "state": "running", "halt_reason": null, "success": 0.95, "halt_on": 0.05, "soak_secs": 600,
            "waves": [
                {"percent": 1, "state": "done", "admitted": 1, "committed": 1, "trial": 0, "staging": 0, "failed": 0, "pending": 0},
                {"percent": 10, "state": "open", "admitted": 10, "committed": 4, "trial": 2, "staging": 1, "failed": 1, "pending": 2},
                {"percent": 50, "state": "waiting", "admitted": 0, "committed": 0, "trial": 0, "staging": 0, "failed": 0, "pending": 0},
            ],
            "events": [{"at": "2026-12-02T01:00:00Z", "text": "wave 10% opened"}],
        },
        {
            "channel": "beta", "sequence": 3, "version": "1.1.0", "previous_version": "1.0.0",
            "state": "halted", "halt_reason": HOSTILE, "success": 0.95, "halt_on": 0.05, "soak_secs": 60,
            "waves": [{"percent": 1, "state": "open", "admitted": 1, "committed": 0, "trial": 0, "staging": 0, "failed": 1, "pending": 0}],
            "events": [{"at": "2026-12-02T01:01:00Z", "text": "halted: 1 of 1 failed"}],
        },
        {"channel": "edge"},
    ]})
}

/// The text of one agent's cell (`col` is the column key), "" if absent.
/// At 1280x900, opens `url` (the console's `/`) and logs in with the admin token.
fn log_in(browser: &mut Browser, url: &str) {
    browser.size(1280, 900, false);
    browser.navigate(url);
    browser.wait(
        "the login form",
        "!!document.querySelector('input[name=token]')",
    );
    browser.eval(&format!(
        "document.querySelector('input[name=token]').value = {}; document.querySelector('form').submit(); true",
        json!(TOKEN)
    ));
}

fn cell(browser: &mut Browser, id: &str, col: &str) -> String {
    let js = format!(
        "(document.querySelector('#agents tr[data-agent=\"{id}\"] td[data-col=\"{col}\"]') || {{}}).textContent"
    );
    browser.eval(&js).as_str().unwrap_or_default().to_string()
}

/// The text of one part (`current`, `previous`) of a channel's card.
fn channel_part(browser: &mut Browser, name: &str, part: &str) -> String {
    let js = format!(
        "(document.querySelector('.channel[data-channel=\"{name}\"] .{part}') || {{}}).textContent"
    );
    browser.eval(&js).as_str().unwrap_or_default().to_string()
}

/// Sets a filter (a select or the search field) as a user would.
fn set_filter(browser: &mut Browser, id: &str, value: &str) {
    browser.eval(&format!(
        "(() => {{ const e = document.getElementById({}); e.value = {}; \
         e.dispatchEvent(new Event(e.tagName === 'INPUT' ? 'input' : 'change')); return true; }})()",
        json!(id),
        json!(value)
    ));
}

/// The ids of the agent rows shown, top to bottom.
fn shown(browser: &mut Browser) -> Vec<String> {
    let rows = browser.eval(
        "[...document.querySelectorAll('#agents tbody tr[data-agent]')].map(r => r.dataset.agent)",
    );
    serde_json::from_value(rows).expect("agent ids")
}

/// `chromium` on PATH, if installed.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// `target/screenshots/`, created.
fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots");
    fs::create_dir_all(&dir).expect("screenshots folder");
    dir
}

/// Caught on every page before its own script runs: uncaught errors and CSP
/// violations, read back at the end of the test.
const ERROR_TRAP: &str = "window.__pageErrors = []; \
    addEventListener('error', e => window.__pageErrors.push(String(e.message))); \
    addEventListener('securitypolicyviolation', e => window.__pageErrors.push('CSP: ' + e.violatedDirective));";

/// A headless Chromium and one page in it, over the DevTools websocket;
/// killed when dropped.
struct Browser {
    /// The browser process.
    child: Child,
    /// The browser's DevTools socket.
    socket: WebSocket<TcpStream>,
    /// The page's DevTools session.
    session: String,
    /// The id of the next command.
    next_id: u64,
    /// What `GET /v1/rollouts` answers once [`Browser::serve_rollouts`] is
    /// called (the endpoint is another branch's): requests to it are paused
    /// by the browser and answered here.
    rollouts: Option<String>,
    /// The requests to `/v1/rollouts…` answered so far: `{url, method, postData}`.
    rollout_requests: Vec<Value>,
}

impl Browser {
    /// Starts Chromium with its profile in `profile` and opens a blank page.
    fn start(chromium: &Path, profile: &Path) -> Browser {
        fs::create_dir_all(profile).expect("profile");
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--ignore-certificate-errors",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium refuses to start its sandbox as root.
            command.arg("--no-sandbox");
        }
        let mut child = command.arg("about:blank").spawn().expect("chromium starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, found) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split_whitespace().find(|w| w.starts_with("ws://")) {
                    let _ = lines.send(url.to_string());
                }
            }
        });
        let url = found
            .recv_timeout(DEADLINE)
            .expect("chromium prints its DevTools address");
        let address = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_string();
        let stream = TcpStream::connect(&address).expect("DevTools socket");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 1,
            rollouts: None,
            rollout_requests: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}), false);
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            false,
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Page.enable", json!({}), true);
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": ERROR_TRAP}),
            true,
        );
        browser
    }

    /// Sends one command (to the page's session when `on_page`) and returns its result.
    fn call(&mut self, method: &str, params: Value, on_page: bool) -> Value {
        self.try_call(method, params, on_page)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Like [`Browser::call`]; a protocol error is returned, not a failure.
    fn try_call(&mut self, method: &str, params: Value, on_page: bool) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if on_page {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to DevTools");
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let Message::Text(text) = self.socket.read().expect("read from DevTools") else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["method"] == "Fetch.requestPaused" {
                self.answer_rollouts(&answer["params"]);
                continue;
            }
            if answer["id"] != json!(id) {
                continue; // an event, or the answer to another command
            }
            return match answer.get("error") {
                Some(error) => Err(error.clone()),
                None => Ok(answer["result"].clone()),
            };
        }
    }

    /// From now on answers `GET /v1/rollouts` with `body` and every `POST
    /// /v1/rollouts/…` with 200, recording each request.
    fn serve_rollouts(&mut self, body: &Value) {
        self.rollouts = Some(body.to_string());
        self.call(
            "Fetch.enable",
            json!({"patterns": [{"urlPattern": "*/v1/rollouts*", "requestStage": "Request"}]}),
            true,
        );
    }

    /// Answers one paused request (sent, not awaited: the answer to the
    /// command is skipped like any other message).
    fn answer_rollouts(&mut self, paused: &Value) {
        let request = &paused["request"];
        self.rollout_requests.push(json!({
            "url": request["url"], "method": request["method"], "postData": request["postData"],
        }));
        let body = match request["method"].as_str() {
            Some("GET") => self.rollouts.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let id = self.next_id;
        self.next_id += 1;
        let fulfil = json!({
            "id": id,
            "method": "Fetch.fulfillRequest",
            "sessionId": self.session,
            "params": {
                "requestId": paused["requestId"],
                "responseCode": 200,
                "responseHeaders": [{"name": "Content-Type", "value": "application/json"}],
                "body": base64::engine::general_purpose::STANDARD.encode(body),
            },
        });
        self.socket
            .send(Message::text(fulfil.to_string()))
            .expect("send to DevTools");
    }

    /// Evaluates `expression` in the page; its value, or the exception as an error.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.try_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            true,
        )?;
        match result.get("exceptionDetails") {
            Some(details) => Err(details.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` in the page, which must not throw.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("`{expression}` failed: {e}"))
    }

    /// Waits until `condition` is true in the page (while a page loads, an
    /// evaluation may fail: that is "not yet").
    fn wait(&mut self, what: &str, condition: &str) {
        wait_for(what, || self.try_eval(condition) == Ok(json!(true)));
    }

    /// Loads `url`.
    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}), true);
    }

    /// Sets the viewport (a phone's when `mobile`).
    fn size(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
            true,
        );
    }

    /// Saves the whole page as a PNG at `path`.
    fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
            true,
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        fs::write(path, png).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
