//! One request on one TLS connection, the way an agent sends it: a plain
//! exchange, or a hold answered again at once on every 304.

use std::time::{Duration, Instant};

use anyhow::bail;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Sends `request` on a new TLS connection; returns the response head once it is complete,
/// calling `written` once the request is sent.
pub async fn exchange(
    connector: &TlsConnector,
    addr: &str,
    request: &[u8],
    written: impl FnOnce(),
) -> anyhow::Result<String> {
    let mut held = hold(connector, addr, request, |_| {}, written, |_| {}).await?;
    Ok(std::mem::take(&mut held.1))
}

/// Holds `request` on one TLS connection the way an agent does: every 304
/// (the console's hold ended at its max wait) is answered at once by the same
/// request on the same connection, `reheld` counting them; returns the first
/// other response head and when it arrived. `written` is called once, after
/// the first request is sent; `connected` with the TCP + TLS connect time.
pub async fn hold(
    connector: &TlsConnector,
    addr: &str,
    request: &[u8],
    connected: impl FnOnce(Duration),
    written: impl FnOnce(),
    reheld: impl Fn(usize),
) -> anyhow::Result<(Instant, String)> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    connected(start.elapsed());
    tls.write_all(request).await?;
    tls.flush().await?;
    written();
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before a response");
            }
            buffer.extend_from_slice(&chunk[..n]);
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        // A 304 has no body: what follows its head belongs to the next response.
        buffer.drain(..end + 4);
        if head.lines().next().is_some_and(|l| l.contains(" 304 ")) {
            reheld(1);
            tls.write_all(request).await?;
            tls.flush().await?;
            continue;
        }
        return Ok((Instant::now(), head));
    }
}
