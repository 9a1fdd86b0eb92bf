//! Paused-time tests of the agent core: a real root in a temporary folder, real
//! payload processes (small `/bin/sh` scripts), and tokio's clock paused so that
//! grace periods, probes and restart backoff pass in milliseconds. Auto-advance
//! is held off while a test runs (a parked blocking task does that), so the
//! clock moves only when a test advances it, after it has seen what it waits for.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use bank_layout::{ArchiveFormat, BankId, BankRecord, Root, StageSpec};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::agent::checker::CheckOutcome;
use crate::agent::control_socket::Envelope;
use crate::agent::core::{self, Agent, Generation, Mode};
use crate::agent::world::{Clock, Links, World};
use crate::config::{AgentConfig, ListenConfig};
use crate::control::{Request, Response};
use crate::report::StatusReport;
use crate::supervisor::{Listeners, Payload};

/// A real-time bound on any one wait, so that a broken test fails instead of hanging.
const REAL_LIMIT: Duration = Duration::from_secs(20);
/// A public key for the config (no test here verifies a signature).
const KEY: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";

/// Wall-clock time that moves with tokio's paused clock; randomness fixed.
struct PausedClock {
    /// Wall-clock time at the start.
    base: SystemTime,
    /// tokio time at the start.
    start: tokio::time::Instant,
}

impl Clock for PausedClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }

    fn random(&self) -> f64 {
        0.5
    }
}

/// An agent running on a temporary root.
struct Harness {
    /// The temporary folder (root at `root/`).
    dir: tempfile::TempDir,
    /// The status the agent publishes.
    report: watch::Receiver<Option<StatusReport>>,
    /// The control-socket side of the core.
    control: mpsc::Sender<Envelope>,
    /// Kept so that the core's check channel stays open.
    _checks: mpsc::Sender<CheckOutcome>,
    /// Ends the agent.
    shutdown: Option<oneshot::Sender<()>>,
    /// The agent task.
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// Holding this parks a blocking task, which keeps tokio from auto-advancing.
    _hold: std_mpsc::Sender<()>,
}

/// A shell script payload.
fn script(body: &str) -> String {
    format!("#!/bin/sh\n{body}\n")
}

/// A tar archive holding `run.sh` (executable) with `body`.
fn archive(body: &str) -> Vec<u8> {
    let bytes = script(body).into_bytes();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    builder
        .append_data(&mut header, "run.sh", bytes.as_slice())
        .unwrap();
    builder.into_inner().unwrap()
}

/// Stages `version` (sequence `sequence`) running `body` into the idle bank.
fn stage(root: &mut Root, version: &str, sequence: u64, body: &str) -> BankId {
    let tar = archive(body);
    let sha256 = hex::encode(Sha256::digest(&tar));
    let record = BankRecord {
        version: version.into(),
        sequence,
        sha256: sha256.clone(),
        staged_at: 0,
        product: "demo".into(),
        channel: "stable".into(),
        command: "run.sh".into(),
        args: vec![],
        manifest: String::new(),
        signature: String::new(),
        files: None,
    };
    let spec = StageSpec {
        format: ArchiveFormat::Tar,
        size: tar.len() as u64,
        sha256: &sha256,
        record,
        unpacked_size: None,
        entries: None,
        allow_in_place: false,
    };
    root.stage(tar.as_slice(), spec, &mut |_| {}).unwrap()
}

impl Harness {
    /// A root with `committed` running (if any), and `trial` staged and activated on
    /// trial (if any), under `[health]` settings `health`.
    async fn start(committed: Option<&str>, trial: Option<&str>, health: &str) -> Harness {
        let hold = hold_the_clock();
        let dir = tempfile::tempdir().unwrap();
        let mut root = root_with(dir.path(), committed);
        if let Some(body) = trial {
            let bank = stage(&mut root, "1.1.0", 2, body);
            root.activate(bank, 0).unwrap();
        }
        let (config, world) = world(dir.path(), root, health, Listeners::none());
        let (report_tx, report) = watch::channel(None);
        let (checks_tx, checks) = mpsc::channel(4);
        let (control, control_rx) = mpsc::channel(8);
        let links = Links {
            checks,
            control: control_rx,
            check_now: Arc::new(Notify::new()),
            report: report_tx,
            reloads: mpsc::channel(1).1,
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(core::run(config, world, links, async move {
            let _ = shutdown_rx.await;
        }));
        Harness {
            dir,
            report,
            control,
            _checks: checks_tx,
            shutdown: Some(shutdown_tx),
            task: Some(task),
            _hold: hold,
        }
    }

    /// Waits (in real time, the clock standing still) until the status satisfies `done`.
    async fn until(&mut self, what: &str, done: impl Fn(&StatusReport) -> bool) -> StatusReport {
        let (tx, limit) = oneshot::channel::<()>();
        // A plain thread: it neither holds up the runtime's shutdown nor the clock.
        std::thread::spawn(move || {
            std::thread::sleep(REAL_LIMIT);
            let _ = tx.send(());
        });
        let mut report = self.report.clone();
        tokio::select! {
            r = report.wait_for(|r| r.as_ref().is_some_and(&done)) => {
                r.unwrap().clone().unwrap()
            }
            _ = limit => panic!("timed out waiting for {what}; last status: {:?}", self.report.borrow()),
        }
    }

    /// Asks the core as `bankswap` would through the socket.
    async fn ask(&self, request: Request) -> Response {
        let (tx, rx) = oneshot::channel();
        self.control.send((request, tx)).await.unwrap();
        rx.await.unwrap()
    }

    /// Stops the agent and its payload.
    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// A file the payload scripts write into.
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Parks a blocking task until the returned sender drops: meanwhile tokio does not
/// auto-advance its paused clock, so that only the test moves it.
fn hold_the_clock() -> std_mpsc::Sender<()> {
    let (hold, parked) = std_mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = parked.recv();
    });
    hold
}

/// A root in `dir/root`, with 1.0.0 running `committed` installed and committed.
fn root_with(dir: &Path, committed: Option<&str>) -> Root {
    let (mut root, _) = Root::open(&dir.join("root")).unwrap();
    if let Some(body) = committed {
        let bank = stage(&mut root, "1.0.0", 1, body);
        root.activate_committed(bank).unwrap();
    }
    root
}

/// The config (`[health]` from `health`) and the world of an agent on `root`.
fn world(dir: &Path, root: Root, health: &str, listeners: Listeners) -> (AgentConfig, World) {
    let config_path = dir.join("agent.toml");
    let mut file = std::fs::File::create(&config_path).unwrap();
    write!(
        file,
        "console = \"https://console.invalid\"\ntrusted_keys = [\"{KEY}\"]\nroot = \"{}\"\n[payload]\nstop_timeout = \"1s\"\n[health]\n{health}\n",
        root.dir().display()
    )
    .unwrap();
    let config = AgentConfig::load(&config_path).unwrap();
    let world = World {
        root,
        agent_id: "test-agent".into(),
        console: "https://console.invalid".into(),
        listeners,
        http: watch::channel(reqwest::Client::new()).1,
        clock: Arc::new(PausedClock {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
        }),
        exec: Default::default(),
    };
    (config, world)
}

/// An agent driven by direct calls (no event loop), on a shared TCP socket, with
/// 1.0.0 running and 1.1.0 staged but not yet swapped to.
fn overlapped(dir: &Path, health: &str) -> (Agent, BankId) {
    let mut root = root_with(dir, Some("exec sleep 1000"));
    let bank = stage(&mut root, "1.1.0", 2, "exec sleep 1000");
    let listeners = Listeners::bind(&[ListenConfig {
        name: "http".into(),
        address: "127.0.0.1:0".into(),
        mode: None,
    }])
    .unwrap();
    let (config, world) = world(dir, root, health, listeners);
    let (report, _) = watch::channel(None);
    let (_, checks) = mpsc::channel(1);
    let (_, control) = mpsc::channel(1);
    let links = Links {
        checks,
        control,
        check_now: Arc::new(Notify::new()),
        report,
        reloads: mpsc::channel(1).1,
    };
    let mut agent = Agent::new(config, world, links);
    agent.resume();
    (agent, bank)
}

/// The pid of the active generation, if it runs.
fn running_pid(agent: &Agent) -> Option<u32> {
    match &agent.current {
        Generation::Running(p) => Some(p.pid()),
        Generation::Down { .. } => None,
    }
}

/// The pid of the generation a trial keeps serving.
fn draining_pid(agent: &Agent) -> Option<u32> {
    match &agent.mode {
        Mode::Trial(trial) => trial.draining.as_ref().map(Payload::pid),
        Mode::Steady { .. } => None,
    }
}

/// Moves the paused clock on.
async fn advance(by: Duration) {
    tokio::time::advance(by).await;
}

fn last_error(r: &StatusReport) -> &str {
    r.last_error.as_deref().unwrap_or_default()
}

/// Waits in real time (the clock standing still) until `done`, polling a file the
/// payload writes; fails after [`REAL_LIMIT`].
async fn wait_real(what: &str, done: impl Fn() -> bool + Send + 'static) {
    let waited = tokio::task::spawn_blocking(move || {
        let limit = std::time::Instant::now() + REAL_LIMIT;
        while !done() {
            if std::time::Instant::now() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    });
    assert!(waited.await.unwrap(), "timed out waiting for {what}");
}

/// Counts the lines a payload appended to `path`.
fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[tokio::test(start_paused = true)]
async fn a_trial_that_keeps_running_through_its_grace_is_committed() {
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some("exec sleep 1000"),
        "grace = \"30s\"",
    )
    .await;
    let r = h.until("the trial", |r| r.phase == "trial").await;
    assert_eq!(r.active_version.as_deref(), Some("1.1.0"));
    advance(Duration::from_secs(31)).await;
    let r = h.until("the commit", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.1.0"));
    assert!(r.last_error.is_none(), "{r:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_that_sends_ready_is_committed_without_waiting_for_its_grace() {
    let python = "exec python3 -c \"import os,socket,time\na=os.environ['NOTIFY_SOCKET']\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'READY=1','\\0'+a[1:] if a.startswith('@') else a)\ntime.sleep(1000)\"";
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some(python),
        "grace = \"30s\"\nnotify = true",
    )
    .await;
    let started = tokio::time::Instant::now();
    // The clock never moves: only READY=1 can end this trial.
    let r = h.until("the commit", |r| r.phase == "committed").await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(r.active_version.as_deref(), Some("1.1.0"));
    assert!(r.last_error.is_none(), "{r:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_that_exits_too_often_is_rolled_back_and_marked_bad() {
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some("exit 3"),
        "grace = \"30s\"\nmax_failures = 2",
    )
    .await;
    // The first exit is restarted after the backoff; the second fails the trial.
    let r = h.until("the first exit", |r| r.restarts.is_some()).await;
    assert_eq!(r.phase, "trial");
    advance(Duration::from_millis(150)).await;
    let r = h.until("the rollback", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    assert_eq!(r.last_error_kind.as_deref(), Some("trial"));
    assert!(last_error(&r).contains("1.1.0 rolled back"), "{r:?}");
    assert!(
        last_error(&r).contains("2 failures during its trial"),
        "{r:?}"
    );
    assert!(r.bad_versions.iter().any(|b| b.version == "1.1.0"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_without_ready_is_rolled_back_at_the_end_of_its_grace() {
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some("exec sleep 1000"),
        "grace = \"30s\"\nnotify = true",
    )
    .await;
    h.until("the trial", |r| r.phase == "trial").await;
    advance(Duration::from_secs(29)).await;
    let r = h.until("still on trial", |r| r.phase == "trial").await;
    assert!(r.last_error.is_none());
    advance(Duration::from_secs(2)).await;
    let r = h.until("the rollback", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    assert!(last_error(&r).contains("no READY=1 within 30s"), "{r:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_whose_probe_keeps_failing_is_rolled_back() {
    // Port 9 on loopback: nothing listens, every probe is refused at once.
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some("exec sleep 1000"),
        "grace = \"10s\"\nhttp = \"http://127.0.0.1:9/health\"",
    )
    .await;
    h.until("the trial", |r| r.phase == "trial").await;
    advance(Duration::from_secs(9)).await;
    // The first probe (due at 1 s) is refused: before the deadline that is no verdict.
    let r = h.until("still on trial", |r| r.phase == "trial").await;
    assert!(r.last_error.is_none());
    advance(Duration::from_secs(2)).await;
    let r = h.until("the rollback", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    assert!(last_error(&r).contains("not healthy within 10s"), "{r:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_payload_that_stops_its_watchdog_fails_its_trial() {
    let python = "exec python3 -c \"import os,socket,time\na=os.environ['NOTIFY_SOCKET']\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'WATCHDOG=1','\\0'+a[1:] if a.startswith('@') else a)\nopen(os.environ['BANKSWAP_BANK_DIR']+'/../../armed','w')\ntime.sleep(1000)\"";
    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some(python),
        "grace = \"60s\"\nmax_failures = 1\nwatchdog = \"5s\"",
    )
    .await;
    h.until("the trial", |r| r.phase == "trial").await;
    // The first WATCHDOG=1 arms the watchdog: wait (in real time) until it is sent.
    let armed = h.path("armed");
    wait_real("the first WATCHDOG=1", move || Path::new(&armed).exists()).await;
    for _ in 0..30 {
        if h.report
            .borrow()
            .as_ref()
            .is_some_and(|r| r.phase == "committed")
        {
            break;
        }
        advance(Duration::from_secs(1)).await;
    }
    let r = h.until("the rollback", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    assert!(last_error(&r).contains("WATCHDOG=1"), "{r:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_admin_rollback_marks_the_version_left_bad() {
    let mut h = Harness::start(Some("exec sleep 1000"), None, "grace = \"1s\"").await;
    h.until("the payload", |r| r.active_version.is_some()).await;
    // Nothing to go back to: refused, nothing changes.
    let refused = h.ask(Request::Rollback).await;
    assert!(!refused.ok, "{}", refused.message);
    h.stop().await;

    let mut h = Harness::start(
        Some("exec sleep 1000"),
        Some("exec sleep 1000"),
        "grace = \"30s\"",
    )
    .await;
    h.until("the trial", |r| r.phase == "trial").await;
    let done = h.ask(Request::Rollback).await;
    assert!(done.ok, "{}", done.message);
    assert_eq!(
        done.message,
        "rolled back to 1.0.0 in Bank1; 1.1.0 stays in Bank2, marked bad"
    );
    let r = h.until("the rollback", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    assert!(
        r.bad_versions
            .iter()
            .any(|b| b.version == "1.1.0" && b.reason == "rolled back by an admin")
    );
    // The trial is over: its grace passing changes nothing.
    advance(Duration::from_secs(31)).await;
    let r = h.until("steady", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.0.0"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_payload_is_restarted_with_growing_backoff_and_reported() {
    let mut h = Harness::start(
        Some("echo start >> \"$BANKSWAP_BANK_DIR/../../starts\"; exit 7"),
        None,
        "grace = \"1s\"",
    )
    .await;
    let starts = h.dir.path().join("starts");
    let r = h
        .until("one failure", |r| {
            r.restarts.as_ref().is_some_and(|s| s.count == 1)
        })
        .await;
    assert_eq!(r.last_error_kind.as_deref(), Some("payload"));
    assert!(last_error(&r).contains("1.0.0 exited"), "{r:?}");
    assert_eq!(lines(&starts), 1);
    // Backoff 100 ms, then 200 ms, then 400 ms: just short of each, nothing restarts.
    advance(Duration::from_millis(99)).await;
    let r = h
        .until("still one", |r| {
            r.restarts.as_ref().is_some_and(|s| s.count == 1)
        })
        .await;
    assert_eq!(r.restarts.unwrap().count, 1);
    advance(Duration::from_millis(1)).await;
    h.until("two failures", |r| {
        r.restarts.as_ref().is_some_and(|s| s.count == 2)
    })
    .await;
    advance(Duration::from_millis(199)).await;
    assert_eq!(
        h.report
            .borrow()
            .as_ref()
            .unwrap()
            .restarts
            .as_ref()
            .unwrap()
            .count,
        2
    );
    advance(Duration::from_millis(1)).await;
    let r = h
        .until("three failures", |r| {
            r.restarts.as_ref().is_some_and(|s| s.count == 3)
        })
        .await;
    assert_eq!(lines(&starts), 3);
    assert!(r.restarts.unwrap().last_exit.contains("exit status: 7"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_first_install_failing_its_trial_keeps_running_marked_bad() {
    let mut h = Harness::start(
        None,
        Some("echo start >> \"$BANKSWAP_BANK_DIR/../../starts\"; exec sleep 1000"),
        "grace = \"5s\"\nnotify = true",
    )
    .await;
    let starts = h.dir.path().join("starts");
    h.until("the trial", |r| r.phase == "trial").await;
    let first = starts.clone();
    wait_real("the first start", move || lines(&first) == 1).await;
    advance(Duration::from_secs(6)).await;
    let r = h.until("the verdict", |r| r.phase == "committed").await;
    assert_eq!(r.active_version.as_deref(), Some("1.1.0"));
    assert_eq!(r.last_error_kind.as_deref(), Some("trial"));
    assert!(last_error(&r).contains("no READY=1"), "{r:?}");
    assert!(last_error(&r).contains("keeps running"), "{r:?}");
    assert!(r.bad_versions.iter().any(|b| b.version == "1.1.0"));
    assert_eq!(r.restarts.as_ref().map(|s| s.count), Some(1), "{r:?}");
    // It is started again after the backoff, and stays up.
    advance(Duration::from_millis(100)).await;
    let again = starts.clone();
    wait_real("the restart", move || lines(&again) == 2).await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_overlapped_trial_hands_back_to_the_generation_that_kept_serving() {
    let _hold = hold_the_clock();
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, bank) = overlapped(dir.path(), "grace = \"30s\"\nmax_failures = 1");
    let old = running_pid(&agent).expect("1.0.0 runs");
    agent.swap_to(bank).await;
    assert_eq!(
        draining_pid(&agent),
        Some(old),
        "the old generation keeps serving"
    );
    let new = running_pid(&agent).expect("1.1.0 runs");
    assert_ne!(new, old);
    if let Mode::Trial(trial) = &mut agent.mode {
        trial.seen.failures = 1;
        trial.seen.last_failure = Some("1.1.0 exited (exit status: 1)".into());
    }
    agent.judge_trial().await;
    assert_eq!(
        running_pid(&agent),
        Some(old),
        "the old generation was never restarted"
    );
    assert!(matches!(agent.mode, Mode::Steady { draining: None }));
    let state = agent.root().unwrap().state().clone();
    assert_eq!(state.version_of(state.active), Some("1.0.0"));
    assert!(state.bad_versions.iter().any(|b| b.version == "1.1.0"));
    agent.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn an_admin_rollback_during_an_overlapped_trial_keeps_the_serving_generation() {
    let _hold = hold_the_clock();
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, bank) = overlapped(dir.path(), "grace = \"30s\"");
    let old = running_pid(&agent).expect("1.0.0 runs");
    agent.swap_to(bank).await;
    let response = agent.on_control(Request::Rollback).await;
    assert!(response.ok, "{}", response.message);
    assert_eq!(running_pid(&agent), Some(old));
    assert!(matches!(agent.mode, Mode::Steady { draining: None }));
    let status = response.status.expect("a status");
    assert_eq!(status.active_version.as_deref(), Some("1.0.0"));
    assert_eq!(status.phase, "committed");
    agent.stop_all().await;
}
