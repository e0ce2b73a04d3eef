//! The link's tests.

use super::*;

fn pending(frame: &'static [u8]) -> Pending {
    Pending {
        frame: Bytes::from_static(frame),
        kind: Kind::Ping,
        first_gen: None,
        stored_at: Instant::now(),
        answered: false,
    }
}

#[test]
fn outstanding_stays_sorted_and_drops_through_the_low_water_mark() {
    let mut o = Outstanding::default();
    for id in [3u64, 5, 4, 1, 9] {
        o.get_or_insert_with(id, || pending(b"x"));
    }
    // an existing entry is found, not made again
    o.get_or_insert_with(4, || pending(b"again")).answered = true;
    let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![1, 3, 4, 5, 9]);
    assert!(o
        .get(4)
        .is_some_and(|p| p.answered && p.frame[..] == b"x"[..]));
    assert!(o.get(2).is_none() && o.get_mut(10).is_none());
    o.remove(5);
    o.remove(6);
    o.drop_through(3);
    let ids: Vec<u64> = o.0.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![4, 9]);
    assert!(o.any_unanswered(), "9 is not answered");
    o.drop_through(u64::MAX);
    assert!(o.0.is_empty() && !o.any_unanswered());
}

#[test]
fn frames_join_a_batch_whole_and_uncopied() {
    let from: SocketAddr = ([127, 0, 0, 1], 9).into();
    let mut batch = RecvBatch::new(1, 4);
    let long = Bytes::from_static(b"longer than a slot");
    batch.push_frame(Bytes::from_static(b"abcd"), from);
    batch.push_frame(long.clone(), from);
    assert_eq!(batch.len(), 2);
    let got: Vec<&[u8]> = batch.iter().map(|(d, _)| d).collect();
    assert_eq!(
        got,
        vec![&b"abcd"[..], &long[..]],
        "not truncated to the slot"
    );
    let taken: Vec<Bytes> = batch.take_frames().map(|(f, _)| f).collect();
    assert_eq!(
        taken[1].as_ptr(),
        long.as_ptr(),
        "the same bytes, not a copy"
    );
    assert!(batch.is_empty());
    batch.push_frame(long, from);
    batch.clear();
    assert!(batch.is_empty());
}

/// The in-memory connections of the tests below, by server address:
/// `conn::connect` asks here first.
type Dialer = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<tokio::io::DuplexStream>>>;
static DIALERS: Mutex<Vec<(SocketAddr, Dialer)>> = Mutex::new(Vec::new());

/// The next in-memory connection to `server`, once the test makes one;
/// `None` when no test plays `server`, `Some(None)` when its test is done.
pub(super) async fn dial(server: SocketAddr) -> Option<Option<tokio::io::DuplexStream>> {
    let dialer = DIALERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(at, _)| *at == server)
        .map(|(_, dialer)| Arc::clone(dialer))?;
    let mut dialer = dialer.lock().await;
    Some(dialer.recv().await)
}

mod reconnect {
    //! The link across connections, against a server the test plays frame
    //! by frame over in-memory connections, on the paused clock.
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::super::*;
    use super::DIALERS;
    use crate::call::{CallOptions, Channel, Invocation, Outcome};
    use crate::client::tests::INFO;
    use crate::envelope::{Envelope, MessageType};
    use crate::transport::tcp::{Frame, FrameReader};
    use prost::Message;
    use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

    /// The test service's methods (deadline 60 s: past the channel's
    /// `max_wait`, 30 s).
    const GET: u32 = 1;
    const PUT: u32 = 2;

    const INCARNATION: u64 = 7;

    /// The server's side of a channel to `port`.
    struct Server(mpsc::UnboundedSender<DuplexStream>);

    impl Server {
        fn new(port: u16) -> (Server, TcpChannel) {
            let at = SocketAddr::from(([127, 0, 0, 1], port));
            let (tx, rx) = mpsc::unbounded_channel();
            let dialer = Arc::new(tokio::sync::Mutex::new(rx));
            DIALERS.lock().unwrap().push((at, dialer));
            (
                Server(tx),
                TcpChannel::connect_lazy(at, TcpConfig::default()),
            )
        }

        /// The channel's next connection.
        fn accept(&self) -> Conn {
            self.accept_buffered(1 << 16)
        }

        /// The channel's next connection, `buffer` bytes in flight each way.
        fn accept_buffered(&self, buffer: usize) -> Conn {
            let (client, server) = tokio::io::duplex(buffer);
            self.0.send(client).unwrap();
            let (r, w) = tokio::io::split(server);
            Conn(FrameReader::new(r, DEFAULT_MAX_FRAME), w)
        }
    }

    /// One connection, the server's side; dropping it breaks it.
    struct Conn(FrameReader<ReadHalf<DuplexStream>>, WriteHalf<DuplexStream>);

    impl Conn {
        async fn next(&mut self) -> Envelope {
            match self.0.next().await.unwrap() {
                Some(Frame::Data(frame)) => Envelope::decode(frame).unwrap(),
                other => panic!("a frame expected: {other:?}"),
            }
        }

        /// The next frame, unless `call` ends first (then fails, with how).
        async fn next_before(
            &mut self,
            call: &mut tokio::task::JoinHandle<Result<Outcome, Error>>,
        ) -> Envelope {
            tokio::select! {
                env = self.next() => env,
                ended = call => panic!("the call ended, its request unanswered: {ended:?}"),
            }
        }

        async fn answer(&mut self, kind: MessageType, to: &Envelope, payload: &'static [u8]) {
            let mut env = Envelope::answer(kind, to.session_id, to.request_id, INCARNATION, None);
            env.payload = Bytes::from_static(payload);
            let frame = env.encode_to_vec();
            let len = u32::try_from(frame.len()).unwrap();
            self.1.write_all(&len.to_be_bytes()).await.unwrap();
            self.1.write_all(&frame).await.unwrap();
        }
    }

    /// A channel to `port`, a PUT call on it (its PING comes first), and
    /// the connection that carried its PING.
    async fn put_pinged(
        port: u16,
    ) -> (
        Server,
        TcpChannel,
        tokio::task::JoinHandle<Result<Outcome, Error>>,
        Conn,
        Envelope,
    ) {
        let (server, ch) = Server::new(port);
        let put = call(&ch, PUT);
        let mut conn = server.accept();
        let ping = conn.next().await;
        assert_eq!(ping.r#type, MessageType::Ping as i32);
        (server, ch, put, conn, ping)
    }

    fn call(ch: &TcpChannel, method: u32) -> tokio::task::JoinHandle<Result<Outcome, Error>> {
        let m = INFO.method(method).unwrap();
        let inv = Invocation {
            service: &INFO,
            method: m,
            instance: String::new(),
            payload: Bytes::new(),
            metadata: Default::default(),
            options: CallOptions::for_method(m),
        };
        tokio::spawn(ch.invoke(inv))
    }

    fn reply_of(outcome: Result<Outcome, Error>) -> Bytes {
        match outcome {
            Ok(Outcome::Reply(Ok(reply))) => reply.payload,
            other => panic!("a reply expected: {other:?}"),
        }
    }

    /// A call with a deadline past `max_wait` whose connection breaks
    /// after `max_wait` while the server runs it: the new connection
    /// carries its request again, and its polls there fetch the answer
    /// the server could not send on the old one.
    #[tokio::test(start_paused = true)]
    async fn a_request_older_than_max_wait_is_polled_on_the_new_connection() {
        let (server, _ch, mut run, mut first, ping) = put_pinged(1).await;
        first.answer(MessageType::Pong, &ping, b"").await;
        let request = first.next().await;
        assert_eq!((request.request_id, request.attempt), (ping.request_id, 1));
        // The server runs it; 35 s later, the connection breaks.
        tokio::time::sleep(Duration::from_secs(35)).await;
        drop(first);
        let mut second = server.accept();
        let copy = second.next_before(&mut run).await;
        assert_eq!(copy.request_id, request.request_id);
        second.answer(MessageType::InProgress, &copy, b"").await;
        // Done: its REPLY went to the first connection, and was lost there.
        let poll = second.next_before(&mut run).await;
        assert_eq!(poll.request_id, request.request_id);
        second.answer(MessageType::Reply, &poll, b"done").await;
        assert_eq!(reply_of(run.await.unwrap()), &b"done"[..]);
    }

    /// A call's REQUEST made while its PING (same request id) still waits
    /// for its PONG on the same connection (the incarnation came with
    /// another call's REPLY) is written, not taken for a copy of the PING.
    #[tokio::test(start_paused = true)]
    async fn a_request_after_its_ping_on_the_same_connection_is_written() {
        let (_server, ch, mut run, mut conn, ping) = put_pinged(2).await;
        let get = call(&ch, GET);
        let request = conn.next().await;
        assert_eq!(request.method_id, GET);
        conn.answer(MessageType::Reply, &request, b"got").await;
        assert_eq!(reply_of(get.await.unwrap()), &b"got"[..]);
        // The first call learns the incarnation, and routes its REQUEST,
        // before its PONG arrives.
        let routed = || {
            let s = ch.link_stats();
            s.frames_sent + s.suppressed >= 3
        };
        for _ in 0..10_000 {
            if routed() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(routed(), "{:?}", ch.link_stats());
        conn.answer(MessageType::Pong, &ping, b"").await;
        let request = conn.next_before(&mut run).await;
        assert_eq!(
            (request.r#type, request.request_id),
            (MessageType::Request as i32, ping.request_id)
        );
        conn.answer(MessageType::Reply, &request, b"ran").await;
        assert_eq!(reply_of(run.await.unwrap()), &b"ran"[..]);
    }

    /// A server that accepts and stops reading, past the outbox's
    /// high-water mark: the writer's stall breaks the connection, the
    /// calls blocked on the full outbox end at their deadlines (not
    /// hang), and a call on the next connection, read, succeeds.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_reading_breaks_the_connection() {
        let (server, ch) = Server::new(3);
        // Over the high-water mark in one frame (GET needs no PING).
        let big = {
            let m = INFO.method(GET).unwrap();
            tokio::spawn(ch.invoke(Invocation {
                service: &INFO,
                method: m,
                instance: String::new(),
                payload: Bytes::from(vec![0u8; 2 * OUTBOX_HIGH_WATER]),
                metadata: Default::default(),
                options: CallOptions::for_method(m),
            }))
        };
        // 64 bytes in flight, never read.
        let _stalled = server.accept_buffered(64);
        let queued = || ch.link_stats().frames_sent >= 1;
        for _ in 0..10_000 {
            if queued() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(queued(), "{:?}", ch.link_stats());
        // Its request waits for room in the full outbox.
        let blocked = call(&ch, GET);
        let hang_limit = Duration::from_secs(600);
        let ended = tokio::time::timeout(hang_limit, blocked).await;
        let ended = ended.expect("the call hung past its deadline").unwrap();
        assert!(
            matches!(ended, Err(Error::DeadlineExceeded { .. })),
            "{ended:?}"
        );
        let ended = tokio::time::timeout(hang_limit, big)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                ended,
                Err(Error::DeadlineExceeded {
                    may_have_run: true,
                    ..
                })
            ),
            "partly written: {ended:?}"
        );
        let stats = ch.link_stats();
        assert_eq!((stats.write_stalls, stats.disconnects), (1, 1), "{stats:?}");
        // A server that reads: it answers every request.
        let mut reading = server.accept();
        tokio::spawn(async move {
            loop {
                let env = reading.next().await;
                if env.r#type == MessageType::Request as i32 {
                    reading.answer(MessageType::Reply, &env, b"read").await;
                }
            }
        });
        let after = tokio::time::timeout(hang_limit, call(&ch, GET)).await;
        assert_eq!(reply_of(after.unwrap().unwrap()), &b"read"[..]);
        assert_eq!(ch.link_stats().write_stalls, 1);
    }
}
