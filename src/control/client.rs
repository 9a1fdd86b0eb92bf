//! The client side of the control socket, used by `status`, `rollback`,
//! `check` and the demo.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{Request, Response, socket_path};

/// How long a client waits for the agent (a rollback stops and starts payloads).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// What came back from a request that may end the agent's image.
#[derive(Debug)]
pub enum Answer {
    /// No agent listens.
    NoAgent,
    /// The agent answered.
    Response(Box<Response>),
    /// The connection ended without an answer: the image that took the
    /// request exec'd (an in-place exec closes it).
    HungUp,
}

/// Sends a request to the agent running on `root`; `None` when no agent listens.
///
/// A connection the agent closed unanswered (an in-place exec of the agent
/// cuts the requests its old image had not answered; the new image answers
/// from the same socket) is tried once more for the requests that are safe to
/// repeat (`status`, `check`).
pub fn request(root: &Path, request: Request) -> anyhow::Result<Option<Response>> {
    let mut answer = request_or_hangup(root, &request)?;
    if matches!(answer, Answer::HungUp) && matches!(request, Request::Status | Request::Check) {
        answer = request_or_hangup(root, &request)?;
    }
    match answer {
        Answer::NoAgent => Ok(None),
        Answer::Response(response) => Ok(Some(*response)),
        Answer::HungUp => Err(anyhow::anyhow!(
            "{}: the agent closed the connection without answering",
            socket_path(root).display()
        )),
    }
}

/// Sends a request; tells an answer from a connection the agent closed unanswered.
pub fn request_or_hangup(root: &Path, request: &Request) -> anyhow::Result<Answer> {
    let path = socket_path(root);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Answer::NoAgent);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    match read {
        Ok(0) => return Ok(Answer::HungUp),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(Answer::HungUp),
        Err(e) => return Err(e).with_context(|| format!("reading from {}", path.display())),
        Ok(_) => {}
    }
    let response = serde_json::from_str(answer.trim())
        .with_context(|| format!("{}: unreadable answer", path.display()))?;
    Ok(Answer::Response(Box::new(response)))
}
