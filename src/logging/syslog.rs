//! The syslog sink of the log: RFC 5424 messages over UDP, or octet-counted
//! over TCP (RFC 6587), reconnected when the stream breaks.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// RFC 5424 facility `daemon`.
const FACILITY_DAEMON: u8 = 3;
/// Connecting to a TCP syslog server must not hold up the agent.
const SYSLOG_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP syslog server that stops reading is given up (and reconnected) after this.
const SYSLOG_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where syslog messages go.
enum Transport {
    /// One datagram per message.
    Udp(UdpSocket),
    /// Octet-counted frames (RFC 6587) on a stream, reconnected when it breaks.
    Tcp {
        /// The server.
        addr: SocketAddr,
        /// The open stream, if any.
        stream: Option<TcpStream>,
    },
}

/// A syslog client: each formatted event becomes one RFC 5424 message.
pub struct Syslog {
    /// The shared transport.
    transport: Arc<Mutex<Transport>>,
    /// This machine's name, for the HOSTNAME field.
    hostname: String,
}

impl Syslog {
    /// Opens `udp://host:port` or `tcp://host:port`.
    pub fn connect(url: &str) -> io::Result<Syslog> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected udp://host:port or tcp://host:port",
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let addr = rest.to_socket_addrs()?.next().ok_or_else(bad)?;
        let transport = match scheme {
            "udp" => {
                let socket = UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                socket.connect(addr)?;
                Transport::Udp(socket)
            }
            "tcp" => Transport::Tcp {
                addr,
                stream: open_tcp(&addr),
            },
            _ => return Err(bad()),
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "-".to_string());
        Ok(Syslog {
            transport: Arc::new(Mutex::new(transport)),
            hostname,
        })
    }

    /// Sends one message (called from the syslog queue's thread only).
    pub(super) fn send(&self, severity: u8, message: &str) {
        let pri = FACILITY_DAEMON * 8 + severity;
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        let line = format!(
            "<{pri}>1 {time} {} bankswap {} - - {}",
            self.hostname,
            std::process::id(),
            message.trim_end()
        );
        let Ok(mut transport) = self.transport.lock() else {
            return;
        };
        match &mut *transport {
            Transport::Udp(socket) => {
                let _ = socket.send(line.as_bytes());
            }
            Transport::Tcp { addr, stream } => {
                let frame = format!("{} {line}", line.len());
                if stream.is_none() {
                    *stream = open_tcp(addr);
                }
                if let Some(s) = stream
                    && s.write_all(frame.as_bytes()).is_err()
                {
                    *stream = None; // reconnect with the next message
                }
            }
        }
    }
}

/// A stream to the syslog server with bounded connect and write times, or
/// `None` (the next message tries again).
fn open_tcp(addr: &SocketAddr) -> Option<TcpStream> {
    TcpStream::connect_timeout(addr, SYSLOG_CONNECT_TIMEOUT)
        .and_then(|s| s.set_write_timeout(Some(SYSLOG_WRITE_TIMEOUT)).map(|()| s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::SEVERITY_INFO;

    #[test]
    fn udp_messages_are_rfc5424() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let url = format!("udp://{}", server.local_addr().expect("addr"));
        let syslog = Syslog::connect(&url).expect("connect");
        syslog.send(SEVERITY_INFO, "running version=1.0.0 bank=Bank1 pid=7\n");
        let mut buf = [0u8; 512];
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = server.recv(&mut buf).expect("a datagram");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("<30>1 "), "{text}");
        assert!(text.contains(" bankswap "), "{text}");
        assert!(
            text.ends_with("running version=1.0.0 bank=Bank1 pid=7"),
            "{text}"
        );
    }

    #[test]
    fn bad_url_is_an_error() {
        assert!(Syslog::connect("http://x:1").is_err());
        assert!(Syslog::connect("udp-no-scheme").is_err());
    }
}
