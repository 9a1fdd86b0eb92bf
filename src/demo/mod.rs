//! `bankswap demo`: the whole story on loopback, narrated. It runs the real
//! commands (this very binary) in a temporary folder: keys, a private CA, a
//! console, an agent serving the example payload on a socket it holds, a
//! live update while a client keeps asking, a rollback, the fleet view.
//! It needs nothing but this binary: the payload is a two-line script that
//! runs the example payload built into it (`bankswap hello-payload`, hidden).

mod client;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::control::{self, Request};
use crate::demo::client::Client;

/// How long any one step may take before the demo gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(90);

/// Writes the demo's payload entrypoint: a script that runs the example
/// payload built into `exe` (the same pid, so `LISTEN_PID` and fd 3 hold).
fn write_payload_script(path: &Path, exe: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exe = exe.display().to_string().replace('\'', "'\\''");
    fs::write(
        path,
        format!(
            "#!/bin/sh\n# The example payload (examples/hello-payload), built into bankswap.\nexec '{exe}' hello-payload \"$@\"\n"
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// Runs the demo; everything it made is removed at the end.
pub fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the bankswap binary")?;
    let temp = tempfile::Builder::new()
        .prefix("bankswap-demo-")
        .tempdir()
        .context("temporary folder")?;
    let mut demo = Demo {
        exe,
        dir: temp.path().to_path_buf(),
        console: None,
        agent: None,
    };
    let result = demo.story();
    demo.stop();
    say("Done: agent and console stopped, temporary folder removed.");
    result
}

/// The demo's processes and folder.
struct Demo {
    /// This binary.
    exe: PathBuf,
    /// The temporary folder.
    dir: PathBuf,
    /// The console process.
    console: Option<Child>,
    /// The agent process.
    agent: Option<Child>,
}

impl Demo {
    fn story(&mut self) -> anyhow::Result<()> {
        let d = self.dir.clone();
        let p = |rel: &str| d.join(rel).display().to_string();

        say(
            "1. An admin makes a signing key (minisign format); the agents get only the public half",
        );
        self.bankswap(&["keygen", "--out", &p("release")])?;

        say("2. A private CA for the console (use your own certificate in production)");
        self.bankswap(&["console", "cert", "--out", &p("tls")])?;

        say("3. Publish hello-payload 1.0.0: packed into a tar.zst, hashed, signed");
        for version in ["1.0.0", "2.0.0"] {
            let bin = d.join(format!("hello-{version}/bin"));
            fs::create_dir_all(&bin)?;
            write_payload_script(&bin.join("hello-payload"), &self.exe)?;
        }
        self.publish("1.0.0")?;

        say("4. Start the console: it serves the channel and holds agents' requests for push");
        let url = self.start_console()?;

        say("5. An agent: it holds the service's socket and hands it to each payload generation");
        let config = format!(
            "console = \"{url}\"\nroot = \"{root}\"\ntrusted_keys = [\"{key}\"]\npoll_interval = \"60s\"\nmax_delay = \"2s\"   # random delay before a swap (minutes in production)\n\n[[listen]]\nname = \"http\"\naddress = \"127.0.0.1:0\"   # any free port; the agent logs the one it bound\n\n[health]\nnotify = true      # the payload says READY=1\ngrace = \"10s\"\n\n[tls]\nca_certs = [\"{ca}\"]\n",
            root = p("root"),
            key = p("release.pub"),
            ca = p("tls/ca.pem"),
        );
        fs::write(d.join("agent.toml"), &config)?;
        println!("agent.toml:\n{}", indent(&config));
        self.start_agent(&d.join("agent.toml"))?;
        self.wait_for("1.0.0 running", |s| {
            s.active_version.as_deref() == Some("1.0.0") && s.phase == "committed"
        })?;
        let port = bound_port(&d.join("agent.log"))?;

        say(&format!(
            "6. A client starts asking http://127.0.0.1:{port}/ every 20 ms, and keeps going"
        ));
        let client = Client::start(port);
        std::thread::sleep(Duration::from_millis(500));

        say("7. Publish 2.0.0: pushed to the agent at once, staged into the idle bank, verified,");
        println!("   started beside 1.0.0 on the same socket; 1.0.0 drains once 2.0.0 is ready");
        self.publish("2.0.0")?;
        self.wait_for("2.0.0 committed", |s| {
            s.active_version.as_deref() == Some("2.0.0") && s.phase == "committed"
        })?;
        std::thread::sleep(Duration::from_millis(500));
        self.bankswap(&["status", "--root", &p("root")])?;

        say("8. An admin rolls back: instant, no download, 1.0.0 was kept in the other bank");
        self.bankswap(&["rollback", "--root", &p("root")])?;
        self.wait_for("1.0.0 back", |s| {
            s.active_version.as_deref() == Some("1.0.0")
        })?;
        std::thread::sleep(Duration::from_millis(800));

        say("9. What the console knows of its fleet");
        self.bankswap(&["console", "fleet", "--data", &p("console")])?;

        let summary = client.stop();
        say("The client's view");
        println!(
            "   {} requests, {} failed; it saw, in order: {}",
            summary.sent,
            summary.failed,
            summary.seen.join(" -> ")
        );
        if summary.failed > 0 {
            bail!("{} client requests failed during the swaps", summary.failed);
        }
        Ok(())
    }

    /// Runs this binary with `args`, echoing the command and its output.
    fn bankswap(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("$ bankswap {}", args.join(" "));
        let out = Command::new(&self.exe)
            .args(args)
            .output()
            .context("running bankswap")?;
        print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
        if !out.status.success() {
            bail!(
                "bankswap {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn publish(&self, version: &str) -> anyhow::Result<()> {
        let d = &self.dir;
        self.bankswap(&[
            "publish",
            "--key",
            &d.join("release.key").display().to_string(),
            "--payload",
            &d.join(format!("hello-{version}")).display().to_string(),
            "--version",
            version,
            "--entrypoint",
            "bin/hello-payload",
            "--product",
            "hello",
            "--to",
            &d.join("console").display().to_string(),
        ])
    }

    fn start_console(&mut self) -> anyhow::Result<String> {
        let d = &self.dir;
        println!(
            "$ bankswap console serve --data {0}/console --listen 127.0.0.1:0 --tls-cert ... --tls-key ...",
            d.display()
        );
        let mut child = Command::new(&self.exe)
            .args(["console", "serve", "--data"])
            .arg(d.join("console"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(d.join("tls/server.pem"))
            .arg("--tls-key")
            .arg(d.join("tls/server.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the console")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("console stdout"))?;
        self.console = Some(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the console's address")?;
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .replace("127.0.0.1", "localhost");
        println!("   {}", line.trim());
        Ok(url)
    }

    fn start_agent(&mut self, config: &Path) -> anyhow::Result<()> {
        println!("$ bankswap run --config {}", config.display());
        let log = self.dir.join("agent.log");
        let file = fs::File::create(&log)?;
        let child = Command::new(&self.exe)
            .args(["run", "--config"])
            .arg(config)
            .env("BANKSWAP_LOG", "info")
            .stderr(file)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the agent")?;
        self.agent = Some(child);
        tail_agent_log(log);
        Ok(())
    }

    /// Waits until the agent's status satisfies `done`.
    fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&crate::report::StatusReport) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if let Ok(Some(response)) = control::request(&self.dir.join("root"), Request::Status)
                && response.status.as_ref().is_some_and(&done)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; the agent's log is in {}",
                    self.dir.join("agent.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        for child in [self.agent.take(), self.console.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// Prints the agent's notable log lines as they come (from a background thread).
fn tail_agent_log(log: PathBuf) {
    const NOTABLE: [&str; 8] = [
        "running version",
        "scheduled",
        "staging",
        "staged",
        "swapped",
        "committed",
        "rolled back",
        "draining",
    ];
    std::thread::spawn(move || {
        let mut offset = 0usize;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.len() > offset {
                for line in text[offset..].lines() {
                    if NOTABLE.iter().any(|n| line.contains(n)) {
                        let message = line.split_once(" INFO ").map_or(line, |(_, rest)| rest);
                        println!("   agent | {message}");
                    }
                }
                offset = text.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

fn say(title: &str) {
    println!("\n== {title}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

/// The port the agent bound for its `http` socket (the config asks for port 0),
/// from its `listening name=http ... bound=ADDR` log line.
fn bound_port(log: &Path) -> anyhow::Result<u16> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .find(|l| l.contains("listening name=http"))
        .and_then(|line| line.split("bound=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "{}: no `listening name=http ... bound=` line",
                log.display()
            )
        })
}
