//! Limits and bad input for `UdpChannel`: oversized requests, garbage,
//! foreign senders, wrong versions and sessions; and many concurrent calls
//! multiplexed on one socket.

mod client_support;

use client_support::*;
use prost::Message;
use rpc_core::client::ChannelConfig;
use rpc_core::envelope::{Envelope, ExchangeProtocol, MessageType};
use rpc_core::{CallError, Error, Never};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn oversized_request_fails_before_sending() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(1)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let big = Num {
            n: 1,
            pad: vec![7; 70_000],
        };
        for result in [
            client
                .call::<_, Num, Never>(&SERVICE, &READ, &big)
                .await
                .map(|_| ()),
            client
                .call::<_, Num, Never>(&SERVICE, &ADD, &big)
                .deferred()
                .await
                .map(|_| ()),
        ] {
            match result {
                Err(CallError::Rpc(Error::MessageTooLarge { size, limit })) => {
                    assert!(size > 70_000, "{size}");
                    assert_eq!(limit, 65_000);
                }
                other => anyhow::bail!("expected MessageTooLarge, got {other:?}"),
            }
        }
        match client.one_way(&SERVICE, &HINT, &big).await {
            Err(Error::MessageTooLarge { limit: 65_000, .. }) => {}
            other => anyhow::bail!("expected MessageTooLarge, got {other:?}"),
        }
        assert_eq!(channel.stats().too_large, 3);
        // Then a small call from the same socket: anything the refused
        // calls had sent would have reached the server before it.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(5))
            .await?;
        let log = server.log();
        assert!(
            !log.is_empty()
                && log.iter().all(|e| is(e, MessageType::Request)
                    && Num::decode(e.payload.clone()).map(|m| m.n).ok() == Some(5)),
            "nothing was sent before, not even a PING: {log:?}"
        );

        // The limit is configurable, and the ids are not lost: the next
        // call acknowledges them.
        let mut config = fast_config();
        config.max_datagram = 1_000;
        let (small, client) = client_support::channel(&server, config).await?;
        let medium = Num {
            n: 1,
            pad: vec![7; 1_000],
        };
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &medium)
            .await
            .map(|_| ())
            .err();
        assert!(matches!(
            err,
            Some(CallError::Rpc(Error::MessageTooLarge { limit: 1_000, .. }))
        ));
        let just = Num {
            n: 2,
            pad: vec![7; 900],
        };
        assert_eq!(
            client
                .call::<_, Num, Never>(&SERVICE, &READ, &just)
                .await?
                .n,
            1002
        );
        let req = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!((req.request_id, req.ack_up_to), (2, 1));
        assert!(req.encoded_len() <= 1_000);
        assert_eq!(small.stats().too_large, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn garbage_and_strays_are_dropped_and_counted() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(|e| {
            if !is(e, MessageType::Request) {
                return standard_answer(e, 5);
            }
            let good = reply(e, 5);
            let wrong_version = Envelope {
                version: 2,
                ..good.clone()
            };
            let wrong_session = Envelope {
                session_id: e.session_id ^ 1,
                ..good.clone()
            };
            let unknown_id = Envelope {
                request_id: e.request_id + 1000,
                ..good.clone()
            };
            let zero_id = Envelope {
                request_id: 0,
                ..good.clone()
            };
            let request_type = Envelope {
                r#type: MessageType::Request as i32,
                ..good.clone()
            };
            let unknown_type = Envelope {
                r#type: 99,
                ..good.clone()
            };
            let mut truncated = good.encode_to_vec();
            truncated.truncate(truncated.len() / 2);
            vec![
                Action::Raw(vec![0xff; 40]),
                Action::Raw(vec![]),
                Action::Raw(truncated),
                Action::Send(wrong_version),
                Action::Send(request_type),
                Action::Send(unknown_type),
                Action::Send(wrong_session),
                Action::Send(unknown_id),
                Action::Send(zero_id),
                Action::After(Duration::from_millis(20), good),
            ]
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        // A stranger sends a well-formed reply from another address.
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let fake = Envelope {
            version: 1,
            r#type: MessageType::Reply as i32,
            request_id: 1,
            session_id: channel.session_id(),
            ..Default::default()
        };
        stranger
            .send_to(&fake.encode_to_vec(), channel.local_addr()?)
            .await?;

        let r = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        assert_eq!(r.n, 1001, "the real reply got through");
        let s = channel.stats();
        // 0xff bytes, empty (decodes as version 0), truncated, version 2,
        // REQUEST type, type 99.
        assert!(s.malformed_drops >= 6, "{s:?}");
        // another session, an unused id, id 0
        assert!(s.unknown_replies >= 3, "{s:?}");
        assert_eq!(s.foreign_drops, 1, "{s:?}");
        assert_eq!(s.replies, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn many_concurrent_calls_share_one_socket() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Replies in scrambled order: each delayed by (n * 7) % 23 ms.
        let server = FakeServer::start(|e| {
            if !is(e, MessageType::Request) {
                return standard_answer(e, 6);
            }
            let n = Num::decode(e.payload.clone()).map(|m| m.n).unwrap_or(0);
            vec![Action::After(
                Duration::from_millis((n * 7) % 23),
                reply(e, 6),
            )]
        })
        .await?;
        let mut config = ChannelConfig::default();
        config.max_wait = Duration::from_secs(5);
        let (channel, client) = channel(&server, config).await?;
        let calls = (0..300u64).map(|n| {
            let client = client.clone();
            async move {
                let method = if n % 2 == 0 { &ADD } else { &READ_RRA };
                let r = client
                    .call::<_, Num, Never>(&SERVICE, method, &num(n))
                    .await?;
                anyhow::ensure!(r.n == n + 1000, "call {n} got {}", r.n);
                Ok(())
            }
        });
        for r in futures::future::join_all(calls).await {
            r?;
        }
        let peers = server.peers();
        assert!(peers.iter().all(|p| *p == peers[0]), "one socket");
        let reqs = server.received(MessageType::Request);
        let mut ids: Vec<u64> = reqs.iter().map(|e| e.request_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids, (1..=300).collect::<Vec<u64>>());
        let s = channel.stats();
        assert_eq!((s.calls, s.replies), (300, 300));
        // Every RRA reply is acknowledged, by an ACK of its own or by the
        // `ack_up_to` of an ACK of the same burst (coalesced ACKs).
        let rra: Vec<u64> = reqs
            .iter()
            .filter(|e| e.protocol == ExchangeProtocol::Rra as i32)
            .map(|e| e.request_id)
            .collect();
        let covered = |log: &[Envelope]| {
            let acks: Vec<&Envelope> = log.iter().filter(|e| is(e, MessageType::Ack)).collect();
            rra.iter().all(|id| {
                acks.iter()
                    .any(|a| a.request_id == *id || a.ack_up_to >= *id)
            })
        };
        assert!(
            server
                .wait_for(Duration::from_secs(30), |log| covered(log))
                .await,
            "every RRA reply acknowledged"
        );
        let s = channel.stats();
        assert!(
            s.acks_sent + s.acks_coalesced + s.acks_piggybacked >= 150,
            "{s:?}"
        );
        // Once everything is done, the next request acknowledges it all.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        let last = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!((last.request_id, last.ack_up_to), (301, 300));
        Ok(())
    })
    .await
}
