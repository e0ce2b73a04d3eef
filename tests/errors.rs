//! What goes wrong reaches the caller typed, over real UDP: a method's
//! `raises` message, UNIMPLEMENTED for unknown methods and services, the
//! size limits on both sides, and deadlines (with whether the request may
//! have run).

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use rpc_core::server::Server;
use rpc_core::{
    CallContext, CallError, Client, Code, Error, MethodInfo, Never, Protocol, Service, ServiceInfo,
    Status, Style,
};
use rpc_tests::demo::{counter, Amount, Blob, Count, Empty, Overdrawn, Work};
use rpc_tests::*;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn rpc_error<E: std::fmt::Debug>(
    r: Result<impl std::fmt::Debug, CallError<E>>,
) -> anyhow::Result<Error> {
    match r {
        Err(CallError::Rpc(e)) => Ok(e),
        other => anyhow::bail!("expected a runtime error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_raise_reaches_the_caller_as_its_message_type() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let demo = Demo::start(Server::builder()).await?;
        let proxy = proxy(demo.addr(), faults(31, 0.2, 0.1)).await?;
        for addr in [demo.addr(), proxy.local_addr()] {
            let (_channel, client) = connect(addr, lossy_config()).await?;
            let balance = client.increment(Amount { delta: 10 }).await?.value;
            match client
                .withdraw(Amount {
                    delta: balance + 90,
                })
                .await
            {
                Err(CallError::Raised(overdrawn, status)) => {
                    assert_eq!(
                        overdrawn,
                        Overdrawn {
                            balance,
                            requested: balance + 90
                        }
                    );
                    assert_eq!(status.code(), Code::FailedPrecondition);
                    assert_eq!(status.details_type(), "demo.v1.Overdrawn");
                }
                other => anyhow::bail!("expected Overdrawn, got {other:?}"),
            }
            // A plain status from the same method is not mistaken for the typed error.
            let e = rpc_error(client.withdraw(Amount { delta: -1 }).await)?;
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert_eq!(
                client.withdraw(Amount { delta: 4 }).await?.value,
                balance - 4
            );
        }
        Ok(())
    })
    .await
}

static BOGUS_METHOD: MethodInfo = MethodInfo {
    name: "Bogus",
    id: 0xdead_beef,
    request_type: "demo.v1.Empty",
    response_type: "demo.v1.Count",
    raises_type: "",
    oneway: false,
    idempotent: false,
    protocol: Protocol::RR,
    style: Style::Sync,
    timeout_ms: 0,
    retries: None,
};

static BOGUS_SERVICE: ServiceInfo = ServiceInfo {
    package: "demo.v1",
    name: "Nope",
    full_name: "demo.v1.Nope",
    methods: &[BOGUS_METHOD],
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_and_service_get_unimplemented() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let demo = Demo::start(Server::builder()).await?;
        let proxy = proxy(demo.addr(), faults(32, 0.2, 0.1)).await?;
        for addr in [demo.addr(), proxy.local_addr()] {
            let (channel, _) = connect(addr, lossy_config()).await?;
            let client = Client::new(channel);
            let e = rpc_error(
                client
                    .call::<_, Count, Never>(&counter::SERVICE, &BOGUS_METHOD, &Empty {})
                    .await,
            )?;
            assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
            assert!(
                e.to_string().contains("0xdeadbeef"),
                "the message names the method: {e}"
            );
            assert!(!e.may_have_run(), "an unknown method never runs");
            let e = rpc_error(
                client
                    .call::<_, Count, Never>(&BOGUS_SERVICE, &BOGUS_METHOD, &Empty {})
                    .await,
            )?;
            assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
            assert!(
                e.to_string().contains("demo.v1.Nope"),
                "the message names the service: {e}"
            );
        }
        assert!(demo.server.stats().unimplemented >= 4);
        assert_eq!(
            demo.counter.executions() + demo.counter.idempotent_executions(),
            0
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_fails_before_sending() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let demo = Demo::start(Server::builder()).await?;
        let (channel, client) = connect(demo.addr(), lossy_config()).await?;
        let big = Blob {
            data: Bytes::from(vec![7u8; 70_000]),
        };
        match rpc_error(client.echo(big).await)? {
            Error::MessageTooLarge { size, limit } => {
                assert_eq!(limit, 65_000);
                assert!(size > 70_000, "size {size}");
            }
            other => anyhow::bail!("expected MessageTooLarge, got {other:?}"),
        }
        // A smaller client limit applies the same way, to every style.
        let mut config = lossy_config();
        config.max_datagram = 1_000;
        let (small_channel, small) = connect(demo.addr(), config).await?;
        let blob = Blob {
            data: Bytes::from(vec![1u8; 2_000]),
        };
        let e = rpc_error(small.echo(blob.clone()).deferred().await)?;
        assert!(
            matches!(e, Error::MessageTooLarge { limit: 1_000, .. }),
            "{e:?}"
        );
        assert!(!e.may_have_run());
        let work = Work {
            millis: 0,
            delta: 0,
        };
        assert!(
            small.compute(work).await.is_ok(),
            "small requests still pass"
        );
        assert_eq!(
            (channel.stats().too_large, small_channel.stats().too_large),
            (1, 1)
        );
        assert_eq!(channel.stats().attempts, 0, "nothing was sent");
        assert_eq!(demo.server.stats().too_large_requests, 0);
        Ok(())
    })
    .await
}

/// Echo, but the reply holds the data twice: a reply larger than its request.
struct Doubling(demo::CounterServer<CounterService>);

impl Service for Doubling {
    fn info(&self) -> &'static ServiceInfo {
        self.0.info()
    }
    fn call(
        &self,
        method_id: u32,
        ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        if method_id != counter::ECHO.id {
            return self.0.call(method_id, ctx, request);
        }
        Box::pin(async move {
            let blob =
                Blob::decode(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let doubled = [blob.data.as_ref(), blob.data.as_ref()].concat();
            Ok(Bytes::from(
                Blob {
                    data: doubled.into(),
                }
                .encode_to_vec(),
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_over_the_server_limit_becomes_an_error_reply() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        let server = Server::builder()
            .max_datagram(4_096)
            .add_service(Doubling(demo::CounterServer::new(CounterService::new())))
            .serve_udp("127.0.0.1:0")
            .await?;
        let (_channel, client) = connect(server.local_addr(), lossy_config()).await?;
        let small = client
            .echo(Blob {
                data: Bytes::from_static(b"abc"),
            })
            .await?;
        assert_eq!(small.data.as_ref(), b"abcabc");
        let e = rpc_error(
            client
                .echo(Blob {
                    data: Bytes::from(vec![9u8; 3_000]),
                })
                .await,
        )?;
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("4096") || text.contains("4,096"),
            "the error names the limit: {text}"
        );
        assert_eq!(server.stats().too_large_replies, 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_say_whether_the_request_may_have_run() -> anyhow::Result<()> {
    init_tracing();
    bounded(LIMIT, async {
        // Compute's handler waits at a gate the test opens.
        let gate = Gate::closed();
        let demo =
            Demo::start_held(Server::builder().max_concurrent(1), &["Compute"], &gate).await?;
        let (_channel, client) = connect(demo.addr(), lossy_config()).await?;
        client.increment(Amount { delta: 0 }).await?;

        // The handler takes 300 ms, the caller gives it 100 ms (a timer
        // cannot fire early: the handler cannot have answered in time).
        let start = Instant::now();
        let e = rpc_error(
            client
                .slow(Work {
                    millis: 300,
                    delta: 1,
                })
                .synchronous()
                .timeout(Duration::from_millis(100))
                .await,
        )?;
        let took = start.elapsed();
        assert!(
            matches!(
                e,
                Error::DeadlineExceeded {
                    may_have_run: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(took >= Duration::from_millis(100), "gave up after {took:?}");

        // A deadline already passed: nothing is sent, certainly not run.
        let e = rpc_error(
            client
                .increment(Amount { delta: 1 })
                .deadline(Instant::now())
                .await,
        )?;
        assert!(
            matches!(
                e,
                Error::DeadlineExceeded {
                    may_have_run: false,
                    attempts: 0
                }
            ),
            "{e:?}"
        );

        // The only handler slot is held (at the gate) by a deferred call; a
        // call with 100 ms waits on the server, whose deadline passes before
        // the slot frees: the server does not start it.
        // (On a busy machine the slow call may reach the server after its
        // deadline and be refused there: either way it is settled before
        // the slot is taken again.)
        wait_until(
            Duration::from_secs(30),
            "the server to settle the slow call",
            || {
                let s = demo.server.stats();
                (s.executions == 2 || s.deadline_exceeded == 1)
                    && demo.server.engine().in_flight() == 0
            },
        )
        .await?;
        let ran_slow = demo.counter.value();
        assert!(ran_slow == 0 || ran_slow == 1, "{ran_slow}");
        let refused = demo.server.stats().deadline_exceeded;
        let executions = demo.server.stats().executions;
        let held = client
            .compute(Work {
                millis: 0,
                delta: 1,
            })
            .await?;
        wait_until(Duration::from_secs(30), "Compute to hold the slot", || {
            demo.server.stats().executions == executions + 1
        })
        .await?;
        let late = tokio::spawn(
            client
                .increment(Amount { delta: 100 })
                .timeout(Duration::from_millis(100))
                .into_future(),
        );
        // Once the server holds the increment (waiting for the slot), its
        // deadline there is at most 100 ms away: wait past it, then free
        // the slot.
        wait_until(Duration::from_secs(30), "the increment to wait", || {
            demo.server.engine().in_flight() >= 2
        })
        .await?;
        let taken = Instant::now();
        tokio::time::sleep_until((taken + Duration::from_millis(101)).into()).await;
        let e = rpc_error(late.await?)?;
        assert!(
            matches!(
                e,
                Error::DeadlineExceeded {
                    may_have_run: true,
                    ..
                }
            ),
            "{e:?}"
        );
        gate.open();
        assert_eq!(held.await?.value, ran_slow + 1);
        // The server refuses the expired request when the slot frees; that
        // outcome is stored, so no later copy can run it.
        wait_until(
            Duration::from_secs(30),
            "the server to refuse the expired request",
            || demo.server.stats().deadline_exceeded > refused,
        )
        .await?;
        assert_eq!(
            demo.counter.value(),
            ran_slow + 1,
            "the deferred call ran; the expired increment did not"
        );
        assert_eq!(
            demo.counter.executions(),
            1 + ran_slow as u64 + 1,
            "warm-up, the slow call if it ran, the deferred call, nothing else"
        );
        Ok(())
    })
    .await
}
