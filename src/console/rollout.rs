//! Console-managed rollouts (SPEC §11), the pure part: the plan `publish
//! --waves` writes beside a release, the reading of one agent's report
//! against that release ([`classify`]), the stable admission hash, and
//! **the** gate ([`decide`]) that opens the next wave, completes, halts, or
//! waits. No clock, no disk, no network: time comes in as a parameter, so
//! every rule is tested here over plain values.
//!
//! The engine that feeds the gate and serves the manifests is
//! `rollout_engine/`; the HTTP routes are `rollout_http.rs`; the command
//! line is `rollout_cli.rs`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The plan's file name, in the channel's folder beside `release.json`.
pub const PLAN_FILE: &str = "rollout.json";

/// The prepared, signed rollback's file name in the channel's folder (its
/// signature is beside it, `.minisig`); published by `rollout abort --rollback`.
pub const ROLLBACK_FILE: &str = "rollback.json";

/// The most waves a plan may have: a rollout of more steps than this is a
/// typo, and every wave is one line on the page.
pub const MAX_WAVES: usize = 20;

/// The largest plan file read: a plan is a few hundred bytes.
pub const MAX_PLAN_BYTES: u64 = 16 * 1024;

/// Ratios are compared in basis points (1/10,000), so that 95 % of 20 agents
/// is exactly 19, whatever floating point makes of 0.95 × 20.
const BASIS: u64 = 10_000;

/// What `publish --waves` asks of the console for one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The release this plan rolls out (its manifest's sequence).
    pub sequence: u64,
    /// Its payload version.
    pub version: String,
    /// The release non-admitted agents keep getting (the channel's release
    /// before this one), if there was one.
    #[serde(default)]
    pub previous_sequence: Option<u64>,
    /// Cumulative percentages of the fleet, ascending, the last one 100.
    pub waves: Vec<u8>,
    /// Fraction of the admitted agents that must have committed before the next wave opens.
    pub success: f64,
    /// Fraction of the admitted agents whose rollback or failure halts the rollout.
    pub halt_on: f64,
    /// How long after the last commit the next wave waits (seconds).
    pub soak_secs: u64,
    /// How long a wave's agents have to report the release (seconds); a wave
    /// that misses its success threshold with silent agents past it halts.
    pub report_deadline_secs: u64,
}

impl Plan {
    /// Checks what `publish` and the upload route must refuse.
    pub fn validate(&self) -> Result<(), String> {
        check_waves(&self.waves)?;
        for (name, ratio) in [("success", self.success), ("halt-on", self.halt_on)] {
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(format!(
                    "{name} {ratio}: must be above 0 % and at most 100 %"
                ));
            }
        }
        if self.sequence == 0 {
            return Err("a plan names the sequence of its release (not 0)".into());
        }
        if self.previous_sequence.is_some_and(|p| p >= self.sequence) {
            return Err("the previous release must have a lower sequence".into());
        }
        semver::Version::parse(&self.version)
            .map_err(|e| format!("version `{}`: {e}", self.version))?;
        Ok(())
    }
}

/// Parses `--waves 1%,10%,50%,100%` (the `%` is optional).
pub fn parse_waves(text: &str) -> Result<Vec<u8>, String> {
    let waves = text
        .split(',')
        .map(|part| {
            let digits = part.trim().trim_end_matches('%');
            digits
                .parse::<u8>()
                .map_err(|_| format!("`{}` is not a percentage from 1 to 100", part.trim()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_waves(&waves)?;
    Ok(waves)
}

/// Waves must climb strictly from above 0 to exactly 100.
fn check_waves(waves: &[u8]) -> Result<(), String> {
    if waves.is_empty() || waves.len() > MAX_WAVES {
        return Err(format!("give 1 to {MAX_WAVES} waves, e.g. 1%,10%,50%,100%"));
    }
    if waves[0] == 0 || waves.windows(2).any(|w| w[0] >= w[1]) {
        return Err("waves must grow, each above the one before, from above 0 %".into());
    }
    if waves.last() != Some(&100) {
        return Err("the last wave must be 100% (the whole fleet)".into());
    }
    Ok(())
}

/// Parses a ratio flag: `95%` or `0.95`.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let value = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a percentage (e.g. 95%)"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("`{text}`: must be above 0 % and at most 100 %"))
    }
}

/// A ratio in basis points (rounded).
fn basis_points(ratio: f64) -> u64 {
    (ratio.clamp(0.0, 1.0) * BASIS as f64).round() as u64
}

/// Whether `part / whole >= ratio` (false when `whole` is 0).
fn at_least(part: u32, whole: u32, ratio: f64) -> bool {
    whole > 0 && u64::from(part) * BASIS >= basis_points(ratio) * u64::from(whole)
}

/// The stable admission hash of an agent for a release: the first 8 bytes of
/// SHA-256 over the agent id and the sequence. A new release reshuffles the
/// fleet, so the same machines are not always first.
pub fn admission_hash(agent_id: &str, sequence: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(agent_id.as_bytes())
        .chain_update(b":")
        .chain_update(sequence.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The admission threshold of a wave of `percent` over a fleet whose
/// admission hashes are `sorted` (ascending): agents hashing below it are
/// admitted. It admits at least `percent` of the known fleet (rounded up, so a
/// 1 % wave of 50 agents admits one), and a 100 % wave admits everyone,
/// including agents the console has not met yet.
pub fn threshold(percent: u8, sorted: &[u64]) -> u64 {
    if percent >= 100 {
        return u64::MAX;
    }
    let by_share = (u128::from(u64::MAX) * u128::from(percent) / 100) as u64;
    let needed = (sorted.len() * usize::from(percent)).div_ceil(100);
    let by_rank = match needed.checked_sub(1).and_then(|i| sorted.get(i)) {
        Some(&hash) => hash.saturating_add(1),
        None => 0,
    };
    by_share.max(by_rank)
}

/// What an agent's latest report says about itself, as the engine keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// The version it runs.
    pub version: Option<String>,
    /// `committed` or `trial`.
    pub phase: Option<String>,
    /// The highest release sequence it accepted.
    pub sequence: Option<u64>,
    /// The version of the release it has scheduled or is staging.
    pub pending_version: Option<String>,
    /// The sequence of that release.
    pub pending_sequence: Option<u64>,
    /// The kind of its last error (`trial`, `payload`, `release`, ...).
    pub last_error_kind: Option<String>,
    /// Its last error, the cause shown when it failed.
    pub last_error: Option<String>,
}

/// Where one admitted agent stands with the release being rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Runs the release, committed.
    Committed,
    /// Runs the release on trial.
    Trial,
    /// Has the release scheduled or is staging it.
    Staging,
    /// Took the release and no longer runs it (rolled back), or runs it failing.
    Failed,
    /// Has not reported the release at all (yet).
    Pending,
}

/// Reads a report against the release `version` of `sequence`. The agent's
/// sequence says it took the release: an agent at or past it that does not run
/// the version went back (its bad-version mark makes it stay back).
pub fn classify(report: Option<&AgentReport>, version: &str, sequence: u64) -> Progress {
    let Some(report) = report else {
        return Progress::Pending;
    };
    let runs_it = report.version.as_deref() == Some(version);
    let kind = report.last_error_kind.as_deref();
    if runs_it {
        // A trial failed with nothing to go back to, or the committed payload
        // keeps crashing: it runs, but badly.
        if matches!(kind, Some("trial" | "payload")) {
            return Progress::Failed;
        }
        return match report.phase.as_deref() {
            Some("trial") => Progress::Trial,
            _ => Progress::Committed,
        };
    }
    if report.sequence.is_some_and(|s| s >= sequence) {
        return Progress::Failed;
    }
    if report.pending_sequence == Some(sequence)
        || report.pending_version.as_deref() == Some(version)
    {
        return Progress::Staging;
    }
    Progress::Pending
}

/// Counts of the admitted agents by [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Agents admitted.
    pub admitted: u32,
    /// Committed on the release.
    pub committed: u32,
    /// On trial.
    pub trial: u32,
    /// Scheduled or staging.
    pub staging: u32,
    /// Rolled back or failing.
    pub failed: u32,
    /// Not reported yet.
    pub pending: u32,
}

impl Tally {
    /// Counts one more agent.
    pub fn add(&mut self, progress: Progress) {
        self.admitted += 1;
        match progress {
            Progress::Committed => self.committed += 1,
            Progress::Trial => self.trial += 1,
            Progress::Staging => self.staging += 1,
            Progress::Failed => self.failed += 1,
            Progress::Pending => self.pending += 1,
        }
    }
}

/// Everything the gate looks at, at one instant (times in unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The open wave (index into `plan.waves`).
    pub wave: usize,
    /// The agents admitted so far (every open wave), by progress.
    pub tally: Tally,
    /// Failures an admin waved through with `resume` after a halt.
    pub excused_failures: u32,
    /// Now.
    pub now_ms: u64,
    /// When the open wave opened (or the rollout was last resumed).
    pub wave_opened_ms: u64,
    /// When an admitted agent last committed, if one did.
    pub last_commit_ms: Option<u64>,
}

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nothing to do yet; the reason, for `status`.
    Wait(String),
    /// Open this wave (index into `plan.waves`).
    Open(usize),
    /// The last wave met its success threshold: the rollout is complete.
    Complete,
    /// Too many failures: stop admitting, with the reason.
    Halt(String),
    /// The wave's deadline passed with silent agents and without success.
    Overdue(String),
}

/// **The** gate of a rollout: failures first (a release that breaks machines
/// halts even if others committed), then success (and soak), then the
/// report deadline.
pub fn decide(input: &GateInput<'_>) -> Gate {
    let GateInput { plan, tally, .. } = *input;
    let percent = plan.waves.get(input.wave).copied().unwrap_or(100);
    let failed = tally.failed.saturating_sub(input.excused_failures);
    if failed > 0 && at_least(failed, tally.admitted, plan.halt_on) {
        return Gate::Halt(format!(
            "{failed} of {} admitted agents rolled back or failed (halt-on {})",
            tally.admitted,
            percent_text(plan.halt_on)
        ));
    }
    if at_least(tally.committed, tally.admitted, plan.success) {
        if input.wave + 1 >= plan.waves.len() {
            return Gate::Complete;
        }
        let soaked = input
            .last_commit_ms
            .unwrap_or(input.wave_opened_ms)
            .saturating_add(plan.soak_secs.saturating_mul(1000));
        if input.now_ms >= soaked {
            return Gate::Open(input.wave + 1);
        }
        return Gate::Wait(format!(
            "wave {percent}% met its success threshold; soaking {}s more",
            (soaked - input.now_ms).div_ceil(1000)
        ));
    }
    let deadline = input
        .wave_opened_ms
        .saturating_add(plan.report_deadline_secs.saturating_mul(1000));
    if tally.pending > 0 && input.now_ms >= deadline {
        return Gate::Overdue(format!(
            "wave {percent}%: {} of {} admitted agents did not report the release within {}s",
            tally.pending, tally.admitted, plan.report_deadline_secs
        ));
    }
    Gate::Wait(format!(
        "wave {percent}%: {} of {} admitted agents committed (need {})",
        tally.committed,
        tally.admitted,
        percent_text(plan.success)
    ))
}

/// `95%`, `2.5%`.
pub fn percent_text(ratio: f64) -> String {
    let points = basis_points(ratio);
    if points.is_multiple_of(100) {
        format!("{}%", points / 100)
    } else {
        format!("{}%", points as f64 / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            sequence: 5,
            version: "2.0.0".into(),
            previous_sequence: Some(4),
            waves: vec![1, 10, 50, 100],
            success: 0.95,
            halt_on: 0.05,
            soak_secs: 60,
            report_deadline_secs: 600,
        }
    }

    fn tally(admitted: u32, committed: u32, failed: u32, pending: u32) -> Tally {
        Tally {
            admitted,
            committed,
            failed,
            pending,
            staging: admitted - committed - failed - pending,
            trial: 0,
        }
    }

    fn input(plan: &Plan, wave: usize, tally: Tally, now_ms: u64) -> GateInput<'_> {
        GateInput {
            plan,
            wave,
            tally,
            excused_failures: 0,
            now_ms,
            wave_opened_ms: 0,
            last_commit_ms: Some(10_000),
        }
    }

    #[test]
    fn waves_and_ratios_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_waves("1%,10%,50%,100%").unwrap(),
            vec![1, 10, 50, 100]
        );
        assert_eq!(parse_waves("100").unwrap(), vec![100]);
        for bad in ["", "0%,100%", "10%,5%,100%", "10%,50%", "1%,101%", "x"] {
            assert!(parse_waves(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ratio("95%").unwrap(), 0.95);
        assert_eq!(parse_ratio("0.05").unwrap(), 0.05);
        for bad in ["0%", "101%", "-1", "many"] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
        assert!(plan().validate().is_ok());
        let bad = Plan {
            previous_sequence: Some(5),
            ..plan()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_next_wave_opens_on_success_only_after_the_soak() {
        let plan = plan();
        // 19 of 20 is exactly 95 %: enough, but the last commit was at 10 s
        // and the soak is 60 s.
        let t = tally(20, 19, 0, 0);
        assert!(matches!(decide(&input(&plan, 1, t, 69_999)), Gate::Wait(_)));
        assert_eq!(decide(&input(&plan, 1, t, 70_000)), Gate::Open(2));
        // 18 of 20 is not.
        let short = tally(20, 18, 0, 0);
        assert!(matches!(
            decide(&input(&plan, 1, short, 1_000_000)),
            Gate::Wait(_)
        ));
        // The last wave completes instead of opening.
        assert_eq!(decide(&input(&plan, 3, t, 0)), Gate::Complete);
        // Nobody admitted: nothing to judge, nothing opens.
        assert!(matches!(
            decide(&input(&plan, 0, Tally::default(), 1_000_000)),
            Gate::Wait(_)
        ));
    }

    #[test]
    fn failures_at_halt_on_halt_even_with_successes() {
        let plan = plan();
        // 1 of 20 is 5 %: halt.
        let t = tally(20, 19, 1, 0);
        assert!(
            matches!(decide(&input(&plan, 1, t, 70_000)), Gate::Halt(r) if r.contains("1 of 20"))
        );
        // 1 of 21 is below 5 %: the wave opens.
        let t = tally(21, 20, 1, 0);
        assert_eq!(decide(&input(&plan, 1, t, 70_000)), Gate::Open(2));
        // A failure an admin excused by resuming does not halt again.
        let t = tally(20, 19, 1, 0);
        let excused = GateInput {
            excused_failures: 1,
            ..input(&plan, 1, t, 70_000)
        };
        assert_eq!(decide(&excused), Gate::Open(2));
    }

    #[test]
    fn silent_agents_past_the_deadline_keep_the_next_wave_shut() {
        let plan = plan();
        let t = tally(10, 5, 0, 3);
        assert!(matches!(
            decide(&input(&plan, 1, t, 599_999)),
            Gate::Wait(_)
        ));
        assert!(
            matches!(decide(&input(&plan, 1, t, 600_000)), Gate::Overdue(r) if r.contains("3 of 10"))
        );
        // Slow but reporting (staging) agents are not overdue.
        let t = tally(10, 5, 0, 0);
        assert!(matches!(
            decide(&input(&plan, 1, t, 10_000_000)),
            Gate::Wait(_)
        ));
    }

    #[test]
    fn reports_are_read_against_the_release() {
        let report = |version: &str, phase: &str, sequence: u64, kind: Option<&str>| AgentReport {
            version: Some(version.into()),
            phase: Some(phase.into()),
            sequence: Some(sequence),
            last_error_kind: kind.map(String::from),
            ..AgentReport::default()
        };
        let c = |r: &AgentReport| classify(Some(r), "2.0.0", 5);
        assert_eq!(classify(None, "2.0.0", 5), Progress::Pending);
        assert_eq!(c(&report("1.0.0", "committed", 4, None)), Progress::Pending);
        assert_eq!(c(&report("2.0.0", "trial", 5, None)), Progress::Trial);
        assert_eq!(
            c(&report("2.0.0", "committed", 5, None)),
            Progress::Committed
        );
        // Rolled back: took sequence 5, runs the old version (whatever its last error says).
        assert_eq!(
            c(&report("1.0.0", "committed", 5, Some("trial"))),
            Progress::Failed
        );
        assert_eq!(
            c(&report("1.0.0", "committed", 5, Some("release"))),
            Progress::Failed
        );
        // Kept without a fallback, marked bad.
        assert_eq!(
            c(&report("2.0.0", "committed", 5, Some("trial"))),
            Progress::Failed
        );
        let staging = AgentReport {
            pending_sequence: Some(5),
            pending_version: Some("2.0.0".into()),
            ..report("1.0.0", "committed", 4, Some("staging"))
        };
        assert_eq!(c(&staging), Progress::Staging);
    }

    #[test]
    fn thresholds_admit_at_least_the_share_and_are_stable() {
        assert_eq!(admission_hash("a", 5), admission_hash("a", 5));
        assert_ne!(admission_hash("a", 5), admission_hash("a", 6));
        let mut hashes: Vec<u64> = (0..50)
            .map(|i| admission_hash(&format!("agent-{i}"), 5))
            .collect();
        hashes.sort_unstable();
        let admitted = |percent| {
            let t = threshold(percent, &hashes);
            hashes.iter().filter(|&&h| h < t).count()
        };
        assert!(admitted(1) >= 1);
        assert!(admitted(10) >= 5);
        assert!(admitted(50) >= 25);
        assert_eq!(admitted(100), 50);
        assert_eq!(threshold(100, &[]), u64::MAX);
        assert!(
            threshold(1, &[]) > 0,
            "agents not met yet still get their share"
        );
    }
}
