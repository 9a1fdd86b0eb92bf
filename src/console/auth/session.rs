//! Browser sessions and their CSRF tokens: the session cookie a login sets,
//! the sessions held (bounded, expiring), and the CSRF check of every
//! state-changing form.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tracing::warn;

use super::{AdminAuth, AdminUser};
use crate::console::admin::AdminError;

/// How long a browser session lasts.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Browser sessions held at once; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 1024;

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "bankswap_session";

/// A browser session.
pub(super) struct Session {
    /// The admin token's name it logged in with.
    admin: String,
    /// The CSRF token its forms carry.
    csrf: String,
    /// When it ends.
    expires: Instant,
}

impl AdminAuth {
    /// The session a request's cookie names, if current.
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<AdminUser> {
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
    pub(super) fn start_session(&self, admin: String) -> String {
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
    pub(super) fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            sessions.remove(&id);
        }
    }
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

/// The CSRF field of every state-changing form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// Must equal the session's CSRF token.
    csrf: String,
}

/// Checks a form's CSRF token against the session's (403 otherwise);
/// bearer requests carry no cookie and need none.
pub(super) fn check_csrf(
    user: &AdminUser,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<(), AdminError> {
    let given = form.map(|Form(f)| f.csrf).unwrap_or_default();
    check_csrf_value(user, &given)
}

/// Checks a CSRF token given by a form (`given`) against the session's;
/// bearer requests need none. Shared with the rollout buttons (rollout_http.rs).
pub(in crate::console) fn check_csrf_value(
    user: &AdminUser,
    given: &str,
) -> Result<(), AdminError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; bankswap_session=abc; b=2".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
    }
}
