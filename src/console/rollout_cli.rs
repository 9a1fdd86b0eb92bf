//! `bankswap console rollout status|pause|resume|abort CHANNEL` and
//! `console channel suspend|resume CHANNEL` (SPEC §11):
//! asks a running console (`--console URL`, with an admin token from
//! `--token-file` or `BANKSWAP_TOKEN`), or, for `status` only, reads a console
//! data folder (`--data DIR`) as the console would.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};

use super::admin_client::{check_console_url, https_client, runtime};
use super::rollout::percent_text;
use super::rollout_engine::Rollouts;
use super::rollout_view::{RolloutView, RolloutsView};
use super::store::{self, FLEET_DB};
use crate::cli::{AdminAccess, ChannelArgs, ChannelCommand, RolloutArgs, RolloutCommand};
use crate::error::UsageError;

/// A console that has not answered in this long is reported as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read: a rollout is a few KiB (its events included).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where the admin token comes from when no flag gives it.
const TOKEN_ENV: &str = "BANKSWAP_TOKEN";

/// Runs `console rollout ...`.
pub fn run(args: &RolloutArgs) -> anyhow::Result<()> {
    let (channel, action) = match &args.command {
        RolloutCommand::Status { channel } => (channel.clone(), None),
        RolloutCommand::Pause { channel } => (Some(channel.clone()), Some("pause")),
        RolloutCommand::Resume { channel } => (Some(channel.clone()), Some("resume")),
        RolloutCommand::Abort { channel, .. } => (Some(channel.clone()), Some("abort")),
    };
    if let Some(channel) = &channel {
        crate::config::check_channel(channel).map_err(UsageError::new)?;
    }
    let rollback = matches!(args.command, RolloutCommand::Abort { rollback: true, .. });
    let views = match (&args.console, &args.data, action) {
        (Some(url), None, _) => ask(args, url, channel.as_deref(), action, rollback)?,
        (None, Some(data), None) => offline(data)?,
        (None, Some(_), Some(action)) => {
            return Err(UsageError::new(format!(
                "rollout {action} changes the running console: give --console URL (and its admin token)"
            ))
            .into());
        }
        _ => return Err(UsageError::new("give --console URL or (for status) --data DIR").into()),
    };
    let views: Vec<RolloutView> = views
        .into_iter()
        .filter(|v| channel.as_ref().is_none_or(|c| *c == v.channel))
        .collect();
    if let (Some(channel), true) = (&channel, views.is_empty()) {
        return Err(anyhow!(
            "channel {channel} has no rollout (publish with --waves)"
        ));
    }
    if args.json {
        let body = match (&channel, views.as_slice()) {
            (Some(_), [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&RolloutsView {
                rollouts: views,
                suspended: Default::default(),
            })?,
        };
        println!("{body}");
    } else if views.is_empty() {
        println!("no rollout in waves on this console");
    } else {
        for view in &views {
            print!("{}", text(view));
        }
    }
    Ok(())
}

/// The rollouts as a running console sees them, after the action if one is asked.
fn ask(
    args: &RolloutArgs,
    url: &str,
    channel: Option<&str>,
    action: Option<&str>,
    rollback: bool,
) -> anyhow::Result<Vec<RolloutView>> {
    let (client, token, base, runtime) = connect(url, &args.access)?;
    runtime.block_on(async {
        if let (Some(action), Some(channel)) = (action, channel) {
            let mut target = format!("{base}/v1/rollouts/{channel}/{action}");
            if rollback {
                target.push_str("?rollback=true");
            }
            let request = client.post(&target).bearer_auth(&token);
            let body = send(request, &target).await?;
            let view: RolloutView = serde_json::from_slice(&body)
                .with_context(|| format!("reading the answer of {target}"))?;
            return Ok(vec![view]);
        }
        let target = format!("{base}/v1/rollouts");
        let body = send(client.get(&target).bearer_auth(&token), &target).await?;
        let views: RolloutsView = serde_json::from_slice(&body)
            .with_context(|| format!("reading the rollouts from {target}"))?;
        Ok(views.rollouts)
    })
}

/// The HTTPS client, the admin token and the base URL of `url`, and a runtime to ask with.
fn connect(
    url: &str,
    access: &AdminAccess,
) -> anyhow::Result<(reqwest::Client, String, String, tokio::runtime::Runtime)> {
    check_console_url(url)?;
    let token = match access.token_file.as_deref() {
        Some(file) => super::read_token_file(file, "--token-file")?,
        None => match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                return Err(UsageError::new(format!(
                    "this command needs the admin token: --token-file FILE or {TOKEN_ENV}"
                ))
                .into());
            }
        },
    };
    let client = https_client(access.ca_cert.as_deref(), REQUEST_TIMEOUT)?;
    let base = url.trim_end_matches('/');
    let runtime = runtime()?;
    Ok((client, token, base.to_string(), runtime))
}

/// Runs `console channel suspend|resume CHANNEL`.
pub fn run_channel(args: &ChannelArgs) -> anyhow::Result<()> {
    let (channel, action) = match &args.command {
        ChannelCommand::Suspend { channel } => (channel, "suspend"),
        ChannelCommand::Resume { channel } => (channel, "resume"),
    };
    crate::config::check_channel(channel).map_err(UsageError::new)?;
    let Some(url) = &args.console else {
        return Err(UsageError::new("give --console URL (and its admin token)").into());
    };
    let (client, token, base, runtime) = connect(url, &args.access)?;
    let target = format!("{base}/v1/suspensions/{channel}/{action}");
    let body = runtime.block_on(send(client.post(&target).bearer_auth(&token), &target))?;
    let views: RolloutsView =
        serde_json::from_slice(&body).with_context(|| format!("reading the answer of {target}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if let Some(suspension) = views.suspended.get(channel.as_str()) {
        println!(
            "channel {channel} suspended by {} at {}: nobody new is admitted",
            suspension.by, suspension.at
        );
    } else {
        println!("channel {channel} resumed: its rollout admits again");
    }
    Ok(())
}

/// The body of a 2xx answer, or the console's one-line refusal.
async fn send(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut response = request
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(anyhow!(
                "{url}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    let reason = serde_json::from_slice::<super::ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| status.canonical_reason().unwrap_or("refused").to_string());
    Err(anyhow!(
        "{url}: {} (HTTP {})",
        reason.replace(['\n', '\r'], " "),
        status.as_u16()
    ))
}

/// The rollouts of a data folder, computed as the console does.
fn offline(data: &Path) -> anyhow::Result<Vec<RolloutView>> {
    if !data.is_dir() {
        return Err(UsageError::new(format!(
            "--data {}: no such console data folder",
            data.display()
        ))
        .into());
    }
    let db = data.join(FLEET_DB);
    let reports = store::read(&db)?;
    let members = store::read_members(&db)?;
    let engine = Rollouts::offline(data, &reports, members);
    Ok(engine.view().rollouts)
}

/// One rollout as text.
fn text(view: &RolloutView) -> String {
    let mut out = format!(
        "{}: {} (sequence {}) over {}: {}{}\n",
        view.channel,
        view.version,
        view.sequence,
        view.previous_version.as_deref().unwrap_or("nothing"),
        view.state,
        if view.active {
            ""
        } else {
            " (no longer the current release)"
        },
    );
    if let Some(suspension) = &view.suspended {
        out.push_str(&format!(
            "  channel suspended by {} at {}: nobody new is admitted until `console channel resume`\n",
            suspension.by, suspension.at
        ));
    }
    if let Some(reason) = &view.halt_reason {
        out.push_str(&format!("  halted because: {reason}\n"));
    }
    out.push_str(&format!(
        "  success {}, halt-on {}, soak {}s, report deadline {}s; {} agents, {} not admitted\n",
        percent_text(view.success),
        percent_text(view.halt_on),
        view.soak_secs,
        view.report_deadline_secs,
        view.agents,
        view.not_admitted
    ));
    for wave in &view.waves {
        out.push_str(&format!(
            "  wave {:>3}% {:<7} admitted {}: committed {}, trial {}, staging {}, failed {}, pending {}\n",
            wave.percent,
            wave.state,
            wave.admitted,
            wave.committed,
            wave.trial,
            wave.staging,
            wave.failed,
            wave.pending
        ));
    }
    for event in &view.events {
        out.push_str(&format!("  {}  {}\n", event.at, event.text));
    }
    out
}
