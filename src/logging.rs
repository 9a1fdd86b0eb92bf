//! Log set-up: tracing to stderr, filtered by `BANKSWAP_LOG`, as text or
//! JSON, and optionally to a syslog server (RFC 5424 over UDP or TCP).

use std::io::{self, IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{Command, ConsoleCommand};
use crate::config::{LogConfig, LogFormat};

/// The environment variable that sets the log filter (tracing's `EnvFilter` syntax).
pub const LOG_ENV: &str = "BANKSWAP_LOG";
/// RFC 5424 facility `daemon`.
const FACILITY_DAEMON: u8 = 3;
/// Connecting to a TCP syslog server must not hold up the agent.
const SYSLOG_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One-shot commands log warnings only by default: their result is printed on stdout.
/// Services log at info; the agent sets up its own logging from its config.
pub fn init_for_command(command: &Command) {
    match command {
        Command::Run { .. } => {}
        Command::Console {
            command: ConsoleCommand::Serve(_),
        }
        | Command::Demo => {
            init(&LogConfig::default(), "info");
        }
        _ => init(&LogConfig::default(), "warn"),
    }
}

/// Installs the global subscriber; `default` is the filter when `BANKSWAP_LOG` is unset.
/// A syslog address that cannot be used is reported on stderr and skipped.
pub fn init(config: &LogConfig, default: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .boxed(),
    };
    let syslog = config
        .syslog
        .as_deref()
        .and_then(|url| match Syslog::connect(url) {
            Ok(writer) => Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .with_writer(writer),
            ),
            Err(e) => {
                eprintln!("warning: [log] syslog {url}: {e}; logging to stderr only");
                None
            }
        });
    // A second init (the demo re-entering) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(syslog)
        .try_init();
}

/// Where syslog messages go.
enum Transport {
    /// One datagram per message.
    Udp(UdpSocket),
    /// Octet-counted frames (RFC 6587) on a stream, reconnected when it breaks.
    Tcp {
        /// The server.
        addr: std::net::SocketAddr,
        /// The open stream, if any.
        stream: Option<TcpStream>,
    },
}

/// A `MakeWriter` that turns each formatted event into one RFC 5424 message.
#[derive(Clone)]
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
                stream: TcpStream::connect_timeout(&addr, SYSLOG_CONNECT_TIMEOUT).ok(),
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

    fn send(&self, severity: u8, message: &str) {
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
                    *stream = TcpStream::connect_timeout(addr, SYSLOG_CONNECT_TIMEOUT).ok();
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

/// One message being formatted; sent when dropped.
pub struct SyslogLine {
    /// Where to send it.
    sink: Syslog,
    /// RFC 5424 severity.
    severity: u8,
    /// The formatted text.
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink
                .send(self.severity, &String::from_utf8_lossy(&self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            sink: self.clone(),
            severity: 6,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        SyslogLine {
            sink: self.clone(),
            severity,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_messages_are_rfc5424() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let url = format!("udp://{}", server.local_addr().expect("addr"));
        let syslog = Syslog::connect(&url).expect("connect");
        let meta_writer = syslog.make_writer();
        drop(meta_writer); // an empty line sends nothing
        let mut line = syslog.make_writer();
        line.write_all(b"running version=1.0.0 bank=Bank1 pid=7\n")
            .expect("write");
        drop(line);
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
