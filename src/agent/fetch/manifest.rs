//! The manifest check: the channel's `release.json` and its signature, with
//! `If-None-Match` and the push `wait`, and the channel's key rotation record
//! (SPEC §13).

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use reqwest::StatusCode;
use reqwest::header::{DATE, ETAG, IF_NONE_MATCH};

use crate::agent::fetch::response::{describe_cut, ok_status, read_capped};
use crate::agent::fetch::url;
use crate::channel::MAX_SIGNATURE_BYTES;
use crate::config::Timeouts;

/// What a manifest check found.
#[derive(Debug)]
pub enum Checked {
    /// The manifest did not change (304).
    Unchanged,
    /// A manifest and its signature.
    Release {
        /// Manifest bytes (at most the manifest cap + 1, so the policy can say "too large").
        manifest: Vec<u8>,
        /// Signature bytes.
        signature: Vec<u8>,
        /// The ETag to send next time.
        etag: Option<String>,
        /// The channel's key rotation record, if the console has one.
        rotation: Option<Rotation>,
        /// The console's `Date` header, when it sent a valid one.
        date: Option<SystemTime>,
    },
}

/// A channel's key rotation record as fetched (`keys.json` + `.minisig`).
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Record bytes (at most the rotation cap + 1, so verification can say "too large").
    pub record: Vec<u8>,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// Asks for the channel's manifest. With an `etag` and a `wait`, a console holds the
/// request until a release is published or the wait ends; a static host answers at once.
/// `agent_id` goes along as a query parameter (manifest and signature): a console
/// rolling a release out in waves serves it only to the agents it admitted (SPEC §11).
pub async fn check(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    agent_id: Option<&str>,
    etag: Option<&str>,
    wait: Duration,
    timeouts: &Timeouts,
) -> anyhow::Result<Checked> {
    let manifest_url = url(base, &format!("channels/{channel}/release.json"));
    // A held request may stay silent for all of `wait`: its deadline is that
    // plus a margin, never the limit of an ordinary request.
    let (limit, key) = match etag {
        Some(_) => (
            wait.saturating_add(timeouts.held_margin),
            "max_wait + held_margin",
        ),
        None => (timeouts.request, "request"),
    };
    let failed = |e: reqwest::Error| anyhow!("{manifest_url}: {}", describe_cut(&e, limit, key));
    let mut request = http.get(&manifest_url).timeout(limit);
    if let Some(id) = agent_id {
        request = request.query(&[("agent_id", id)]);
    }
    if let Some(etag) = etag {
        request = request
            .header(IF_NONE_MATCH, etag)
            .query(&[("wait", wait.as_secs())]);
    }
    let response = request.send().await.map_err(failed)?;
    if response.status() == StatusCode::NOT_MODIFIED {
        return Ok(Checked::Unchanged);
    }
    let response = ok_status(response, &manifest_url)?;
    let new_etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let date = response
        .headers()
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let manifest = read_capped(response, signing::MAX_MANIFEST_BYTES as u64)
        .await
        .map_err(failed)?;
    let sig_url = format!("{manifest_url}.minisig");
    let failed = |e: reqwest::Error| {
        anyhow!(
            "{sig_url}: {}",
            describe_cut(&e, timeouts.request, "request")
        )
    };
    let mut request = http.get(&sig_url).timeout(timeouts.request);
    if let Some(id) = agent_id {
        request = request.query(&[("agent_id", id)]);
    }
    let response = request.send().await.map_err(failed)?;
    let response = ok_status(response, &sig_url)?;
    let signature = read_capped(response, MAX_SIGNATURE_BYTES)
        .await
        .map_err(failed)?;
    let rotation = rotation(http, base, channel, timeouts).await?;
    Ok(Checked::Release {
        manifest,
        signature,
        etag: new_etag,
        rotation,
        date,
    })
}

/// Asks for the channel's key rotation record and its signature, fetched with
/// every new manifest so that a release signed by an endorsed key verifies.
/// A 404 means the channel has no record.
async fn rotation(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    timeouts: &Timeouts,
) -> anyhow::Result<Option<Rotation>> {
    let record_url = url(base, &format!("channels/{channel}/keys.json"));
    let Some(record) = get_optional(
        http,
        &record_url,
        signing::MAX_ROTATION_BYTES as u64,
        timeouts,
    )
    .await?
    else {
        return Ok(None);
    };
    let sig_url = format!("{record_url}.minisig");
    let signature = get_optional(http, &sig_url, MAX_SIGNATURE_BYTES, timeouts)
        .await?
        .ok_or_else(|| {
            anyhow!("{sig_url}: the console answered 404 (a record without its signature)")
        })?;
    Ok(Some(Rotation { record, signature }))
}

/// GETs a small file within `[timeouts] request`: `None` on 404.
async fn get_optional(
    http: &reqwest::Client,
    url: &str,
    limit: u64,
    timeouts: &Timeouts,
) -> anyhow::Result<Option<Vec<u8>>> {
    let failed =
        |e: reqwest::Error| anyhow!("{url}: {}", describe_cut(&e, timeouts.request, "request"));
    let response = http
        .get(url)
        .timeout(timeouts.request)
        .send()
        .await
        .map_err(failed)?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = ok_status(response, url)?;
    Ok(Some(read_capped(response, limit).await.map_err(failed)?))
}
