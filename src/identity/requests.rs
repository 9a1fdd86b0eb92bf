//! The JSON requests to the console's identity endpoints: one timeout, a cap
//! on the answer, and the console's `{"error"}` reason on a refusal.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::de::DeserializeOwned;

/// The largest answer read from the console's identity endpoints.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long one enrollment or renewal request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn post_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<T> {
    let response = client
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await?;
    answer(response).await
}

pub(super) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let response = client.get(url).timeout(REQUEST_TIMEOUT).send().await?;
    answer(response).await
}

/// The JSON of a 2xx answer; otherwise the console's `{"error"}` reason.
async fn answer<T: DeserializeOwned>(mut response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(anyhow!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let reason = serde_json::from_slice::<crate::console::ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        return Err(anyhow!("{status}: {reason}"));
    }
    serde_json::from_slice(&body).context("reading the console's answer")
}
