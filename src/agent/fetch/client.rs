//! The agent's HTTPS client: what every client is built from (system roots
//! plus `[tls] ca_certs`, `[proxy]`, the connect timeout) and the client
//! certificate it presents once enrolled.

use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::config::{AgentConfig, redact_url};

/// What every HTTPS client of the agent is built from (system roots plus
/// `[tls] ca_certs`, `[proxy]`, the connect timeout), read once so that a
/// renewed certificate can be put into a new client without reading again.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    /// Extra trust roots (`[tls] ca_certs`).
    roots: Vec<reqwest::Certificate>,
    /// `[proxy]`, with its credentials.
    proxy: Option<reqwest::Proxy>,
    /// `[timeouts] connect`.
    connect: Duration,
}

impl ClientSetup {
    /// Reads the trust roots and the proxy settings of `config`.
    pub fn new(config: &AgentConfig) -> anyhow::Result<ClientSetup> {
        let mut roots = Vec::new();
        for path in &config.ca_certs {
            let pem = std::fs::read(path)
                .with_context(|| format!("[tls] ca_certs {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("[tls] ca_certs {}: not PEM certificates", path.display())
            })?;
            roots.extend(certs);
        }
        let proxy = match &config.proxy {
            None => None,
            Some(proxy) => {
                // Never echo the URL as written: it may carry credentials.
                let mut p = reqwest::Proxy::all(proxy.url.as_str())
                    .map_err(|e| anyhow!("[proxy] url {}: {e}", redact_url(proxy.url.as_str())))?;
                if let Some(user) = &proxy.username {
                    let password = match &proxy.password_file {
                        Some(f) => std::fs::read_to_string(f)
                            .with_context(|| format!("[proxy] password_file {}", f.display()))?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                        None => String::new(),
                    };
                    p = p.basic_auth(user, &password);
                }
                Some(p)
            }
        };
        Ok(ClientSetup {
            roots,
            proxy,
            connect: config.timeouts.connect,
        })
    }

    /// A client builder with these settings and no client certificate. It has
    /// a connect timeout but no read or overall timeout: each request sets its
    /// own (a held push request sends nothing for minutes, and must not be cut for it).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(self.connect)
            .user_agent(concat!("bankswap/", env!("CARGO_PKG_VERSION")));
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(proxy.clone());
        }
        builder
    }

    /// A client presenting `identity` (SPEC §10), if the agent enrolled.
    pub fn client(
        &self,
        identity: Option<&crate::identity::Stored>,
    ) -> anyhow::Result<reqwest::Client> {
        let mut builder = self.builder();
        if let Some(stored) = identity {
            builder = builder.identity(crate::identity::client_identity(stored)?);
        }
        builder.build().context("building the HTTPS client")
    }
}

/// Builds the HTTPS client of the agent ([`ClientSetup`]), with the client
/// certificate stored in the root once enrolled.
pub fn client(config: &AgentConfig) -> anyhow::Result<reqwest::Client> {
    let stored = crate::identity::load(&config.root)?;
    ClientSetup::new(config)?.client(stored.as_ref())
}
