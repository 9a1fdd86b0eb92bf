//! Background tasks of the agent that talk to the console: the checker
//! (poll or push, with backoff while the console is unreachable) and the
//! reporter (the latest status, POSTed when it changes).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::agent::fetch::{self, Checked};
use crate::agent::schedule::jittered;
use crate::config::Timeouts;
use crate::report::{StatusReport, WireReport};

/// First pause after a failed check; doubles up to the poll interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A 304 that took this long (or half the wait, if less) was held by a
/// console, which may end holds well before the agent's wait (`console serve
/// --max-wait`): the next request is held at once. A static host answers in
/// milliseconds; one slower than this costs at most one request per 30 s.
const HELD_AT_LEAST: Duration = Duration::from_secs(30);

/// What the checker tells the core.
pub type CheckOutcome = Result<Checked, String>;

/// Where and how often to check.
#[derive(Debug, Clone)]
pub struct CheckerSettings {
    /// Console base URL.
    pub console: String,
    /// Channel followed.
    pub channel: String,
    /// This agent's id, sent with each check (a console's rollout admits by it).
    pub agent_id: String,
    /// Time between checks (and the push wait, up to `timeouts.max_wait`).
    pub poll_interval: Duration,
    /// Deadlines of the requests (`[timeouts]`).
    pub timeouts: Timeouts,
}

/// Runs forever: check, hand the outcome to the core, wait (or be woken by
/// `check_now`). Each request uses the latest of `clients` and of `settings`;
/// new settings (a reload) end the wait, or a held request, at once.
pub async fn run_checker(
    clients: watch::Receiver<reqwest::Client>,
    mut settings_rx: watch::Receiver<CheckerSettings>,
    check_now: Arc<Notify>,
    core: mpsc::Sender<CheckOutcome>,
) {
    let mut etag: Option<String> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let settings = settings_rx.borrow_and_update().clone();
        let started = Instant::now();
        // Jittered per request, so that a fleet's held requests do not end together.
        let wait = jittered(settings.poll_interval, rand::random()).min(settings.timeouts.max_wait);
        let held = etag.is_some();
        // The latest client: after a certificate renewal, the new certificate.
        let http = clients.borrow().clone();
        let outcome = tokio::select! {
            r = fetch::check(&http, &settings.console, &settings.channel, Some(&settings.agent_id), etag.as_deref(), wait, &settings.timeouts) => r,
            () = check_now.notified() => {
                debug!("check requested; asking again without waiting");
                etag = None;
                continue;
            }
            Ok(()) = settings_rx.changed() => {
                debug!("settings reloaded; asking again with them");
                continue;
            }
        };
        let poll = started + jittered(settings.poll_interval, rand::random());
        let next = match &outcome {
            // A new manifest with a new ETag: hold the next request at once, so that a
            // second publish is pushed too. (A console holds it; a static host answers
            // 304 at once and the agent then polls.)
            Ok(Checked::Release {
                etag: Some(new), ..
            }) if etag.as_ref() != Some(new) => {
                backoff = FIRST_BACKOFF;
                etag = Some(new.clone());
                Instant::now()
            }
            // A held request that ran its course: hold the next one at once, no gap.
            Ok(Checked::Unchanged)
                if held && started.elapsed() >= (wait / 2).min(HELD_AT_LEAST) =>
            {
                backoff = FIRST_BACKOFF;
                Instant::now()
            }
            // A host that does not hold requests (or gives no ETag): poll.
            Ok(checked) => {
                backoff = FIRST_BACKOFF;
                if let Checked::Release { etag: new, .. } = checked {
                    etag.clone_from(new);
                }
                poll
            }
            Err(_) => {
                let pause = jittered(backoff, rand::random());
                backoff = (backoff * 2).min(settings.poll_interval.max(FIRST_BACKOFF));
                Instant::now() + pause
            }
        };
        if core
            .send(outcome.map_err(|e| format!("{e:#}")))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = check_now.notified() => etag = None,
            Ok(()) = settings_rx.changed() => backoff = FIRST_BACKOFF,
        }
    }
}

/// Posts the status to `{console}/v1/agents/{id}/report` whenever it changes. A console
/// that has no such endpoint (a static host: 404/405) is remembered and not asked again.
/// Each POST uses the latest of `clients` and of `settings` (the console and
/// `[timeouts] request`, its deadline: a stuck console cannot hold the reporter).
pub async fn run_reporter(
    clients: watch::Receiver<reqwest::Client>,
    settings: watch::Receiver<CheckerSettings>,
    agent_id: String,
    mut reports: watch::Receiver<Option<StatusReport>>,
) {
    loop {
        let report = reports.borrow_and_update().clone();
        if let Some(report) = report {
            let (url, timeout) = {
                let s = settings.borrow();
                let url = fetch::url(&s.console, &format!("agents/{agent_id}/report"));
                (url, s.timeouts.request)
            };
            let body = WireReport::from(&report);
            let http = clients.borrow().clone();
            match http.post(&url).timeout(timeout).json(&body).send().await {
                Ok(r)
                    if matches!(
                        r.status(),
                        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
                    ) =>
                {
                    info!(url, status = %r.status(), "the console takes no reports; not sending more");
                    return;
                }
                Ok(r) => debug!(url, status = %r.status(), "report sent"),
                Err(e) => {
                    debug!(url, error = %fetch::describe_cut(&e, timeout, "request"), "report not sent");
                }
            }
        }
        if reports.changed().await.is_err() {
            return;
        }
    }
}
