//! Layouts: where the client and the servers run (one current-thread
//! runtime, or the servers on a thread of their own), and the rows
//! measured on each.

use crate::measure::{measure, paired_cost, paired_p50, watchdog, Cost, Paired, Plan, Row};
use crate::peers::ours::multicast::{multicast_rows, McRow};
use crate::peers::ours::udp::{OurStyle, Ours};
use crate::peers::raw_udp::RawUdp;
use crate::peers::tonic_unary::TonicUnary;
use crate::peers::{framework_targets, more_targets};
use crate::report::{OURS_UDP_RR, OURS_UDP_RR_CLOCK, OURS_UDP_RR_INTERCEPTED};
use rpc_services::clock::logical::ClockKinds;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Where the servers run (the client always runs on the main thread's
/// current-thread runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Single,
    Split,
}

impl Layout {
    /// The servers' runtime: this one (single), or one on a thread of its
    /// own (split), which runs until the returned guard is dropped.
    fn server_runtime(self) -> anyhow::Result<(Handle, Option<ServerThread>)> {
        Ok(match self {
            Layout::Single => (Handle::current(), None),
            Layout::Split => {
                let (handle, guard) = ServerThread::start()?;
                (handle, Some(guard))
            }
        })
    }

    /// The layout, as printed above its tables.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Layout::Single => "single: client and server tasks on one current-thread tokio runtime",
            Layout::Split => "split: servers on their own current-thread runtime on another thread",
        }
    }
}

/// What is measured side by side on a layout, after its rows (each
/// `None` when `--only` left a side out).
#[derive(Debug, Default)]
pub(crate) struct Interleaved {
    /// Ours (UDP RR) against the raw UDP echo: the p50 target.
    pub(crate) raw: Option<Paired>,
    /// Ours with the three shipped interceptors against ours without.
    pub(crate) intercepted: Option<Cost>,
    /// Ours with the clock service's interceptors against ours without.
    pub(crate) clock: Option<Cost>,
}

/// Every row on `layout`, in order, and the targets' comparisons measured
/// side by side ([`Interleaved`]).
pub(crate) async fn run_layout(
    layout: Layout,
    plan: &Plan,
) -> anyhow::Result<(Vec<Row>, Interleaved)> {
    let (server_rt, _guard) = layout.server_runtime()?;
    println!("layout {}", layout.describe());
    let mut rows = Vec::new();
    rows.push(
        measure(
            RawUdp::start(&server_rt, plan.most_in_flight()).await?,
            plan,
        )
        .await?,
    );
    rows.push(measure(TonicUnary::start(&server_rt).await?, plan).await?);
    framework_targets(&server_rt, plan, &mut rows).await?;
    more_targets(&server_rt, plan, &mut rows).await?;
    rows.retain(|row| row.seq_calls > 0);
    let bound = plan.seq_window * 4 + plan.tput_window * 4;
    let mut interleaved = Interleaved::default();
    // The p50 target once more, both sides interleaved (see `Paired`).
    if plan.wants("raw tokio UDP echo") && plan.wants(OURS_UDP_RR) {
        let ours = Ours::start(&server_rt, OurStyle::Rr).await?;
        let raw = RawUdp::start(&server_rt, plan.most_in_flight()).await?;
        interleaved.raw =
            Some(watchdog("paired p50", bound, paired_p50(&ours, &raw, plan)).await??);
    }
    // The interceptors' targets are ratios to the plain row: measured side
    // by side too.
    for (name, style, slot) in [
        (
            OURS_UDP_RR_INTERCEPTED,
            OurStyle::RrIntercepted,
            &mut interleaved.intercepted,
        ),
        (
            OURS_UDP_RR_CLOCK,
            OurStyle::RrClock(ClockKinds::ALL),
            &mut interleaved.clock,
        ),
    ] {
        if plan.wants(name) && plan.wants(OURS_UDP_RR) {
            let with = Arc::new(Ours::start(&server_rt, style).await?);
            let without = Arc::new(Ours::start(&server_rt, OurStyle::Rr).await?);
            *slot = Some(watchdog(name, bound, paired_cost(&with, &without, plan)).await??);
        }
    }
    Ok((rows, interleaved))
}

/// The multicast rows on `layout` (servers on a runtime of their own in split).
pub(crate) async fn multicast_layout(layout: Layout, plan: &Plan) -> anyhow::Result<Vec<McRow>> {
    let (server_rt, _guard) = layout.server_runtime()?;
    multicast_rows(&server_rt, plan).await
}

/// A current-thread runtime on its own thread, running until dropped.
#[derive(Debug)]
struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Starts the thread; its runtime's handle, to spawn servers on.
    fn start() -> anyhow::Result<(Handle, ServerThread)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-server".to_owned())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok((
            handle,
            ServerThread {
                stop: Some(stop),
                thread: Some(thread),
            },
        ))
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
