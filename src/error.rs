//! How failures reach the user: exit codes (0 ok, 1 failed, 2 bad usage or
//! configuration), the one-line `error: <what>: <why>` and hints.

use std::fmt;
use std::process::ExitCode;

use bank_layout::LayoutError;

/// Bad usage or configuration: exit code 2.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    /// A usage error with its one-line reason.
    pub fn new(reason: impl Into<String>) -> Self {
        UsageError(reason.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Prints the error as one line (plus a hint where one helps) and picks the exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let line = format!("{err:#}").replace('\n', " ");
    eprintln!("error: {line}");
    if let Some(hint) = hint(err) {
        eprintln!("hint: {hint}");
    }
    if err.chain().any(|e| e.is::<UsageError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let layout = err.chain().find_map(|e| e.downcast_ref::<LayoutError>())?;
    match layout {
        LayoutError::Locked { .. } => Some(
            "another bankswap (usually `bankswap run`) holds this root; stop it, or use `bankswap check`",
        ),
        LayoutError::CorruptState { .. } => Some(
            "restore state.json from a backup, or remove it: bankswap rebuilds it from the bank records",
        ),
        LayoutError::NoPrevious => Some("the other bank holds no complete version to roll back to"),
        LayoutError::PreviousMarkedBad { .. } => Some(
            "publish a fixed release, or re-sign a good one for the fleet: `bankswap publish --rollback-to VERSION`",
        ),
        _ => None,
    }
}
