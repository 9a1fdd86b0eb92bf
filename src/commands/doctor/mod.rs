//! `bankswap doctor`: the "Test Connection" of SPEC §12. One line per check,
//! `ok` or `FAIL` with the fix; exit 1 when any check fails. It reads the
//! config and the root but never locks, writes or installs anything.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::AgentConfig;

mod network;

use network::{check_syslog, network_checks};

/// How long one network check may take (DNS, TCP, the TLS request).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Free space the root must have at least, besides what the next release needs:
/// state.json, the staging scratch folder's bookkeeping, logs of a payload.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// The clock may differ from the console's `Date` by this much: manifests'
/// expiry and rollout slots are minutes to days, and `Date` has 1 s resolution.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What one check found: a description, or the problem and its fix.
type Outcome = Result<String, Problem>;

/// A failed check.
#[derive(Debug)]
struct Problem {
    /// What is wrong.
    what: String,
    /// What to do about it.
    fix: String,
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Err(Problem {
        what: what.into(),
        fix: fix.into(),
    })
}

/// Prints the checks' lines; the counts decide the exit code.
#[derive(Default)]
struct Report {
    /// Checks that failed.
    failed: usize,
}

impl Report {
    fn line(&mut self, name: &str, outcome: Outcome) -> bool {
        match outcome {
            Ok(detail) => {
                println!("ok    {name}: {detail}");
                true
            }
            Err(problem) => {
                self.failed += 1;
                println!("FAIL  {name}: {}; fix: {}", problem.what, problem.fix);
                false
            }
        }
    }

    fn skip(&self, name: &str, why: &str) {
        println!("skip  {name}: {why}");
    }
}

/// Runs every check against the config at `config_path`.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let mut report = Report::default();
    let config = match AgentConfig::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            let text = err.to_string();
            let name = if text.contains("trusted_keys") || text.contains("trusted key") {
                "trusted keys"
            } else {
                "config"
            };
            report.line(
                name,
                fail(
                    text,
                    format!("edit {} (see agent.toml.example)", config_path.display()),
                ),
            );
            return finish(&report);
        }
    };
    report.line(
        "config",
        Ok(format!("{} parses and validates", config_path.display())),
    );
    report.line(
        "trusted keys",
        match config.trusted_keys.len() {
            0 => fail(
                "no trusted_keys",
                "list the release public key files in trusted_keys",
            ),
            n => Ok(format!("{n} loaded")),
        },
    );
    report.line("root", check_root(&config.root));
    network_checks(&config, &mut report);
    report.line("syslog", check_syslog(config.log.syslog.as_deref()));
    match check_certificate(&config) {
        Some(outcome) => {
            report.line("certificate", outcome);
        }
        None => report.skip(
            "certificate",
            "not enrolled (no enrollment_token_file): the agent speaks TLS without a client certificate",
        ),
    }
    finish(&report)
}

/// The agent certificate's expiry (SPEC §10); `None` when the agent neither
/// enrolled nor has a token to enroll with.
fn check_certificate(config: &AgentConfig) -> Option<Outcome> {
    let token = config.enrollment_token_file.as_deref();
    let stored = match crate::identity::load(&config.root) {
        Ok(stored) => stored,
        Err(e) => {
            return Some(fail(
                format!("{e:#}"),
                format!(
                    "remove {} and restart the agent with a new enrollment token",
                    crate::identity::dir(&config.root).display()
                ),
            ));
        }
    };
    let Some(stored) = stored else {
        return token.map(|t| {
            Ok(format!(
                "not enrolled yet: the agent enrolls with the token in {} at its next start",
                t.display()
            ))
        });
    };
    let standing = crate::identity::standing(&stored, SystemTime::now(), token);
    Some(match standing.hint {
        Some(fix) => fail(
            format!("the agent certificate expired at {}", standing.not_after),
            fix,
        ),
        None if standing.state == "renewal due" => Ok(format!(
            "valid until {}; renewal due: the running agent renews it",
            standing.not_after
        )),
        None => Ok(format!("valid until {}", standing.not_after)),
    })
}

fn finish(report: &Report) -> anyhow::Result<()> {
    if report.failed == 0 {
        Ok(())
    } else {
        anyhow::bail!("doctor: {} check(s) failed", report.failed)
    }
}

/// The root exists, is ours, is not writable by others, and has room.
fn check_root(root: &Path) -> Outcome {
    let meta = match std::fs::metadata(root) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                format!("{} does not exist", root.display()),
                "bankswap init --config FILE (or fix `root` in the config)",
            );
        }
        Err(err) => return fail(format!("{}: {err}", root.display()), "check the path"),
    };
    if !meta.is_dir() {
        return fail(format!("{} is not a folder", root.display()), "fix `root`");
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return fail(
            format!(
                "{} is owned by uid {}, the agent runs as uid {euid}",
                root.display(),
                meta.uid()
            ),
            format!("chown {euid} {}", root.display()),
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return fail(
            format!(
                "{} is mode {mode:04o}: others can write into the banks",
                root.display()
            ),
            format!("chmod 0700 {}", root.display()),
        );
    }
    let free = match rustix::fs::statvfs(root) {
        Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
        Err(err) => {
            return fail(
                format!("statvfs {}: {err}", root.display()),
                "check the disk",
            );
        }
    };
    if free < MIN_FREE_BYTES {
        return fail(
            format!("{} has {} MiB free", root.display(), free >> 20),
            format!("free at least {} MiB", MIN_FREE_BYTES >> 20),
        );
    }
    Ok(format!(
        "{} mode {mode:04o}, {} MiB free",
        root.display(),
        free >> 20
    ))
}
