//! The proxy's tasks: the acceptor (the connection cap), one task per
//! connection that dials the upstream, and the two pumps of each
//! connection (a reader and a writer joined by a bounded queue) that apply
//! the faults in force.

#[allow(clippy::wildcard_imports)] // the proxy's parts share its imports
use super::*;

/// The accepting task: owns the listener and every connection task.
#[derive(Debug)]
pub(super) struct Acceptor {
    pub(super) listener: TcpListener,
    pub(super) upstream: SocketAddr,
    pub(super) config: Arc<TcpProxyConfig>,
    pub(super) counters: Arc<Counters>,
    pub(super) control: watch::Receiver<Control>,
}

impl Acceptor {
    pub(super) async fn run(mut self) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                changed = self.control.changed() => {
                    if changed.is_err() || self.control.borrow().stopping {
                        break;
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((client, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            self.counters.refused.fetch_add(1, Ordering::SeqCst);
                            tracing::debug!(%peer, "tcp fault proxy full: connection refused");
                            drop(client);
                            continue;
                        };
                        self.counters.accepted.fetch_add(1, Ordering::SeqCst);
                        let connection = Connection {
                            peer,
                            upstream: self.upstream,
                            config: Arc::clone(&self.config),
                            counters: Arc::clone(&self.counters),
                            epoch: self.control.borrow().cut_epoch,
                            control: self.control.clone(),
                            _live: Live::new(Arc::clone(&self.counters)),
                            _slot: slot,
                        };
                        tracing::debug!(%peer, "tcp fault proxy accepted");
                        connections.spawn(connection.run(client));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait a little
                        // rather than spin on the same error.
                        tracing::warn!(error = %e, "tcp fault proxy cannot accept");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
    }
}

/// One client connection and its upstream connection.
#[derive(Debug)]
pub(super) struct Connection {
    peer: SocketAddr,
    upstream: SocketAddr,
    config: Arc<TcpProxyConfig>,
    counters: Arc<Counters>,
    control: watch::Receiver<Control>,
    epoch: u64,
    _live: Live,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Why a connection stops waiting.
pub(super) enum Stop {
    /// The proxy stops.
    Stopping,
    /// A cut.
    Cut,
}

impl Connection {
    /// Whether the connection must end, by the control state `c`.
    fn stop(&self, c: &Control) -> Option<Stop> {
        if c.stopping {
            Some(Stop::Stopping)
        } else if c.cut_epoch != self.epoch {
            Some(Stop::Cut)
        } else {
            None
        }
    }

    fn count_cut(&self, stop: Stop) {
        if let Stop::Cut = stop {
            self.counters.cut.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(peer = %self.peer, "tcp fault proxy: connection cut");
        }
    }

    pub(super) async fn run(mut self, mut client: TcpStream) {
        // A partition: the upstream is not dialled until it is lifted.
        match self.hold_while_blackholed(&mut client).await {
            Ok(()) => {}
            Err(Some(stop)) => return self.count_cut(stop),
            Err(None) => return,
        }
        let server = match tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(self.upstream),
        )
        .await
        {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => return self.upstream_failed(&e.to_string()),
            Err(_) => return self.upstream_failed("timed out"),
        };
        // Forward small writes as they come, as the peers wrote them.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let mut pumps = JoinSet::new();
        for (from, to, direction) in [
            (client_read, server_write, Direction::ClientToServer),
            (server_read, client_write, Direction::ServerToClient),
        ] {
            let pump = Pump {
                direction,
                config: Arc::clone(&self.config),
                counters: Arc::clone(&self.counters),
                control: self.control.clone(),
            };
            pumps.spawn(pump.run(from, to));
        }
        loop {
            tokio::select! {
                biased;
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let c = *self.control.borrow_and_update();
                    if let Some(stop) = self.stop(&c) {
                        return self.count_cut(stop);
                    }
                }
                joined = pumps.join_next() => match joined {
                    None => {
                        tracing::debug!(peer = %self.peer, "tcp fault proxy: connection closed");
                        return;
                    }
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        tracing::debug!(peer = %self.peer, error = %e, "tcp fault proxy: connection failed");
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "tcp fault proxy: pump ended abnormally");
                        return;
                    }
                },
            }
        }
    }

    fn upstream_failed(&self, error: &str) {
        self.counters.upstream_failed.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(peer = %self.peer, upstream = %self.upstream, error, "tcp fault proxy: upstream unreachable, client closed");
    }

    /// Waits while the blackhole is on, reading and discarding what the
    /// client sends. `Err` when the connection must end instead: a stop,
    /// or `None` if the client went away.
    async fn hold_while_blackholed(&mut self, client: &mut TcpStream) -> Result<(), Option<Stop>> {
        let mut buf = vec![0; self.config.chunk_size];
        loop {
            let c = *self.control.borrow_and_update();
            if let Some(stop) = self.stop(&c) {
                return Err(Some(stop));
            }
            if !c.blackhole {
                return Ok(());
            }
            tokio::select! {
                biased;
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Err(None);
                    }
                }
                read = client.read(&mut buf), if !c.paused => match read {
                    Ok(0) | Err(_) => return Err(None),
                    Ok(n) => Counters::add(&self.counters.discarded[0], n),
                },
            }
        }
    }
}

/// One direction of a connection.
#[derive(Debug)]
pub(super) struct Pump {
    direction: Direction,
    config: Arc<TcpProxyConfig>,
    counters: Arc<Counters>,
    control: watch::Receiver<Control>,
}

/// Bytes read, and when.
#[derive(Debug)]
pub(super) struct Chunk {
    read_at: Instant,
    bytes: Vec<u8>,
}

impl Pump {
    pub(super) async fn run(self, from: OwnedReadHalf, to: OwnedWriteHalf) -> io::Result<()> {
        let (queue, queued) = mpsc::channel(self.config.queue_chunks);
        let read = self.read(from, queue, self.control.clone());
        let write = self.write(to, queued, self.control.clone());
        tokio::try_join!(read, write).map(|_| ())
    }

    fn discarded(&self, n: usize) {
        Counters::add(&self.counters.discarded[self.direction.index()], n);
    }

    /// Reads chunks into the queue until the end of stream, which it
    /// passes on by dropping the queue.
    async fn read(
        &self,
        mut from: OwnedReadHalf,
        queue: mpsc::Sender<Chunk>,
        mut control: watch::Receiver<Control>,
    ) -> io::Result<()> {
        let mut buf = vec![0; self.config.chunk_size];
        loop {
            let c = *control.borrow_and_update();
            if c.stopping {
                return Ok(());
            }
            if c.paused {
                let _parked = Parked::new(&self.counters);
                if control.changed().await.is_err() {
                    return Ok(());
                }
                continue;
            }
            let n = tokio::select! {
                biased;
                changed = control.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                read = from.read(&mut buf) => read?,
            };
            if n == 0 {
                return Ok(());
            }
            if control.borrow().blackhole {
                self.discarded(n);
                continue;
            }
            let chunk = Chunk {
                read_at: Instant::now(),
                bytes: buf[..n].to_vec(),
            };
            if queue.send(chunk).await.is_err() {
                // The writer ended (its error ends the pump).
                return Ok(());
            }
        }
    }

    /// Forwards the queued chunks after their delay and at the rate, then
    /// half-closes.
    async fn write(
        &self,
        mut to: OwnedWriteHalf,
        mut queued: mpsc::Receiver<Chunk>,
        mut control: watch::Receiver<Control>,
    ) -> io::Result<()> {
        let i = self.direction.index();
        while let Some(chunk) = queued.recv().await {
            let mut rest = &chunk.bytes[..];
            while !rest.is_empty() {
                let c = *control.borrow_and_update();
                if c.stopping {
                    return Ok(());
                }
                if c.blackhole {
                    self.discarded(rest.len());
                    break;
                }
                let due = chunk.read_at + c.delay[i];
                let now = Instant::now();
                let wait = if due > now {
                    Some(due)
                } else {
                    if !c.delay[i].is_zero() && rest.len() == chunk.bytes.len() {
                        // Its first bytes leave, at least its delay late.
                        Counters::add(&self.counters.delayed[i], 1);
                    }
                    match c.throttle[i] {
                        None => {
                            to.write_all(rest).await?;
                            Counters::add(&self.counters.forwarded[i], rest.len());
                            rest = &[];
                            None
                        }
                        // Stalled until the throttle changes.
                        Some(0) => Some(now + Duration::from_secs(3600)),
                        Some(rate) => {
                            // Slices of a twentieth of a second's worth.
                            let slice = usize::try_from(rate / 20)
                                .unwrap_or(usize::MAX)
                                .clamp(1, rest.len());
                            to.write_all(&rest[..slice]).await?;
                            Counters::add(&self.counters.forwarded[i], slice);
                            rest = &rest[slice..];
                            let secs = slice as f64 / rate as f64;
                            Some(now + Duration::from_secs_f64(secs))
                        }
                    }
                };
                if let Some(until) = wait {
                    tokio::select! {
                        biased;
                        changed = control.changed() => {
                            if changed.is_err() {
                                return Ok(());
                            }
                            // A rate change applies to the next slice; a
                            // delay change to this chunk, recomputed above.
                        }
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }
        to.shutdown().await
    }
}
