//! The object fetch of a delta staging: the missing objects, a few at a time
//! over the keep-alive client, each capped at its announced size and resumed
//! with `Range` after a broken body.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bank_layout::WantedObject;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::sync::mpsc;
use tracing::warn;

use crate::agent::delta_fetch::PARALLEL_OBJECTS;
use crate::agent::fetch::describe;
use crate::config::Timeouts;

/// Requests per object before the staging gives up on it: a broken
/// connection is resumed with `Range`, an answer like 404 is final at once.
const OBJECT_TRIES: u32 = 3;

/// A task aborted when dropped (so a cancelled pump takes its fetches with it).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches `wanted` from `dir`, [`PARALLEL_OBJECTS`] at a time, and sends
/// each in order; stops at the first failure (sent too) or when the stager is gone.
pub(super) async fn fetch_objects(
    http: &reqwest::Client,
    dir: &str,
    wanted: Vec<WantedObject>,
    timeouts: &Timeouts,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    wire: &Arc<AtomicU64>,
) {
    let mut next = wanted.into_iter();
    let mut queue = VecDeque::new();
    let start = |object: WantedObject| {
        let http = http.clone();
        let url = format!("{dir}/{}.zst", object.sha256);
        let timeouts = timeouts.clone();
        let wire = wire.clone();
        Aborting(tokio::spawn(async move {
            fetch_object(&http, &url, object.packed, &timeouts, &wire).await
        }))
    };
    for object in next.by_ref().take(PARALLEL_OBJECTS) {
        queue.push_back(start(object));
    }
    while let Some(mut task) = queue.pop_front() {
        let result = match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("object fetch failed: {e}"))),
        };
        let failed = result.is_err();
        if tx.send(result).await.is_err() || failed {
            return;
        }
        if let Some(object) = next.next() {
            queue.push_back(start(object));
        }
    }
}

/// GETs one object, at most `packed + 1` bytes (the layout crate says "too
/// large"), resuming a broken body with `Range` up to [`OBJECT_TRIES`] times.
async fn fetch_object(
    http: &reqwest::Client,
    url: &str,
    packed: u64,
    timeouts: &Timeouts,
    wire: &AtomicU64,
) -> io::Result<Bytes> {
    let limit = packed.saturating_add(1);
    let mut body: Vec<u8> = Vec::new();
    let mut last = String::new();
    for _ in 0..OBJECT_TRIES {
        let mut request = http.get(url).timeout(timeouts.download);
        if !body.is_empty() {
            request = request.header(RANGE, format!("bytes={}-", body.len()));
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                last = describe(&e);
                continue;
            }
        };
        let status = response.status();
        if status.is_client_error() && status != StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(io::Error::other(format!(
                "{url}: the host answered {status}"
            )));
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Nothing past what we have: the layout crate judges its size.
            return Ok(Bytes::from(body));
        }
        let resumed = status == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {}-", body.len())));
        if !resumed {
            if status != StatusCode::OK {
                last = format!("the host answered {status}");
                continue;
            }
            body.clear();
        }
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = (limit - body.len() as u64) as usize;
                    let taken = chunk.len().min(room);
                    wire.fetch_add(taken as u64, Ordering::Relaxed);
                    body.extend_from_slice(&chunk[..taken]);
                    if body.len() as u64 >= limit {
                        return Ok(Bytes::from(body));
                    }
                }
                Ok(None) => return Ok(Bytes::from(body)),
                Err(e) => {
                    last = describe(&e);
                    warn!(url, offset = body.len(), error = %last, "object download broken; resuming");
                    break;
                }
            }
        }
    }
    Err(io::Error::other(format!(
        "{url}: {last} ({OBJECT_TRIES} tries; giving up)"
    )))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A host that cuts the first answer after `cut` bytes and answers the
    /// resume (`Range: bytes=cut-`) with the rest; returns the requests' heads.
    async fn cutting_host(
        body: Vec<u8>,
        cut: usize,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/o.zst", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for round in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    socket.read_exact(&mut byte).await.unwrap();
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8_lossy(&head).to_lowercase());
                if round == 0 {
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.write_all(&body[..cut]).await.unwrap();
                } else {
                    let answer = format!(
                        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {cut}-{}/{}\r\nconnection: close\r\n\r\n",
                        body.len() - cut,
                        body.len() - 1,
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.write_all(&body[cut..]).await.unwrap();
                }
                socket.shutdown().await.unwrap();
            }
            heads
        });
        (url, task)
    }

    #[tokio::test]
    async fn an_object_cut_mid_body_is_resumed_with_range() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (url, host) = cutting_host(body.clone(), 30_000).await;
        let http = reqwest::Client::new();
        let got = fetch_object(
            &http,
            &url,
            body.len() as u64,
            &Timeouts::default(),
            &AtomicU64::new(0),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], &body[..]);
        let heads = host.await.unwrap();
        assert!(heads[1].contains("range: bytes=30000-"), "{heads:?}");
    }

    #[tokio::test]
    async fn an_object_is_read_one_byte_past_its_announced_size_only() {
        let body = vec![1u8; 10_000];
        let (url, _host) = cutting_host(body, 10_000).await;
        let http = reqwest::Client::new();
        let got = fetch_object(&http, &url, 100, &Timeouts::default(), &AtomicU64::new(0))
            .await
            .unwrap();
        // The layout crate sees 101 bytes and says "larger than announced".
        assert_eq!(got.len(), 101);
    }
}
