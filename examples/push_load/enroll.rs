//! push_load's mTLS mode: every agent enrolls as a real one does (its own
//! key, a CSR, `POST /v1/enroll`) and gets a connector presenting its
//! certificate.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::client_config;

/// Enrollments in flight at once (a fleet's agents start at different times;
/// this only bounds the set-up).
const ENROLL_AT_ONCE: usize = 16;

/// The largest enrollment answer read.
const MAX_ENROLL_ANSWER: usize = 64 * 1024;

/// Enrolls agent `id` with `token` (its own key and CSR, `POST /v1/enroll`)
/// and returns a connector presenting the certificate it got.
async fn enroll(
    anonymous: &TlsConnector,
    roots: rustls::RootCertStore,
    addr: &str,
    token: &str,
    id: &str,
) -> anyhow::Result<TlsConnector> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    let csr = params.serialize_request(&key)?.pem()?;
    let body = serde_json::json!({ "token": token, "agent_id": id, "csr": csr }).to_string();
    let request = format!(
        "POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = anonymous
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(request.as_bytes()).await?;
    tls.flush().await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tls.read(&mut chunk).await {
            Ok(n) => n,
            // The console may close without close_notify after `Connection: close`.
            Err(_) if !answer.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 || answer.len() > MAX_ENROLL_ANSWER {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        bail!(
            "enrolling {id}: {status}: {}",
            text.rsplit("\r\n\r\n").next().unwrap_or("")
        );
    }
    // The JSON body, whether sent with a length or as one chunk.
    let json = match (text.find("\r\n\r\n{"), text.rfind('}')) {
        (Some(start), Some(end)) if end > start => &text[start + 4..=end],
        _ => bail!("enrolling {id}: no JSON in the answer"),
    };
    let issued: serde_json::Value = serde_json::from_str(json)?;
    let pem = issued["certificate"]
        .as_str()
        .ok_or_else(|| anyhow!("enrolling {id}: no certificate in the answer"))?;
    let chain = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let mut config = client_config()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key.into())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Enrolls `agents` agents, [`ENROLL_AT_ONCE`] at a time.
pub async fn enroll_all(
    anonymous: &TlsConnector,
    roots: &rustls::RootCertStore,
    addr: &Arc<str>,
    token: &str,
    agents: usize,
) -> anyhow::Result<Vec<TlsConnector>> {
    let prefix = format!("bench-{}", std::process::id());
    let mut connectors = Vec::with_capacity(agents);
    let started = Instant::now();
    for batch in (0..agents).collect::<Vec<_>>().chunks(ENROLL_AT_ONCE) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            let (anonymous, roots, addr, token) = (
                anonymous.clone(),
                roots.clone(),
                addr.clone(),
                token.to_string(),
            );
            let id = format!("{prefix}-{i}");
            set.spawn(async move { (i, enroll(&anonymous, roots, &addr, &token, &id).await) });
        }
        let mut done: Vec<(usize, TlsConnector)> = Vec::with_capacity(batch.len());
        while let Some(joined) = set.join_next().await {
            let (i, connector) = joined?;
            done.push((i, connector?));
        }
        done.sort_by_key(|(i, _)| *i);
        connectors.extend(done.into_iter().map(|(_, c)| c));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enrollment: {agents} agents enrolled in {secs:.1} s ({:.1} ms each, {ENROLL_AT_ONCE} at a time): key, CSR, POST /v1/enroll",
        1000.0 * secs / agents as f64
    );
    Ok(connectors)
}
