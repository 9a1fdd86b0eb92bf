//! The demo's client: asks the payload every few milliseconds and counts
//! what it gets, to show that a swap loses no request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Pause between requests.
const INTERVAL: Duration = Duration::from_millis(20);
/// A request that takes longer has failed.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the client saw.
pub struct Summary {
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The answers, each time they changed.
    pub seen: Vec<String>,
}

/// A running client.
pub struct Client {
    /// Tells the thread to stop.
    stop: Arc<AtomicBool>,
    /// The thread.
    thread: JoinHandle<Summary>,
}

impl Client {
    /// Starts asking `http://127.0.0.1:{port}/`.
    pub fn start(port: u16) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut summary = Summary {
                sent: 0,
                failed: 0,
                seen: Vec::new(),
            };
            while !flag.load(Ordering::Relaxed) {
                summary.sent += 1;
                match get(port) {
                    Ok(body) if summary.seen.last() != Some(&body) => {
                        println!("  client | {body} (request {})", summary.sent);
                        summary.seen.push(body);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        summary.failed += 1;
                        println!("  client | request {} FAILED: {e}", summary.sent);
                    }
                }
                std::thread::sleep(INTERVAL);
            }
            summary
        });
        Client { stop, thread }
    }

    /// Stops and returns what it saw.
    pub fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(Summary {
            sent: 0,
            failed: 1,
            seen: vec!["(client thread panicked)".into()],
        })
    }
}

fn get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.trim().to_string()),
        _ => Err(std::io::Error::other(format!(
            "unexpected answer: {}",
            response.lines().next().unwrap_or("")
        ))),
    }
}
