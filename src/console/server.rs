//! The console's accept loop: TCP → TLS handshake (per connection, off the
//! accept path) → HTTP/1.1 (hyper) → the axum router; and graceful shutdown.
//!
//! Shutdown is passed in as a future, so tests and `console serve` share one
//! entry point. On shutdown the listener closes, held requests end with 304,
//! open connections finish their current response, then the server returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher as ConnectionWatcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::{debug, info, warn};

use super::admin::Admin;
use super::auth::AdminAuth;
use super::identity::{ClientCert, Identity, PeerCert};
use super::push::Watcher;
use super::rollout_engine::Rollouts;
use super::routes::{self, AppState};
use super::store::{FLEET_DB, Store};

/// A client has this long to finish its TLS handshake: a stalled handshake
/// must not hold a socket (and a file descriptor) for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client has this long to send a request's headers, including on an idle
/// keep-alive connection: agents send small requests at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// After an accept error (usually out of file descriptors) the loop pauses
/// this long instead of spinning, letting connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// On shutdown, open connections get this long to finish their responses
/// (held requests end at once; a large download may be cut).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What `console serve` was asked to do, validated.
pub struct ServerConfig {
    /// The address to bind, as given (`--listen`).
    pub listen: String,
    /// The console data folder.
    pub data: PathBuf,
    /// The TLS settings; `None` serves plain HTTP (`--insecure-http`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Upload settings (`--trust`); `None` disables uploads.
    pub admin: Option<Arc<Admin>>,
    /// The longest a push request is held (`--max-wait`).
    pub max_wait: Duration,
    /// Admin tokens and sessions.
    pub auth: Arc<AdminAuth>,
    /// Agent certificates.
    pub identity: Arc<Identity>,
    /// When the fleet page marks an agent stale (`--stale-after`).
    pub stale_after: Duration,
}

/// Binds, prints the bound address, and serves until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let db = config.data.join(FLEET_DB);
    let (store, db_thread) = Store::open(&db)?;
    let stop = CancellationToken::new();
    let rollouts = Rollouts::start(&config.data, store.clone(), stop.clone()).await;
    let state = AppState {
        data: config.data.clone(),
        watcher: Watcher::start(stop.clone(), config.max_wait),
        store,
        stop: stop.clone(),
        admin: config.admin.clone(),
        auth: config.auth.clone(),
        identity: config.identity.clone(),
        stale_after: config.stale_after,
        rollouts,
    };
    let router = routes::router(state);
    let tls = config.tls.map(TlsAcceptor::from);
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(
        address = %address,
        tls = tls.is_some(),
        uploads = config.admin.is_some(),
        data = %config.data.display(),
        "console listening"
    );
    // Scripts and tests read the bound address (useful with port 0) from this line.
    println!("listening on {scheme}://{address}");

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            remote,
            router: router.clone(),
            watcher: graceful.watcher(),
        };
        tokio::spawn(connection.serve(stream, tls.clone()));
    }

    info!("console stopping");
    drop(listener);
    stop.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(timeout = ?DRAIN_TIMEOUT, "connections still open at shutdown; closing them");
    }
    drop(router);
    // The database thread ends once the last handle on the store is gone.
    let db_done = tokio::task::spawn_blocking(move || db_thread.join().is_ok());
    if !matches!(
        tokio::time::timeout(DRAIN_TIMEOUT, db_done).await,
        Ok(Ok(true))
    ) {
        warn!("the fleet database did not close cleanly");
    }
    info!("console stopped");
    Ok(())
}

/// One accepted connection.
struct Connection {
    /// The peer, recorded with its reports.
    remote: SocketAddr,
    /// The routes (an `Arc` inside: cheap to clone per connection).
    router: Router,
    /// Lets shutdown ask this connection to finish.
    watcher: ConnectionWatcher,
}

impl Connection {
    /// Handshakes (if TLS), then serves HTTP/1.1 until the client or shutdown closes it.
    async fn serve(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        // Responses are small or streamed in large chunks: no reason to delay them.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls else {
            return self.serve_http(stream, ClientCert(None)).await;
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                // The TLS layer verified the chain to the agent CA; the
                // routes decide what the certificate may do.
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| PeerCert::parse(leaf))
                    .map(Arc::new);
                self.serve_http(stream, ClientCert(peer)).await
            }
            Ok(Err(e)) => debug!(remote = %self.remote, error = %e, "TLS handshake failed"),
            Err(_) => debug!(remote = %self.remote, "TLS handshake timed out"),
        }
    }

    /// Serves requests on an established stream.
    async fn serve_http<S>(self, stream: S, peer: ClientCert)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            remote,
            router,
            watcher,
        } = self;
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(peer.clone());
            router.clone().call(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = watcher.watch(connection).await {
            debug!(remote = %remote, error = %e, "connection ended with an error");
        }
    }
}
