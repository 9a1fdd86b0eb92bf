//! `bankswap console fleet`: the latest report of every agent, read from a
//! console data folder (`--data`) or asked of a running console (`--console`),
//! printed as a table or as JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};

use super::admin_client::{check_console_url, https_client, runtime};
use super::page::rfc3339;
use super::store::{self, FLEET_DB, FleetEntry};
use crate::cli::FleetArgs;
use crate::error::UsageError;

/// A console that has not answered in this long is reported as down.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest fleet listing read from a console: ~300 bytes per agent, so
/// room for well over 100,000 agents, while a broken server cannot exhaust memory.
const MAX_FLEET_BYTES: usize = 64 * 1024 * 1024;

/// Runs `console fleet`.
pub fn run(args: &FleetArgs) -> anyhow::Result<()> {
    let entries = match (&args.data, &args.console) {
        (Some(data), _) => {
            if !data.is_dir() {
                return Err(UsageError::new(format!(
                    "--data {}: no such console data folder",
                    data.display()
                ))
                .into());
            }
            store::read(&data.join(FLEET_DB))?
        }
        (None, Some(url)) => {
            let token = match &args.token_file {
                Some(file) => Some(super::read_token_file(file, "--token-file")?),
                None => None,
            };
            fetch(url, args.ca_cert.as_deref(), token.as_deref())?
        }
        (None, None) => return Err(UsageError::new("give --data DIR or --console URL").into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if entries.is_empty() {
        println!("no agent has reported yet");
    } else {
        print!("{}", table(&entries));
    }
    Ok(())
}

/// `GET {console}/v1/fleet` with the admin `token`, trusting the system roots plus `ca_cert`.
fn fetch(
    console: &str,
    ca_cert: Option<&Path>,
    token: Option<&str>,
) -> anyhow::Result<Vec<FleetEntry>> {
    check_console_url(console)?;
    let client = https_client(ca_cert, FETCH_TIMEOUT)?;
    let url = format!("{}/v1/fleet", console.trim_end_matches('/'));
    let runtime = runtime()?;
    let body = runtime
        .block_on(get_capped(&client, &url, token))
        .with_context(|| format!("asking {url}"))?;
    serde_json::from_slice(&body).with_context(|| format!("reading the fleet from {url}"))
}

/// The body of a successful GET, at most [`MAX_FLEET_BYTES`].
async fn get_capped(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(anyhow!(
            "the console wants an admin token (--token-file FILE): {}",
            response.status()
        ));
    }
    response = response.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_FLEET_BYTES {
            return Err(anyhow!("the answer is larger than {MAX_FLEET_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The fleet as an aligned text table.
fn table(entries: &[FleetEntry]) -> String {
    const HEADINGS: [&str; 7] = [
        "AGENT",
        "VERSION",
        "BANK",
        "PHASE",
        "AGENT VERSION",
        "LAST SEEN",
        "LAST ERROR",
    ];
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.agent_id.clone(),
                text(&e.version),
                text(&e.bank),
                text(&e.phase),
                text(&e.agent_version),
                rfc3339(e.reported_at),
                // One line per agent, whatever the agent sent.
                text(&e.last_error).replace(['\n', '\r'], " "),
            ]
        })
        .collect();
    aligned(&HEADINGS.map(String::from), &rows)
}

/// `headings` and `rows` as text columns, two spaces apart, each as wide as its
/// widest cell; trailing spaces trimmed (`console fleet`, `console agents`).
pub(super) fn aligned<const N: usize>(headings: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = headings.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(headings).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_keeps_one_line_per_agent() {
        let entry = |id: &str, error: Option<&str>| FleetEntry {
            agent_id: id.into(),
            version: Some("1.0.0".into()),
            bank: Some("Bank1".into()),
            phase: Some("committed".into()),
            pending: None,
            last_error: error.map(String::from),
            reported_at: 0,
            remote: None,
            ..FleetEntry::default()
        };
        let out = table(&[entry("a", None), entry("long-agent-id", Some("bad\nthing"))]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("AGENT          VERSION"));
        assert!(lines[1].starts_with("a              1.0.0"));
        assert!(lines[2].ends_with("bad thing"));
    }
}
