//! IP multicast, only ever inside a network namespace that each test
//! creates for itself (`ip netns add rpcmc-<pid>-<n>`, `lo` up with
//! multicast on and a 224.0.0.0/4 route) and deletes afterwards, even when
//! it fails. A test thread enters the namespace (`setns`) and runs its own
//! current-thread runtime there, so every socket lives in the namespace:
//! the host's interfaces are never touched.
//!
//! Needs root and iproute2; without them the tests fail and say so.
//!
//! The runtimes run on a paused clock (`Netns::run_paused`): tokio time
//! moves only when the client and every member wait, so what a test checks
//! about re-sends follows from the order of events, not from how fast a
//! busy machine runs. Where a re-send must not happen before an answer,
//! `hold_clock_until` keeps the clock still until the answer is in; where
//! a call must return before a handler finishes, the handler waits at a
//! `Gate` that opens only after the call returned.

mod multicast_support;

use multicast_support::*;
use rpc_core::{GroupClient, MemberResult};
use std::future::IntoFuture;
use std::time::Duration;

#[test]
fn one_datagram_reaches_every_joined_member_and_replies_are_gathered() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run_paused(|| async {
        let mut members = Vec::new();
        for i in 0..4 {
            members.push(group_member(i, true).await?);
        }
        let mc = multicast_client(Duration::from_millis(20)).await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        // The clock stands still until every member has answered: no
        // re-send timer can fire first, so one datagram must have reached
        // them all.
        let (out, held) = tokio::join!(
            group
                .add(Amount { delta: 3 })
                .all()
                .timeout(Duration::from_secs(5))
                .into_future(),
            hold_clock_until("every member answered the first copy", || {
                mc.stats().replies == 4
            })
        );
        held?;
        assert!(out.complete, "{out:?}");
        assert_eq!(mc.stats().group_datagrams, 1, "{:?}", mc.stats());
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.membership.received(), 1, "member {i} datagrams");
            assert_eq!(m.tally.executions(), 1);
            let line = out
                .member(&format!("m{i}"))
                .ok_or_else(|| anyhow::anyhow!("m{i} missing"))?;
            assert_eq!(line.addr, Some(m.addr));
            assert_eq!(line.result.reply().map(|c| c.value), Some(3), "{line:?}");
        }

        // Split work over the group: each member sums its part.
        let values: Vec<i64> = (1..=100).collect();
        let out = group
            .sum(Slice { values, parts: 4 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");
        assert_eq!(out.replies().map(|(_, t)| t.sum).sum::<i64>(), 5050);

        // Open membership: whoever answers by the deadline. The clock
        // stands still until the four have answered, then runs to the
        // deadline, which the call waits for (nobody says how many
        // members there are).
        let open = TallyGroupClient::new(GroupClient::with_multicast(mc.clone()));
        let replies = mc.stats().replies;
        let start = tokio::time::Instant::now();
        let (out, held) = tokio::join!(
            open.add(Amount { delta: 1 })
                .all()
                .timeout(Duration::from_millis(400))
                .into_future(),
            hold_clock_until("every member answered the open call", || {
                mc.stats().replies == replies + 4
            })
        );
        held?;
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "an open call ends at its deadline: {:?}",
            start.elapsed()
        );
        assert_eq!(out.successes(), 4, "{out:?}");
        let mut addrs: Vec<_> = out.members.iter().filter_map(|m| m.addr).collect();
        addrs.sort();
        let mut expected: Vec<_> = members.iter().map(|m| m.addr).collect();
        expected.sort();
        assert_eq!(addrs, expected);

        // `first` returns at the first answer: three members are held in
        // their handler until the call has returned. A `first` that waited
        // for them would reach its (paused-clock) deadline instead.
        let gate = Gate::closed();
        for m in &members[1..] {
            m.tally.hold(&gate);
        }
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            open.add(Amount { delta: 1 })
                .first()
                .timeout(Duration::from_secs(60)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("`first` waited for the members still running"))?;
        assert!(out.complete, "{out:?}");
        assert_eq!(out.successes(), 1, "{out:?}");
        assert_eq!(
            out.members.iter().find_map(|m| m.addr),
            Some(members[0].addr),
            "only the member that was not held could answer: {out:?}"
        );
        for m in &members[1..] {
            assert_eq!(m.tally.value(), 3 + 1, "held: has not counted yet");
        }
        gate.open();

        // One-way and asynchronous multicast.
        let out = group.nudge(Amount { delta: 10 }).await;
        assert!(
            out.complete
                && out
                    .members
                    .iter()
                    .all(|m| matches!(m.result, MemberResult::Sent)),
            "{out:?}"
        );
        hold_clock_until("add 3, two adds of 1 and the nudge counted", || {
            members.iter().all(|m| m.tally.value() == 3 + 1 + 1 + 10)
        })
        .await?;
        // The asynchronous call completes at the ACCEPTs while every
        // member's handler is held; one that waited for the work would
        // time out at its deadline.
        let gate = Gate::closed();
        for m in &members {
            m.tally.hold(&gate);
        }
        let out = group
            .slow(Work { millis: 0 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");
        assert!(
            out.members
                .iter()
                .all(|m| matches!(m.result, MemberResult::Accepted)),
            "{out:?}"
        );
        assert!(
            members.iter().all(|m| m.tally.value() == 15),
            "the work is held, not done"
        );
        gate.open();
        hold_clock_until("the released work counted", || {
            members.iter().all(|m| m.tally.value() == 16)
        })
        .await?;
        for m in &members {
            assert_eq!(
                m.tally.value(),
                16,
                "add 3, two adds of 1, nudge 10, slow 1"
            );
        }
        anyhow::Ok(())
    })
}

#[test]
fn re_sends_reach_late_members_and_duplicates_are_answered_from_history() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run_paused(|| async {
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(group_member(i, true).await?);
        }
        // Expected but not in the group yet: it joins while the call runs.
        let late = group_member(3, false).await?;
        let mc = multicast_client(Duration::from_millis(50)).await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().chain(std::iter::once(&late)).enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let call = tokio::spawn(
            group
                .add(Amount { delta: 1 })
                .all()
                .timeout(Duration::from_secs(30))
                .into_future(),
        );
        // The clock stands still until the joined members have answered
        // the first copy: every re-send comes after they ran the request.
        hold_clock_until("the joined members answered", || mc.stats().replies == 3).await?;
        assert_eq!(mc.stats().resends, 0, "{:?}", mc.stats());
        assert_eq!(late.membership.received(), 0, "not in the group yet");
        late.membership.rejoin()?;
        let out = call.await?;
        assert!(out.complete, "{out:?}");
        assert!(mc.stats().resends >= 1);
        assert!(late.membership.received() >= 1, "a re-send reached it");
        for m in members.iter().chain(std::iter::once(&late)) {
            assert_eq!(m.tally.executions(), 1, "ran exactly once per member");
        }
        let replayed: u64 = members
            .iter()
            .map(|m| m.server.stats().duplicates_replayed)
            .sum();
        assert!(
            replayed >= 3,
            "early members answered the re-sends from their history ({replayed})"
        );
        anyhow::Ok(())
    })
}

#[test]
fn members_send_large_answers_once_the_callers_address_is_verified() -> anyhow::Result<()> {
    // A group copy carries no cookie (each member has its own): a member
    // whose answer is over three times the request sends a PONG with its
    // cookie instead, and the caller sends that member a unicast copy
    // carrying it.
    let ns = Netns::create()?;
    ns.run_paused(|| async {
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(group_member(i, true).await?);
        }
        let mc = multicast_client(Duration::from_millis(20)).await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let out = group
            .fill(Work { millis: 2_000 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");
        for (i, m) in members.iter().enumerate() {
            let line = out
                .member(&format!("m{i}"))
                .ok_or_else(|| anyhow::anyhow!("m{i} missing"))?;
            let values = line.result.reply().map(|s| s.values.len());
            assert_eq!(values, Some(2_000), "{line:?}");
            assert_eq!(m.server.stats().amplification_limited, 1);
        }
        assert_eq!(mc.stats().unicast_copies, 3, "{:?}", mc.stats());
        Ok(())
    })
}

#[test]
fn leaving_the_group_stops_delivery() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run_paused(|| async {
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(group_member(i, true).await?);
        }
        let mc = multicast_client(Duration::from_millis(20)).await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let out = group
            .add(Amount { delta: 1 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");

        members[1].membership.leave()?;
        let before = members[1].membership.received();
        // `first` and `quorum` are not held up by the member that left:
        // the clock stands still until the two others have answered, so
        // the member that left can be neither given up nor timed out
        // before the quorum is met; it is reported as cancelled.
        let replies = mc.stats().replies;
        let (out, held) = tokio::join!(
            group
                .add(Amount { delta: 1 })
                .quorum(2)
                .timeout(Duration::from_secs(30))
                .into_future(),
            hold_clock_until("the two members in the group answered", || {
                mc.stats().replies == replies + 2
            })
        );
        held?;
        assert!(out.complete, "{out:?}");
        match &out
            .member("m1")
            .ok_or_else(|| anyhow::anyhow!("m1 missing"))?
            .result
        {
            MemberResult::Cancelled => {}
            other => panic!("m1 held the quorum up: {other:?}"),
        }
        // `all` reports it: unreachable after the configured copies.
        let out = group
            .add(Amount { delta: 1 })
            .all()
            .timeout(Duration::from_secs(10))
            .await;
        assert!(!out.complete);
        match &out
            .member("m1")
            .ok_or_else(|| anyhow::anyhow!("m1 missing"))?
            .result
        {
            MemberResult::Unreachable(_) => {}
            other => panic!("m1: {other:?}"),
        }
        assert_eq!(out.successes(), 2);
        assert_eq!(
            members[1].membership.received(),
            before,
            "nothing delivered after leaving"
        );
        assert_eq!(members[1].tally.executions(), 1);
        assert_eq!(members[0].tally.executions(), 3);
        anyhow::Ok(())
    })
}

#[test]
fn unicast_re_sends_reach_a_member_outside_the_group() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run_paused(|| async {
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(group_member(i, true).await?);
        }
        // Expected, serving its unicast address, but not in the group.
        let outside = group_member(3, false).await?;
        let mut config = mc_config(Duration::from_millis(30));
        config.resend = rpc_core::multicast::Resend::Missing;
        let mc =
            rpc_core::multicast::MulticastClient::connect(GROUP, "127.0.0.1:0".parse()?, config)
                .await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().chain(std::iter::once(&outside)).enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let call = tokio::spawn(
            group
                .add(Amount { delta: 1 })
                .all()
                .timeout(Duration::from_secs(30))
                .into_future(),
        );
        // The clock stands still until the three members in the group have
        // answered the group copy: when the first re-send is due, only the
        // member outside is missing, whatever the machine's load.
        hold_clock_until("the members in the group answered", || {
            mc.stats().replies == 3
        })
        .await?;
        assert_eq!(mc.stats().resends, 0, "{:?}", mc.stats());
        let out = call.await?;
        assert!(out.complete, "{out:?}");
        let stats = mc.stats();
        assert_eq!(stats.group_datagrams, 1, "{stats:?}");
        assert!(stats.unicast_copies >= 1, "{stats:?}");
        assert_eq!(
            stats.unicast_copies, stats.resends,
            "each re-send was one copy, to the one member missing: {stats:?}"
        );
        assert_eq!(outside.membership.received(), 0);
        for m in members.iter().chain(std::iter::once(&outside)) {
            assert_eq!(m.tally.executions(), 1);
        }
        // The re-sends named only the missing member: the others were not
        // asked again.
        assert_eq!(
            members
                .iter()
                .map(|m| m.server.stats().duplicates_replayed)
                .sum::<u64>(),
            0
        );
        anyhow::Ok(())
    })
}
