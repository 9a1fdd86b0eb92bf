//! The one decision of a trial: commit the new version, keep waiting, or roll
//! back. A pure function of what the trial has seen, so that every case is a
//! unit test.

use std::time::Duration;

/// How a trial is judged (from `[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Exits and failed probes that fail a trial.
    pub max_failures: u32,
    /// Whether the payload must send `READY=1` (no HTTP probe configured).
    pub notify: bool,
    /// Whether an HTTP health probe is configured.
    pub probes: bool,
    /// How long the new version has to prove itself.
    pub grace: Duration,
}

/// What a trial has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The new generation sent `READY=1`.
    pub ready: bool,
    /// Exits, watchdog expiries and failed starts so far.
    pub failures: u32,
    /// What the last failure was.
    pub last_failure: Option<String>,
    /// The outcome of the probe just made, if one was.
    pub probe: Option<Result<(), String>>,
    /// The new generation is running now.
    pub running: bool,
    /// The grace period is over.
    pub past_deadline: bool,
}

/// What to do with the version on trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It proved itself: commit it.
    Commit,
    /// Not decided yet.
    Wait,
    /// It failed: roll back, for this reason.
    RollBack(String),
}

/// Judges a trial. In order: too many failures fail it; `READY=1` or a healthy
/// probe passes it; a failed probe fails it once the grace period is over;
/// without a probe, the end of the grace period fails a payload that had to
/// send `READY=1` (or is not running) and passes one that runs.
pub fn decide(policy: &Policy, seen: &Evidence) -> Verdict {
    if seen.failures >= policy.max_failures.max(1) {
        let what = seen.last_failure.as_deref().unwrap_or("it failed");
        return Verdict::RollBack(format!(
            "{what}; {} failures during its trial",
            seen.failures
        ));
    }
    if seen.ready {
        return Verdict::Commit;
    }
    match &seen.probe {
        Some(Ok(())) => return Verdict::Commit,
        Some(Err(e)) if seen.past_deadline => {
            return Verdict::RollBack(format!("not healthy within {:?}: {e}", policy.grace));
        }
        _ => {}
    }
    if policy.probes || !seen.past_deadline {
        return Verdict::Wait;
    }
    if policy.notify {
        Verdict::RollBack(format!("no READY=1 within {:?}", policy.grace))
    } else if seen.running {
        Verdict::Commit
    } else {
        Verdict::RollBack("not running at the end of its trial".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);

    fn policy(notify: bool, probes: bool) -> Policy {
        Policy {
            max_failures: 2,
            notify,
            probes,
            grace: GRACE,
        }
    }

    /// Every combination of the evidence, under every policy, against the rules
    /// written out a second time in the plainest form.
    #[test]
    fn every_combination_follows_the_rules() {
        let probes = [None, Some(Ok(())), Some(Err("refused".to_string()))];
        for notify in [false, true] {
            for with_probe in [false, true] {
                let p = policy(notify, with_probe);
                for failures in 0..=3 {
                    for ready in [false, true] {
                        for running in [false, true] {
                            for past_deadline in [false, true] {
                                for probe in &probes {
                                    let seen = Evidence {
                                        ready,
                                        failures,
                                        last_failure: Some("1.0.0 exited (exit status: 3)".into()),
                                        probe: probe.clone(),
                                        running,
                                        past_deadline,
                                    };
                                    let expected = if failures >= 2 {
                                        "rollback"
                                    } else if ready || matches!(probe, Some(Ok(()))) {
                                        "commit"
                                    } else if matches!(probe, Some(Err(_))) && past_deadline {
                                        "rollback"
                                    } else if with_probe || !past_deadline {
                                        "wait"
                                    } else if notify || !running {
                                        "rollback"
                                    } else {
                                        "commit"
                                    };
                                    let got = match decide(&p, &seen) {
                                        Verdict::Commit => "commit",
                                        Verdict::Wait => "wait",
                                        Verdict::RollBack(_) => "rollback",
                                    };
                                    assert_eq!(got, expected, "{p:?} {seen:?}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reasons_say_what_failed() {
        let failed = Evidence {
            failures: 2,
            last_failure: Some("1.1.0 exited (exit status: 3)".into()),
            ..Evidence::default()
        };
        assert_eq!(
            decide(&policy(false, false), &failed),
            Verdict::RollBack("1.1.0 exited (exit status: 3); 2 failures during its trial".into())
        );
        let late = Evidence {
            past_deadline: true,
            running: true,
            ..Evidence::default()
        };
        assert_eq!(
            decide(&policy(true, false), &late),
            Verdict::RollBack("no READY=1 within 3s".into())
        );
        let unhealthy = Evidence {
            probe: Some(Err("http://x answered 500".into())),
            past_deadline: true,
            ..Evidence::default()
        };
        assert_eq!(
            decide(&policy(false, true), &unhealthy),
            Verdict::RollBack("not healthy within 3s: http://x answered 500".into())
        );
        let gone = Evidence {
            past_deadline: true,
            ..Evidence::default()
        };
        assert_eq!(
            decide(&policy(false, false), &gone),
            Verdict::RollBack("not running at the end of its trial".into())
        );
    }

    #[test]
    fn a_zero_failure_limit_still_needs_a_failure() {
        let p = Policy {
            max_failures: 0,
            ..policy(false, false)
        };
        assert_eq!(decide(&p, &Evidence::default()), Verdict::Wait);
    }
}
