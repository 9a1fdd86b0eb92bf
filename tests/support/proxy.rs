//! A real CONNECT proxy on loopback with basic auth, answering 407 to wrong
//! credentials: what `[proxy]` of the agent (and `doctor`) goes through.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

/// Connections the test proxy serves at most (it stops by itself).
const MAX_CONNECTIONS: usize = 256;

/// A CONNECT proxy demanding `Proxy-Authorization: Basic user:password`.
pub struct ConnectProxy {
    /// The loopback port it listens on.
    pub port: u16,
    /// CONNECTs it tunnelled.
    pub tunnels: Arc<AtomicUsize>,
    /// CONNECTs it refused with 407.
    pub refused: Arc<AtomicUsize>,
}

impl ConnectProxy {
    /// Listens on a loopback port, in a thread of its own.
    pub fn start(user: &str, password: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let expected = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (tunnels, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, r) = (tunnels.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().take(MAX_CONNECTIONS).flatten() {
                let (expected, t, r) = (expected.clone(), t.clone(), r.clone());
                std::thread::spawn(move || tunnel(client, &expected, &t, &r));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refused,
        }
    }
}

fn tunnel(mut client: TcpStream, expected: &str, tunnels: &AtomicUsize, refused: &AtomicUsize) {
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let target = head
        .first()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next());
    let authorized = head.iter().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("proxy-authorization: ")
            .is_some_and(|v| v == expected.to_ascii_lowercase())
    });
    let Some(target) = target else { return };
    if !authorized {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    tunnels.fetch_add(1, Ordering::SeqCst);
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut c2, mut s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let mut server = server;
    let _ = std::io::copy(&mut server, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
