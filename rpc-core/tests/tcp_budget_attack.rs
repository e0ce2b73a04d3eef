//! The attack of the issue, alone in its process so that its resident
//! memory is its own: 100 connections announce a 16 MiB frame (the
//! default limit), send 12 MiB of it and stall. Unbounded, the server held
//! 1.2 GiB; with a 64 MiB buffer budget it holds the budget (four frames
//! get it, the others wait without reading) and still serves normal
//! clients. The memory is printed (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::print_stderr)] // the attack's memory is reported

mod budget_support;
mod server_support;
mod tcp_support;

use budget_support::{door, partial_frame, rss_kib, serve, until, LIMIT, MIB};
use rpc_core::client::TcpChannel;
use rpc_core::Protocol;
use server_support::{ADD, ECHO};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tcp_support::{be, bounded, call, u64_of};
use tokio::task::JoinSet;

#[tokio::test]
async fn stalled_large_frames_stay_within_the_budget_while_clients_are_served() {
    bounded(LIMIT, async {
        let budget = 64 * MIB;
        let (conns, announced, sent) = (100, 16 * MIB, 12 * MIB);
        // The attackers stall until the test ends the attack itself.
        let (server, _state) = serve(budget, door(Duration::from_secs(3600))).await;
        let addr = server.local_addr();
        let ch = TcpChannel::connect(addr).await.unwrap();
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 1);
        let rss_before = rss_kib();

        // The attack: announce 16 MiB, send 12 MiB, stall.
        let done = Arc::new(AtomicUsize::new(0));
        let mut attackers = JoinSet::new();
        for _ in 0..conns {
            let done = Arc::clone(&done);
            attackers.spawn(async move {
                let s = partial_frame(addr, announced, sent).await;
                done.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                drop(s);
            });
        }
        // Four frames get the budget and all their 12 MiB is read; the
        // other 96 connections wait for budget, reading nothing more.
        let holders = budget / announced;
        until("the budget spent and the holders' bytes read", || {
            let b = server.buffer_stats();
            let t = server.tcp_stats();
            b.reserved == budget
                && b.filled == holders * sent
                && t.budget_waits == (conns - holders) as u64
        })
        .await;
        let rss_during = rss_kib();

        // Normal clients are served meanwhile, on an old connection and a
        // new one (small frames need no budget).
        let r = call(&ch, ADD, be(1), Protocol::RR, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(u64_of(&r.unwrap()), 2);
        let fresh = TcpChannel::connect(addr).await.unwrap();
        let r = call(
            &fresh,
            ECHO,
            vec![5u8; 1000],
            Protocol::RR,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(r.unwrap().len(), 1000);
        let b = server.buffer_stats();
        assert_eq!(b.reserved, budget, "the attack was still on: {b:?}");
        assert_eq!(b.peak, budget, "never more than the budget: {b:?}");
        // The waiting connections are held back by TCP flow control (how
        // much the kernel buffers for them is its business, not asserted).
        assert!(done.load(Ordering::SeqCst) >= holders);
        let t = server.tcp_stats();
        assert_eq!(
            (t.closed_no_budget, t.closed_frame_timeout),
            (0, 0),
            "{t:?}"
        );

        // The attackers leave: every reservation is given back.
        attackers.shutdown().await;
        until(
            "the attackers' connections closed and their budget back",
            || server.buffer_stats().reserved == 0 && server.tcp_stats().connections_open == 2,
        )
        .await;
        let b = server.buffer_stats();
        assert_eq!((b.reserved, b.filled, b.peak), (0, 0, budget), "{b:?}");
        let rss_after = rss_kib();
        eprintln!(
            "attack of {conns} connections x {} MiB sent of {} MiB announced, budget {} MiB: \
             RSS before {} MiB, during {} MiB (+{} MiB), after {} MiB",
            sent / MIB,
            announced / MIB,
            budget / MIB,
            rss_before / 1024,
            rss_during / 1024,
            rss_during.saturating_sub(rss_before) / 1024,
            rss_after / 1024,
        );
        // Unbounded, the attack would hold 100 x 12 MiB = 1.2 GiB. Bounded:
        // the holders' 48 MiB and a read buffer per waiting connection.
        let growth = rss_during.saturating_sub(rss_before) * 1024;
        assert!(
            growth < budget + budget / 2,
            "resident memory grew by {} MiB under a {} MiB budget",
            growth / MIB,
            budget / MIB
        );
    })
    .await;
}
