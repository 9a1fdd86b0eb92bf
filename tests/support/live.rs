//! Live processes for end-to-end tests: a console and an agent, each a real
//! `bankswap` child process on loopback TLS, stopped when dropped.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::tls::{TestCa, make_test_ca};
use crate::support::{World, bankswap, wait};

/// How long a live condition may take before the test fails: generous, because a
/// loaded CI machine runs many agents at once; a passing test never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Waits until `condition` holds, failing after [`DEADLINE`].
pub fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    wait::wait_for(what, DEADLINE, condition);
}

/// Sends SIGTERM (or SIGKILL) to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// How long the console may take to print its address, and to exit on SIGTERM.
const CONSOLE_DEADLINE: Duration = Duration::from_secs(10);

/// How long an agent may take to stop after SIGTERM on a loaded machine (it
/// stops its payload first, within the default 30 s `payload.stop_timeout`).
const AGENT_STOP: Duration = Duration::from_secs(60);

/// A running `bankswap console serve`, killed when dropped.
pub struct ConsoleProcess {
    /// The child process.
    pub child: Child,
    /// `https://127.0.0.1:PORT`, as the console printed it.
    pub url: String,
    /// `127.0.0.1:PORT`, to start again on the same address.
    pub addr: String,
    /// Where its stderr goes, shown when a test fails.
    log: PathBuf,
}

impl ConsoleProcess {
    /// Starts a console on `listen` (e.g. `127.0.0.1:0`) serving `data`, logging
    /// (appending) to `log`, and waits for the address it prints.
    pub fn start(data: &Path, ca: &TestCa, listen: &str, log: &Path) -> ConsoleProcess {
        ConsoleProcess::start_with(data, ca, listen, log, &[])
    }

    /// Like [`ConsoleProcess::start`], with extra `console serve` arguments
    /// (e.g. `--admin-token-file F --trust KEY.pub`).
    pub fn start_with(
        data: &Path,
        ca: &TestCa,
        listen: &str,
        log: &Path,
        extra: &[&str],
    ) -> ConsoleProcess {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("console log");
        let mut child = bankswap()
            .args(["console", "serve", "--data"])
            .arg(data)
            .args(["--listen", listen, "--tls-cert"])
            .arg(&ca.cert_pem)
            .arg("--tls-key")
            .arg(&ca.key_pem)
            .args(extra)
            // Debug for the routes: tests wait for "holding the request" before publishing.
            .env("BANKSWAP_LOG", "info,bankswap::console::routes=debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("console starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, first) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = first.recv_timeout(CONSOLE_DEADLINE).unwrap_or_else(|_| {
            panic!(
                "console printed no address: {}",
                fs::read_to_string(log).unwrap_or_default()
            )
        });
        let url = line
            .strip_prefix("listening on ")
            .expect("`listening on URL`")
            .to_string();
        assert!(
            url.starts_with("https://127.0.0.1:"),
            "unexpected address line `{line}`"
        );
        let addr = url.trim_start_matches("https://").to_string();
        ConsoleProcess {
            child,
            url,
            addr,
            log: log.to_path_buf(),
        }
    }

    /// An absolute URL on this console.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        signal(&self.child, libc::SIGTERM);
        if let Some(status) = wait::exit_of(&mut self.child, CONSOLE_DEADLINE) {
            return status.code();
        }
        panic!(
            "console still running {CONSOLE_DEADLINE:?} after SIGTERM: {}",
            self.stderr()
        );
    }

    /// What the console logged so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `bankswap run`, logging into a file.
pub struct AgentProcess {
    /// The child (None once stopped).
    pub child: Option<Child>,
    /// Its config file.
    pub config: PathBuf,
    /// Its root.
    pub root: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
}

/// Settings of a test agent.
pub struct AgentSettings<'a> {
    /// The console URL.
    pub console: &'a str,
    /// Extra TOML appended to the config.
    pub extra: &'a str,
}

impl AgentProcess {
    /// Writes a config for `root` and starts the agent.
    pub fn start(
        w: &World,
        ca: &TestCa,
        root: &Path,
        settings: &AgentSettings<'_>,
    ) -> AgentProcess {
        let config = root.with_extension("toml");
        fs::write(
            &config,
            format!(
                "console = \"{console}\"\nroot = \"{root}\"\ntrusted_keys = [\"{key}\"]\n{poll}max_delay = \"0s\"\n{extra}\n[tls]\nca_certs = [\"{ca}\"]\n",
                poll = if settings.extra.contains("poll_interval") { "" } else { "poll_interval = \"2s\"\n" },
                console = settings.console,
                root = root.display(),
                key = w.public("release"),
                extra = settings.extra,
                ca = ca.ca_pem.display(),
            ),
        )
        .expect("agent config");
        let log = root.with_extension("log");
        let mut agent = AgentProcess {
            child: None,
            config,
            root: root.to_path_buf(),
            log,
        };
        agent.restart();
        agent
    }

    /// Starts (again) with the same config, appending to the log.
    pub fn restart(&mut self) {
        self.restart_under_umask(None);
    }

    /// Like [`AgentProcess::restart`], under `umask` (e.g. "000") if given.
    pub fn restart_under_umask(&mut self, umask: Option<&str>) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut command = match umask {
            None => bankswap(),
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("umask {mask}; exec \"$@\""), "sh"])
                    .arg(env!("CARGO_BIN_EXE_bankswap"));
                sh
            }
        };
        let child = command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("BANKSWAP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        self.wait_until(&format!("`{needle}` in the agent log"), || {
            self.log().contains(needle)
        });
    }

    /// Waits for `condition`; on timeout, fails with the agent's status and log tail.
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        if wait::until(DEADLINE, || condition().then_some(())).is_none() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!(
                "timed out waiting for {what}\nstatus: {}\nagent log (tail):\n{tail}",
                self.status()
            );
        }
    }

    /// `status --json` through the agent's control socket; null before the agent made its root.
    pub fn status(&self) -> serde_json::Value {
        let out = crate::support::run([
            "status",
            "--root",
            &self.root.display().to_string(),
            "--json",
        ]);
        serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until status says `version` is committed.
    pub fn wait_committed(&self, version: &str) {
        self.wait_until(&format!("{version} committed"), || {
            let s = self.status();
            s["active_version"] == version && s["phase"] == "committed"
        });
    }

    /// Stops with SIGKILL (no cleanup: as a crash or power loss would).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops with SIGTERM and returns the exit code.
    /// An agent that outlives [`AGENT_STOP`] after SIGTERM is killed and the
    /// test fails (unless it is already failing: a panic during a panic would
    /// hide the first one) with the agent's log, instead of hanging.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        if let Some(status) = wait::exit_of(&mut child, AGENT_STOP) {
            return status.code();
        }
        let _ = child.kill();
        let _ = child.wait();
        if !std::thread::panicking() {
            panic!(
                "agent still running {AGENT_STOP:?} after SIGTERM: {}",
                self.log()
            );
        }
        None
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A live world: keys, a data folder served by a console, a test CA.
pub struct Live {
    /// Keys and folders.
    pub w: World,
    /// The console data folder.
    pub data: PathBuf,
    /// The test CA and server certificate.
    pub ca: TestCa,
    /// The console.
    pub console: ConsoleProcess,
}

impl Live {
    /// Starts a console over an empty data folder.
    pub fn new() -> Live {
        // Agents here never enroll: the console stores their reports without a certificate.
        Live::with_console_args(&["--allow-anonymous-reports"])
    }

    /// Starts a console over an empty data folder with `args` as its only extra
    /// `console serve` arguments (e.g. `--max-wait 2s`).
    pub fn with_console_args(args: &[&str]) -> Live {
        let w = World::new();
        let data = w.path("console-data");
        fs::create_dir_all(&data).expect("data");
        let ca = make_test_ca(&w.path("tls"));
        let console =
            ConsoleProcess::start_with(&data, &ca, "127.0.0.1:0", &w.path("console.log"), args);
        Live {
            w,
            data,
            ca,
            console,
        }
    }

    /// Publishes a payload whose `bin/app` runs `script` (sh), as `version`.
    pub fn publish_script(&self, version: &str, script: &str) {
        let dir = self.w.script_payload(version, script);
        self.w.publish(&self.data, &dir, version, &[]);
    }

    /// Publishes a payload that says hello and sleeps, as `version`.
    pub fn publish_sleeper(&self, version: &str) {
        self.publish_script(
            version,
            &format!("echo \"hello from {version}\"\nexec sleep 1000"),
        );
    }

    /// Starts an agent on a fresh root `name` against the console.
    pub fn agent(&self, name: &str, extra: &str) -> AgentProcess {
        let root = self.w.path(name);
        AgentProcess::start(
            &self.w,
            &self.ca,
            &root,
            &AgentSettings {
                console: &self.console.url,
                extra,
            },
        )
    }
}
