//! IP multicast, only ever inside a network namespace that each test
//! creates for itself (`ip netns add rpcmc-<pid>-<n>`, `lo` up with
//! multicast on and a 224.0.0.0/4 route) and deletes afterwards, even when
//! it fails. A test thread enters the namespace (`setns`) and runs its own
//! current-thread runtime there, so every socket lives in the namespace:
//! the host's interfaces are never touched.
//!
//! Needs root and iproute2; without them the tests fail and say so.

mod multicast_support;

use multicast_support::*;
use rpc_core::{GroupClient, MemberResult};
use std::future::IntoFuture;
use std::time::{Duration, Instant};

#[test]
fn one_datagram_reaches_every_joined_member_and_replies_are_gathered() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run(|| async {
        let mut members = Vec::new();
        for i in 0..4 {
            members.push(group_member(i, true).await?);
        }
        // A long first timeout: on a loaded machine no re-send happens, so
        // every member must have got exactly the one datagram.
        let mc = multicast_client(Duration::from_secs(2)).await?;
        let group = GroupClient::with_multicast(mc.clone());
        for (i, m) in members.iter().enumerate() {
            group.add_multicast_member(format!("m{i}"), m.addr)?;
        }
        let group = TallyGroupClient::new(group);
        let out = group
            .add(Amount { delta: 3 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
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

        // Open membership: whoever answers by the deadline.
        let open = TallyGroupClient::new(GroupClient::with_multicast(mc.clone()));
        let start = Instant::now();
        let out = open
            .add(Amount { delta: 1 })
            .all()
            .timeout(Duration::from_millis(400))
            .await;
        assert!(start.elapsed() >= Duration::from_millis(380));
        assert_eq!(out.successes(), 4, "{out:?}");
        let mut addrs: Vec<_> = out.members.iter().filter_map(|m| m.addr).collect();
        addrs.sort();
        let mut expected: Vec<_> = members.iter().map(|m| m.addr).collect();
        expected.sort();
        assert_eq!(addrs, expected);
        let out = open
            .add(Amount { delta: 1 })
            .first()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete);
        assert!(
            out.elapsed < Duration::from_millis(300),
            "{:?}",
            out.elapsed
        );

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
        let out = group
            .slow(Work { millis: 300 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");
        assert!(out
            .members
            .iter()
            .all(|m| matches!(m.result, MemberResult::Accepted)));
        assert!(
            out.elapsed < Duration::from_millis(250),
            "{:?}",
            out.elapsed
        );
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until
            && members
                .iter()
                .any(|m| m.tally.value() != 3 + 1 + 1 + 10 + 1)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
    ns.run(|| async {
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
                .timeout(Duration::from_secs(5))
                .into_future(),
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        late.membership.rejoin()?;
        let out = call.await?;
        assert!(out.complete, "{out:?}");
        assert!(mc.stats().resends >= 1);
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
fn leaving_the_group_stops_delivery() -> anyhow::Result<()> {
    let ns = Netns::create()?;
    ns.run(|| async {
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
        // `first` and `quorum` are not held up by the member that left.
        let out = group
            .add(Amount { delta: 1 })
            .quorum(2)
            .timeout(Duration::from_secs(5))
            .await;
        assert!(
            out.complete && out.elapsed < Duration::from_millis(500),
            "{out:?}"
        );
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
    ns.run(|| async {
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
        let out = group
            .add(Amount { delta: 1 })
            .all()
            .timeout(Duration::from_secs(5))
            .await;
        assert!(out.complete, "{out:?}");
        let stats = mc.stats();
        assert_eq!(stats.group_datagrams, 1, "{stats:?}");
        assert!(stats.unicast_copies >= 1, "{stats:?}");
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
