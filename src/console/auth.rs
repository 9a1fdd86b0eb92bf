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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use rusqlite::Connection;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::admin::AdminError;
use super::registry;
use super::routes::AppState;
use crate::clock;

/// Failed logins (or bearer tokens) allowed per remote address within
/// [`FAILURE_WINDOW`]: an admin mistyping a few times is fine; guessing is not.
pub const MAX_FAILURES: u32 = 10;

/// How long failures from one address are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Addresses with failures tracked at once: bounds the limiter's memory.
/// When full (after dropping expired entries), new failing addresses are
/// refused too: under such an attack, admins wait with everyone else.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// How long a browser session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Browser sessions held at once; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 1024;

/// The session cookie's name.
const SESSION_COOKIE: &str = "bankswap_session";

/// The name of the `--admin-token-file` token.
const FILE_TOKEN_NAME: &str = "admin-token-file";

/// Failures per remote address.
#[derive(Default)]
pub struct Limiter {
    /// Address → (failures, when the first of them happened).
    failures: Mutex<HashMap<IpAddr, (u32, SystemTime)>>,
}

impl Limiter {
    /// Whether `address` has failed too often lately.
    pub fn is_limited(&self, address: IpAddr, now: SystemTime) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .get(&address)
            .is_some_and(|(count, since)| *count >= MAX_FAILURES && !window_passed(*since, now))
    }

    /// Counts one failure of `address`.
    pub fn fail(&self, address: IpAddr, now: SystemTime) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (_, since)| !window_passed(*since, now));
        }
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address) {
            return;
        }
        let entry = failures.entry(address).or_insert((0, now));
        if window_passed(entry.1, now) {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Whether the limiter is too full to track `address` (it is refused then).
    fn is_full_without(&self, address: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address)
    }
}

fn window_passed(since: SystemTime, now: SystemTime) -> bool {
    now.duration_since(since).unwrap_or_default() >= FAILURE_WINDOW
}

/// A browser session.
struct Session {
    /// The admin token's name it logged in with.
    admin: String,
    /// The CSRF token its forms carry.
    csrf: String,
    /// When it ends.
    expires: Instant,
}

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

    /// The session a request's cookie names, if current.
    fn session(&self, headers: &HeaderMap) -> Option<AdminUser> {
        let id = session_cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get(&id)?;
        if session.expires <= Instant::now() {
            sessions.remove(&id);
            return None;
        }
        Some(AdminUser {
            name: session.admin.clone(),
            csrf: Some(session.csrf.clone()),
        })
    }

    /// Starts a session; returns its id.
    fn start_session(&self, admin: String) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                admin,
                csrf,
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// Ends a session.
    fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            sessions.remove(&id);
        }
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

/// The session id of the request's cookie.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
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

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The admin token.
    token: String,
}

/// `GET /login`.
pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

/// `POST /login`: a session cookie for a good token; failures are counted
/// per remote address and logged with it.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    match state.auth.check_token(&token, remote, "login form").await {
        Ok(name) => {
            info!(remote = %remote, admin = %name, "admin logged in");
            let id = state.auth.start_session(name);
            let cookie = format!(
                "{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                SESSION_LIFETIME.as_secs()
            );
            (
                StatusCode::SEE_OTHER,
                [(SET_COOKIE, cookie), (LOCATION, "/".to_string())],
            )
                .into_response()
        }
        Err(AdminError::RateLimited) => login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("too many failed logins from this address; try again later"),
        ),
        Err(AdminError::WrongToken) => {
            login_page(StatusCode::UNAUTHORIZED, Some("wrong admin token"))
        }
        Err(other) => other.into_response(),
    }
}

/// The CSRF field of every state-changing form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// Must equal the session's CSRF token.
    csrf: String,
}

/// Checks a form's CSRF token against the session's (403 otherwise);
/// bearer requests carry no cookie and need none.
fn check_csrf(
    user: &AdminUser,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<(), AdminError> {
    let given = form.map(|Form(f)| f.csrf).unwrap_or_default();
    check_csrf_value(user, &given)
}

/// Checks a CSRF token given by a form (`given`) against the session's;
/// bearer requests need none. Shared with the rollout buttons (rollout_http.rs).
pub(super) fn check_csrf_value(user: &AdminUser, given: &str) -> Result<(), AdminError> {
    let Some(expected) = &user.csrf else {
        return Ok(());
    };
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        warn!(admin = %user.name, "form refused: forged or missing CSRF token");
        Err(AdminError::Forbidden(
            "the form's CSRF token is not this session's".into(),
        ))
    }
}

/// `POST /logout`.
pub async fn logout(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<AdminUser>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, AdminError> {
    check_csrf(&user, form)?;
    state.auth.end_session(&headers);
    let expired =
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    Ok((
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, expired), (LOCATION, "/login".to_string())],
    )
        .into_response())
}

/// `POST /agents/{id}/revoke` and `/forget`: the fleet page's buttons.
pub async fn agent_action(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<AdminUser>,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, AdminError> {
    check_csrf(&user, form)?;
    let Ok(Path((agent_id, action))) = path else {
        return Err(AdminError::BadRequest("bad agent action URL".into()));
    };
    let done = match action.as_str() {
        "revoke" => state.identity.revoke(&agent_id).await,
        "forget" => state.identity.forget(&agent_id).await,
        _ => return Err(AdminError::BadRequest(format!("no action `{action}`"))),
    }
    .map_err(|e| AdminError::internal("cannot change the agent", e))?;
    if !done {
        return Err(AdminError::BadRequest(format!("no agent {agent_id}")));
    }
    info!(admin = %user.name, agent_id = %agent_id, action = %action, "agent changed");
    Ok((StatusCode::SEE_OTHER, [(LOCATION, "/".to_string())]).into_response())
}

/// The login form, with an optional one-line message.
fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\">{}</p>\n", super::page::escape(m)))
        .unwrap_or_default();
    let page = format!(
        concat!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bankswap console: log in</title></head>\n",
            "<body><h1>bankswap console</h1>\n{message}",
            "<form method=\"post\" action=\"/login\">\n",
            "<label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label>\n",
            "<button type=\"submit\">Log in</button>\n</form>\n</body></html>\n"
        ),
        message = message
    );
    (status, Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let limiter = Limiter::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let now = clock::from_unix(1_000_000);
        for _ in 0..MAX_FAILURES {
            assert!(!limiter.is_limited(address, now));
            limiter.fail(address, now);
        }
        assert!(limiter.is_limited(address, now));
        assert!(!limiter.is_limited(other, now));
        assert!(!limiter.is_limited(address, now + FAILURE_WINDOW));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; bankswap_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
    }
}
