//! The fleet page an operator keeps open (SPEC §11): `GET /` serves a shell
//! whose script (`/assets/fleet.js`) renders the channels, the rollouts and
//! the agents from the JSON endpoints and refreshes them in place; `GET
//! /v1/channels` is the channels' JSON. The page is for logged-in admins
//! (auth.rs); the assets are public (they hold no data).
//!
//! The assets are compiled in (`include_str!`): no CDN, nothing to install.
//! The page is sent under a strict Content-Security-Policy (no inline script
//! or style), so a value that slips past escaping still cannot run. The
//! script builds every cell with `textContent`, never markup; the
//! `<noscript>` table for text browsers is rendered here, every value escaped;
//! every form carries the session's CSRF token.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::PathRejection;
use axum::extract::{self, State};
use axum::http::StatusCode;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use tracing::warn;

use super::auth::AdminUser;
use super::push::{MAX_MANIFEST_BYTES, read_release};
use super::registry::AgentRecord;
use super::routes::AppState;
use super::store::FleetEntry;
use crate::channel::ChannelDir;
use crate::config::check_channel;

/// Agents whose last report is older than this are marked stale unless
/// `console serve --stale-after` says otherwise: three polls of an agent on
/// the default 5 min interval (a push hold of the default `--max-wait` is as long).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// How often the page asks for fresh data: often enough to follow a wave,
/// rare enough that an open page costs the console nothing (three small GETs).
const REFRESH_EVERY: Duration = Duration::from_secs(3);

/// The policy of the page: scripts, styles and requests from the console
/// only, no inline script or style, no framing, forms post only to the console.
const CONTENT_SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The page's script.
const FLEET_JS: &str = include_str!("assets/fleet.js");

/// The page's style sheet.
const FLEET_CSS: &str = include_str!("assets/fleet.css");

/// The current and the previous release of one channel, as the page shows it
/// (`GET /v1/channels`).
#[derive(Debug, Default, PartialEq, Serialize)]
struct ChannelRow {
    /// The channel's name.
    name: String,
    /// The manifest's `version`, or none without a (readable) release.
    version: Option<String>,
    /// The manifest's `sequence`.
    sequence: Option<u64>,
    /// The manifest's `published_at`.
    published_at: Option<String>,
    /// The version of the newest earlier release of another version (the
    /// history), which a rollback would go back to.
    previous_version: Option<String>,
    /// Its sequence.
    previous_sequence: Option<u64>,
}

/// `GET /v1/channels`: `{"channels": [...]}`, by name.
pub async fn channels(State(state): State<AppState>) -> Response {
    let data = state.data.clone();
    match tokio::task::spawn_blocking(move || channel_rows(&data)).await {
        Ok(rows) => Json(serde_json::json!({ "channels": rows })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `GET /assets/{name}`: the page's script and style sheet.
pub async fn asset(name: Result<extract::Path<String>, PathRejection>) -> Response {
    let (body, content_type) = match name.as_ref().map(|n| n.as_str()) {
        Ok("fleet.js") => (FLEET_JS, "text/javascript; charset=utf-8"),
        Ok("fleet.css") => (FLEET_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let headers = [
        (CONTENT_TYPE, content_type),
        // Revalidated: a console upgrade must not run with the old script.
        (CACHE_CONTROL, "no-cache"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body).into_response()
}

/// Serves the page.
pub async fn index(
    State(state): State<AppState>,
    Extension(user): Extension<AdminUser>,
) -> Response {
    let fleet = match state.store.list().await {
        Ok(fleet) => fleet,
        Err(e) => {
            warn!(error = %e, "cannot read the fleet");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let Ok(agents) = state.identity.agents().await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let data = state.data.clone();
    let Ok(channels) = tokio::task::spawn_blocking(move || channel_rows(&data)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let csrf = user.csrf.as_deref().unwrap_or("");
    let now = crate::clock::now_seconds();
    let page = render(&Shell {
        channels: &channels,
        fleet: &fleet,
        agents: &agents,
        csrf,
        admin: &user.name,
        stale_after: state.stale_after,
        now,
    });
    let headers = [
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-store"),
    ];
    (headers, Html(page)).into_response()
}

/// Everything the page is rendered from.
struct Shell<'a> {
    /// Each channel's releases.
    channels: &'a [ChannelRow],
    /// Every agent's latest report.
    fleet: &'a [FleetEntry],
    /// The enrolled agents.
    agents: &'a [AgentRecord],
    /// The session's CSRF token (empty for a bearer).
    csrf: &'a str,
    /// The admin's name.
    admin: &'a str,
    /// When an agent is marked stale.
    stale_after: Duration,
    /// The console's clock.
    now: SystemTime,
}

/// The whole page: the containers the script fills, the enrolled agents
/// with their buttons, and a plain table for browsers without scripts.
fn render(shell: &Shell<'_>) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        concat!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>bankswap console</title>\n",
            "<link rel=\"stylesheet\" href=\"/assets/fleet.css\">\n",
            "<script src=\"/assets/fleet.js\" defer></script></head>\n",
            "<body data-csrf=\"{csrf}\" data-stale-after=\"{stale}\" data-refresh=\"{refresh}\">\n",
            "<header><h1>bankswap console</h1><span id=\"status\" role=\"status\"></span>",
            "<form method=\"post\" action=\"/logout\" class=\"inline\">",
            "<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">",
            "<button type=\"submit\">Log out {admin}</button></form></header>\n",
            "<main>\n<section id=\"channels\" hidden><h2>Channels</h2><div id=\"channel-list\"></div></section>\n",
            "<section id=\"fleet\" hidden><h2>Agents <span id=\"fleet-count\"></span></h2>\n",
            "<div id=\"filters\" class=\"filters\">",
            "<label>Channel <select id=\"filter-channel\"><option value=\"\">all</option></select></label>",
            "<label>Version <select id=\"filter-version\"><option value=\"\">all</option></select></label>",
            "<label>State <select id=\"filter-state\"><option value=\"\">all</option></select></label>",
            "<label>Search <input id=\"filter-text\" type=\"search\" placeholder=\"id, host, error…\"></label>",
            "</div>\n<div class=\"scroll\"><table id=\"agents\"><thead><tr></tr></thead><tbody></tbody></table></div>\n",
            "</section>\n",
        ),
        csrf = escape(shell.csrf),
        admin = escape(shell.admin),
        stale = shell.stale_after.as_secs(),
        refresh = REFRESH_EVERY.as_secs(),
    );
    page.push_str("<noscript>\n<h2>Channels</h2>\n");
    table(
        &mut page,
        &["channel", "version", "sequence", "published", "previous"],
        shell.channels.iter().map(|c| {
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            vec![
                c.name.clone(),
                c.version.clone().unwrap_or_else(|| "(no release)".into()),
                c.sequence.map(|s| s.to_string()).unwrap_or_default(),
                text(&c.published_at),
                text(&c.previous_version),
            ]
        }),
    );
    let _ = writeln!(page, "<h2>Agents ({})</h2>", shell.fleet.len());
    table(
        &mut page,
        &[
            "agent",
            "channel",
            "version",
            "bank",
            "phase",
            "agent build",
            "last error",
            "last seen",
        ],
        shell.fleet.iter().map(|e| {
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            vec![
                e.agent_id.clone(),
                text(&e.channel),
                text(&e.version),
                text(&e.bank),
                text(&e.phase),
                text(&e.agent_version),
                text(&e.last_error),
                rfc3339(e.reported_at),
            ]
        }),
    );
    page.push_str("</noscript>\n");
    agents_section(
        &mut page,
        shell.agents,
        shell.csrf,
        shell.now,
        shell.stale_after,
    );
    page.push_str("</main>\n</body></html>\n");
    page
}

/// Appends the enrolled agents, each with its revoke and forget buttons.
fn agents_section(
    page: &mut String,
    agents: &[AgentRecord],
    csrf: &str,
    now: SystemTime,
    stale_after: Duration,
) {
    let _ = writeln!(
        page,
        "<section id=\"enrolled\"><h2>Enrolled agents ({})</h2>",
        agents.len()
    );
    page.push_str("<div class=\"scroll\"><table>\n<tr><th>agent</th><th>host</th><th>enrolled</th><th>certificate expires</th><th>last seen</th><th>state</th><th></th></tr>\n");
    for agent in agents {
        let id = escape(&agent.agent_id);
        let button = |action: &str| {
            format!(
                "<form method=\"post\" action=\"/agents/{id}/{action}\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">{action}</button></form>",
                escape(csrf)
            )
        };
        let _ = writeln!(
            page,
            "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            escape(agent.hostname.as_deref().unwrap_or("")),
            rfc3339(agent.enrolled_at),
            rfc3339(agent.cert_expiry),
            agent.last_seen.map(rfc3339).unwrap_or_default(),
            agent.state(now, stale_after).as_str(),
            button("revoke"),
            button("forget"),
        );
    }
    page.push_str("</table></div></section>\n");
}

/// Every channel of the data folder with its current and previous release, by name.
fn channel_rows(data: &Path) -> Vec<ChannelRow> {
    let channels = ChannelDir::new(data, "").dir().to_path_buf();
    let Ok(entries) = std::fs::read_dir(&channels) else {
        return Vec::new();
    };
    let mut rows: Vec<ChannelRow> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| check_channel(name).is_ok())
        .map(|name| channel_row(&ChannelDir::new(data, &name), name))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Most past releases looked at to find the previous version: a channel that
/// re-signed the same version more often than this shows none.
const MAX_HISTORY_LOOKUPS: usize = 32;

/// One channel's current manifest, and the newest earlier one of another version.
fn channel_row(dir: &ChannelDir, name: String) -> ChannelRow {
    let Some(current) = ManifestFields::read(&dir.manifest()) else {
        return ChannelRow {
            name,
            ..ChannelRow::default()
        };
    };
    let earlier = dir.history_sequences().unwrap_or_default();
    let previous = earlier
        .iter()
        .rev()
        .filter(|s| current.sequence.is_none_or(|c| **s < c))
        .take(MAX_HISTORY_LOOKUPS)
        .filter_map(|s| ManifestFields::read(&dir.history_manifest(*s)))
        .find(|m| m.version.is_some() && m.version != current.version);
    ChannelRow {
        name,
        previous_version: previous.as_ref().and_then(|p| p.version.clone()),
        previous_sequence: previous.and_then(|p| p.sequence),
        version: current.version,
        sequence: current.sequence,
        published_at: current.published_at,
    }
}

/// What the page shows of a manifest, read loosely: a field of the wrong
/// type is shown as missing rather than hiding the channel.
struct ManifestFields {
    /// `version`.
    version: Option<String>,
    /// `sequence`.
    sequence: Option<u64>,
    /// `published_at`.
    published_at: Option<String>,
}

impl ManifestFields {
    /// The fields of a manifest file, if it reads as JSON.
    fn read(path: &Path) -> Option<ManifestFields> {
        let release = read_release(path, MAX_MANIFEST_BYTES).ok().flatten()?;
        let manifest: serde_json::Value = serde_json::from_slice(&release.bytes).ok()?;
        let text = |key: &str| manifest.get(key).and_then(|v| v.as_str()).map(String::from);
        Some(ManifestFields {
            version: text("version"),
            sequence: manifest.get("sequence").and_then(serde_json::Value::as_u64),
            published_at: text("published_at"),
        })
    }
}

/// Appends an HTML table; every cell is escaped.
fn table(page: &mut String, headings: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    page.push_str("<table>\n<tr>");
    for heading in headings {
        let _ = write!(page, "<th>{}</th>", escape(heading));
    }
    page.push_str("</tr>\n");
    for row in rows {
        page.push_str("<tr>");
        for cell in row {
            let _ = write!(page, "<td>{}</td>", escape(&cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
}

/// Unix seconds as `2026-11-22T10:00:00Z`.
pub fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell<'a>(channels: &'a [ChannelRow], fleet: &'a [FleetEntry]) -> Shell<'a> {
        Shell {
            channels,
            fleet,
            agents: &[],
            csrf: "c5rf",
            admin: "<admin>",
            stale_after: Duration::from_secs(90),
            now: UNIX_EPOCH,
        }
    }

    #[test]
    fn agent_supplied_text_is_escaped() {
        let entry = FleetEntry {
            agent_id: "a1".into(),
            version: Some("<script>alert(1)</script>".into()),
            last_error: Some("\"quoted\" & 'single'".into()),
            channel: Some("<b>beta</b>".into()),
            agent_version: Some("<i>0.2.0</i>".into()),
            ..FleetEntry::default()
        };
        let page = render(&shell(&[], &[entry]));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<admin>") && !page.contains("<b>beta"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
        assert!(page.contains("<th>agent build</th>"));
        assert!(page.contains("&lt;i&gt;0.2.0&lt;/i&gt;"));
        assert!(page.contains("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = render(&shell(&[], &[]));
        assert!(page.contains("<script src=\"/assets/fleet.js\" defer></script>"));
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(!page.contains("style="), "{page}");
        assert!(!page.contains("onclick"), "{page}");
        assert!(page.contains("data-stale-after=\"90\""));
        assert!(page.contains("name=\"csrf\" value=\"c5rf\""));
    }

    #[test]
    fn channels_show_their_current_and_previous_release() {
        let dir = tempfile::tempdir().unwrap();
        let stable = ChannelDir::new(dir.path(), "stable");
        let manifest = |version: &str, sequence: u64| {
            format!(r#"{{"version":"{version}","sequence":{sequence}}}"#).into_bytes()
        };
        stable
            .write_release(1, &manifest("1.2.2", 1), b"sig")
            .unwrap();
        stable
            .write_release(2, &manifest("1.2.3", 2), b"sig")
            .unwrap();
        // A re-signed 1.2.3 (a rollback to it, say) does not hide 1.2.2.
        stable
            .write_release(3, &manifest("1.2.3", 3), b"sig")
            .unwrap();
        std::fs::create_dir_all(ChannelDir::new(dir.path(), "beta").dir()).unwrap();
        std::fs::create_dir_all(ChannelDir::new(dir.path(), ".hidden").dir()).unwrap();
        let rows = channel_rows(dir.path());
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].version.as_deref()),
            ("beta", None)
        );
        assert_eq!(
            (rows[1].version.as_deref(), rows[1].sequence),
            (Some("1.2.3"), Some(3))
        );
        assert_eq!(
            (
                rows[1].previous_version.as_deref(),
                rows[1].previous_sequence
            ),
            (Some("1.2.2"), Some(1))
        );
    }
}
