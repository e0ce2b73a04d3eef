//! The report: one row per call (path, call, style, protocol, result,
//! latency, retransmissions), the failures among them, the table printed at
//! the end, and how values are shown in it.

use rpc_core::{CallError, Error};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One line of the report.
pub(crate) struct Row {
    /// The door or setting, e.g. `udp direct`.
    pub(crate) path: String,
    /// The call as made, e.g. `Increment(+1)`.
    pub(crate) call: String,
    /// The call style (`sync`, `async`, ...; `-` when skipped).
    pub(crate) style: &'static str,
    /// The exchange protocol (`R`, `RR`, `RRA`; `-` when skipped).
    pub(crate) protocol: &'static str,
    /// What happened, or why it is not what was specified.
    pub(crate) result: String,
    /// Whether the call behaved as specified.
    pub(crate) ok: bool,
    /// Until the call returned.
    pub(crate) latency: Option<Duration>,
    /// Request copies after the first.
    pub(crate) retx: Option<u64>,
}

impl Row {
    /// The row of a call that was made: `result` is what it did, `Err` when
    /// that is not what was specified.
    pub(crate) fn made(
        path: impl Into<String>,
        call: impl Into<String>,
        style: &'static str,
        protocol: &'static str,
        result: Result<String, String>,
        latency: Duration,
        retx: Option<u64>,
    ) -> Row {
        let (ok, result) = match result {
            Ok(r) => (true, r),
            Err(r) => (false, r),
        };
        Row {
            path: path.into(),
            call: call.into(),
            style,
            protocol,
            result,
            ok,
            latency: Some(latency),
            retx,
        }
    }
}

/// Every row, and every way the run did not behave as specified.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) failures: Vec<String>,
}

impl Report {
    /// Enters `row`, and a failure when it is not ok.
    pub(crate) fn row(&mut self, row: Row) {
        if !row.ok {
            self.failures
                .push(format!("{} {}: {}", row.path, row.call, row.result));
        }
        self.rows.push(row);
    }

    /// Enters the row of a synchronous call made since `start` (no
    /// retransmission count): `result` is what it did, `Err` when that is
    /// not what was specified.
    pub(crate) fn sync_call(
        &mut self,
        path: impl Into<String>,
        call: impl Into<String>,
        protocol: &'static str,
        result: Result<String, String>,
        start: Instant,
    ) {
        let latency = start.elapsed();
        self.row(Row::made(
            path, call, "sync", protocol, result, latency, None,
        ));
    }

    /// Enters the failure `what` unless `ok`.
    pub(crate) fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// Prints the table, rows of one path together.
    pub(crate) fn print(&self) {
        println!("latency: until the call returned; retx: request copies after the first (retransmissions, and polls for a result)");
        println!();
        let headers = [
            "path", "call", "style", "proto", "", "result", "latency", "retx",
        ];
        let cells: Vec<[String; 8]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.path.clone(),
                    r.call.clone(),
                    r.style.to_owned(),
                    r.protocol.to_owned(),
                    if r.ok { "ok" } else { "FAIL" }.to_owned(),
                    r.result.clone(),
                    r.latency.map(fmt_latency).unwrap_or_else(|| "-".into()),
                    r.retx.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: [&str; 8]| {
            let mut s = String::new();
            for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
                // Latency and retransmissions are numbers: right-aligned.
                let _ = if i >= 6 {
                    write!(s, "{c:>w$}  ")
                } else {
                    write!(s, "{c:<w$}  ")
                };
            }
            s.trim_end().to_owned()
        };
        println!("{}", line(headers));
        println!(
            "{}",
            line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str))
        );
        let mut last_path = None;
        for (row, r) in cells.iter().zip(&self.rows) {
            if last_path.is_some_and(|p: &str| p != r.path) {
                println!();
            }
            last_path = Some(r.path.as_str());
            println!("{}", line(row.each_ref().map(String::as_str)));
        }
    }
}

/// `16777217` as `16,777,217`.
pub(crate) fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds under a millisecond, else milliseconds.
pub(crate) fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// A call error as shown in the report.
pub(crate) fn describe<E: std::fmt::Debug>(e: &CallError<E>) -> String {
    match e {
        CallError::Raised(raised, status) => format!("raised {raised:?} ({})", status.code()),
        CallError::Rpc(Error::Status(s)) => s.to_string(),
        CallError::Rpc(e) => e.to_string(),
    }
}
