//! Interop with the official gRPC implementation (Python grpcio), over
//! 127.0.0.1, with code generated from the `.proto` our compiler emits:
//! 1. a Python client calls our Rust server (every field type and edge
//!    value, status codes, a typed raises error, deadlines, one-way,
//!    metadata);
//! 2. our generated Rust client calls a Python server (the same coverage);
//! 3. schema evolution: `interop_v2.idl` (more fields, one more method)
//!    against v1 peers, both ways;
//! 4. a Python client without a valid bearer token is refused by the
//!    server's authentication interceptor and its call never runs.
//!
//! Needs `RPC_TEST_PYTHON` (a Python with grpcio and grpcio-tools); fails
//! with a clear message without it.
#![allow(clippy::unwrap_used, clippy::float_cmp, clippy::needless_update)] // a failed unwrap is a failed test; one macro body serves v1 and v2 messages

mod grpc_common;

use grpc_common::{generate_python, python_client, python_client_with, python_server};
use rpc_core::grpc::GrpcChannel;
use rpc_core::server::{Server, ServerHandle};
use rpc_core::{CallContext, CallError, Client, Code, Error, MethodError, Status};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod v1 {
    rpc_core::idl!("idl/interop.idl");
}
mod v2 {
    rpc_core::idl!("idl/interop_v2.idl");
}

/// The Rust implementation of both versions (the same semantics as
/// `tests/interop/server.py`).
#[derive(Default)]
struct Impl {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    withdrawn: i64,
    withdrawals: u64,
    last: (bool, u32),
    notes: Vec<String>,
}

macro_rules! interop_impl {
    ($m:ident { $($extra:tt)* }) => {
        impl $m::interop::v1::Interop for Impl {
            async fn echo(&self, _ctx: CallContext, request: $m::interop::v1::Everything) -> Result<$m::interop::v1::Everything, Status> {
                Ok(request)
            }
            async fn ping(&self, _ctx: CallContext, _request: $m::interop::v1::Empty) -> Result<$m::interop::v1::Empty, Status> {
                Ok($m::interop::v1::Empty {})
            }
            async fn withdraw(
                &self,
                _ctx: CallContext,
                request: $m::interop::v1::Amount,
            ) -> Result<$m::interop::v1::Count, MethodError<$m::interop::v1::Overdrawn>> {
                let mut s = self.state.lock().unwrap();
                let balance = 100 - s.withdrawn;
                if request.delta > balance {
                    let err = $m::interop::v1::Overdrawn { balance, requested: request.delta };
                    return Err(MethodError::raised_with(err, Code::FailedPrecondition, "insufficient funds \u{2713}"));
                }
                s.withdrawn += request.delta;
                s.withdrawals += 1;
                Ok($m::interop::v1::Count { value: 100 - s.withdrawn, executions: s.withdrawals })
            }
            async fn fail(&self, _ctx: CallContext, request: $m::interop::v1::Failure) -> Result<$m::interop::v1::Empty, Status> {
                Err(Status::new(Code::from_i32(request.code), request.message))
            }
            async fn sleep(&self, ctx: CallContext, request: $m::interop::v1::Nap) -> Result<$m::interop::v1::DeadlineSeen, Status> {
                let remaining = ctx.deadline.map(|d| d.saturating_duration_since(Instant::now()));
                let seen = $m::interop::v1::DeadlineSeen {
                    had_deadline: remaining.is_some(),
                    remaining_ms: remaining.map_or(0, |r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX)),
                };
                self.state.lock().unwrap().last = (seen.had_deadline, seen.remaining_ms);
                let wait = Duration::from_millis(u64::from(request.millis));
                match ctx.deadline {
                    Some(d) if d < Instant::now() + wait => {
                        tokio::time::sleep_until(d.into()).await;
                        Err(Status::deadline_exceeded("deadline exceeded while sleeping"))
                    }
                    _ => {
                        tokio::time::sleep(wait).await;
                        Ok(seen)
                    }
                }
            }
            async fn last_sleep(&self, _ctx: CallContext, _request: $m::interop::v1::Empty) -> Result<$m::interop::v1::DeadlineSeen, Status> {
                let (had_deadline, remaining_ms) = self.state.lock().unwrap().last;
                Ok($m::interop::v1::DeadlineSeen { had_deadline, remaining_ms })
            }
            async fn post(&self, _ctx: CallContext, request: $m::interop::v1::Note) -> Result<(), Status> {
                self.state.lock().unwrap().notes.push(request.text);
                Ok(())
            }
            async fn posted(&self, _ctx: CallContext, _request: $m::interop::v1::Empty) -> Result<$m::interop::v1::Notes, Status> {
                Ok($m::interop::v1::Notes { texts: self.state.lock().unwrap().notes.clone() })
            }
            async fn meta(&self, ctx: CallContext, _request: $m::interop::v1::Empty) -> Result<$m::interop::v1::Notes, Status> {
                let mut texts: Vec<String> = ctx.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                texts.sort();
                Ok($m::interop::v1::Notes { texts })
            }
            $($extra)*
        }
    };
}

interop_impl!(v1 {});
interop_impl!(v2 {
    async fn added(&self, _ctx: CallContext, request: v2::interop::v1::Note) -> Result<v2::interop::v1::Note, Status> {
        Ok(request)
    }
});

async fn rust_server(version: &str) -> (ServerHandle, u16) {
    let builder = Server::builder();
    let builder = match version {
        "v1" => builder.add_service(v1::interop::v1::InteropServer::new(Impl::default())),
        _ => builder.add_service(v2::interop::v1::InteropServer::new(Impl::default())),
    };
    let handle = builder.serve_grpc("127.0.0.1:0").await.unwrap();
    let port = handle.local_addr().port();
    (handle, port)
}

/// Runs the Python client in a blocking thread while our server runs.
async fn python_calls_rust(client_version: &'static str, server_version: &'static str) -> String {
    let gen = generate_python(if client_version == "v1" {
        "interop.idl"
    } else {
        "interop_v2.idl"
    });
    let (server, port) = rust_server(server_version).await;
    let out = tokio::task::spawn_blocking(move || {
        python_client(&gen, port, client_version, server_version)
    })
    .await
    .unwrap();
    server.shutdown(Duration::from_secs(5)).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_without_a_valid_token_never_runs() {
    use rpc_core::intercept::auth::BearerAuth;
    let gen = generate_python("interop.idl");
    let state = std::sync::Arc::new(Impl::default());
    let server = Server::builder()
        .intercept(BearerAuth::new().token("py-secret", "python"))
        .add_service(v1::interop::v1::InteropServer::from_arc(state.clone()))
        .serve_grpc("127.0.0.1:0")
        .await
        .unwrap();
    let port = server.local_addr().port();
    let out = tokio::task::spawn_blocking(move || {
        python_client_with(&gen, port, "v1", "v1", &["--auth", "py-secret"])
    })
    .await
    .unwrap();
    for check in [
        "no token refused",
        "a wrong token refused",
        "a malformed credential refused",
        "the token's call ran, and it alone",
    ] {
        assert!(
            out.contains(&format!("PASS {check}\n")),
            "{check} missing in:\n{out}"
        );
    }
    assert_eq!(
        state.state.lock().unwrap().withdrawals,
        1,
        "only the authenticated call ran"
    );
    assert!(server.stats().intercept_refused >= 3);
    server.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_calls_rust_server() {
    let out = python_calls_rust("v1", "v1").await;
    for check in [
        "echo variant 0",
        "overdrawn details present",
        "details unpack",
        "status UNAUTHENTICATED",
        "handler saw the deadline",
        "posted",
        "metadata",
    ] {
        assert!(
            out.contains(&format!("PASS {check}\n")),
            "{check} missing in:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_v2_client_calls_rust_v1_server() {
    let out = python_calls_rust("v2", "v1").await;
    assert!(
        out.contains("PASS v2 fields unknown to a v1 server are ignored\n"),
        "{out}"
    );
    assert!(
        out.contains("PASS new method on a v1 server is UNIMPLEMENTED\n"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_v2_client_calls_rust_v2_server() {
    let out = python_calls_rust("v2", "v2").await;
    for check in [
        "echo variant 0",
        "v2 fields round-trip on a v2 server",
        "new method on a v2 server",
        "details unpack",
        "handler saw the deadline",
        "posted",
        "metadata",
    ] {
        assert!(
            out.contains(&format!("PASS {check}\n")),
            "{check} missing in:\n{out}"
        );
    }
    assert!(!out.contains("on a v1 server"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_v1_client_calls_rust_v2_server() {
    let out = python_calls_rust("v1", "v2").await;
    assert!(out.contains("PASS echo variant 4\n"), "{out}");
}

// ---- our Rust client against the Python server ----

macro_rules! values {
    ($m:ident) => {{
        use $m::interop::v1::{everything::Choice, Color, Empty, Everything, Inner, Scalars};
        let s = |f_double: f64, f_float: f32| Scalars {
            f_double,
            f_float,
            ..Scalars::default()
        };
        let big = Scalars {
            f_double: f64::MAX,
            f_float: f32::MAX,
            f_int32: i32::MAX,
            f_int64: i64::MAX,
            f_uint32: u32::MAX,
            f_uint64: u64::MAX,
            f_sint32: i32::MAX,
            f_sint64: i64::MAX,
            f_fixed32: u32::MAX,
            f_fixed64: u64::MAX,
            f_sfixed32: i32::MAX,
            f_sfixed64: i64::MAX,
            f_bool: true,
            f_string: "h\u{e9}llo w\u{f6}rld \u{2713} \u{1f980} \u{65e5}\u{672c}\u{8a9e}".into(),
            f_bytes: rpc_core::codegen::Bytes::from_static(b"\x00\xff\xfe\x80 not utf8 \xc3\x28"),
        };
        let small = Scalars {
            f_double: 5e-324,
            f_float: f32::from_bits(1),
            f_int32: i32::MIN,
            f_int64: i64::MIN,
            f_sint32: i32::MIN,
            f_sint64: i64::MIN,
            f_sfixed32: i32::MIN,
            f_sfixed64: i64::MIN,
            ..Scalars::default()
        };
        let special = Scalars {
            f_int32: -1,
            f_int64: -1,
            f_sint32: -1,
            f_sint64: -1,
            f_sfixed32: -1,
            f_sfixed64: -1,
            f_string: "nul \u{0} and \u{10ffff}".into(),
            f_bytes: rpc_core::codegen::Bytes::from_static(b"\x00"),
            ..s(f64::NAN, f32::INFINITY)
        };
        let base = Everything {
            scalars: Some(big.clone()),
            many: vec![big, small, special, s(f64::NEG_INFINITY, -f32::NAN)],
            doubles: vec![
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                5e-324,
                1.0,
            ],
            floats: vec![f32::NAN, f32::NEG_INFINITY, f32::from_bits(1), -0.0, 0.5],
            int64s: vec![i64::MIN, i64::MAX, -1, 0],
            uint64s: vec![0, u64::MAX],
            sint64s: vec![i64::MIN, i64::MAX, -1],
            fixed32s: vec![0, u32::MAX],
            bools: vec![true, false, true],
            strings: vec![String::new(), "\u{fc}".into(), "\u{1f980}".into()],
            blobs: vec![
                rpc_core::codegen::Bytes::new(),
                rpc_core::codegen::Bytes::from_static(b"\xff\x00"),
                rpc_core::codegen::Bytes::from_static(b"\x80"),
            ],
            counts: [
                (String::new(), i64::MIN),
                ("\u{43a}\u{43b}\u{44e}\u{447}".into(), i64::MAX),
            ]
            .into_iter()
            .collect(),
            inners: [
                (
                    -1,
                    Inner {
                        label: "neg".into(),
                        values: vec![-1, i32::MIN],
                        color: Color::Blue as i32,
                    },
                ),
                (0, Inner::default()),
            ]
            .into_iter()
            .collect(),
            names: [(u64::MAX, "big".to_owned()), (0, String::new())]
                .into_iter()
                .collect(),
            flags: [(true, vec![0xff]), (false, vec![])].into_iter().collect(),
            nested: Some(Inner {
                label: "nested".into(),
                values: vec![0],
                color: Color::Red as i32,
            }),
            color: Color::Green as i32,
            colors: vec![
                Color::Red as i32,
                Color::Unspecified as i32,
                Color::Blue as i32,
            ],
            maybe: Some(0),
            empty: Some(Empty {}),
            inner_list: vec![
                Inner::default(),
                Inner {
                    label: "x".into(),
                    ..Inner::default()
                },
            ],
            ..Everything::default()
        };
        let choices = [
            Some(Choice::Inner(Inner {
                label: "in oneof".into(),
                values: vec![1, 2, 3],
                ..Inner::default()
            })),
            Some(Choice::Text(String::new())),
            Some(Choice::Picked(Color::Green as i32)),
            Some(Choice::Number(i64::MIN)),
            None,
        ];
        choices
            .into_iter()
            .map(move |choice| Everything {
                choice,
                ..base.clone()
            })
            .collect::<Vec<_>>()
    }};
}

/// Bit-exact equality of two messages (NaN and -0.0 included): floats are
/// compared by their bits, then zeroed, then the rest with `==`.
macro_rules! assert_same {
    ($m:ident, $a:expr, $b:expr) => {{
        fn strip(e: &mut $m::interop::v1::Everything) -> Vec<u64> {
            let mut bits = Vec::new();
            let mut scalars: Vec<&mut $m::interop::v1::Scalars> = e.many.iter_mut().collect();
            scalars.extend(e.scalars.as_mut());
            for s in scalars {
                bits.push(s.f_double.to_bits());
                bits.push(u64::from(s.f_float.to_bits()));
                s.f_double = 0.0;
                s.f_float = 0.0;
            }
            bits.extend(e.doubles.drain(..).map(f64::to_bits));
            bits.extend(e.floats.drain(..).map(|f| u64::from(f.to_bits())));
            bits
        }
        let (mut a, mut b) = ($a.clone(), $b.clone());
        assert_eq!(strip(&mut a), strip(&mut b), "float bits differ");
        assert_eq!(a, b);
    }};
}

async fn rust_client(port: u16) -> Client {
    Client::new(
        GrpcChannel::connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap(),
    )
}

/// The checks of `client.py`, from our generated Rust client.
macro_rules! rust_client_checks {
    ($m:ident, $client:expr) => {{
        use $m::interop::v1::{Amount, Empty, Failure, Nap, Note};
        let stub = $m::interop::v1::InteropClient::new($client);
        for (i, value) in values!($m).into_iter().enumerate() {
            let reply = stub.echo(value.clone()).await.unwrap();
            assert_same!($m, reply, value);
            let _ = i;
        }
        assert_eq!(
            stub.echo(Default::default()).await.unwrap(),
            Default::default()
        );
        assert_eq!(stub.ping(Empty {}).await.unwrap(), Empty {});
        // Deferred and asynchronous styles against a foreign server: the
        // result comes straight away.
        assert_eq!(
            stub.ping(Empty {}).deferred().await.unwrap().await.unwrap(),
            Empty {}
        );
        stub.ping(Empty {}).asynchronous().await.unwrap();

        let count = stub.withdraw(Amount { delta: 30 }).await.unwrap();
        assert_eq!(count.value, 70);
        match stub.withdraw(Amount { delta: 1000 }).await {
            Err(CallError::Raised(e, status)) => {
                assert_eq!((e.balance, e.requested), (70, 1000));
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert_eq!(status.message(), "insufficient funds \u{2713}");
            }
            other => panic!("expected Overdrawn, got {other:?}"),
        }

        for n in 1..=16 {
            let message = format!("failure {n} \u{2713} \u{fc}");
            match stub
                .fail(Failure {
                    code: n,
                    message: message.clone(),
                })
                .await
            {
                Err(CallError::Rpc(Error::Status(s))) => {
                    assert_eq!((s.code().as_i32(), s.message()), (n, message.as_str()));
                }
                other => panic!("code {n}: {other:?}"),
            }
        }

        // The nap is far longer than the deadline, which alone ends the
        // call; the deadline is generous enough that a busy machine still
        // delivers the request before it (no verdict on how fast).
        let err = stub
            .sleep(Nap { millis: 60_000 })
            .timeout(Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        let seen = stub.last_sleep(Empty {}).await.unwrap();
        assert!(
            seen.had_deadline && seen.remaining_ms > 0 && seen.remaining_ms <= 2000,
            "{seen:?}"
        );

        stub.post(Note {
            text: "hello \u{2713}".into(),
            ..Note::default()
        })
        .await
        .unwrap();
        // Polled until it arrives (30 s: a safety net, not the verdict).
        let mut posted = false;
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            if stub
                .posted(Empty {})
                .await
                .unwrap()
                .texts
                .iter()
                .any(|t| t == "hello \u{2713}")
            {
                posted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(posted, "the one-way note never arrived");

        let notes = stub
            .meta(Empty {})
            .metadata("trace-id", "abc-123")
            .metadata("x-tenant", "t1")
            .await
            .unwrap();
        assert_eq!(
            notes.texts,
            vec!["trace-id=abc-123".to_owned(), "x-tenant=t1".to_owned()]
        );
        stub
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_calls_python_server() {
    let gen = generate_python("interop.idl");
    let (_python, port) = python_server(&gen, "v1");
    rust_client_checks!(v1, rust_client(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_v2_client_calls_python_v1_server() {
    let gen = generate_python("interop.idl");
    let (_python, port) = python_server(&gen, "v1");
    let stub = rust_client_checks!(v2, rust_client(port).await);
    // Python keeps fields it does not know and sends them back.
    let mut value = values!(v2).remove(0);
    value.added_text = "from v2".into();
    value.added_numbers = vec![1, -2, 3];
    value.added_inner = Some(v2::interop::v1::Inner {
        label: "v2 inner".into(),
        ..Default::default()
    });
    let reply = stub.echo(value.clone()).await.unwrap();
    assert_same!(v2, reply, value);
    let err = stub
        .added(v2::interop::v1::Note {
            text: "new".into(),
            priority: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_v1_client_calls_python_v2_server() {
    let gen = generate_python("interop_v2.idl");
    let (_python, port) = python_server(&gen, "v2");
    rust_client_checks!(v1, rust_client(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_v2_client_and_rust_v1_server_evolve() {
    let (server, port) = rust_server("v1").await;
    let stub = v2::interop::v1::InteropClient::new(rust_client(port).await);
    let mut value = values!(v2).remove(0);
    let plain = value.clone();
    value.added_text = "from v2".into();
    value.added_numbers = vec![1, -2, 3];
    // prost drops unknown fields: the v1 server answers with the v1 part.
    let reply = stub.echo(value).await.unwrap();
    assert_same!(v2, reply, plain);
    let err = stub
        .added(v2::interop::v1::Note {
            text: "new".into(),
            priority: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    server.shutdown(Duration::from_secs(5)).await.unwrap();
}
