//! Log set-up: tracing to stderr, filtered by `BANKSWAP_LOG`, as text or
//! JSON, and optionally to a syslog server (RFC 5424 over UDP or TCP).
//!
//! Logging never blocks the caller: every formatted line goes into a bounded
//! queue that a thread of its own writes out. When the sink stalls (a full
//! pipe to a stalled journald, a syslog server that stopped reading) the queue
//! fills, further lines are dropped and counted, and the writer says how many
//! once the sink moves again. Under journald (`JOURNAL_STREAM` set) each line
//! starts with its `<N>` syslog priority, so `journalctl -p warning` works.
//! Text fields are logfmt: a value with spaces, quotes or `=` is quoted.

use std::fmt::Debug;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Writer, debug_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{Command, ConsoleCommand};
use crate::config::{LogConfig, LogFormat};

mod syslog;

pub use syslog::Syslog;

/// The environment variable that sets the log filter (tracing's `EnvFilter` syntax).
pub const LOG_ENV: &str = "BANKSWAP_LOG";
/// Lines buffered per sink while it is slow: a burst at start-up or a staging's
/// progress fits; a sink stalled for good costs at most this many lines of memory.
const QUEUE_LINES: usize = 1024;
/// At exit, how long queued lines may take to reach the sink; a stalled sink
/// must not keep a stopping agent from exiting.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Set by systemd when stderr is connected to the journal.
const JOURNAL_STREAM_ENV: &str = "JOURNAL_STREAM";
/// syslog severities (RFC 5424), also journald's `<N>` prefixes.
const SEVERITY_ERR: u8 = 3;
/// `warning`.
const SEVERITY_WARNING: u8 = 4;
/// `info`.
const SEVERITY_INFO: u8 = 6;
/// `debug`.
const SEVERITY_DEBUG: u8 = 7;

/// The queues of the installed subscriber, flushed at exit.
static QUEUES: OnceLock<Vec<Arc<LineQueue>>> = OnceLock::new();

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

/// Whether stderr lines are JSON (else text); a reload may flip it.
static JSON: AtomicBool = AtomicBool::new(false);
/// Whether a syslog target is set, so lines are formatted for it at all.
static SYSLOG_ON: AtomicBool = AtomicBool::new(false);
/// The syslog target lines go to; a reload may replace it.
static SYSLOG: Mutex<Option<Arc<Syslog>>> = Mutex::new(None);

/// Installs the global subscriber; `default` is the filter when `BANKSWAP_LOG` is unset.
/// A syslog address that cannot be used is reported on stderr and skipped.
/// The format and the syslog target can be changed later by [`apply`].
pub fn init(config: &LogConfig, default: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let journald = std::env::var_os(JOURNAL_STREAM_ENV).is_some();
    let stderr_queue = LineQueue::spawn("bankswap-log", move |severity, line| {
        let mut out = io::stderr().lock();
        let written = if journald {
            write!(out, "<{severity}>").and_then(|()| out.write_all(line))
        } else {
            out.write_all(line)
        };
        // Nowhere to report a failed log write; the next line tries again.
        let _ = written.and_then(|()| out.flush());
    });
    let text = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(!journald && io::stderr().is_terminal())
        .fmt_fields(logfmt_fields())
        .with_writer(QueueWriter(stderr_queue.clone()))
        .with_filter(filter_fn(|_| !JSON.load(Ordering::Relaxed)));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(QueueWriter(stderr_queue.clone()))
        .with_filter(filter_fn(|_| JSON.load(Ordering::Relaxed)));
    let syslog_queue = LineQueue::spawn("bankswap-syslog", move |severity, line| {
        // Not sent under the lock: a slow server must not hold up a reload.
        let target = SYSLOG.lock().ok().and_then(|t| t.clone());
        if let Some(syslog) = target {
            syslog.send(severity, &String::from_utf8_lossy(line));
        }
    });
    let syslog_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .fmt_fields(logfmt_fields())
        .with_writer(QueueWriter(syslog_queue.clone()))
        .with_filter(filter_fn(|_| SYSLOG_ON.load(Ordering::Relaxed)));
    let syslog = connect_syslog(config).unwrap_or_else(|e| {
        eprintln!("warning: {e}; logging to stderr only");
        None
    });
    // A second init (the demo re-entering) keeps the first subscriber and its settings.
    if tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(syslog_layer)
        .try_init()
        .is_ok()
    {
        apply(config.format, syslog);
        let _ = QUEUES.set(vec![stderr_queue, syslog_queue]);
    }
}

/// Opens the syslog target of `config`, if it has one: what a reload checks
/// before it changes anything. The error is one line naming the key.
pub fn connect_syslog(config: &LogConfig) -> Result<Option<Syslog>, String> {
    config
        .syslog
        .as_deref()
        .map(|url| Syslog::connect(url).map_err(|e| format!("[log] syslog {url}: {e}")))
        .transpose()
}

/// Switches the installed subscriber to `format` and `syslog` (none: stderr
/// only). Lines already queued for the old syslog target may still go there.
pub fn apply(format: LogFormat, syslog: Option<Syslog>) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    SYSLOG_ON.store(syslog.is_some(), Ordering::Relaxed);
    if let Ok(mut target) = SYSLOG.lock() {
        *target = syslog.map(Arc::new);
    }
}

/// Waits (at most [`FLUSH_TIMEOUT`] per sink) for queued lines to be written; call before exit.
pub fn flush() {
    for queue in QUEUES.get().into_iter().flatten() {
        queue.flush(FLUSH_TIMEOUT);
    }
}

/// logfmt for text fields: `key=value`, with the value quoted (Rust string
/// escapes) when it holds a space, a quote, `=` or a control character, so
/// `what="staging 2.0.1"` reads back as one field. The message stays bare.
fn logfmt_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    debug_fn(
        |writer: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn Debug| {
            let text = format!("{value:?}");
            if field.name() == "message" {
                write!(writer, "{text}")
            } else {
                write!(writer, "{}={}", field.name(), logfmt_value(&text))
            }
        },
    )
    .delimited(" ")
}

/// A value as logfmt wants it; one already quoted by `Debug` (a `?` string) is kept.
fn logfmt_value(text: &str) -> std::borrow::Cow<'_, str> {
    let already_quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    let needs_quotes = text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if already_quoted || !needs_quotes {
        text.into()
    } else {
        format!("{text:?}").into()
    }
}

/// One queued item for a sink's writer thread.
enum Item {
    /// A formatted line and its severity.
    Line(u8, Vec<u8>),
    /// Answered once every line queued before it was written.
    Flush(mpsc::Sender<()>),
}

/// A bounded queue in front of a slow sink, drained by a thread of its own.
struct LineQueue {
    /// Into the writer thread; `try_send` only, never blocking.
    tx: SyncSender<Item>,
    /// Lines dropped because the queue was full, since the writer last said so.
    dropped: Arc<AtomicU64>,
}

impl LineQueue {
    /// Starts the writer thread `name`, which hands every line to `sink`.
    fn spawn(name: &str, mut sink: impl FnMut(u8, &[u8]) + Send + 'static) -> Arc<LineQueue> {
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for item in rx {
                    match item {
                        Item::Line(severity, line) => {
                            let lost = counter.swap(0, Ordering::Relaxed);
                            if lost > 0 {
                                let note = format!(
                                    "log: dropped {lost} lines: the log sink was not keeping up\n"
                                );
                                sink(SEVERITY_WARNING, note.as_bytes());
                            }
                            sink(severity, &line);
                        }
                        Item::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("warning: cannot start the log writer thread: {e}; logs are lost");
        }
        Arc::new(LineQueue { tx, dropped })
    }

    /// Queues a line, or drops and counts it when the queue is full.
    fn push(&self, severity: u8, line: Vec<u8>) {
        match self.tx.try_send(Item::Line(severity, line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits up to `timeout` for the lines queued so far; a full queue (a stalled
    /// sink) is not waited for.
    fn flush(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.try_send(Item::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

/// A `MakeWriter` whose writers queue one formatted event each.
#[derive(Clone)]
struct QueueWriter(Arc<LineQueue>);

/// One event being formatted; queued when dropped.
struct QueuedLine {
    /// Where it goes.
    queue: Arc<LineQueue>,
    /// Its syslog severity.
    severity: u8,
    /// The formatted text.
    buf: Vec<u8>,
}

impl Write for QueuedLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.queue
                .push(self.severity, std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            queue: self.0.clone(),
            severity: SEVERITY_INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> QueuedLine {
        QueuedLine {
            queue: self.0.clone(),
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// The syslog severity of a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => SEVERITY_ERR,
        Level::WARN => SEVERITY_WARNING,
        Level::INFO => SEVERITY_INFO,
        Level::DEBUG | Level::TRACE => SEVERITY_DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_quotes_values_with_spaces_once() {
        assert_eq!(logfmt_value("staging 2.0.1"), "\"staging 2.0.1\"");
        assert_eq!(logfmt_value("Bank1"), "Bank1");
        assert_eq!(logfmt_value("\"already quoted\""), "\"already quoted\"");
        assert_eq!(logfmt_value("a=b"), "\"a=b\"");
        assert_eq!(logfmt_value(""), "\"\"");
    }

    #[test]
    fn formatted_events_are_logfmt() {
        let lines = Arc::new(Mutex::new(Vec::<(u8, String)>::new()));
        let sink = lines.clone();
        let queue = LineQueue::spawn("test-log", move |severity, line| {
            if let Ok(mut lines) = sink.lock() {
                lines.push((severity, String::from_utf8_lossy(line).into_owned()));
            }
        });
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .fmt_fields(logfmt_fields())
            .with_writer(QueueWriter(queue.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(what = %"staging 2.0.1", done = 3u64, "progress");
            tracing::warn!(error = %"disk full", "cannot stage");
        });
        queue.flush(Duration::from_secs(5));
        let lines = lines.lock().expect("lines").clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0].0, SEVERITY_INFO);
        assert!(
            lines[0]
                .1
                .ends_with("progress what=\"staging 2.0.1\" done=3\n"),
            "{:?}",
            lines[0].1
        );
        assert_eq!(lines[1].0, SEVERITY_WARNING);
        assert!(
            lines[1].1.contains("error=\"disk full\""),
            "{:?}",
            lines[1].1
        );
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_instead_of_blocking() {
        let (release, stalled) = mpsc::channel::<()>();
        let written = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = written.clone();
        let queue = LineQueue::spawn("test-stalled", move |_, line| {
            // The first line blocks the writer until the test lets it go: a stalled pipe.
            let _ = stalled.recv();
            if let Ok(mut w) = sink.lock() {
                w.push(String::from_utf8_lossy(line).into_owned());
            }
        });
        // Never blocks, however many lines: the queue takes QUEUE_LINES (+1 in the writer).
        for i in 0..QUEUE_LINES * 3 {
            queue.push(SEVERITY_INFO, format!("line {i}\n").into_bytes());
        }
        drop(release); // unstall: every recv() now returns at once
        // Wait (blocking, test only) until the writer has drained the queue.
        let (done, drained) = mpsc::channel();
        queue.tx.send(Item::Flush(done)).expect("writer alive");
        drained
            .recv_timeout(Duration::from_secs(5))
            .expect("drained");
        queue.push(SEVERITY_INFO, b"after\n".to_vec());
        queue.flush(Duration::from_secs(5));
        let written = written.lock().expect("written").clone();
        // Every line pushed was either written or counted in a drop note (the writer
        // may start late and take the first count with it: only the sum is certain).
        let noted: usize = written
            .iter()
            .filter_map(|l| l.strip_prefix("log: dropped "))
            .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            .sum();
        let lines = written.iter().filter(|l| l.starts_with("line ")).count();
        assert!(noted > 0, "no drop note in {} lines", written.len());
        assert_eq!(
            lines + noted,
            QUEUE_LINES * 3,
            "{lines} written, {noted} dropped"
        );
        // The queue holds QUEUE_LINES and the stalled writer one or two more: the
        // rest of the lines must have been dropped, not waited for.
        assert!(noted >= QUEUE_LINES * 2 - 2, "only {noted} dropped");
        assert_eq!(written.last().map(String::as_str), Some("after\n"));
    }
}
