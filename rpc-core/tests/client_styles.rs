//! Call styles over `UdpChannel` against a fake server on loopback:
//! asynchronous, deferred-synchronous, one-way; closing and cancelling.
//!
//! "Returns before the handler finishes" is shown by holding the fake
//! handler's REPLY at a `Gate` that the test opens only after the call
//! returned: a call that waited for the REPLY would never return. No
//! verdict compares a latency with a bound.

mod client_support;

use client_support::*;
use rpc_core::client::UdpChannel;
use rpc_core::envelope::{ExchangeProtocol, MessageType};
use rpc_core::{CallError, CallOptions, Channel, Error, Invocation, Metadata, Never, Protocol};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A server whose handler runs until `gate` opens: ACCEPT at once for
/// want_accept requests, ACCEPT (or IN_PROGRESS) again to polls while the
/// gate is closed, the stored REPLY to polls afterwards. The REPLY itself
/// is sent when the gate opens unless `lose_first_reply`.
fn held_server(
    gate: Gate,
    lose_first_reply: bool,
) -> impl FnMut(&rpc_core::envelope::Envelope) -> Vec<Action> + Send {
    let mut started: std::collections::HashSet<u64> = Default::default();
    move |e| {
        if !is(e, MessageType::Request) {
            return standard_answer(e, 21);
        }
        match started.contains(&e.request_id) {
            false => {
                started.insert(e.request_id);
                let mut out = Vec::new();
                if e.want_accept {
                    out.push(Action::Send(answer(e, MessageType::Accept, 21)));
                }
                if !lose_first_reply {
                    out.push(Action::Held(gate.clone(), reply(e, 21)));
                }
                out
            }
            true if !gate.is_open() => {
                let kind = if e.want_accept {
                    MessageType::Accept
                } else {
                    MessageType::InProgress
                };
                vec![Action::Send(answer(e, kind, 21))]
            }
            true => vec![Action::Send(reply(e, 21))],
        }
    }
}

#[tokio::test]
async fn asynchronous_returns_at_accept_and_the_exchange_finishes_in_background(
) -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let gate = Gate::closed();
        let server = FakeServer::start(held_server(gate.clone(), false)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        // Returns at the ACCEPT: the REPLY waits at the gate, opened below.
        client
            .call::<_, Num, Never>(&SERVICE, &ADD_RRA, &num(1))
            .asynchronous()
            .await?;
        let s = channel.stats();
        assert_eq!(s.replies, 0, "the handler is held: {s:?}");
        assert!(s.accepts >= 1, "{s:?}");
        let reqs = server.received(MessageType::Request);
        assert!(reqs[0].want_accept && reqs[0].protocol == ExchangeProtocol::Rra as i32);
        assert!(server.received(MessageType::Ack).is_empty());
        gate.open();
        // Nobody polls the result, yet the REPLY is received and ACKed.
        assert!(
            server
                .wait_for(WAIT, |log| log.iter().any(
                    |e| is(e, MessageType::Ack) && e.request_id == reqs[0].request_id
                ))
                .await,
            "the background exchange acknowledged the reply"
        );
        let s = channel.stats();
        // At least one each: on a loaded machine a spurious retransmission
        // may draw a second copy of the reply, which is acknowledged again.
        assert!(s.replies >= 1 && s.acks_sent >= 1, "{s:?}");
        // The next request shows the call as finished.
        client
            .call::<_, Num, Never>(&SERVICE, &ADD_RRA, &num(2))
            .asynchronous()
            .await?;
        let last = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!(last.ack_up_to, reqs[0].request_id);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn asynchronous_keeps_polling_when_the_reply_is_lost() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let gate = Gate::closed();
        let server = FakeServer::start(held_server(gate.clone(), true)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        client
            .call::<_, Num, Never>(&SERVICE, &ADD_RRA, &num(1))
            .asynchronous()
            .await?;
        // The background exchange polls while the work is held...
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .filter(|e| is(e, MessageType::Request))
                    .count()
                    >= 2)
                .await,
            "polled while the handler runs"
        );
        gate.open();
        // ... and after it: the REPLY was lost, a poll fetches it.
        assert!(
            server
                .wait_for(WAIT, |log| log.iter().any(|e| is(e, MessageType::Ack)))
                .await,
            "polled until the stored REPLY came back, then ACKed"
        );
        assert!(channel.stats().retransmissions >= 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deferred_result_arrives_although_the_reply_datagram_was_lost() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let gate = Gate::closed();
        let server = FakeServer::start(held_server(gate.clone(), true)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        // The handle comes at the ACCEPT, while the handler is held.
        let mut handle = client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(7))
            .deferred()
            .await?;
        assert!(handle.try_take().is_none());
        // It polls while the handler runs, and fetches the REPLY after.
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .filter(|e| is(e, MessageType::Request))
                    .count()
                    >= 2)
                .await,
            "polled while the handler runs"
        );
        assert!(handle.try_take().is_none(), "the handler is still held");
        gate.open();
        let r = handle.await?;
        assert_eq!(r.n, 1007);
        let reqs = server.received(MessageType::Request);
        assert!(reqs.len() >= 2, "polled for the result: {}", reqs.len());
        assert!(reqs
            .iter()
            .all(|e| e.want_accept && e.request_id == reqs[0].request_id));
        let attempts: Vec<u32> = reqs.iter().map(|e| e.attempt).collect();
        assert!(
            attempts.windows(2).all(|w| w[1] == w[0] + 1),
            "{attempts:?}"
        );
        let s = channel.stats();
        assert!(s.accepts >= 1 && s.replies == 1);

        // The callback form.
        let (tx, rx) = tokio::sync::oneshot::channel();
        client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(8))
            .deferred()
            .await?
            .on_complete(move |r| {
                let _ = tx.send(r.map(|m| m.n).map_err(|e| e.to_string()));
            });
        assert_eq!(rx.await?, Ok(1008));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deferred_gets_an_immediate_reply_as_ready() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // A server that answers with the REPLY straight away.
        let server = FakeServer::start(standard(2)).await?;
        let (_channel, client) = channel(&server, fast_config()).await?;
        let mut handle = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(3))
            .deferred()
            .await?;
        assert_eq!(
            handle.try_take().map(|r| r.map(|m| m.n).ok()),
            Some(Some(1003))
        );
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(3))
            .asynchronous()
            .await?;
        Ok(())
    })
    .await
}

// On tokio's paused clock: the 300 ms below are 300 ms of the client's own
// timers (any retransmission they would send is sent and received before
// the clock gets there), not a guess at how fast the machine runs.
#[tokio::test(start_paused = true)]
async fn one_way_is_sent_once_and_never_waits() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Answers PING and sync requests, never one-way ones: a one-way
        // call that waited for an answer would never return.
        let server = FakeServer::start(standard(8)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        client.one_way(&SERVICE, &HINT, &num(2)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r: Vec<_> = server
            .received(MessageType::Request)
            .into_iter()
            .filter(|e| e.protocol == ExchangeProtocol::R as i32)
            .collect();
        assert_eq!(r.len(), 1, "never retransmitted");
        assert_eq!((r[0].request_id, r[0].attempt, r[0].ack_up_to), (2, 1, 1));
        assert!(!r[0].want_accept);
        assert!(
            server.received(MessageType::Ping).is_empty(),
            "one-way calls need no incarnation"
        );
        // Its id counts as finished at once.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(3))
            .await?;
        let last = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!((last.request_id, last.ack_up_to), (3, 2));
        let s = channel.stats();
        assert_eq!((s.attempts, s.retransmissions), (3, 0));

        // Towards a server that does not exist, too.
        let dead = UdpChannel::connect("127.0.0.1:9".parse()?).await?;
        let client = rpc_core::Client::new(dead.clone());
        for i in 0..100 {
            client.one_way(&SERVICE, &HINT, &num(i)).await?;
        }
        assert_eq!(dead.stats().attempts, 100);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invalid_style_and_protocol_combinations_are_refused() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(1)).await?;
        let channel = UdpChannel::connect_with(server.addr, fast_config()).await?;
        let mut inv = invocation(&READ);
        inv.options.protocol = Protocol::R;
        assert!(matches!(
            channel.invoke(inv).await,
            Err(Error::InvalidCall(_))
        ));
        let mut inv = invocation(&HINT);
        inv.options.protocol = Protocol::RR;
        assert!(matches!(
            channel.invoke(inv).await,
            Err(Error::InvalidCall(_))
        ));
        // Then a valid call from the same socket: anything the refused
        // calls had sent would have reached the server before it.
        channel.invoke(invocation(&READ)).await?;
        let log = server.log();
        assert!(!log.is_empty());
        assert!(
            log.iter().all(|e| is(e, MessageType::Request)
                && e.method_id == READ.id
                && e.protocol == ExchangeProtocol::Rr as i32),
            "only the valid call was sent: {log:?}"
        );
        Ok(())
    })
    .await
}

fn invocation(method: &'static rpc_core::MethodInfo) -> Invocation {
    Invocation {
        service: &SERVICE,
        method,
        instance: String::new(),
        payload: prost::Message::encode_to_vec(&num(1)).into(),
        metadata: Metadata::new(),
        options: CallOptions::for_method(method),
    }
}

#[tokio::test]
async fn dropping_the_channel_fails_calls_in_flight_with_closed() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(|_| vec![]).await?;
        // A budget the call cannot exhaust while the test runs: it can
        // only end by the channel closing.
        let mut config = fast_config();
        config.max_wait = Duration::from_secs(600);
        let channel = UdpChannel::connect_with(server.addr, config).await?;
        let mut inv = invocation(&READ);
        inv.options.retries = Some(100_000);
        let call = tokio::spawn(channel.invoke(inv));
        assert!(server.wait_for(WAIT, |log| !log.is_empty()).await);
        let clone = channel.clone();
        drop(channel);
        // The exchange goes on: another copy reaches the server after the drop.
        let copies = server.log().len();
        assert!(
            server.wait_for(WAIT, |log| log.len() > copies).await,
            "a clone keeps the channel open"
        );
        assert!(!call.is_finished(), "a clone keeps the channel open");
        drop(clone);
        let result = call.await?;
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
        Ok(())
    })
    .await
}

// On tokio's paused clock: the 100 ms window below is 100 ms of the
// client's own timers, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn dropping_a_call_counts_its_id_as_finished() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Never answers n = 99.
        let server = FakeServer::start(|e| {
            if is(e, MessageType::Request)
                && <Num as prost::Message>::decode(e.payload.clone())
                    .map(|m| m.n)
                    .ok()
                    == Some(99)
            {
                return vec![];
            }
            standard_answer(e, 3)
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let abandoned = tokio::time::timeout(
            Duration::from_millis(60),
            client
                .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(99))
                .retries(100),
        )
        .await;
        assert!(abandoned.is_err(), "the call was cut off");
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        let last = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!((last.request_id, last.ack_up_to), (2, 1));
        // No more copies of the abandoned call.
        let copies = server
            .received(MessageType::Request)
            .iter()
            .filter(|e| e.request_id == 1)
            .count();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            server
                .received(MessageType::Request)
                .iter()
                .filter(|e| e.request_id == 1)
                .count(),
            copies
        );
        // A late reply to it is counted (and ACKed: it was RRA).
        let late = server
            .received(MessageType::Request)
            .into_iter()
            .find(|e| e.request_id == 1);
        let late = late.ok_or_else(|| anyhow::anyhow!("no request 1"))?;
        let local = channel.local_addr()?;
        server
            .socket
            .send_to(&prost::Message::encode_to_vec(&reply(&late, 3)), local)
            .await?;
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .any(|e| is(e, MessageType::Ack) && e.request_id == 1))
                .await
        );
        assert_eq!(channel.stats().late_replies, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metadata_over_the_caps_is_refused_before_sending() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(1)).await?;
        let (_channel, client) = channel(&server, fast_config()).await?;
        let mut call = client.call::<_, Num, Never>(&SERVICE, &READ, &num(1));
        for i in 0..65 {
            call = call.metadata(format!("k{i}"), "v");
        }
        match call.await {
            Err(CallError::Rpc(Error::InvalidCall(why))) => {
                assert!(why.contains("65 metadata entries"), "{why}")
            }
            other => anyhow::bail!("expected an invalid call, got {other:?}"),
        }
        let big = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .metadata("k", "v".repeat(16 << 10))
            .await;
        assert!(
            matches!(big, Err(CallError::Rpc(Error::InvalidCall(_)))),
            "{big:?}"
        );
        // Nothing was sent; a call within the caps goes through.
        assert!(server.received(MessageType::Request).is_empty());
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .metadata("k", "v")
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metadata_instance_and_deadline_travel_in_the_request() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(1)).await?;
        let (_channel, client) = channel(&server, fast_config()).await?;
        let before = Instant::now();
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .metadata("trace-id", "abc")
            .instance("left")
            .timeout(Duration::from_secs(2))
            .await?;
        // The deadline was set and the request sent within `took`.
        let took = before.elapsed();
        let req = server
            .received(MessageType::Request)
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!(req.metadata.get("trace-id"), Some("abc"));
        assert_eq!(req.instance, "left");
        let at_least = Duration::from_secs(2).saturating_sub(took).as_micros();
        assert!(
            u128::from(req.deadline_us) >= at_least && req.deadline_us <= 2_000_000,
            "{} not in [{at_least}, 2000000]",
            req.deadline_us
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn dropping_the_channel_stops_the_receive_task_and_frees_the_socket() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(1)).await?;
        let channel = UdpChannel::connect_with(server.addr, fast_config()).await?;
        let client = rpc_core::Client::new(channel.clone());
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        let local = channel.local_addr()?;
        drop(client);
        drop(channel);
        // The aborted task releases the socket at its next poll.
        let until = Instant::now() + WAIT;
        loop {
            match tokio::net::UdpSocket::bind(local).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= until => anyhow::bail!("socket still bound: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        Ok(())
    })
    .await
}
