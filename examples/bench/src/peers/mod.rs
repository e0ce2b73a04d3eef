//! The peers under test, one module each: the baselines (a raw tokio UDP
//! echo, a raw TCP echo with frames batched per write, plain tonic unary,
//! tarpc over TCP) and the framework itself ([`ours`]: over UDP in every
//! call style, over TCP, behind its gRPC face, and as a multicast group).
//! The order in which they are measured on a layout is
//! [`layout::run_layout`](crate::layout::run_layout)'s: the baselines, then
//! [`framework_targets`], then [`more_targets`].

pub(crate) mod ours;
pub(crate) mod raw_tcp;
pub(crate) mod raw_udp;
pub(crate) mod tarpc_tcp;
pub(crate) mod tonic_unary;

use crate::measure::{measure, Plan, Row};
use ours::grpc::{OursGrpc, TonicToFace};
use ours::tcp::OursTcp;
use ours::udp::{OurStyle, Ours};
use raw_tcp::raw_tcp_row;
use rpc_services::clock::logical::ClockKinds;
use tarpc_tcp::TarpcTcp;
use tokio::runtime::Handle;

/// The framework's own targets, measured after the baselines on the same
/// layout: RR, RRA, asynchronous and one-way over UDP. Add a target here with
/// `rows.push(measure(MyTarget::start(server).await?, plan).await?);`.
pub(crate) async fn framework_targets(
    server: &Handle,
    plan: &Plan,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    for style in [
        OurStyle::Rr,
        OurStyle::RrIntercepted,
        OurStyle::RrClock(ClockKinds::ALL),
        OurStyle::Rra,
        OurStyle::Async,
        OurStyle::OneWay,
    ] {
        rows.push(measure(Ours::start(server, style).await?, plan).await?);
    }
    Ok(())
}

/// The TCP, gRPC and tarpc rows, measured after the UDP ones on the same
/// layout. Raw TCP is measured by its own loop (a pipelined stream), the
/// others through [`Target`](crate::target::Target).
pub(crate) async fn more_targets(
    server: &Handle,
    plan: &Plan,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    rows.push(raw_tcp_row(server, plan).await?);
    rows.push(measure(TarpcTcp::start(server).await?, plan).await?);
    rows.push(measure(OursTcp::start(server).await?, plan).await?);
    rows.push(measure(OursGrpc::start(server).await?, plan).await?);
    rows.push(measure(TonicToFace::start(server).await?, plan).await?);
    Ok(())
}
