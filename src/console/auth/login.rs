//! Logging in and out in a browser: `GET /login` (the form), `POST /login`
//! (a good token → a session cookie; failures counted per address) and
//! `POST /logout`.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use tracing::info;

use super::AdminUser;
use super::session::{CsrfForm, SESSION_COOKIE, SESSION_LIFETIME, check_csrf};
use crate::console::admin::AdminError;
use crate::console::page::escape;
use crate::console::routes::AppState;

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

/// The login form, with an optional one-line message.
pub(super) fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\">{}</p>\n", escape(m)))
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
