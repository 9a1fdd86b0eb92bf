//! `hello-payload`: an example bankswap payload. It serves HTTP/1.1 on the
//! socket handed over in `LISTEN_FDS` (or binds `--listen ADDR` when run by
//! hand), says `READY=1` once it accepts, and on SIGTERM stops accepting,
//! finishes the requests in flight and exits 0.
//!
//! A library as well as a binary: `bankswap` carries it as its hidden
//! `bankswap hello-payload` command, so that `bankswap demo` needs nothing
//! but the installed binary.
//!
//! Test knobs: `HELLO_START_DELAY_MS` delays the start (a slow starter);
//! `HELLO_FAIL=1` exits 1 at once (a release that fails its trial).

mod sd;

use std::env;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use crate::sd::Inherited;

/// Where to listen when no socket is handed over.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What a request says when `BANKSWAP_VERSION` is not set (run by hand).
const DEV_VERSION: &str = "dev";

/// After SIGTERM and the end of accepting, connections accepted just before get this
/// long to send their request: closing them unread would reset them (an RST, since
/// their request sits unread in the socket buffer). Only with a handed-over socket:
/// there the next generation is already accepting from the shared backlog. A socket
/// bound by hand is closed for good, so waiting would only lengthen the outage.
const DRAIN_DELAY: Duration = Duration::from_millis(500);

/// Requests in flight get at most this long to finish (the supervisor's
/// `stop_timeout` is the hard limit).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the payload with its command-line arguments (without the program name).
///
/// # Safety
///
/// Call before any other thread exists, and once: it changes the environment
/// (removes `LISTEN_FDS` and its companions) and takes ownership of fd 3.
pub unsafe fn run(args: impl Iterator<Item = String>) -> ExitCode {
    if env::var("HELLO_FAIL").is_ok_and(|v| v == "1") {
        eprintln!("hello-payload: HELLO_FAIL=1, failing at once");
        return ExitCode::FAILURE;
    }
    let listen = match listen_arg(args) {
        Ok(listen) => listen,
        Err(message) => {
            eprintln!("hello-payload: {message}\nusage: hello-payload [--listen ADDR]");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the caller guarantees no other thread exists yet (the runtime is
    // built below), and this is the only place that takes fd 3.
    let inherited = match unsafe { sd::take_listener() } {
        Ok(inherited) => inherited,
        Err(err) => {
            eprintln!("hello-payload: LISTEN_FDS: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime.and_then(|runtime| runtime.block_on(serve(inherited, &listen))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hello-payload: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen ADDR` (or `--listen=ADDR`); the default otherwise.
fn listen_arg(mut args: impl Iterator<Item = String>) -> Result<String, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(listen)
}

/// Serves until SIGTERM (or SIGINT), then drains.
async fn serve(inherited: Option<Inherited>, listen: &str) -> io::Result<()> {
    if let Some(delay) = env::var("HELLO_START_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        // Connections wait in the (supervisor's) backlog meanwhile.
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let version: Arc<str> = env::var("BANKSWAP_VERSION")
        .unwrap_or_else(|_| DEV_VERSION.into())
        .into();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(move || {
            let version = Arc::clone(&version);
            async move { format!("hello from {version}\n") }
        });
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("hello-payload: stopping: finishing requests in flight");
        report(sd::notify("STOPPING=1"));
    };

    match inherited {
        Some(Inherited::Tcp(listener)) => {
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            println!(
                "hello-payload: serving on {} (handed over)",
                listener.local_addr()?
            );
            report(sd::notify("READY=1"));
            serve_until(listener, app, shutdown, DRAIN_DELAY).await;
        }
        Some(Inherited::Unix(listener)) => {
            listener.set_nonblocking(true)?;
            let listener = UnixListener::from_std(listener)?;
            println!("hello-payload: serving on a Unix socket (handed over)");
            report(sd::notify("READY=1"));
            serve_until(listener, app, shutdown, DRAIN_DELAY).await;
        }
        None => {
            let listener = TcpListener::bind(listen).await?;
            println!("hello-payload: serving on {}", listener.local_addr()?);
            report(sd::notify("READY=1"));
            serve_until(listener, app, shutdown, Duration::ZERO).await;
        }
    }
    println!("hello-payload: stopped");
    Ok(())
}

/// Serves connections until `shutdown`; then stops accepting (new connections wait in
/// the shared backlog for the next generation), lets connections accepted just before
/// read their request, and finishes the requests in flight.
async fn serve_until<L>(
    mut listener: L,
    app: Router,
    shutdown: impl Future<Output = ()>,
    drain_delay: Duration,
) where
    L: axum::serve::Listener,
{
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (io, _) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let mut drain = drain_rx.clone();
                connections.spawn(async move {
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(io), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = drain.wait_for(|draining| *draining) => connection.as_mut().graceful_shutdown(),
                    }
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::time::sleep(drain_delay).await;
    let _ = drain_tx.send(true);
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_err() {
        eprintln!("hello-payload: requests still running after {DRAIN_TIMEOUT:?}; exiting");
    }
}

/// A failed notification is worth a line, not an exit: readiness falls back to probes.
fn report(sent: io::Result<()>) {
    if let Err(err) = sent {
        eprintln!("hello-payload: NOTIFY_SOCKET: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<String, String> {
        listen_arg(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn listen_defaults_and_accepts_both_spellings() {
        assert_eq!(args(&[]).unwrap(), DEFAULT_LISTEN);
        assert_eq!(args(&["--listen", "[::1]:9000"]).unwrap(), "[::1]:9000");
        assert_eq!(args(&["--listen=0.0.0.0:1"]).unwrap(), "0.0.0.0:1");
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--verbose"]).is_err());
    }
}
