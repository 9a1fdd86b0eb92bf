//! The agent's stable, random identity: `ROOT/agent-id`, made once.

use std::io;
use std::path::Path;

use rand::RngCore;

/// The file inside the root.
pub const AGENT_ID_FILE: &str = "agent-id";

/// Reads the agent id, creating it (16 random bytes, hex) on first use.
pub fn ensure(root: &Path) -> io::Result<String> {
    if let Some(id) = read(root)? {
        return Ok(id);
    }
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let id = hex::encode(bytes);
    bank_layout::write_atomic(&root.join(AGENT_ID_FILE), format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Reads the agent id if it was made.
pub fn read(root: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(root.join(AGENT_ID_FILE)) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
