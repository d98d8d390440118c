//! The access log: one line per request, written off the request path.
//!
//! When a request is over the proxy makes a small [`Record`] and hands it to [`AccessLog::record`],
//! which never blocks: the record goes into a bounded queue ([`QUEUE`] records) and, when the
//! queue is full because the writer fell behind, it is dropped and counted
//! (`gridlb_access_log_dropped_total`). The [`Writer`], a Pingora background service, formats
//! each record (`format.rs`: JSON or logfmt) into a buffered writer that is flushed every
//! [`FLUSH`], so a line reaches the file within a quarter of a second.
//!
//! Rotation: on `SIGUSR1` the writer flushes, closes and reopens the file by its path (the
//! convention of nginx and logrotate's `postrotate`), so after `mv access.log access.log.1;
//! kill -USR1 <pid>` the old file is complete and new lines go to a new `access.log`.
//!
//! Reload: the writer follows the current config. On each flush tick it compares
//! `access_log` with what it has open; a changed path or format takes effect from then on
//! (the old file is flushed and closed), a removed key turns the log off and an added one on.
//! If a new path cannot be opened the error is logged and the log stays off until the next
//! change or `SIGUSR1`. At start, a path that cannot be opened is an error naming
//! `access_log.path` ([`check`]).

mod format;

pub use format::rfc3339;

use crate::config::{AccessLogConfig, AccessLogPath, ConfigError, LogFormat};
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Records waiting for the writer; beyond this they are dropped (and counted).
pub const QUEUE: usize = 16_384;
/// How often buffered lines are written out (and the config looked at).
pub const FLUSH: Duration = Duration::from_millis(250);

/// What one request's line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the request arrived.
    pub time: SystemTime,
    pub request_id: String,
    /// `ip:port` of the client.
    pub client: Option<String>,
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// `0` when no answer was written (the client went away).
    pub status: u16,
    /// The substation of the last attempt, if any was made.
    pub substation: Option<String>,
    /// The requested power (0 for routes that book nothing).
    pub kw: f64,
    /// Substations tried.
    pub attempts: usize,
    /// From the first attempt sent to the upstream answer's header (or the failure).
    pub upstream: Option<Duration>,
    /// From the request's arrival to the end of its answer.
    pub total: Duration,
}

/// Time spent upstream by one request: from its first attempt to the answer's header.
#[derive(Debug, Default)]
pub struct UpstreamTimer {
    started: Option<Instant>,
    answered: Option<Duration>,
}

impl UpstreamTimer {
    /// An attempt is being sent (only the first one starts the clock).
    pub fn sent(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    /// The upstream answer's header arrived.
    pub fn answered(&mut self) {
        self.answered = self.started.map(|s| s.elapsed());
    }

    /// The time upstream, if anything was sent (until now when no answer came).
    pub fn elapsed(&self) -> Option<Duration> {
        self.answered.or_else(|| self.started.map(|s| s.elapsed()))
    }
}

/// The request side: hands records to the writer without ever waiting.
#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// The handle and its writer; `config` is read on every flush tick (the current config).
    pub fn new(
        metrics: Arc<Metrics>,
        config: impl Fn() -> Option<AccessLogConfig> + Send + Sync + 'static,
    ) -> (AccessLog, Writer) {
        let (queue, records) = mpsc::channel(QUEUE);
        let writer = Writer {
            records: Mutex::new(Some(records)),
            config: Box::new(config),
        };
        (AccessLog { queue, metrics }, writer)
    }

    /// Queue a record; when the writer is behind, drop it and count it.
    pub fn record(&self, record: Record) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(record) {
            self.metrics.access_log_dropped();
        }
    }
}

/// At start: the configured file can be opened for appending.
pub fn check(config: Option<&AccessLogConfig>) -> Result<(), ConfigError> {
    match config.map(|c| &c.path) {
        Some(AccessLogPath::File(path)) => open(path).map(drop).map_err(|e| ConfigError {
            path: "access_log.path".into(),
            message: format!("cannot open {} for appending: {e}", path.display()),
        }),
        _ => Ok(()),
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `"off"`, or where and how lines are written.
fn describe(config: Option<&AccessLogConfig>) -> String {
    match config {
        None => "off".into(),
        Some(c) => {
            let format = match c.format {
                LogFormat::Json => "json",
                LogFormat::Logfmt => "logfmt",
            };
            match &c.path {
                AccessLogPath::Stdout => format!("{format} to standard output"),
                AccessLogPath::File(p) => format!("{format} to {}", p.display()),
            }
        }
    }
}

/// Where lines go now.
enum Sink {
    Off,
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<File>),
}

impl Sink {
    fn open(config: Option<&AccessLogConfig>) -> Sink {
        match config.map(|c| &c.path) {
            None => Sink::Off,
            Some(AccessLogPath::Stdout) => Sink::Stdout(BufWriter::new(std::io::stdout())),
            Some(AccessLogPath::File(path)) => match open(path) {
                Ok(file) => Sink::File(BufWriter::with_capacity(64 * 1024, file)),
                Err(e) => {
                    log::error!("access_log.path: cannot open {}: {e}", path.display());
                    Sink::Off
                }
            },
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout(w) => w.write_all(line.as_bytes()),
            Sink::File(w) => w.write_all(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        }
    }
}

type ConfigSource = Box<dyn Fn() -> Option<AccessLogConfig> + Send + Sync>;

/// The background service that formats and writes records.
pub struct Writer {
    records: Mutex<Option<mpsc::Receiver<Record>>>,
    config: ConfigSource,
}

/// The writer's open destination and the config it was opened for.
struct Open {
    config: Option<AccessLogConfig>,
    sink: Sink,
    /// Whether the last write failed (errors are logged once until a write succeeds).
    failing: bool,
}

impl Open {
    fn new(config: Option<AccessLogConfig>) -> Open {
        let sink = Sink::open(config.as_ref());
        Open {
            config,
            sink,
            failing: false,
        }
    }

    fn format(&self) -> LogFormat {
        self.config
            .as_ref()
            .map_or_else(LogFormat::default, |c| c.format)
    }

    fn outcome(&mut self, result: std::io::Result<()>) {
        match result {
            Err(e) if !self.failing => {
                log::error!("access log: cannot write: {e}");
                self.failing = true;
            }
            Err(_) => {}
            Ok(()) => self.failing = false,
        }
    }

    fn write(&mut self, record: &Record) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let line = format::line(record, self.format());
        let result = self.sink.write(&line);
        self.outcome(result);
    }

    fn flush(&mut self) {
        let result = self.sink.flush();
        self.outcome(result);
    }

    /// Flush, close, open again (for rotation, or a new config).
    fn reopen(&mut self, config: Option<AccessLogConfig>) {
        self.flush();
        *self = Open::new(config);
    }
}

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut records) = self.records.lock().ok().and_then(|mut r| r.take()) else {
            log::error!("access log writer started twice");
            return;
        };
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!("cannot watch SIGUSR1, the access log cannot be reopened: {e}");
                    None
                }
            };
        let mut open = Open::new((self.config)());
        log::info!("access log: {}", describe(open.config.as_ref()));
        let mut tick = tokio::time::interval(FLUSH);
        let mut stopping = false;
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => open.write(&record),
                    None => break,
                },
                _ = tick.tick() => {
                    open.flush();
                    let now = (self.config)();
                    if now != open.config {
                        log::info!("access log: {}", describe(now.as_ref()));
                        open.reopen(now);
                    }
                }
                Some(()) = async { usr1.as_mut()?.recv().await } => {
                    log::info!("access log: SIGUSR1, reopening");
                    let config = open.config.clone();
                    open.reopen(config);
                }
                // Requests still finishing keep logging until the process ends; the flush
                // tick (and the buffer's drop) write them out.
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
        }
        open.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH,
            request_id: format!("r{i}"),
            client: None,
            method: "GET".into(),
            path: "/".into(),
            status: 404,
            substation: None,
            kw: 0.0,
            attempts: 0,
            upstream: None,
            total: Duration::ZERO,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        // The writer never runs: the queue fills up and stays full.
        let (log, _writer) = AccessLog::new(Arc::clone(&metrics), || None);
        for i in 0..QUEUE + 5 {
            log.record(record(i));
        }
        let page = metrics.render(&[]);
        assert!(
            page.contains("gridlb_access_log_dropped_total 5\n"),
            "{page}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_the_key() {
        let config = AccessLogConfig {
            path: AccessLogPath::File("/proc/no-such-dir/access.log".into()),
            format: LogFormat::Json,
        };
        assert_eq!(check(Some(&config)).unwrap_err().path, "access_log.path");
        assert!(check(None).is_ok());
    }
}
