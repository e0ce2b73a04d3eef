//! The report: the table of rows, the multicast table, and the issues'
//! ratios, each against a baseline measured in the same run.

use crate::layout::Interleaved;
use crate::layout::Layout;
use crate::measure::{Cost, Plan, Row, PAIRED_BLOCK};
use crate::peers::ours::multicast::McRow;
use crate::target::Role;
use crate::PAYLOAD;
use std::time::Duration;

/// Row names the ratios look up.
pub(crate) const OURS_UDP_RR: &str = "ours UDP RR (sync)";
pub(crate) const OURS_UDP_RR_INTERCEPTED: &str = "ours UDP RR (sync), 3 interceptors";
pub(crate) const OURS_UDP_RR_CLOCK: &str = "ours UDP RR (sync), clock interceptors";
pub(crate) const OURS_TCP_RR: &str = "ours TCP RR (sync)";
pub(crate) const OURS_GRPC_RR: &str = "ours gRPC face RR (sync)";
pub(crate) const TONIC_TO_FACE: &str = "tonic client -> our gRPC face";

/// A duration in microseconds.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Calls per second, as `1.23 M`, `45.6 k` or `789`.
pub(crate) fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The table of `rows` on `layout`, ratios to the raw UDP echo (p50) and
/// to tonic (calls/s at the most in flight), and the rows' notes.
pub(crate) fn print_report(layout: Layout, plan: &Plan, rows: &[Row]) {
    println!();
    println!("layout {}", layout.describe());
    println!(
        "127.0.0.1, {PAYLOAD}-byte payload; sequential: up to {} calls after {} warm-up calls; calls/s: {} ms windows after {} ms warm-up",
        plan.seq_calls,
        plan.warmup_calls,
        plan.tput_window.as_millis(),
        plan.tput_warmup.as_millis()
    );
    let heads: Vec<String> = plan
        .in_flight
        .iter()
        .map(|n| format!("calls/s @{n}"))
        .collect();
    println!(
        "| {:<28} | {:>7} | {:>10} | {:>10} | {:>12} | {:>12} | {:>12} | {:>11} | {:>12} |",
        "target",
        "seq n",
        "p50 us",
        "p99 us",
        heads[0],
        heads[1],
        heads[2],
        "p50/raw UDP",
        "@64/tonic"
    );
    println!(
        "|{:-<30}|{:->9}|{:->12}|{:->12}|{:->14}|{:->14}|{:->14}|{:->13}|{:->14}|",
        "", ":", ":", ":", ":", ":", ":", ":", ":"
    );
    let raw = rows.iter().find(|r| r.role == Role::RawUdp);
    let tonic = rows.iter().find(|r| r.role == Role::Tonic);
    let at = |row: &Row, n: usize| {
        row.throughput
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, r)| *r)
    };
    let top = plan.most_in_flight();
    for row in rows {
        let lat = raw.map(|b| format!("{:.2}x", row.p50.as_secs_f64() / b.p50.as_secs_f64()));
        let tput = tonic.and_then(|b| Some(format!("{:.2}x", at(row, top)? / at(b, top)?)));
        let cells: Vec<String> = plan
            .in_flight
            .iter()
            .map(|&n| at(row, n).map(rate).unwrap_or_else(|| "-".to_owned()))
            .collect();
        println!(
            "| {:<28} | {:>7} | {:>10.1} | {:>10.1} | {:>12} | {:>12} | {:>12} | {:>11} | {:>12} |",
            row.name,
            row.seq_calls,
            us(row.p50),
            us(row.p99),
            cells[0],
            cells[1],
            cells[2],
            lat.unwrap_or_else(|| "-".to_owned()),
            tput.unwrap_or_else(|| "-".to_owned())
        );
    }
    for row in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("  {}: {}", row.name, row.note);
    }
    println!("(issue targets: RR p50 at most 1.25x raw UDP; calls/s @64 at least 5x tonic)");
}

/// The multicast table, each p50 against the unicast call's.
pub(crate) fn print_multicast(layout: Layout, rows: &[McRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "multicast (unicast group calls over UDP, Counter.Increment, at-most-once), layout {}",
        layout.describe()
    );
    println!(
        "| {:<16} | {:>7} | {:>7} | {:>10} | {:>10} | {:>10} | {:>5} |",
        "call", "members", "n", "p50 us", "p99 us", "x unicast", "retx"
    );
    println!(
        "|{:-<18}|{:->9}|{:->9}|{:->12}|{:->12}|{:->12}|{:->7}|",
        "", ":", ":", ":", ":", ":", ":"
    );
    let base = rows.first().map(|r| r.p50.as_secs_f64()).unwrap_or(1.0);
    for r in rows {
        println!(
            "| {:<16} | {:>7} | {:>7} | {:>10.1} | {:>10.1} | {:>9.2}x | {:>5} |",
            r.name,
            r.members,
            r.calls,
            us(r.p50),
            us(r.p99),
            r.p50.as_secs_f64() / base,
            r.retransmissions
        );
    }
}

/// The issues' ratios, each against a baseline measured in the same run.
pub(crate) fn print_ratios(
    layout: Layout,
    plan: &Plan,
    rows: &[Row],
    multicast: &[McRow],
    interleaved: &Interleaved,
) {
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let role = |role: Role| rows.iter().find(|r| r.role == role);
    let top = plan.most_in_flight();
    let at = |row: &Row| {
        row.throughput
            .iter()
            .find(|(k, _)| *k == top)
            .map(|(_, r)| *r)
    };
    let p50 = |row: &Row| row.p50.as_secs_f64();
    let line = |what: &str, value: Option<f64>, target: &str, ok: &dyn Fn(f64) -> bool| match value
    {
        Some(v) => println!(
            "  {what:<42} {v:>7.2}x   target {target:<10} {}",
            if ok(v) { "met" } else { "NOT met" }
        ),
        None => println!("  {what:<42} {:>7}    (a row is missing)", "-"),
    };
    println!();
    println!("ratios ({})", layout.describe());
    let (udp, tcp, grpc) = (find(OURS_UDP_RR), find(OURS_TCP_RR), find(OURS_GRPC_RR));
    let (raw, tonic, tarpc, raw_tcp) = (
        role(Role::RawUdp),
        role(Role::Tonic),
        role(Role::Tarpc),
        role(Role::RawTcp),
    );
    line(
        "UDP RR p50 / raw UDP p50",
        udp.zip(raw).map(|(a, b)| p50(a) / p50(b)),
        "<= 1.25",
        &|v| v <= 1.25,
    );
    if let Some(p) = interleaved.raw {
        line(
            "  the same, interleaved (see below)",
            Some(p.a.as_secs_f64() / p.b.as_secs_f64()),
            "<= 1.25",
            &|v| v <= 1.25,
        );
    }
    // The interceptors' targets: measured side by side when both were
    // (`Interleaved`), else from the table's rows.
    // The framework's interceptors have a throughput target; the clock
    // service's is per call (its p50), its throughput shown for information.
    for (label, name, cost, rate_judged) in [
        (
            "UDP RR, 3 interceptors",
            OURS_UDP_RR_INTERCEPTED,
            interleaved.intercepted,
            true,
        ),
        (
            "clock interceptors: RR",
            OURS_UDP_RR_CLOCK,
            interleaved.clock,
            false,
        ),
    ] {
        let row = find(name);
        let (p50_ratio, rate_ratio) = match cost {
            Some(Cost { p50, rate }) => (
                Some(p50.a.as_secs_f64() / p50.b.as_secs_f64()),
                Some(rate.0 / rate.1),
            ),
            None => (
                row.zip(udp).map(|(a, b)| p50(a) / p50(b)),
                row.zip(udp).and_then(|(a, b)| Some(at(a)? / at(b)?)),
            ),
        };
        line(&format!("{label} p50 / none"), p50_ratio, "<= 1.10", &|v| {
            v <= 1.10
        });
        if rate_judged {
            line(
                &format!("{label} calls/s @{top} / none"),
                rate_ratio,
                ">= 0.90",
                &|v| v >= 0.90,
            );
        } else {
            line(
                &format!("{label} calls/s @{top} / none (info)"),
                rate_ratio,
                "-",
                &|_| true,
            );
        }
    }
    line(
        &format!("UDP RR calls/s @{top} / tonic"),
        udp.zip(tonic).and_then(|(a, b)| Some(at(a)? / at(b)?)),
        ">= 5",
        &|v| v >= 5.0,
    );
    line(
        "gRPC face p50 / tonic p50",
        grpc.zip(tonic).map(|(a, b)| p50(a) / p50(b)),
        "<= 1.10",
        &|v| v <= 1.10,
    );
    line(
        &format!("gRPC face calls/s @{top} / tonic"),
        grpc.zip(tonic).and_then(|(a, b)| Some(at(a)? / at(b)?)),
        ">= 0.90",
        &|v| v >= 0.90,
    );
    let face = find(TONIC_TO_FACE);
    line(
        "gRPC face, tonic client: p50 / tonic p50",
        face.zip(tonic).map(|(a, b)| p50(a) / p50(b)),
        "<= 1.10",
        &|v| v <= 1.10,
    );
    line(
        &format!("gRPC face, tonic client: calls/s @{top} / tonic"),
        face.zip(tonic).and_then(|(a, b)| Some(at(a)? / at(b)?)),
        ">= 0.90",
        &|v| v >= 0.90,
    );
    line(
        &format!("TCP RR calls/s @{top} / tarpc"),
        tcp.zip(tarpc).and_then(|(a, b)| Some(at(a)? / at(b)?)),
        ">= 1.5",
        &|v| v >= 1.5,
    );
    line(
        "TCP RR p50 / raw TCP p50 (info)",
        tcp.zip(raw_tcp).map(|(a, b)| p50(a) / p50(b)),
        "-",
        &|_| true,
    );
    let unicast = multicast.iter().find(|r| r.name == "unicast");
    let all16 = multicast.iter().find(|r| r.name == "all x16");
    line(
        "multicast all x16 p50 / unicast p50",
        unicast
            .zip(all16)
            .map(|(u, a)| a.p50.as_secs_f64() / u.p50.as_secs_f64()),
        "<= 3",
        &|v| v <= 3.0,
    );
    for (label, cost) in [
        ("3 interceptors", interleaved.intercepted),
        ("clock interceptors", interleaved.clock),
    ] {
        if let Some(Cost { p50, rate }) = cost {
            println!(
                "  interleaved: ours UDP RR with {label} and without, p50 in alternating blocks of \
                 {PAIRED_BLOCK} calls ({} each): {:.1} us vs {:.1} us; calls/s @{top} in alternating \
                 windows: {:.0} vs {:.0}",
                p50.calls,
                p50.a.as_secs_f64() * 1e6,
                p50.b.as_secs_f64() * 1e6,
                rate.0,
                rate.1,
            );
        }
    }
    if let Some(p) = interleaved.raw {
        println!(
            "  interleaved: ours UDP RR and raw UDP echo in alternating blocks of {PAIRED_BLOCK} \
             sequential calls ({} calls each, fresh servers): p50 {:.1} us vs {:.1} us",
            p.calls,
            p.a.as_secs_f64() * 1e6,
            p.b.as_secs_f64() * 1e6,
        );
    }
}
