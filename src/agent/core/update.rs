//! The update half of the core: check outcomes, scheduling, staging, the
//! swap, the trial, commit, automatic and admin rollback, and status.

use super::{
    Agent, ArtifactStream, BankId, CheckOutcome, Checked, Duration, Instant, LayoutError,
    PROBE_TIMEOUT, Progress, ReleaseError, Request, Response, Root, STAGE_RETRY, StageSpec,
    StatusReport, SystemTime, Trial, VerifiedRelease, anyhow, archive_format, bank_record, clock,
    error, fetch, info, schedule, verify, warn,
};

impl Agent {
    // ----- checks and scheduling ---------------------------------------------------------

    pub(super) fn on_checked(&mut self, outcome: CheckOutcome) {
        self.last_check = Some(SystemTime::now());
        match outcome {
            Ok(Checked::Unchanged) => self.console_reachable(),
            Ok(Checked::Release {
                manifest,
                signature,
                ..
            }) => {
                self.console_reachable();
                self.latest = Some((manifest, signature));
                self.evaluate_latest();
            }
            Err(message) => {
                if self.console_up != Some(false) {
                    warn!(
                        error = message,
                        "console unreachable; the payload keeps running"
                    );
                }
                self.console_up = Some(false);
                self.set_last_error(Some(format!("checking {}: {message}", self.console)));
            }
        }
    }

    fn console_reachable(&mut self) {
        if self.console_up == Some(false) {
            info!(console = self.console, "console reachable again");
            self.clear_error_prefix("checking ");
        }
        self.console_up = Some(true);
    }

    /// Verifies the last manifest seen against the current state and schedules it.
    pub(super) fn evaluate_latest(&mut self) {
        if self.trial.is_some() || self.staging.is_some() {
            return; // looked at again when the trial or the staging ends
        }
        let Some((manifest, signature)) = self.latest.clone() else {
            return;
        };
        let Some(root) = &self.root else { return };
        let now = SystemTime::now();
        match verify(root, &self.setup, &manifest, &signature, now) {
            Ok(release) => self.schedule(release, manifest, signature, now),
            Err(ReleaseError::NotNewer { version, running }) if version == running => {
                self.clear_error_prefix("release ");
            }
            Err(e) => {
                let message = format!("release from {}: {e}", self.console);
                if root.state().last_error.as_deref() != Some(&message) {
                    warn!(error = %e, "release rejected; the payload keeps running");
                }
                self.set_last_error(Some(message));
            }
        }
    }

    fn schedule(
        &mut self,
        release: VerifiedRelease,
        manifest: Vec<u8>,
        signature: Vec<u8>,
        now: SystemTime,
    ) {
        let m = &release.manifest;
        let Some(root) = &mut self.root else { return };
        if root
            .state()
            .pending
            .as_ref()
            .is_some_and(|p| p.sequence == m.sequence)
        {
            return; // already scheduled: a restart neither re-rolls nor forgets it
        }
        let not_before = schedule::not_before(
            now,
            m.rollout.as_ref(),
            &self.agent_id,
            m.sequence,
            self.config.max_delay,
            rand::random(),
        );
        let pending = bank_layout::Pending {
            version: m.version.to_string(),
            sequence: m.sequence,
            not_before: clock::unix(not_before),
            manifest: String::from_utf8_lossy(&manifest).into_owned(),
            signature: String::from_utf8_lossy(&signature).into_owned(),
        };
        info!(version = %m.version, sequence = m.sequence, not_before = %clock::rfc3339(not_before), "release scheduled");
        if let Err(e) = root.update_state(|s| {
            s.pending = Some(pending);
            s.last_error = None;
        }) {
            error!(error = %e, "could not save the schedule");
        }
    }

    // ----- staging -----------------------------------------------------------------------

    /// Re-verifies the pending release and streams it into the idle bank on a blocking thread.
    pub(super) fn start_staging(&mut self) {
        let Some(mut root) = self.root.take() else {
            return;
        };
        let Some(pending) = root.state().pending.clone() else {
            self.root = Some(root);
            return;
        };
        let now = SystemTime::now();
        let release = match verify(
            &root,
            &self.setup,
            pending.manifest.as_bytes(),
            pending.signature.as_bytes(),
            now,
        ) {
            Ok(r) => r,
            Err(e) => {
                warn!(version = pending.version, sequence = pending.sequence, error = %e, "pending release no longer valid");
                let message = format!(
                    "release {} (sequence {}): {e}",
                    pending.version, pending.sequence
                );
                let _ = root.update_state(|s| {
                    s.pending = None;
                    s.last_error = Some(message);
                });
                self.root = Some(root);
                return;
            }
        };
        let m = &release.manifest;
        let url = if m.artifact.path.starts_with("https://") {
            m.artifact.path.clone()
        } else {
            fetch::url(&self.console, &m.artifact.path)
        };
        info!(version = %m.version, sequence = m.sequence, url, size = m.artifact.size, bank = %root.idle_bank(), "staging");
        let stream = ArtifactStream::open(self.http.clone(), url, m.artifact.size);
        let record = bank_record(
            m,
            pending.manifest.as_bytes(),
            pending.signature.as_bytes(),
            now,
        );
        let (format, size, sha256) = (
            archive_format(m.artifact.format),
            m.artifact.size,
            m.artifact.sha256.clone(),
        );
        let label = format!("staging {}", m.version);
        self.staging_release = Some(Box::new(release));
        self.staging = Some(tokio::task::spawn_blocking(move || {
            let mut progress = Progress::new(&label, size);
            let result = root.stage(
                std::io::BufReader::with_capacity(256 * 1024, stream),
                StageSpec {
                    format,
                    size,
                    sha256: &sha256,
                    record,
                    unpacked_size: None,
                    entries: None,
                    allow_in_place: false,
                },
                &mut |done| progress.update(done),
            );
            progress.finish();
            (root, result)
        }));
    }

    pub(super) async fn on_staged(&mut self, root: Root, result: Result<BankId, LayoutError>) {
        self.root = Some(root);
        release_freed_memory();
        let release = self.staging_release.take();
        let (version, sequence) = release
            .as_ref()
            .map(|r| (r.manifest.version.to_string(), r.manifest.sequence))
            .unwrap_or_default();
        match result {
            Ok(bank) => {
                info!(version, sequence, bank = %bank, "staged and verified");
                self.swap_to(bank).await;
            }
            Err(e) => {
                error!(version, sequence, error = %e, "staging failed; the active bank is untouched");
                let retry = SystemTime::now() + STAGE_RETRY.max(self.config.poll_interval);
                let message = format!("staging {version} (sequence {sequence}): {e}");
                if let Some(root) = &mut self.root {
                    let _ = root.update_state(|s| {
                        if let Some(p) = &mut s.pending {
                            p.not_before = clock::unix(retry);
                        }
                        s.last_error = Some(message);
                    });
                }
            }
        }
    }

    // ----- swap, trial, commit, rollback -------------------------------------------------

    /// Activates `bank` and starts its payload on probation. With sockets the old
    /// generation keeps serving until the new one is ready; without, it stops first.
    async fn swap_to(&mut self, bank: BankId) {
        let Some(spec) = self.payload_spec(bank) else {
            return;
        };
        let old = self.payload.take();
        let old = if self.listeners.is_empty() {
            if let Some(old) = old {
                old.stop().await;
            }
            None
        } else {
            old
        };
        let now = clock::unix(SystemTime::now());
        if let Some(Err(e)) = self.root.as_mut().map(|r| r.activate(bank, now)) {
            error!(error = %e, "could not activate the new bank; staying on the old version");
            self.payload = old;
            self.set_last_error(Some(format!("activating {bank}: {e}")));
            if self.payload.is_none() {
                self.start_payload();
            }
            return;
        }
        info!(version = spec.version, bank = %bank, "swapped; the new version is on trial");
        self.begin_trial(bank);
        self.start_payload();
        if let Some(old) = old {
            self.draining = Some((
                old,
                self.trial
                    .as_ref()
                    .map_or_else(Instant::now, |t| t.deadline),
            ));
        }
    }

    /// Starts the probation of the version in `bank`.
    pub(super) fn begin_trial(&mut self, bank: BankId) {
        let Some(root) = &self.root else { return };
        let (version, sequence) = root
            .bank_record(bank)
            .map(|r| (r.version.clone(), r.sequence))
            .unwrap_or_default();
        let now = Instant::now();
        self.trial = Some(Trial {
            version,
            sequence,
            deadline: now + self.config.health.grace,
            failures: 0,
            next_probe: now + PROBE_TIMEOUT.min(self.config.health.grace / 10),
        });
        self.restart_delay = super::FIRST_RESTART;
    }

    pub(super) async fn on_trial_tick(&mut self) {
        if let Some(reason) = self.rollback_reason.take() {
            return self.rollback_trial(&reason).await;
        }
        let Some(trial) = &mut self.trial else { return };
        let now = Instant::now();
        match &self.config.health.http {
            Some(url) if now >= trial.next_probe => {
                trial.next_probe =
                    now + (self.config.health.grace / 10).max(Duration::from_millis(100));
                match probe(&self.http, url).await {
                    Ok(()) => return self.commit().await,
                    Err(e) if now >= trial.deadline => {
                        let reason =
                            format!("not healthy within {:?}: {e}", self.config.health.grace);
                        return self.rollback_trial(&reason).await;
                    }
                    Err(e) => {
                        info!(version = trial.version, error = %e, "health probe failed");
                    }
                }
            }
            Some(_) => {}
            None if now < trial.deadline => {}
            None if self.config.health.notify => {
                let reason = format!("no READY=1 within {:?}", self.config.health.grace);
                return self.rollback_trial(&reason).await;
            }
            None if self.payload.is_some() => return self.commit().await,
            None => {
                return self
                    .rollback_trial("not running at the end of its trial")
                    .await;
            }
        }
    }

    pub(super) async fn commit(&mut self) {
        let Some(trial) = self.trial.take() else {
            return;
        };
        if let Some(Err(e)) = self.root.as_mut().map(Root::commit) {
            error!(error = %e, "could not commit");
            return;
        }
        info!(
            version = trial.version,
            sequence = trial.sequence,
            "committed"
        );
        self.clear_error_prefix("");
        self.finish_draining().await;
        self.evaluate_latest();
    }

    /// The version on trial failed: back to the other bank, marked bad.
    async fn rollback_trial(&mut self, reason: &str) {
        let Some(trial) = self.trial.take() else {
            return;
        };
        error!(
            version = trial.version,
            sequence = trial.sequence,
            reason,
            "trial failed; rolling back"
        );
        if let Some(payload) = self.payload.take() {
            payload.stop().await;
        }
        let message = format!("{} rolled back: {reason}", trial.version);
        match self.switch_back(&trial.version, trial.sequence, &message) {
            Ok(bank) => {
                self.set_last_error(Some(message));
                self.restart_at = None;
                match self.draining.take() {
                    Some((old, _)) => self.payload = Some(old), // it never stopped serving
                    None => self.start_payload(),
                }
                info!(bank = %bank, "rolled back");
            }
            Err(e) => error!(error = %e, "rollback failed"),
        }
        self.evaluate_latest();
    }

    /// Flips the root to the other bank and marks `version` bad.
    fn switch_back(
        &mut self,
        version: &str,
        sequence: u64,
        reason: &str,
    ) -> anyhow::Result<BankId> {
        let root = self
            .root
            .as_mut()
            .ok_or_else(|| anyhow!("a release is being staged"))?;
        // One state write for the rollback and the mark of the version left, which is
        // the active one (`version` at `sequence`).
        let _ = (version, sequence);
        Ok(root.rollback_marking_bad(reason)?.to)
    }

    // ----- control -----------------------------------------------------------------------

    pub(super) async fn on_control(&mut self, request: Request) -> Response {
        let (ok, message) = match request {
            Request::Status => (true, String::new()),
            Request::Check => {
                self.check_now.notify_one();
                (true, "checking now".to_string())
            }
            Request::Rollback => match self.admin_rollback().await {
                Ok(m) => (true, m),
                Err(e) => (false, format!("{e:#}")),
            },
        };
        self.publish_status();
        Response {
            ok,
            message,
            status: self.report.borrow().clone(),
        }
    }

    async fn admin_rollback(&mut self) -> anyhow::Result<String> {
        if self.staging.is_some() {
            return Err(anyhow!(
                "a release is being staged into the other bank; try again when it finishes"
            ));
        }
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| anyhow!("the root is busy"))?;
        let from = root.active_bank();
        let (version, sequence) = root
            .bank_record(from)
            .map(|r| (r.version.clone(), r.sequence))
            .ok_or_else(|| anyhow!("no version is active"))?;
        // The state flips first: when it is refused (nothing good to go back to),
        // nothing else changes, the trial included.
        let to = self.switch_back(&version, sequence, "rolled back by an admin")?;
        self.trial = None;
        self.rollback_reason = None;
        self.restart_at = None;
        let current = self.payload.take();
        match self.draining.take() {
            // During an overlapped trial the previous generation still serves: it is
            // the version rolled back to, so it simply stays.
            Some((previous, _)) => {
                self.payload = Some(previous);
                if let Some(p) = current {
                    p.stop().await;
                }
            }
            None if self.listeners.is_empty() => {
                if let Some(p) = current {
                    p.stop().await;
                }
                self.start_payload();
            }
            None => {
                self.start_payload();
                if let Some(p) = current {
                    self.draining = Some((p, Instant::now() + self.config.health.grace));
                }
            }
        }
        let now = self
            .root
            .as_ref()
            .and_then(|r| r.state().version_of(to))
            .unwrap_or("none")
            .to_string();
        info!(from = version, to = now, bank = %to, "rolled back by an admin");
        Ok(format!(
            "rolled back to {now} in {to}; {version} stays in {from}, marked bad"
        ))
    }

    // ----- status ------------------------------------------------------------------------

    /// Recomputes the status (when the root is here) and hands it to the reporter.
    pub(super) fn publish_status(&mut self) {
        let Some(root) = &self.root else { return };
        let mut report = StatusReport::new(
            &root.dir().display().to_string(),
            Some(self.agent_id.clone()),
            root.state(),
        );
        report.last_check = self.last_check.map(clock::rfc3339);
        self.report.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&report);
            *current = Some(report);
            changed
        });
    }

    /// Keeps `error` in state.json (written only when it changes).
    fn set_last_error(&mut self, message: Option<String>) {
        let Some(root) = &mut self.root else { return };
        if root.state().last_error == message {
            return;
        }
        if let Err(e) = root.update_state(|s| s.last_error = message) {
            error!(error = %e, "could not save the last error");
        }
    }

    /// Clears the last error if it starts with `prefix` (a later success of that kind).
    fn clear_error_prefix(&mut self, prefix: &str) {
        let matches = self
            .root
            .as_ref()
            .and_then(|r| r.state().last_error.as_deref())
            .is_some_and(|e| e.starts_with(prefix));
        if matches {
            self.set_last_error(None);
        }
    }
}

/// One HTTP health probe: 2xx within the timeout.
async fn probe(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let response = http
        .get(url)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| anyhow!("{url}: {}", fetch::describe(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(anyhow!("{url} answered {}", response.status()))
    }
}

/// Staging frees megabytes of buffers that glibc's allocator would otherwise keep:
/// an idle agent went from 9.7 to 16.5 MiB RSS after its first update. Hands them
/// back to the kernel (all arenas) once, after each staging.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
