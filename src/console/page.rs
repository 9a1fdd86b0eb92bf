//! `GET /`: a small HTML page with each channel's current release, the
//! fleet table and the enrolled agents, for a logged-in admin (auth.rs).
//! Every value shown comes from agents or files, so every value is escaped;
//! every form carries the session's CSRF token.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tracing::warn;

use super::auth::AdminUser;
use super::push::{MAX_MANIFEST_BYTES, read_release};
use super::registry::AgentRecord;
use super::routes::AppState;
use super::store::FleetEntry;
use crate::channel::ChannelDir;
use crate::config::check_channel;

/// The current release of one channel, as the page shows it.
#[derive(Debug, Default, PartialEq)]
struct ChannelRow {
    /// The channel's name.
    name: String,
    /// The manifest's `version`, or a note on why it is missing.
    version: String,
    /// The manifest's `sequence`.
    sequence: String,
    /// The manifest's `published_at`.
    published_at: String,
}

/// Agents not seen for this long are shown as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

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
    let mut page = render(&channels, &fleet);
    let csrf = user.csrf.as_deref().unwrap_or("");
    agents_section(&mut page, &agents, csrf, crate::clock::now_seconds());
    let _ = write!(
        page,
        "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Log out {}</button></form>\n</body></html>\n",
        escape(csrf),
        escape(&user.name)
    );
    Html(page).into_response()
}

/// Appends the enrolled agents, each with its revoke and forget buttons.
fn agents_section(page: &mut String, agents: &[AgentRecord], csrf: &str, now: SystemTime) {
    let _ = writeln!(page, "<h2>Enrolled agents ({})</h2>", agents.len());
    page.push_str("<table>\n<tr><th>agent</th><th>host</th><th>enrolled</th><th>certificate expires</th><th>last seen</th><th>state</th><th></th></tr>\n");
    for agent in agents {
        let id = escape(&agent.agent_id);
        let button = |action: &str| {
            format!(
                "<form method=\"post\" action=\"/agents/{id}/{action}\" style=\"display:inline\">\
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
            agent.state(now, STALE_AFTER).as_str(),
            button("revoke"),
            button("forget"),
        );
    }
    page.push_str("</table>\n");
}

/// Every channel of the data folder with its current manifest, by name.
fn channel_rows(data: &Path) -> Vec<ChannelRow> {
    let channels = ChannelDir::new(data, "").dir().to_path_buf();
    let Ok(entries) = std::fs::read_dir(&channels) else {
        return Vec::new();
    };
    let mut rows: Vec<ChannelRow> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| check_channel(name).is_ok())
        .map(|name| {
            let manifest = ChannelDir::new(data, &name).manifest();
            let parsed = read_release(&manifest, MAX_MANIFEST_BYTES)
                .ok()
                .flatten()
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.bytes).ok());
            let field = |key: &str| {
                parsed
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .map_or_else(String::new, |v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
            };
            ChannelRow {
                version: if parsed.is_some() {
                    field("version")
                } else {
                    "(no release)".into()
                },
                sequence: field("sequence"),
                published_at: field("published_at"),
                name,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// The whole page.
fn render(channels: &[ChannelRow], fleet: &[FleetEntry]) -> String {
    let mut page = String::from(concat!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bankswap console</title>\n",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>\n",
        "<h1>bankswap console</h1>\n<h2>Channels</h2>\n",
    ));
    table(
        &mut page,
        &["channel", "version", "sequence", "published"],
        channels.iter().map(|c| {
            vec![
                c.name.clone(),
                c.version.clone(),
                c.sequence.clone(),
                c.published_at.clone(),
            ]
        }),
    );
    let _ = writeln!(page, "<h2>Fleet ({} agents)</h2>", fleet.len());
    table(
        &mut page,
        &[
            "agent",
            "version",
            "bank",
            "phase",
            "agent build",
            "last error",
            "last seen",
        ],
        fleet.iter().map(|e| {
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            vec![
                e.agent_id.clone(),
                text(&e.version),
                text(&e.bank),
                text(&e.phase),
                text(&e.agent_version),
                text(&e.last_error),
                rfc3339(e.reported_at),
            ]
        }),
    );
    page
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

    #[test]
    fn agent_supplied_text_is_escaped() {
        let entry = FleetEntry {
            agent_id: "a1".into(),
            version: Some("<script>alert(1)</script>".into()),
            bank: None,
            phase: None,
            pending: None,
            last_error: Some("\"quoted\" & 'single'".into()),
            reported_at: 0,
            remote: None,
            agent_version: Some("<i>0.2.0</i>".into()),
            ..FleetEntry::default()
        };
        let page = render(&[], &[entry]);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
        assert!(page.contains("<th>agent build</th>"));
        assert!(page.contains("&lt;i&gt;0.2.0&lt;/i&gt;"));
        assert!(page.contains("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn channels_show_their_current_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let stable = ChannelDir::new(dir.path(), "stable");
        std::fs::create_dir_all(stable.dir()).unwrap();
        std::fs::write(stable.manifest(), br#"{"version":"1.2.3","sequence":7}"#).unwrap();
        std::fs::create_dir_all(ChannelDir::new(dir.path(), "beta").dir()).unwrap();
        std::fs::create_dir_all(ChannelDir::new(dir.path(), ".hidden").dir()).unwrap();
        let rows = channel_rows(dir.path());
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].version.as_str()),
            ("beta", "(no release)")
        );
        assert_eq!(
            (rows[1].version.as_str(), rows[1].sequence.as_str()),
            ("1.2.3", "7")
        );
    }
}
