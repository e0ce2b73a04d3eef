//! The synchronous exchange of `UdpChannel` (RR and RRA) against a fake
//! server on loopback: retransmission, RTO, deadlines, PING, incarnation,
//! acknowledgements, IN_PROGRESS.
//!
//! No verdict depends on the machine's speed. Tests that count datagrams
//! exactly run on tokio's paused clock: the retransmission timers are
//! tokio timers, and on a paused clock they fire only when every task
//! waits, so a reply on its way is not overtaken by a spurious
//! retransmission on a busy machine. The RTT estimate is checked against
//! bounds computed from the round trips the test itself measured (RFC 6298
//! run on intervals), not against fixed numbers. Lower bounds on elapsed
//! time (a timer cannot fire early) are kept; upper bounds are gone.

mod client_support;

use client_support::*;
use rpc_core::envelope::{self, MessageType};
use rpc_core::{CallError, Code, Error, Never, Protocol};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn rpc_err(e: CallError<Never>) -> anyhow::Result<Error> {
    match e {
        CallError::Rpc(e) => Ok(e),
        other => anyhow::bail!("expected a runtime error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retransmits_same_id_with_increasing_attempt() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Drop the first two copies of every request.
        let mut seen: HashMap<u64, u32> = HashMap::new();
        let server = FakeServer::start(move |e| {
            if is(e, MessageType::Request) {
                let n = seen.entry(e.request_id).or_default();
                *n += 1;
                if *n <= 2 {
                    return vec![];
                }
            }
            standard_answer(e, 7)
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let r = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(5))
            .await?;
        assert_eq!(r.n, 1005);
        let reqs = server.received(MessageType::Request);
        assert_eq!(reqs.len(), 3);
        assert!(
            reqs.iter().all(|e| e.request_id == 1),
            "same id on every copy"
        );
        assert_eq!(
            reqs.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(reqs
            .iter()
            .all(|e| e.session_id == channel.session_id() && e.session_id != 0));
        assert!(reqs
            .iter()
            .all(|e| e.service == "test.Calc" && e.method_id == READ.id && e.idempotent));
        assert!(reqs
            .iter()
            .all(|e| e.protocol == envelope::ExchangeProtocol::Rr as i32 && !e.want_accept));
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls,
                stats.attempts,
                stats.retransmissions,
                stats.replies
            ),
            (1, 3, 2, 1)
        );
        Ok(())
    })
    .await
}

/// What the channel's estimator may hold after the samples the test could
/// observe. The test does not know a sample exactly, only an interval: at
/// least the server's delay (the reply leaves that long after the request
/// arrived), at most the call's duration measured around it (the sample is
/// taken inside the call). RFC 6298 run on intervals gives the bounds of
/// SRTT, RTTVAR and the RTO, whatever the machine's load made the samples.
#[derive(Debug, Clone, Copy, Default)]
struct RttBounds {
    /// SRTT in seconds, low and high, once there is a sample.
    srtt: Option<(f64, f64)>,
    /// RTTVAR in seconds, low and high.
    var: (f64, f64),
}

impl RttBounds {
    /// One sample known to lie in `[lo, hi]`.
    fn sample(&mut self, lo: Duration, hi: Duration) {
        let (lo, hi) = (lo.as_secs_f64(), hi.as_secs_f64());
        self.srtt = Some(match self.srtt {
            None => {
                self.var = (lo / 2.0, hi / 2.0);
                (lo, hi)
            }
            Some((slo, shi)) => {
                // |SRTT - R| over both intervals.
                let dlo = (slo - hi).max(lo - shi).max(0.0);
                let dhi = (shi - lo).max(hi - slo);
                self.var = (
                    (3.0 * self.var.0 + dlo) / 4.0,
                    (3.0 * self.var.1 + dhi) / 4.0,
                );
                ((7.0 * slo + lo) / 8.0, (7.0 * shi + hi) / 8.0)
            }
        });
    }

    /// Checks the channel's SRTT and RTO against the bounds (with 1 us for
    /// the estimator's integer arithmetic).
    fn check(&self, s: &rpc_core::client::ClientStats, min: Duration, max: Duration) {
        let eps = 1e-6;
        let (slo, shi) = self.srtt.unwrap_or((0.0, 0.0));
        let srtt = s.srtt.map(|d| d.as_secs_f64());
        assert!(
            srtt.is_some_and(|v| v >= slo - eps && v <= shi + eps),
            "srtt {:?} outside [{slo:.6}, {shi:.6}] s",
            s.srtt
        );
        let clamp = |v: f64| v.clamp(min.as_secs_f64(), max.as_secs_f64());
        let (rlo, rhi) = (clamp(slo + 4.0 * self.var.0), clamp(shi + 4.0 * self.var.1));
        let rto = s.rto.as_secs_f64();
        assert!(
            rto >= rlo - eps && rto <= rhi + eps,
            "rto {:?} outside [{rlo:.6}, {rhi:.6}] s",
            s.rto
        );
    }
}

/// Runs one READ call; when it had a single copy (Karn's rule: only then
/// is there a sample), feeds `bounds` with a sample known to lie in
/// `[at_least, the call's duration]`.
async fn measured_call(
    client: &rpc_core::Client,
    channel: &rpc_core::client::UdpChannel,
    bounds: &mut RttBounds,
    at_least: Duration,
    n: u64,
) -> anyhow::Result<()> {
    let copies = channel.stats().attempts;
    let start = Instant::now();
    client
        .call::<_, Num, Never>(&SERVICE, &READ, &num(n))
        .await?;
    let took = start.elapsed();
    if channel.stats().attempts - copies == 1 {
        bounds.sample(at_least, took);
    }
    Ok(())
}

#[tokio::test]
async fn rto_adapts_to_measured_round_trips_and_follows_karn() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Replies come 40 ms late, except when `fast` is set.
        let delay = Duration::from_millis(40);
        let fast = Arc::new(Mutex::new(false));
        let drop_next_first_copy = Arc::new(Mutex::new(false));
        let (f, d) = (fast.clone(), drop_next_first_copy.clone());
        let server = FakeServer::start(move |e| {
            if !is(e, MessageType::Request) {
                return standard_answer(e, 7);
            }
            if e.attempt == 1 && std::mem::take(&mut *d.lock().unwrap_or_else(|p| p.into_inner())) {
                return vec![];
            }
            if *f.lock().unwrap_or_else(|p| p.into_inner()) {
                vec![Action::Send(reply(e, 7))]
            } else {
                vec![Action::After(delay, reply(e, 7))]
            }
        })
        .await?;
        let mut config = fast_config();
        // A first timeout no reply misses: the first call gives a sample.
        config.initial_rto = Duration::from_secs(20);
        config.max_rto = Duration::from_secs(20);
        let (min, max) = (config.min_rto, config.max_rto);
        let (channel, client) = channel(&server, config).await?;
        assert_eq!(channel.stats().rto, Duration::from_secs(20));
        assert_eq!(channel.stats().srtt, None);
        let mut bounds = RttBounds::default();
        for i in 0..5 {
            measured_call(&client, &channel, &mut bounds, delay, i).await?;
        }
        let s = channel.stats();
        bounds.check(&s, min, max);
        // The estimate left the initial timeout and stays above the
        // server's delay.
        assert!(s.srtt.is_some_and(|srtt| srtt >= delay), "{s:?}");
        assert!(s.rto >= delay && s.rto < Duration::from_secs(20), "{s:?}");

        // A faster server: the estimate follows it, within the bounds its
        // measured round trips allow.
        *fast.lock().unwrap_or_else(|p| p.into_inner()) = true;
        for i in 0..60 {
            measured_call(&client, &channel, &mut bounds, Duration::ZERO, i).await?;
        }
        bounds.check(&channel.stats(), min, max);

        // Karn: a call answered on its second copy gives no sample.
        *drop_next_first_copy
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        let before = channel.stats();
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        let s = channel.stats();
        assert!(s.retransmissions > before.retransmissions, "{s:?}");
        assert_eq!(s.srtt, before.srtt, "no sample from a retransmitted call");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deadline_exceeded_says_whether_the_request_may_have_run() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(|_| vec![]).await?;
        let (channel, client) = channel(&server, fast_config()).await?;

        // Idempotent: the request itself is sent (no PING), so it may have
        // run. (How many copies fit in the budget depends on the machine;
        // that the deadline, not the attempts, ended the call does not.)
        let start = Instant::now();
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .retries(100_000)
            .timeout(Duration::from_millis(150))
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        let elapsed = start.elapsed();
        let attempts = match rpc_err(err)? {
            Error::DeadlineExceeded {
                may_have_run: true,
                attempts,
            } => attempts,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        assert!(attempts >= 1, "{attempts}");
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        let reqs = server.received(MessageType::Request);
        assert!(
            !reqs.is_empty() && reqs.len() <= attempts as usize,
            "{} copies seen, {attempts} sent",
            reqs.len()
        );
        assert!(
            reqs.iter()
                .all(|e| e.deadline_us > 0 && e.deadline_us <= 150_000),
            "deadline travels"
        );
        assert!(
            reqs.windows(2).all(|w| w[1].deadline_us < w[0].deadline_us),
            "remaining budget shrinks"
        );

        // Non-idempotent: the server never answered the PING, so the
        // request was never sent and certainly did not run.
        let err = client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(1))
            .retries(1000)
            .timeout(Duration::from_millis(100))
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert!(
            matches!(
                rpc_err(err)?,
                Error::DeadlineExceeded {
                    may_have_run: false,
                    attempts: 0
                }
            ),
            "no request was sent"
        );
        assert_eq!(server.received(MessageType::Request).len(), reqs.len());
        assert!(!server.received(MessageType::Ping).is_empty());

        // A deadline that already passed: nothing is sent.
        let before = server.log().len();
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .deadline(Instant::now() - Duration::from_millis(1))
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert!(matches!(
            rpc_err(err)?,
            Error::DeadlineExceeded {
                may_have_run: false,
                attempts: 0
            }
        ));
        assert_eq!(channel.stats().timeouts, 3);
        // Then one copy of another call from the same socket: anything the
        // refused call had sent would have reached the server before it.
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(7))
            .retries(0)
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert!(matches!(rpc_err(err)?, Error::Unreachable { .. }));
        assert!(server.wait_for(WAIT, |log| log.len() > before).await);
        let log = server.log();
        assert_eq!(log.len(), before + 1, "{log:?}");
        assert_eq!(
            log.last()
                .and_then(|e| <Num as prost::Message>::decode(e.payload.clone()).ok())
                .map(|m| m.n),
            Some(7)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unreachable_after_all_attempts() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(|_| vec![]).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let start = Instant::now();
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .retries(3)
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert!(matches!(
            rpc_err(err)?,
            Error::Unreachable {
                may_have_run: true,
                attempts: 4
            }
        ));
        let reqs = server.received(MessageType::Request);
        assert_eq!(
            reqs.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        // 20 + 40 + 80 + 160 ms, each +-25%: the backoff doubles (no upper
        // bound: a busy machine only makes the timers late).
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(220), "{elapsed:?}");
        let s = channel.stats();
        assert_eq!((s.unreachable, s.attempts, s.retransmissions), (1, 4, 3));

        // PING gets the same budget: never answered -> did not run.
        let err = client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(1))
            .retries(2)
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert!(matches!(
            rpc_err(err)?,
            Error::Unreachable {
                may_have_run: false,
                attempts: 0
            }
        ));
        assert_eq!(server.received(MessageType::Ping).len(), 3);
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn ping_precedes_the_first_non_idempotent_call_only() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(0xabcd)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        // An idempotent call needs no incarnation.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await?;
        let log = server.log();
        assert_eq!(log.len(), 1);
        assert!(is(&log[0], MessageType::Request) && log[0].incarnation == 0);
        assert_eq!(
            channel.stats().incarnation,
            0xabcd,
            "learned from the reply"
        );

        // A fresh channel: PING first.
        let server = FakeServer::start(standard(0xabcd)).await?;
        let (channel, client) = client_support::channel(&server, fast_config()).await?;
        assert_eq!(
            client
                .call::<_, Num, Never>(&SERVICE, &ADD, &num(1))
                .await?
                .n,
            1001
        );
        client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(2))
            .await?;
        let log = server.log();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(is(&log[0], MessageType::Ping));
        assert_eq!(log[0].session_id, channel.session_id());
        assert!(is(&log[1], MessageType::Request) && log[1].incarnation == 0xabcd);
        assert_eq!(
            log[1].request_id, log[0].request_id,
            "the PING uses the call's id"
        );
        assert!(is(&log[2], MessageType::Request) && log[2].incarnation == 0xabcd);
        assert_eq!(log[2].request_id, log[1].request_id + 1);
        assert_eq!(channel.stats().pings, 1);
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn restarted_server_gives_outcome_unknown_and_a_new_incarnation_is_adopted(
) -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // A server that behaves like wire.md's incarnation check: it
        // "restarts" (incarnation 1 -> 2) after the first request, drops the
        // first copy of the next one, and refuses copies from the old
        // incarnation.
        let incarnation = Arc::new(Mutex::new(1u64));
        let inc = incarnation.clone();
        let server = FakeServer::start(move |e| {
            let current = *inc.lock().unwrap_or_else(|p| p.into_inner());
            if is(e, MessageType::Request) {
                if e.request_id == 2 && e.attempt == 1 {
                    return vec![];
                }
                if e.attempt > 1 && e.incarnation != 0 && e.incarnation != current && !e.idempotent
                {
                    let mut err = answer(e, MessageType::Error, current);
                    err.status = Some(Box::new(envelope::WireStatus {
                        code: Code::Aborted.as_i32(),
                        message: "outcome unknown: server restarted".into(),
                        details_type: envelope::SERVER_RESTARTED.into(),
                        details: Default::default(),
                    }));
                    return vec![Action::Send(err)];
                }
            }
            standard_answer(e, current)
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(1))
            .await?;
        *incarnation.lock().unwrap_or_else(|p| p.into_inner()) = 2;
        let err = client
            .call::<_, Num, Never>(&SERVICE, &ADD, &num(2))
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected outcome unknown"))?;
        let err = rpc_err(err)?;
        assert!(matches!(err, Error::OutcomeUnknown), "{err:?}");
        assert!(err.may_have_run());
        assert_eq!(channel.stats().outcome_unknown, 1);
        assert_eq!(
            channel.stats().incarnation,
            2,
            "the ERROR showed the new incarnation"
        );
        // The next call carries the new incarnation and succeeds.
        assert_eq!(
            client
                .call::<_, Num, Never>(&SERVICE, &ADD, &num(3))
                .await?
                .n,
            1003
        );
        let reqs = server.received(MessageType::Request);
        let last = reqs.last().ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!((last.request_id, last.incarnation), (3, 2));
        // Both copies of call 2 carried the incarnation known when it started.
        assert!(reqs
            .iter()
            .filter(|e| e.request_id == 2)
            .all(|e| e.incarnation == 1));
        assert_eq!(server.received(MessageType::Ping).len(), 1);
        Ok(())
    })
    .await
}

/// Each message's (`request_id`, `ack_up_to`), in order.
fn ids_and_floors(messages: &[envelope::Envelope]) -> Vec<(u64, u64)> {
    messages
        .iter()
        .map(|e| (e.request_id, e.ack_up_to))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_rra_ack_rides_on_the_next_request_sent_within_the_delay() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(4)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        assert_eq!(channel.config().ack_delay, Duration::from_millis(10));
        // Two calls in a row, as a lock's acquire then release: the
        // second REQUEST leaves before the first answer's ACK is due.
        for n in [1, 2] {
            client
                .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(n))
                .await?;
        }
        // The last answer has no REQUEST after it: its ACK goes when the
        // delay ends.
        assert!(
            server
                .wait_for(WAIT, |log| log.iter().any(|e| is(e, MessageType::Ack)))
                .await
        );
        let reqs = server.received(MessageType::Request);
        assert_eq!(
            ids_and_floors(&reqs),
            vec![(1, 0), (2, 1)],
            "the second REQUEST acknowledges the first answer"
        );
        let acks = server.received(MessageType::Ack);
        assert_eq!(
            ids_and_floors(&acks),
            vec![(2, 2)],
            "no ACK datagram for the first answer"
        );
        let s = channel.stats();
        assert_eq!((s.acks_sent, s.acks_piggybacked), (1, 1), "{s:?}");
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn with_no_ack_delay_every_rra_answer_gets_its_ack_at_once() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(4)).await?;
        let mut config = fast_config();
        config.ack_delay = Duration::ZERO;
        let (channel, client) = channel(&server, config).await?;
        for n in [1, 2] {
            client
                .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(n))
                .await?;
        }
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .filter(|e| is(e, MessageType::Ack))
                    .count()
                    == 2)
                .await
        );
        let acks = server.received(MessageType::Ack);
        assert_eq!(ids_and_floors(&acks), vec![(1, 1), (2, 2)]);
        let s = channel.stats();
        assert_eq!((s.acks_sent, s.acks_piggybacked), (2, 0), "{s:?}");
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn rra_reply_is_acked_and_late_duplicates_are_acked_again() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Every REPLY is sent twice, the second 30 ms later.
        let server = FakeServer::start(|e| {
            if is(e, MessageType::Request) {
                vec![
                    Action::Send(reply(e, 9)),
                    Action::After(Duration::from_millis(30), reply(e, 9)),
                ]
            } else {
                standard_answer(e, 9)
            }
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let r = client
            .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(4))
            .await?;
        assert_eq!(r.n, 1004);
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .filter(|e| is(e, MessageType::Ack))
                    .count()
                    == 2)
                .await
        );
        let acks = server.received(MessageType::Ack);
        assert!(acks.iter().all(|a| a.request_id == 1
            && a.ack_up_to == 1
            && a.session_id == channel.session_id()));
        let reqs = server.received(MessageType::Request);
        assert_eq!(reqs[0].protocol, envelope::ExchangeProtocol::Rra as i32);
        let s = channel.stats();
        assert_eq!((s.acks_sent, s.late_replies, s.replies), (2, 1, 1));

        // An RR call's duplicate reply is only counted.
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(4))
            .await?;
        let until = tokio::time::Instant::now() + WAIT;
        while channel.stats().late_replies < 2 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = channel.stats();
        assert_eq!((s.acks_sent, s.late_replies), (2, 2));
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn ack_up_to_is_a_low_water_mark_over_concurrent_calls() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // n = 2 is answered 300 ms late (its retransmissions ignored).
        let server = FakeServer::start(|e| {
            if is(e, MessageType::Request) {
                let n = <Num as prost::Message>::decode(e.payload.clone())
                    .map(|m| m.n)
                    .unwrap_or(0);
                if n == 2 {
                    return if e.attempt == 1 {
                        vec![Action::After(Duration::from_millis(300), reply(e, 3))]
                    } else {
                        vec![]
                    };
                }
            }
            standard_answer(e, 3)
        })
        .await?;
        let mut config = fast_config();
        config.initial_rto = Duration::from_millis(100);
        let (channel, client) = channel(&server, config).await?;
        // The slow call goes first and gets id 1; two quick calls run
        // concurrently with it and finish before it.
        let c = client.clone();
        let slow =
            tokio::spawn(
                async move { c.call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(2)).await },
            );
        assert!(server.wait_for(WAIT, |log| !log.is_empty()).await);
        let (r1, r3) = tokio::join!(
            client
                .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(1))
                .into_future(),
            client
                .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(3))
                .into_future()
        );
        assert_eq!((r1?.n, r3?.n), (1001, 1003));
        let ids: HashMap<u64, u64> = server
            .received(MessageType::Request)
            .iter()
            .map(|e| {
                (
                    <Num as prost::Message>::decode(e.payload.clone())
                        .map(|m| m.n)
                        .unwrap_or(0),
                    e.request_id,
                )
            })
            .collect();
        assert_eq!(ids[&2], 1, "{ids:?}");
        let mut quick = [ids[&1], ids[&3]];
        quick.sort();
        assert_eq!(quick, [2, 3]);
        // 2 and 3 are done, but 1 is not: every ACK and the next request
        // say 0.
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .filter(|e| is(e, MessageType::Ack))
                    .count()
                    == 2)
                .await
        );
        let acks = server.received(MessageType::Ack);
        assert!(acks.iter().all(|a| a.ack_up_to == 0), "{acks:?}");
        let mut acked: Vec<u64> = acks.iter().map(|a| a.request_id).collect();
        acked.sort();
        assert_eq!(acked, [2, 3]);
        client
            .call::<_, Num, Never>(&SERVICE, &READ_RRA, &num(4))
            .await?;
        let req4 = server
            .received(MessageType::Request)
            .into_iter()
            .find(|e| e.request_id == 4);
        assert_eq!(req4.map(|e| e.ack_up_to), Some(0));
        // Copies of the slow call never acknowledge their own id.
        assert_eq!(slow.await??.n, 1002);
        let slow_copies: Vec<_> = server
            .received(MessageType::Request)
            .into_iter()
            .filter(|e| e.request_id == 1)
            .collect();
        assert!(slow_copies.len() >= 2 && slow_copies.iter().all(|e| e.ack_up_to == 0));
        // Once it completes, everything up to 4 is acknowledged.
        assert!(
            server
                .wait_for(WAIT, |log| log
                    .iter()
                    .any(|e| is(e, MessageType::Ack) && e.request_id == 1))
                .await
        );
        let ack1 = server
            .received(MessageType::Ack)
            .into_iter()
            .find(|a| a.request_id == 1);
        assert_eq!(ack1.map(|a| a.ack_up_to), Some(4));
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(5))
            .await?;
        let req5 = server
            .received(MessageType::Request)
            .into_iter()
            .find(|e| e.request_id == 5);
        assert_eq!(req5.map(|e| e.ack_up_to), Some(4));
        assert_eq!(channel.stats().calls, 5);
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn in_progress_stops_counting_attempts_and_polls_slower() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // The handler takes 600 ms; duplicates get IN_PROGRESS meanwhile.
        let start = Arc::new(Mutex::new(None::<Instant>));
        let server = FakeServer::start(move |e| {
            if !is(e, MessageType::Request) {
                return standard_answer(e, 5);
            }
            let mut s = start.lock().unwrap_or_else(|p| p.into_inner());
            match *s {
                None => {
                    *s = Some(Instant::now());
                    vec![Action::After(Duration::from_millis(600), reply(e, 5))]
                }
                Some(_) => vec![Action::Send(answer(e, MessageType::InProgress, 5))],
            }
        })
        .await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let begin = tokio::time::Instant::now();
        // Only 2 attempts allowed: without IN_PROGRESS this would fail
        // after 20 + 40 ms.
        let r = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(6))
            .retries(1)
            .await?;
        assert_eq!(r.n, 1006);
        assert!(begin.elapsed() >= Duration::from_millis(600));
        let copies = server.received(MessageType::Request).len();
        // 1 + the retransmission at ~20 ms, then polls from 2*RTO doubling
        // up to 200 ms: far fewer than the 30 copies the plain RTO would
        // send in 600 ms.
        assert!((3..=8).contains(&copies), "{copies} copies");
        let s = channel.stats();
        assert!(s.in_progress >= 1);
        assert_eq!(s.replies, 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn server_errors_reach_the_caller_as_status() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(|e| {
            if is(e, MessageType::Request) {
                let mut err = answer(e, MessageType::Error, 1);
                err.status = Some(Box::new(envelope::WireStatus {
                    code: Code::Unimplemented.as_i32(),
                    message: "no method 12 in test.Calc".into(),
                    ..Default::default()
                }));
                return vec![Action::Send(err)];
            }
            standard_answer(e, 1)
        })
        .await?;
        let (_channel, client) = channel(&server, fast_config()).await?;
        let err = client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .await
            .map(|_| ())
            .err()
            .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(
            matches!(rpc_err(err)?, Error::Status(s) if s.message() == "no method 12 in test.Calc")
        );
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn rra_protocol_override_per_call() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(4)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        client
            .call::<_, Num, Never>(&SERVICE, &READ, &num(1))
            .protocol(Protocol::RRA)
            .await?;
        assert!(
            server
                .wait_for(WAIT, |log| log.iter().any(|e| is(e, MessageType::Ack)))
                .await
        );
        assert_eq!(channel.stats().acks_sent, 1);
        Ok(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn concurrent_first_calls_share_one_ping() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = FakeServer::start(standard(77)).await?;
        let (channel, client) = channel(&server, fast_config()).await?;
        let calls = (0..20u64).map(|n| {
            client
                .call::<_, Num, Never>(&SERVICE, &ADD, &num(n))
                .into_future()
        });
        for (n, r) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r?.n, n as u64 + 1000);
        }
        assert_eq!(server.received(MessageType::Ping).len(), 1);
        assert!(server
            .received(MessageType::Request)
            .iter()
            .all(|e| e.incarnation == 77));
        assert_eq!(channel.stats().pings, 1);
        Ok(())
    })
    .await
}
