//! `GET /`: a small HTML page with each channel's current release and the
//! fleet table. Every value shown comes from agents or files, so every value
//! is escaped.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tracing::warn;

use super::push::{MAX_MANIFEST_BYTES, read_release};
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

/// Serves the page.
pub async fn index(State(state): State<AppState>) -> Response {
    let fleet = match state.store.list().await {
        Ok(fleet) => fleet,
        Err(e) => {
            warn!(error = %e, "cannot read the fleet");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let data = state.data.clone();
    let Ok(channels) = tokio::task::spawn_blocking(move || channel_rows(&data)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Html(render(&channels, &fleet)).into_response()
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
                text(&e.last_error),
                rfc3339(e.reported_at),
            ]
        }),
    );
    page.push_str("</body></html>\n");
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
fn escape(text: &str) -> String {
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
            ..FleetEntry::default()
        };
        let page = render(&[], &[entry]);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
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
