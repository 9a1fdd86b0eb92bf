//! The fleet page's agent buttons: `POST /agents/{id}/revoke` and
//! `/forget`, CSRF-checked.

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use tracing::info;

use super::AdminUser;
use super::session::{CsrfForm, check_csrf};
use crate::console::admin::AdminError;
use crate::console::routes::AppState;

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
