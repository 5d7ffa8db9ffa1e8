//! Access log: one line per request on stdout, JSON or text.
//!
//! A line is formatted into a per-thread buffer that is reused, then handed to a writer thread
//! through a bounded channel; the writer batches lines into a buffered stdout and flushes when
//! it has nothing more to write. A request never waits for stdout: when the channel is full the
//! line is dropped and counted.
//!
//! Nothing secret is written: the path goes without its query, and no header values but the
//! host are logged.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};
use opentelemetry::trace::TraceId;
use prometheus_client::metrics::counter::Counter;

use crate::cli::AccessLogFormat;

/// Lines waiting for the writer; more are dropped.
const QUEUE: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// The access log writer.
#[derive(Debug)]
pub struct AccessLog {
    json: bool,
    lines: mpsc::SyncSender<Message>,
    dropped: Counter,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

/// What is known of a request when its response starts.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: Method,
    pub host: Box<str>,
    /// The path without the query.
    pub path: Box<str>,
    pub version: Version,
    pub status: u16,
    pub route: Option<std::sync::Arc<str>>,
    pub upstream: Option<SocketAddr>,
    /// Time from choosing the endpoint to its response head.
    pub upstream_time: Option<Duration>,
    /// Time from the request head to the response head.
    pub head_time: Duration,
    pub trace_id: Option<TraceId>,
    /// Why the proxy answered by itself (`no_route`, `rate_limited`, ...).
    pub error: Option<&'static str>,
}

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl AccessLog {
    /// Starts the writer thread on stdout. `None` for [`AccessLogFormat::Off`].
    pub fn start(format: AccessLogFormat, dropped: Counter) -> std::io::Result<Option<Self>> {
        let json = match format {
            AccessLogFormat::Off => return Ok(None),
            AccessLogFormat::Json => true,
            AccessLogFormat::Text => false,
        };
        let (lines, queue) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(queue, std::io::stdout()))?;
        Ok(Some(Self {
            json,
            lines,
            dropped,
        }))
    }

    /// Writes the line of a finished request: `bytes` of response body sent in `total` time.
    pub fn write(&self, entry: &Entry, bytes: u64, total: Duration, complete: bool) {
        let line = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            if self.json {
                format_json(&mut buffer, entry, bytes, total, complete);
            } else {
                format_text(&mut buffer, entry, bytes, total, complete);
            }
            buffer.push('\n');
            buffer.as_bytes().to_vec()
        });
        if self.lines.try_send(Message::Line(line)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until the lines written so far are on stdout, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        if self.lines.try_send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

fn write_lines(queue: mpsc::Receiver<Message>, out: impl std::io::Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let write = |message, out: &mut std::io::BufWriter<_>| match message {
        Message::Line(line) => {
            let _ = out.write_all(&line);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    };
    while let Ok(message) = queue.recv() {
        write(message, &mut out);
        while let Ok(message) = queue.try_recv() {
            write(message, &mut out);
        }
        let _ = out.flush();
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

fn format_json(out: &mut String, e: &Entry, bytes: u64, total: Duration, complete: bool) {
    out.push_str("{\"time\":\"");
    rfc3339(out, e.time);
    let _ = write!(out, "\",\"client\":\"{}\",\"method\":", e.client);
    json_str(out, e.method.as_str());
    out.push_str(",\"host\":");
    json_str(out, &e.host);
    out.push_str(",\"path\":");
    json_str(out, &e.path);
    let _ = write!(
        out,
        ",\"protocol\":\"{:?}\",\"status\":{},\"bytes\":{bytes},\"duration_ms\":{:.3},\"response_head_ms\":{:.3}",
        e.version,
        e.status,
        millis(total),
        millis(e.head_time),
    );
    match e.upstream {
        Some(addr) => {
            let _ = write!(out, ",\"upstream\":\"{addr}\"");
        }
        None => out.push_str(",\"upstream\":null"),
    }
    match e.upstream_time {
        Some(t) => {
            let _ = write!(out, ",\"upstream_ms\":{:.3}", millis(t));
        }
        None => out.push_str(",\"upstream_ms\":null"),
    }
    out.push_str(",\"route\":");
    match &e.route {
        Some(route) => json_str(out, route),
        None => out.push_str("null"),
    }
    match e.trace_id {
        Some(id) => {
            let _ = write!(out, ",\"trace_id\":\"{id}\"");
        }
        None => out.push_str(",\"trace_id\":null"),
    }
    if let Some(error) = e.error {
        let _ = write!(out, ",\"error\":\"{error}\"");
    }
    if !complete {
        out.push_str(",\"aborted\":true");
    }
    out.push('}');
}

fn format_text(out: &mut String, e: &Entry, bytes: u64, total: Duration, complete: bool) {
    rfc3339(out, e.time);
    let _ = write!(
        out,
        " {} \"{} {}{} {:?}\" {} {bytes} {:.3}ms",
        e.client,
        e.method,
        Escaped(&e.host),
        Escaped(&e.path),
        e.version,
        e.status,
        millis(total),
    );
    if let Some(addr) = e.upstream {
        let _ = write!(out, " upstream={addr}");
    }
    if let Some(t) = e.upstream_time {
        let _ = write!(out, " upstream_ms={:.3}", millis(t));
    }
    if let Some(route) = &e.route {
        let _ = write!(out, " route={}", Escaped(route));
    }
    if let Some(id) = e.trace_id {
        let _ = write!(out, " trace_id={id}");
    }
    if let Some(error) = e.error {
        let _ = write!(out, " error={error}");
    }
    if !complete {
        out.push_str(" aborted");
    }
}

/// A JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Text with quotes, backslashes and control characters escaped, so that a request cannot
/// forge log lines.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `2026-01-02T03:04:05.678Z`.
fn rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_767_323_045_678),
            client: "10.0.0.9".parse().unwrap(),
            method: Method::GET,
            host: "shop.example".into(),
            path: "/cart\"\n".into(),
            version: Version::HTTP_11,
            status: 200,
            route: Some("shop/web:shop.example:Prefix:/".into()),
            upstream: Some("10.1.0.4:8080".parse().unwrap()),
            upstream_time: Some(Duration::from_micros(1500)),
            head_time: Duration::from_micros(1800),
            trace_id: None,
            error: None,
        }
    }

    #[test]
    fn dates() {
        let mut s = String::new();
        rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_millis(951_782_400_250));
        assert_eq!(s, "2000-02-29T00:00:00.250Z");
    }

    #[test]
    fn json_lines_parse_and_escape() {
        let mut s = String::new();
        format_json(&mut s, &entry(), 42, Duration::from_millis(3), true);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["time"], "2026-01-02T03:04:05.678Z");
        assert_eq!(v["path"], "/cart\"\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 42);
        assert_eq!(v["upstream"], "10.1.0.4:8080");
        assert_eq!(v["upstream_ms"], 1.5);
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert!(v["trace_id"].is_null());
    }

    #[test]
    fn text_lines_cannot_be_forged() {
        let mut s = String::new();
        format_text(&mut s, &entry(), 42, Duration::from_millis(3), false);
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.contains("\"GET shop.example/cart\\\"\\x0a HTTP/1.1\" 200 42"),
            "{s}"
        );
        assert!(s.ends_with(" aborted"));
    }

    #[test]
    fn the_writer_flushes_what_it_was_given() {
        let (tx, rx) = mpsc::sync_channel(4);
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared(out.clone());
        let writer = std::thread::spawn(move || write_lines(rx, sink));
        tx.send(Message::Line(b"one\n".to_vec())).unwrap();
        tx.send(Message::Line(b"two\n".to_vec())).unwrap();
        let (done, wait) = mpsc::channel();
        tx.send(Message::Flush(done)).unwrap();
        wait.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(&*out.lock().unwrap(), b"one\ntwo\n");
        drop(tx);
        writer.join().unwrap();
    }
}
