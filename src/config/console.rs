//! How the console is reached: its URL's checks (https unless allowed), `[tls]`,
//! `[proxy]`, and the redaction of credentials in URLs for error messages.

use std::path::PathBuf;

use reqwest::Url;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(default)]
    pub(super) ca_certs: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) url: String,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
}

/// `[proxy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Proxy URL.
    pub url: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// File holding the basic-auth password.
    pub password_file: Option<PathBuf>,
}

/// `console` must be https: the manifest is signed, but push, reports and the
/// artifact's availability are not, so plain http needs an explicit
/// `allow_insecure_http = true` (as `console serve --insecure-http` does).
pub(super) fn check_console_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = http_url("console", url)?;
    if parsed.scheme() == "http" && !allow_insecure_http {
        return Err(format!(
            "console `{}`: must be an https:// URL (plain http:// needs allow_insecure_http = true)",
            redact_url(url)
        ));
    }
    Ok(())
}

/// Parses an absolute http(s) URL with a host; errors name `key` and never
/// print credentials.
pub(super) fn http_url(key: &str, text: &str) -> Result<Url, String> {
    let bad = |why: String| format!("{key} `{}`: {why}", redact_url(text));
    let url = Url::parse(text).map_err(|e| bad(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host".into()));
    }
    Ok(url)
}

/// A URL fit for an error message: any `user:password@` is replaced by `***@`,
/// even in a URL too malformed to parse, so no error ever prints a secret.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}
