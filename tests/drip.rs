//! A hostile console that drips (issue 8.4) or refuses the artifact (8.12):
//! a download below the floor rate is cut and resumed with `Range`; a
//! manifest or signature dripping at 1 B/s is cut with a clear error; a 403
//! for the artifact is reported in `last_error`, not silently retried. The
//! server is a small HTTPS server in the test (the test CA's certificate)
//! that serves a published data folder and misbehaves as told.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use crate::support::World;
use crate::support::live::{AgentProcess, AgentSettings};
use crate::support::tls::{TestCa, make_test_ca};

/// Agent limits for these tests: a floor of 1000 B/s over 1 s windows, and
/// 2 s for a whole manifest or signature.
const LIMITS: &str = "[timeouts]\n\
    request = \"2s\"\n\
    rate_window = \"1s\"\n\
    min_rate = 1000\n\
    [health]\n\
    grace = \"1s\"\n";

/// The test console's pace between two bytes of a drip (the hostile behaviour under
/// test, not a wait): 10 B/s, far below the 1000 B/s floor of [`LIMITS`].
const DRIP_PAUSE: Duration = Duration::from_millis(100);

/// The test console's pace between two bytes of a dripping manifest or signature:
/// 1 B/s, so the 2 s `request` limit of [`LIMITS`] cuts it long before it ends.
const SLOW_DRIP_PAUSE: Duration = Duration::from_secs(1);

/// Bytes sent at full speed before a drip starts (so a resume has an offset).
const DRIP_HEAD: usize = 64;

/// An artifact drip: a head for a resume to start after, then 10 B/s.
const ARTIFACT_DRIP: Pace = Pace::Drip {
    pause: DRIP_PAUSE,
    head: DRIP_HEAD,
};

/// A paced artifact (`Artifact::Paced`, for tests/progress.rs) comes in
/// chunks of this many bytes...
const PACE_CHUNK: usize = 4096;

/// ...with this pause between them: 80 KiB/s, a download of a few seconds
/// that stays far above any floor rate.
const PACE_PAUSE: Duration = Duration::from_millis(50);

/// How one answer's body is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    /// At full speed.
    Full,
    /// `head` bytes at full speed, then one byte every `pause`.
    Drip { pause: Duration, head: usize },
    /// [`PACE_CHUNK`] bytes every [`PACE_PAUSE`].
    Chunked,
}

/// How the server answers artifact requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Artifact {
    /// Whole, at full speed (and `Range` honoured).
    Normal,
    /// The first request drips; later (`Range`) requests are served normally.
    DripFirst,
    /// Every request drips.
    Drip,
    /// Every request gets this status.
    Status(u16),
    /// Whole, but slowly: [`PACE_CHUNK`] bytes every [`PACE_PAUSE`].
    Paced,
}

/// What the server is told to do, and what it saw.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Artifact behaviour.
    pub(crate) artifact: Artifact,
    /// Whether `release.json` drips at 1 B/s.
    drip_manifest: bool,
    /// Whether `release.json.minisig` drips at 1 B/s.
    drip_signature: bool,
    /// Artifact requests so far.
    artifact_requests: usize,
    /// `Range` headers of artifact requests.
    ranges: Vec<String>,
}

/// The hostile HTTPS server, stopped with its runtime when dropped.
pub(crate) struct Hostile {
    /// `https://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// Shared with the connection tasks.
    plan: Arc<Mutex<Plan>>,
    /// Runs the server.
    _rt: Runtime,
}

impl Hostile {
    pub(crate) fn start(data: &Path, ca: &TestCa, artifact: Artifact) -> Hostile {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let plan = Arc::new(Mutex::new(Plan {
            artifact,
            drip_manifest: false,
            drip_signature: false,
            artifact_requests: 0,
            ranges: Vec::new(),
        }));
        let acceptor = acceptor(ca);
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let (data, shared) = (data.to_path_buf(), plan.clone());
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, data, plan) = (acceptor.clone(), data.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &data, &plan).await;
                    }
                });
            }
        });
        Hostile { url, plan, _rt: rt }
    }

    pub(crate) fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn acceptor(ca: &TestCa) -> TlsAcceptor {
    let certs = rustls_pemfile::certs(&mut BufReader::new(
        fs::File::open(&ca.cert_pem).expect("cert"),
    ))
    .collect::<Result<Vec<_>, _>>()
    .expect("certs");
    let key = rustls_pemfile::private_key(&mut BufReader::new(
        fs::File::open(&ca.key_pem).expect("key"),
    ))
    .expect("key file")
    .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

/// Answers one request and closes the connection.
async fn serve<S>(mut tls: S, data: &Path, plan: &Mutex<Plan>) -> std::io::Result<()>
where
    S: AsyncReadExt + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let range = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("range")
            .then(|| value.trim().to_string())
    });
    let file = data.join(path.trim_start_matches('/'));
    let (pace, status) = {
        let mut plan = plan.lock().unwrap_or_else(PoisonError::into_inner);
        if path.starts_with("/v1/artifacts/") {
            plan.artifact_requests += 1;
            if let Some(r) = &range {
                plan.ranges.push(r.clone());
            }
            match plan.artifact {
                Artifact::Normal => (Pace::Full, None),
                Artifact::DripFirst if plan.artifact_requests == 1 => (ARTIFACT_DRIP, None),
                Artifact::DripFirst => (Pace::Full, None),
                Artifact::Drip => (ARTIFACT_DRIP, None),
                Artifact::Status(s) => (Pace::Full, Some(s)),
                Artifact::Paced => (Pace::Chunked, None),
            }
        } else if path.ends_with("release.json") && plan.drip_manifest
            || path.ends_with(".minisig") && plan.drip_signature
        {
            (
                Pace::Drip {
                    pause: SLOW_DRIP_PAUSE,
                    head: 0,
                },
                None,
            )
        } else {
            (Pace::Full, None)
        }
    };
    let body = match (status, fs::read(&file)) {
        (None, Ok(body)) => body,
        (status, _) => {
            let status = status.unwrap_or(404);
            let answer = format!(
                "HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return tls.write_all(answer.as_bytes()).await;
        }
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < body.len());
    let (status_line, part, extra) = match start {
        Some(n) => (
            "206 Partial Content",
            &body[n..],
            format!(
                "Content-Range: bytes {n}-{}/{}\r\n",
                body.len() - 1,
                body.len()
            ),
        ),
        None => ("200 OK", &body[..], String::new()),
    };
    let answer = format!(
        "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        part.len()
    );
    tls.write_all(answer.as_bytes()).await?;
    match pace {
        Pace::Full => tls.write_all(part).await?,
        Pace::Chunked => {
            for chunk in part.chunks(PACE_CHUNK) {
                tls.write_all(chunk).await?;
                tls.flush().await?;
                tokio::time::sleep(PACE_PAUSE).await;
            }
        }
        Pace::Drip { pause, head } => {
            tls.write_all(&part[..head.min(part.len())]).await?;
            tls.flush().await?;
            for byte in part.iter().skip(head) {
                tokio::time::sleep(pause).await;
                tls.write_all(&[*byte]).await?;
                tls.flush().await?;
            }
        }
    }
    tls.shutdown().await
}

/// `len` pseudo-random bytes (xorshift64): what zstd cannot shrink.
pub(crate) fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A published 1.0.0 served by a hostile server, and an agent following it.
struct Setup {
    /// Keys and folders.
    w: World,
    /// The hostile server.
    server: Hostile,
    /// The agent.
    agent: AgentProcess,
    /// The data folder served.
    _data: PathBuf,
}

fn setup(artifact: Artifact, configure: impl FnOnce(&mut Plan)) -> Setup {
    let w = World::new();
    let data = w.path("console-data");
    fs::create_dir_all(&data).expect("data");
    let ca = make_test_ca(&w.path("tls"));
    // Incompressible bytes, so that a drip at 10 B/s would take hours.
    let payload = w.script_payload("1.0.0", "exec sleep 1000");
    fs::write(payload.join("noise.bin"), noise(256 * 1024)).expect("noise");
    w.publish(&data, &payload, "1.0.0", &[]);
    let server = Hostile::start(&data, &ca, artifact);
    configure(&mut server.plan());
    let agent = AgentProcess::start(
        &w,
        &ca,
        &w.path("root"),
        &AgentSettings {
            console: &server.url,
            extra: LIMITS,
        },
    );
    agent.wait_log("agent starting");
    Setup {
        w,
        server,
        agent,
        _data: data,
    }
}

impl Setup {
    fn wait_error(&self, needle: &str) -> String {
        let mut seen = String::new();
        self.agent
            .wait_until(&format!("last_error mentioning `{needle}`"), || {
                seen = self.agent.status()["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                seen.contains(needle)
            });
        seen
    }
}

#[test]
fn a_download_dripping_below_the_floor_is_cut_and_resumed_with_range() {
    let s = setup(Artifact::DripFirst, |_| {});
    s.agent.wait_committed("1.0.0");
    let log = s.agent.log();
    assert!(log.contains("min_rate"), "the cut names the floor:\n{log}");
    let plan = s.server.plan();
    assert!(
        plan.ranges
            .iter()
            .any(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "the rest was asked with Range: {plan:?}"
    );
    drop(s.w);
}

#[test]
fn a_download_that_always_drips_fails_with_the_reason_in_status() {
    let s = setup(Artifact::Drip, |_| {});
    let error = s.wait_error("min_rate");
    assert!(error.contains("staging 1.0.0"), "{error}");
    assert!(error.contains("below the floor of 1000 B/s"), "{error}");
    assert!(s.agent.status()["active_version"].is_null());
}

#[test]
fn an_artifact_answered_403_is_reported_not_silently_retried() {
    let s = setup(Artifact::Status(403), |_| {});
    let error = s.wait_error("answered 403");
    assert!(error.contains("artifact https://"), "{error}");
    assert_eq!(
        s.server.plan().artifact_requests,
        1,
        "a 403 is not asked again within one staging"
    );
}

#[test]
fn a_signature_dripping_at_1_byte_per_second_is_cut_with_a_clear_error() {
    let s = setup(Artifact::Normal, |plan| plan.drip_signature = true);
    let error = s.wait_error("release.json.minisig");
    assert!(
        error.contains("no complete answer within 2s ([timeouts] request)"),
        "{error}"
    );
}

#[test]
fn a_manifest_dripping_at_1_byte_per_second_is_cut_with_a_clear_error() {
    let s = setup(Artifact::Normal, |plan| plan.drip_manifest = true);
    let error = s.wait_error("no complete answer within 2s");
    assert!(error.contains("release.json:"), "{error}");
}

#[test]
fn an_admin_rollback_during_a_dripping_download_cancels_it_and_does_not_wait() {
    let s = setup(Artifact::Normal, |_| {});
    s.agent.wait_committed("1.0.0");
    let data = s.w.path("console-data");
    let v2 = s.w.script_payload("2.0.0", "exec sleep 1000");
    s.w.publish(&data, &v2, "2.0.0", &[]);
    s.agent.wait_committed("2.0.0");
    // 3.0.0 drips at 10 B/s: its staging would take hours without the cut,
    // and many seconds of resumes before it gives up.
    let requests = {
        let mut plan = s.server.plan();
        plan.artifact = Artifact::Drip;
        plan.artifact_requests
    };
    let v3 = s.w.script_payload("3.0.0", "exec sleep 1000");
    fs::write(v3.join("noise.bin"), noise(256 * 1024)).expect("noise");
    s.w.publish(&data, &v3, "3.0.0", &[]);
    s.agent.wait_until("the 3.0.0 download to start", || {
        s.server.plan().artifact_requests > requests
    });

    let root = s.agent.root.display().to_string();
    let out = crate::support::run_ok(["rollback", "--root", &root]);
    assert!(out.stdout.contains("1.0.0"), "{}", out.stdout);
    let log = s.agent.log();
    assert!(
        log.contains("cancelling the staging for an admin rollback"),
        "{log}"
    );
    assert!(
        !log.contains("giving up"),
        "the rollback did not wait for the download to fail:\n{log}"
    );
    s.agent.wait_committed("1.0.0");
    let status = s.agent.status();
    assert_eq!(status["active_version"], "1.0.0", "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cancelled by an admin rollback"), "{status}");
}
