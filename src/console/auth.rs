//! Admin access (SPEC §10 "Admins log in"): bearer tokens for the CLI, a
//! login form and a session cookie for the browser, CSRF tokens on every
//! state-changing form, and a limit on failed logins per remote address.
//!
//! ```text
//! GET  /login                     the login form
//! POST /login                     token=… → session cookie (HttpOnly, Secure, SameSite=Strict), 303 to /
//! POST /logout                    csrf=…
//! POST /agents/{id}/revoke        csrf=… (the fleet page's buttons)
//! POST /agents/{id}/forget        csrf=…
//! ```
//!
//! Admin tokens are the one in `--admin-token-file` (named `admin-token-file`)
//! and the named ones of `console admin-token create`, stored as SHA-256
//! digests. A presented token's digest is compared with every stored digest
//! in constant time (`subtle`), all of them, whichever matches.
//!
//! Here: the admin tokens, the bearer check and the `require_admin` layer;
//! `auth/session.rs`: browser sessions and CSRF; `auth/login.rs`: the login
//! form and logout; `auth/limiter.rs`: failed logins per address;
//! `auth/agent_buttons.rs`: the fleet page's revoke and forget buttons.

mod agent_buttons;
mod limiter;
mod login;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rusqlite::Connection;
use subtle::ConstantTimeEq;
use tracing::warn;

pub use self::agent_buttons::agent_action;
pub use self::limiter::Limiter;
pub use self::login::{login, login_form, logout};
pub(super) use self::session::check_csrf_value;

use self::login::login_page;
use self::session::Session;
use super::admin::AdminError;
use super::registry;
use super::routes::AppState;
use crate::clock;

/// The name of the `--admin-token-file` token.
const FILE_TOKEN_NAME: &str = "admin-token-file";

/// Who is asking, once authenticated (a request extension).
#[derive(Debug, Clone)]
pub struct AdminUser {
    /// The admin token's name.
    pub name: String,
    /// The session's CSRF token (`None` for a bearer: no cookie, no CSRF).
    pub csrf: Option<String>,
}

/// Admin tokens, sessions and the failed-login limiter.
pub struct AdminAuth {
    /// Digest of the `--admin-token-file` token.
    file_token: Option<[u8; 32]>,
    /// The named admin tokens (a connection to the fleet database).
    db: Mutex<Connection>,
    /// Session id → session.
    sessions: Mutex<HashMap<String, Session>>,
    /// Failed logins and bearer tokens per address.
    limiter: Limiter,
}

impl AdminAuth {
    /// Admin access with the `--admin-token-file` token (if any) and the named tokens in `db`.
    pub fn new(file_token: Option<&str>, db: Connection) -> AdminAuth {
        AdminAuth {
            file_token: file_token.map(registry::digest),
            db: Mutex::new(db),
            sessions: Mutex::new(HashMap::new()),
            limiter: Limiter::default(),
        }
    }

    /// The name of the admin token `token`, if it is one; every stored
    /// digest is compared, in constant time.
    async fn token_name(self: &Arc<Self>, token: &str) -> Result<Option<String>, AdminError> {
        let given = registry::digest(token);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let named = {
                let db = this.db.lock().unwrap_or_else(PoisonError::into_inner);
                registry::admin_tokens(&db)
                    .map_err(|e| AdminError::internal("cannot read the admin tokens", e))?
            };
            let mut found = None;
            let file = this
                .file_token
                .map(|d| (FILE_TOKEN_NAME.to_string(), d.to_vec()));
            for (name, digest) in file.into_iter().chain(named) {
                if bool::from(digest.ct_eq(&given)) {
                    found = Some(name);
                }
            }
            Ok(found)
        })
        .await
        .map_err(|e| AdminError::internal("the admin token check failed", e))?
    }

    /// Checks a presented token from `remote`, counting failures; the
    /// admin's name if it passes.
    async fn check_token(
        self: &Arc<Self>,
        token: &str,
        remote: SocketAddr,
        how: &'static str,
    ) -> Result<String, AdminError> {
        let now = clock::now_seconds();
        if self.limiter.is_limited(remote.ip(), now) || self.limiter.is_full_without(remote.ip()) {
            warn!(remote = %remote, how, "admin authentication rate limited");
            return Err(AdminError::RateLimited);
        }
        match self.token_name(token).await? {
            Some(name) => Ok(name),
            None => {
                self.limiter.fail(remote.ip(), now);
                warn!(remote = %remote, how, "failed admin authentication");
                Err(AdminError::WrongToken)
            }
        }
    }

    /// `Authorization: Bearer <token>` checked; the admin's name.
    pub async fn bearer(
        self: &Arc<Self>,
        headers: &HeaderMap,
        remote: SocketAddr,
    ) -> Result<String, AdminError> {
        let token = bearer_token(headers).ok_or(AdminError::NoToken)?;
        self.check_token(&token, remote, "bearer").await
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
}

/// Lets a request through with a bearer token or a session; otherwise the
/// login page (for `/`) or 401.
pub async fn require_admin(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = state.auth.clone();
    let user = if bearer_token(request.headers()).is_some() {
        match auth.bearer(request.headers(), remote).await {
            Ok(name) => AdminUser { name, csrf: None },
            Err(refused) => return refused.into_response(),
        }
    } else if let Some(user) = auth.session(request.headers()) {
        user
    } else if request.uri().path() == "/" {
        return login_page(StatusCode::UNAUTHORIZED, None);
    } else {
        return AdminError::NoToken.into_response();
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}
