//! Rollouts in waves end to end (SPEC §11, issue 12): a real console, releases
//! published with `publish --waves --to DATA`, and a fleet of 50 agents from
//! `bankswap simulate-agents` (the agent's own check, verification and
//! reports over HTTPS, with the payload pretended: real supervisors are too
//! heavy for 50 on this machine), plus one story with three real `bankswap
//! run` agents and a payload that exits at once.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::console::AdminConsole;
use crate::support::live::{AgentProcess, AgentSettings, wait_for};
use crate::support::{bankswap, run, run_ok};

/// The `--admin-token-file` token.
const TOKEN: &str = "the-admin-token-of-the-rollout-tests";

/// A console over a data folder holding release 1.0.0 (sequence 1).
struct Fleet(AdminConsole);

impl std::ops::Deref for Fleet {
    type Target = AdminConsole;

    fn deref(&self) -> &AdminConsole {
        &self.0
    }
}

/// A running `simulate-agents` and the JSON lines it printed.
struct Simulated {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Simulated {
    /// How many lines have `event` (and `version`, if given).
    fn count(&self, event: &str, version: &str) -> usize {
        self.lines
            .lock()
            .expect("as set up")
            .iter()
            .filter(|l| l["event"] == event && l["version"] == version)
            .count()
    }
}

impl Simulated {
    /// The agents that had a line of `event` for `version`, sorted.
    fn agents(&self, event: &str, version: &str) -> Vec<String> {
        let mut agents: Vec<String> = self
            .lines
            .lock()
            .expect("as set up")
            .iter()
            .filter(|l| l["event"] == event && l["version"] == version)
            .filter_map(|l| l["agent"].as_str().map(String::from))
            .collect();
        agents.sort();
        agents
    }
}

/// The admission hash of SPEC §11, computed here independently of the
/// console: the first 8 bytes of SHA-256 over `id`, `:` and the sequence.
fn admission_hash(agent: &str, sequence: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(agent.as_bytes())
        .chain_update(b":")
        .chain_update(sequence.to_be_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The agents `prefix-00000` .. of a simulated fleet of `n` that a first
/// wave of `percent` admits for release `sequence`: the `ceil(percent × n)`
/// lowest hashes, and any in the lowest `percent` of the hash space.
fn first_wave(prefix: &str, n: u32, percent: u64, sequence: u64) -> Vec<String> {
    let fleet: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    let mut hashes: Vec<u64> = fleet.iter().map(|a| admission_hash(a, sequence)).collect();
    hashes.sort_unstable();
    let needed = (u64::from(n) * percent).div_ceil(100) as usize;
    let by_share = (u128::from(u64::MAX) * u128::from(percent) / 100) as u64;
    let threshold = (hashes[needed - 1] + 1).max(by_share);
    let mut wave: Vec<String> = fleet
        .into_iter()
        .filter(|a| admission_hash(a, sequence) < threshold)
        .collect();
    wave.sort();
    wave
}

impl Drop for Simulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    fn start() -> Fleet {
        Fleet(AdminConsole::start(TOKEN))
    }

    /// Starts `n` simulated agents running 1.0.0 (sequence 1); `fail` lists versions whose trial fails.
    fn simulate(&self, prefix: &str, n: u32, fail: &[&str]) -> Simulated {
        let mut command = bankswap();
        command
            .args([
                "simulate-agents",
                "--console",
                &self.console.url,
                "--ca-cert",
            ])
            .arg(&self.ca.ca_pem)
            .args(["--trust", &self.world.public("release")])
            .args(["--agents", &n.to_string(), "--prefix", prefix])
            .args(["--version", "1.0.0", "--sequence", "1", "--wait", "20s"]);
        for version in fail {
            command.args(["--fail", version]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("as set up");
        let stdout = child.stdout.take().expect("as set up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line) {
                    sink.lock().expect("lines lock").push(value);
                }
            }
        });
        let simulated = Simulated { child, lines };
        // Every agent has reported and asked for the manifest (it holds the next request).
        wait_for(&format!("{n} `{prefix}` agents reporting"), || {
            let fleet = self.get("/v1/fleet");
            fleet.as_array().is_some_and(|a| {
                a.iter()
                    .filter(|e| e["agent_id"].as_str().unwrap_or("").starts_with(prefix))
                    .count()
                    == n as usize
            })
        });
        simulated
    }

    /// GET with the admin token, as JSON.
    fn get(&self, path: &str) -> Value {
        let reply = self.http.send(
            reqwest::Method::GET,
            &self.console.url_of(path),
            Some(TOKEN),
            b"",
        );
        assert_eq!(reply.status, 200, "{path}: {}", self.console.stderr());
        reply.json()
    }

    /// The rollout of `stable`.
    fn rollout(&self) -> Value {
        self.get("/v1/rollouts")["rollouts"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["channel"] == "stable").cloned())
            .unwrap_or(Value::Null)
    }

    /// Waits until the rollout of `stable` satisfies `condition`.
    fn wait_rollout(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, || condition(&self.rollout()));
        self.rollout()
    }

    /// `publish --waves ... --to DATA` of a payload of `version`, soaking 1 s.
    fn publish_waves(&self, version: &str, waves: &str) {
        self.publish_soaking(version, waves, "1s");
    }

    /// `publish --waves ... --soak SOAK --to DATA` of a payload of `version`.
    fn publish_soaking(&self, version: &str, waves: &str, soak: &str) {
        let payload = self.world.payload(version, 2, 100);
        self.world.publish(
            &self.data,
            &payload,
            version,
            &["--waves", waves, "--soak", soak, "--report-deadline", "10m"],
        );
    }

    /// `console rollout ARGS --console URL --token-file F --ca-cert CA`.
    fn rollout_command(&self, args: &[&str]) -> crate::support::Run {
        let mut all: Vec<String> = ["console", "rollout"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend([
            "--console".into(),
            self.console.url.clone(),
            "--token-file".into(),
            self.token_file.display().to_string(),
            "--ca-cert".into(),
            self.ca.ca_pem.display().to_string(),
        ]);
        run(all)
    }
}

fn sum(rollout: &Value, field: &str) -> u64 {
    rollout["waves"]
        .as_array()
        .expect("as set up")
        .iter()
        .map(|w| w[field].as_u64().expect("as set up"))
        .sum()
}

fn events(rollout: &Value) -> String {
    rollout["events"]
        .as_array()
        .expect("as set up")
        .iter()
        .map(|e| e["text"].as_str().expect("as set up").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_good_release_opens_wave_after_wave_and_reaches_the_whole_fleet() {
    let fleet = Fleet::start();
    let sim = fleet.simulate("good", 50, &[]);
    fleet.publish_waves("2.0.0", "1%,10%,50%,100%");
    // Complete once the last wave meets its success threshold (95 %): the last
    // agents may still be reporting then.
    let done = fleet.wait_rollout("the rollout to complete with every agent", |r| {
        r["state"] == "complete" && sum(r, "committed") == 50
    });
    assert_eq!(sum(&done, "failed"), 0);
    assert_eq!(done["previous_version"], "1.0.0");
    let waves: Vec<u64> = done["waves"]
        .as_array()
        .expect("as set up")
        .iter()
        .map(|w| w["admitted"].as_u64().expect("as set up"))
        .collect();
    assert_eq!(waves.len(), 4);
    let first = first_wave("good", 50, 1, 2);
    assert_eq!(waves[0], first.len() as u64, "the 1 % wave: {first:?}");
    let log = events(&done);
    for wave in [
        "wave 10% opened",
        "wave 50% opened",
        "wave 100% opened",
        // At the success threshold of the last wave: 48 or more of 50.
        "complete: ",
    ] {
        assert!(log.contains(wave), "{wave} missing from:\n{log}");
    }
    wait_for("every simulated agent committed 2.0.0", || {
        sim.count("committed", "2.0.0") == 50
    });
    let status = fleet.rollout_command(&["status", "stable"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("complete") && status.stdout.contains("wave 100%"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_release_that_fails_its_trial_halts_after_the_first_wave_and_aborts_into_the_rollback() {
    let fleet = Fleet::start();
    let sim = fleet.simulate("bad", 50, &["2.0.0"]);
    fleet.publish_waves("2.0.0", "1%,10%,50%,100%");
    let halted = fleet.wait_rollout("the rollout to halt", |r| r["state"] == "halted");
    // The first wave is exactly the agents the hash admits of the reporting
    // fleet, however many had asked for the manifest when the plan opened.
    assert_eq!(halted["sequence"], 2);
    let wave = first_wave("bad", 50, 1, 2);
    let first = wave.len() as u64;
    assert_eq!(
        halted["waves"][0]["admitted"], first,
        "{wave:?}: {halted:#}"
    );
    assert_eq!(halted["waves"][0]["failed"].as_u64(), Some(first));
    assert_eq!(halted["waves"][1]["admitted"], 0);
    let reason = halted["halt_reason"].as_str().expect("as set up");
    assert!(
        reason.contains(&format!(
            "{first} of {first} admitted agents rolled back or failed"
        )),
        "{reason}"
    );
    assert!(
        reason.contains("simulated payload exited at once"),
        "the cause: {reason}"
    );
    assert!(events(&halted).contains("halted:"));
    assert!(
        fleet.console.stderr().contains("rollout halted"),
        "an event in the console log"
    );
    // Only the first wave's agents ever got the release, and every one tried it.
    assert_eq!(sim.agents("received", "2.0.0"), wave);
    wait_for("every first-wave agent to report its rollback", || {
        sim.agents("failed", "2.0.0") == wave
    });
    let status = fleet.rollout_command(&["status", "stable"]);
    assert!(
        status
            .stdout
            .contains(&format!("halted because: {first} of {first}")),
        "{}",
        status.stdout
    );

    // Abort with the rollback publish --waves prepared: 1.0.0 as sequence 3, for everyone.
    let aborted = fleet.rollout_command(&["abort", "stable", "--rollback", "--json"]);
    assert_eq!(aborted.code, 0, "{}", aborted.stderr);
    let aborted: Value = serde_json::from_str(&aborted.stdout).expect("as set up");
    assert_eq!(aborted["state"], "aborted");
    assert!(events(&aborted).contains("rollback to 1.0.0 published as sequence 3"));
    let manifest: Value = serde_json::from_slice(
        &fs::read(fleet.data.join("v1/channels/stable/release.json")).expect("as set up"),
    )
    .expect("as set up");
    assert_eq!(
        (
            manifest["version"].as_str(),
            manifest["sequence"].as_u64(),
            manifest["downgrade"].as_bool()
        ),
        (Some("1.0.0"), Some(3), Some(true))
    );
    // The agents that tried 2.0.0 stay back; nobody else ever got it.
    assert_eq!(sim.agents("received", "2.0.0"), wave);
    assert_eq!(sim.count("committed", "2.0.0"), 0);
}

#[test]
fn pause_resume_and_abort_behave_and_a_paused_rollout_admits_nobody() {
    let fleet = Fleet::start();
    let sim = fleet.simulate("ops", 50, &[]);
    fleet.publish_waves("2.0.0", "10%,100%");
    let paused = fleet.rollout_command(&["pause", "stable", "--json"]);
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    // The first wave commits; the gate would open the next one, but it is paused.
    let waiting = fleet.wait_rollout("the paused gate to hold the next wave", |r| {
        r["gate"]
            .as_str()
            .is_some_and(|g| g.contains("stays shut until resumed"))
    });
    assert_eq!(waiting["state"], "paused");
    let first = waiting["waves"][0]["admitted"].as_u64().expect("as set up") as usize;
    assert!((5..=10).contains(&first), "about 10 % of 50: {waiting:#}");
    assert_eq!(
        waiting["waves"][0]["committed"]
            .as_u64()
            .expect("as set up") as usize,
        first
    );
    assert_eq!(waiting["waves"][1]["admitted"], 0);
    assert_eq!(sim.count("received", "2.0.0"), first);
    // A newcomer while paused is not admitted either.
    let late = fleet.simulate("late", 5, &[]);
    let still = fleet.rollout();
    assert_eq!(
        still["waves"][0]["admitted"].as_u64().expect("as set up") as usize,
        first,
        "{still:#}"
    );
    assert_eq!(late.count("received", "2.0.0"), 0);
    // Pausing twice says why not.
    let again = fleet.rollout_command(&["pause", "stable"]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("is paused; pause applies to a running rollout"),
        "{}",
        again.stderr
    );

    assert_eq!(fleet.rollout_command(&["resume", "stable"]).code, 0);
    fleet.wait_rollout("the rollout to complete after resume", |r| {
        r["state"] == "complete"
    });
    wait_for("all 55 agents committed", || {
        sim.count("committed", "2.0.0") + late.count("committed", "2.0.0") == 55
    });
    let done = fleet.rollout_command(&["abort", "stable"]);
    assert_eq!(done.code, 1, "a complete rollout cannot be aborted");

    // Abort without rollback: agents that did not take 3.0.0 keep getting 2.0.0.
    // A long soak: the next wave cannot open before the abort.
    fleet.publish_soaking("3.0.0", "10%,100%", "10m");
    let wave = fleet.wait_rollout("wave 1 of 3.0.0 to commit", |r| {
        r["version"] == "3.0.0"
            && r["waves"][0]["admitted"].as_u64() > Some(0)
            && r["waves"][0]["committed"] == r["waves"][0]["admitted"]
    });
    assert_eq!(wave["previous_version"], "2.0.0");
    let first = wave["waves"][0]["admitted"].as_u64().expect("as set up") as usize;
    assert_eq!(fleet.rollout_command(&["abort", "stable"]).code, 0);
    let anonymous = fleet.http.get(
        &fleet.console.url_of("/v1/channels/stable/release.json"),
        &[],
    );
    assert_eq!(anonymous.json()["version"], "2.0.0");
    let taken = sim.count("received", "3.0.0") + late.count("received", "3.0.0");
    assert_eq!(taken, first, "only the first wave took it");
}

#[test]
fn the_rollout_routes_need_an_admin_and_the_session_csrf_token() {
    let fleet = Fleet::start();
    fleet.publish_waves("2.0.0", "50%,100%");
    let url = fleet.console.url_of("/v1/rollouts");
    assert_eq!(fleet.http.get(&url, &[]).status, 401);
    let pause = fleet.console.url_of("/v1/rollouts/stable/pause");
    assert_eq!(fleet.http.post(&pause, "").status, 401);
    // A browser session without the CSRF token is refused; with it, the action runs.
    let login = fleet.http.call(
        reqwest::Method::POST,
        &fleet.console.url_of("/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={TOKEN}").as_bytes(),
    );
    let cookie = login
        .header("set-cookie")
        .split(';')
        .next()
        .expect("as set up")
        .to_string();
    let page = fleet
        .http
        .get(&fleet.console.url_of("/"), &[("cookie", &cookie)]);
    let body = String::from_utf8_lossy(&page.body).into_owned();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries the session's CSRF token")
        .to_string();
    let form = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let forged = fleet
        .http
        .call(reqwest::Method::POST, &pause, &form, b"csrf=forged");
    assert_eq!(forged.status, 403);
    assert_eq!(fleet.rollout()["state"], "running");
    let done = fleet.http.call(
        reqwest::Method::POST,
        &pause,
        &form,
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!((done.status, done.header("location")), (303, "/"));
    assert_eq!(fleet.rollout()["state"], "paused");
    let unknown = fleet.rollout_command(&["pause", "nosuch"]);
    assert!(
        unknown.stderr.contains("channel nosuch has no rollout"),
        "{}",
        unknown.stderr
    );
    let offline = run_ok([
        "console",
        "rollout",
        "status",
        "--data",
        &fleet.data.display().to_string(),
        "--json",
    ]);
    assert!(
        offline.stdout.contains("\"state\": \"paused\""),
        "{}",
        offline.stdout
    );
}

/// Three real agents; the release's payload exits at once.
#[test]
fn real_agents_a_crashing_release_halts_after_one_agent_and_the_others_never_download_it() {
    let fleet = Fleet::start();
    let agents: Vec<AgentProcess> = (0..3)
        .map(|i| {
            AgentProcess::start(
                &fleet.world,
                &fleet.ca,
                &fleet.world.path(&format!("root{i}")),
                &AgentSettings {
                    console: &fleet.console.url,
                    extra: "[health]\ngrace = \"1s\"\n",
                },
            )
        })
        .collect();
    for agent in &agents {
        agent.wait_committed("1.0.0");
        // It has asked for the manifest with its id: the console knows it.
        agent.wait_until("a check", || !agent.status()["last_check"].is_null());
    }
    let payload = fleet.world.script_payload("2.0.0", "echo crashing; exit 3");
    fleet.world.publish(
        &fleet.data,
        &payload,
        "2.0.0",
        &["--waves", "1%,100%", "--soak", "1s"],
    );
    let halted = fleet.wait_rollout("the rollout to halt", |r| r["state"] == "halted");
    assert_eq!(halted["waves"][0]["admitted"], 1, "{halted:#}");
    assert!(
        halted["halt_reason"]
            .as_str()
            .expect("as set up")
            .contains("2.0.0"),
        "{halted:#}"
    );
    let mut tried = 0;
    for agent in &agents {
        let status = agent.status();
        assert_eq!(
            status["active_version"], "1.0.0",
            "every agent runs 1.0.0: {status:#}"
        );
        if status["sequence"] == 2 {
            tried += 1;
            assert!(agent.log().contains("trial failed"), "{}", agent.log());
        } else {
            assert_eq!(status["sequence"], 1);
            assert!(status["pending"].is_null(), "{status:#}");
            assert!(
                !agent.log().contains("2.0.0"),
                "never heard of 2.0.0: {}",
                agent.log()
            );
            assert!(
                status["previous_version"].is_null(),
                "nothing staged: {status:#}"
            );
        }
    }
    assert_eq!(tried, 1);
}

#[test]
fn publish_waves_to_a_console_uploads_the_plan_and_the_signed_rollback() {
    let fleet = Fleet::start();
    let payload = fleet.world.payload("2.0.0", 2, 100);
    let published = run([
        "publish",
        "--key",
        &fleet.world.secret("release"),
        "--console",
        &fleet.console.url,
        "--ca-cert",
        &fleet.ca.ca_pem.display().to_string(),
        "--token-file",
        &fleet.token_file.display().to_string(),
        "--payload",
        &payload.display().to_string(),
        "--version",
        "2.0.0",
        "--entrypoint",
        "bin/app",
        "--waves",
        "20%,100%",
        "--success",
        "90%",
        "--halt-on",
        "10%",
        "--soak",
        "10m",
    ]);
    assert_eq!(published.code, 0, "{}", published.stderr);
    assert!(
        published.stdout.contains("rolling out in waves 20%,100%"),
        "{}",
        published.stdout
    );
    let rollout = fleet.rollout();
    assert_eq!(
        (rollout["state"].as_str(), rollout["version"].as_str()),
        (Some("running"), Some("2.0.0")),
        "{rollout:#}"
    );
    assert_eq!(
        (
            rollout["success"].as_f64(),
            rollout["halt_on"].as_f64(),
            rollout["soak_secs"].as_u64()
        ),
        (Some(0.9), Some(0.1), Some(600))
    );
    assert_eq!(rollout["previous_version"], "1.0.0");
    // Nobody has asked yet: an anonymous request is not admitted, and gets 1.0.0.
    let anonymous = fleet.http.get(
        &fleet.console.url_of("/v1/channels/stable/release.json"),
        &[],
    );
    assert_eq!(anonymous.json()["version"], "1.0.0");
    let aborted = fleet.rollout_command(&["abort", "stable", "--rollback", "--json"]);
    assert_eq!(aborted.code, 0, "{}", aborted.stderr);
    let current = fleet
        .http
        .get(
            &fleet.console.url_of("/v1/channels/stable/release.json"),
            &[],
        )
        .json();
    assert_eq!(
        (current["version"].as_str(), current["sequence"].as_u64()),
        (Some("1.0.0"), Some(3))
    );
    // A bad flag is a usage error that names it.
    let bad = run([
        "publish",
        "--key",
        &fleet.world.secret("release"),
        "--to",
        &fleet.data.display().to_string(),
        "--payload",
        &payload.display().to_string(),
        "--version",
        "4.0.0",
        "--entrypoint",
        "bin/app",
        "--waves",
        "50%,10%",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.starts_with("error: --waves: waves must grow"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_suspended_channel_admits_nobody_until_resumed_and_the_suspension_is_kept_on_disk() {
    let fleet = Fleet::start();
    let sim = fleet.simulate("held", 20, &[]);
    let channel_command = |action: &str| {
        run([
            "console",
            "channel",
            action,
            "stable",
            "--console",
            &fleet.console.url,
            "--token-file",
            &fleet.token_file.display().to_string(),
            "--ca-cert",
            &fleet.ca.ca_pem.display().to_string(),
        ])
    };
    // Admins only, as the rollout actions.
    let anonymous = fleet
        .http
        .post(&fleet.console.url_of("/v1/suspensions/stable/suspend"), "");
    assert_eq!(anonymous.status, 401);
    let suspended = channel_command("suspend");
    assert_eq!(suspended.code, 0, "{}", suspended.stderr);
    assert!(
        suspended.stdout.contains("channel stable suspended by"),
        "{}",
        suspended.stdout
    );
    let again = channel_command("suspend");
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("already suspended"),
        "{}",
        again.stderr
    );

    fleet.publish_waves("2.0.0", "50%,100%");
    let rollout = fleet.wait_rollout("the rollout of 2.0.0", |r| r["version"] == "2.0.0");
    assert!(rollout["suspended"]["by"].is_string(), "{rollout:#}");
    assert!(
        fleet.get("/v1/rollouts")["suspended"]["stable"].is_object(),
        "listed with the suspensions"
    );
    // Every agent of the fleet, half of which the wave's hash admits, is
    // served 1.0.0: nobody is admitted.
    for i in 0..20 {
        let id = format!("held-{i:05}");
        let served = fleet.http.get(
            &fleet
                .console
                .url_of(&format!("/v1/channels/stable/release.json?agent_id={id}")),
            &[],
        );
        assert_eq!(served.json()["version"], "1.0.0", "{id}");
    }
    let status = fleet.rollout_command(&["status", "stable"]);
    assert!(
        status.stdout.contains("channel suspended by"),
        "{}",
        status.stdout
    );
    // Kept on disk: a console reading its data folder again sees it.
    let offline = run_ok([
        "console",
        "rollout",
        "status",
        "--data",
        &fleet.data.display().to_string(),
    ]);
    assert!(
        offline.stdout.contains("channel suspended by"),
        "{}",
        offline.stdout
    );
    assert_eq!(sim.count("received", "2.0.0"), 0);

    let resumed = channel_command("resume");
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stdout.contains("resumed"), "{}", resumed.stdout);
    let done = fleet.wait_rollout("the rollout to complete once resumed", |r| {
        r["state"] == "complete"
    });
    assert!(done["suspended"].is_null(), "{done:#}");
    // Suspended before the rollout existed: only the resume is its event.
    assert!(events(&done).contains("channel resumed by"), "{done:#}");
    wait_for("every agent committed 2.0.0", || {
        sim.count("committed", "2.0.0") == 20
    });
}
