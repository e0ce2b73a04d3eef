//! What each event does to a state: the client's side (start, PING,
//! copies, giving up, a delivered answer) and the server's (a delivered
//! request through the duplicate filter and the history, a handler's end,
//! a crash, a forgotten session).

#[allow(clippy::wildcard_imports)] // the model's parts share its imports
use super::*;

impl Checker {
    /// Applies `event`; returns a line describing it.
    pub(super) fn apply(&self, s: &mut State, event: Event) -> String {
        match event {
            Event::Start => {
                let Some(i) = s.calls.iter().position(|k| k.phase == Phase::NotStarted) else {
                    return "nothing to start".into();
                };
                let kind = s.calls[i].kind;
                if kind == Kind::OneWay {
                    let id = s.client.start_one_way();
                    let inc = s.client.incarnation();
                    let env = request(id, kind, inc, 1, s.client.ack_up_to().min(id - 1));
                    s.calls[i].id = id;
                    s.calls[i].named = inc;
                    s.calls[i].phase = Phase::Done(Outcome::Sent);
                    let line = format!(
                        "client: one-way call {i} gets id {id}, sends {}",
                        show(&env)
                    );
                    s.net.push((true, env.encode_to_vec()));
                    return line;
                }
                let id = s.client.start_call(kind == Kind::Rra);
                s.calls[i].id = id;
                // As the exchange does: a non-idempotent call PINGs first
                // while the incarnation is unknown.
                let needs_ping = kind != Kind::Idempotent && s.client.incarnation() == 0;
                if needs_ping {
                    if let Some(e) = s.client.entry(id) {
                        e.pinging = true;
                    }
                    s.calls[i].phase = Phase::Pinging { pings: 0 };
                } else {
                    s.calls[i].phase = Phase::Requesting {
                        inc: s.client.incarnation(),
                        copies: 0,
                    };
                }
                format!("client: call {i} ({kind:?}) gets id {id}")
            }
            Event::Ping(i) => {
                let Phase::Pinging { pings } = s.calls[i].phase else {
                    return "no ping".into();
                };
                s.calls[i].phase = Phase::Pinging { pings: pings + 1 };
                let env = Envelope {
                    version: VERSION,
                    r#type: MessageType::Ping as i32,
                    request_id: s.calls[i].id,
                    session_id: SESSION,
                    attempt: u32::from(pings) + 1,
                    ack_up_to: s.client.ack_up_to(),
                    ..Envelope::default()
                };
                s.net.push((true, env.encode_to_vec()));
                format!("client: call {i} sends {}", show(&env))
            }
            Event::BeginRequest(i) => {
                let id = s.calls[i].id;
                if let Some(e) = s.client.entry(id) {
                    e.pinging = false;
                }
                let inc = s.client.incarnation();
                s.calls[i].phase = Phase::Requesting { inc, copies: 0 };
                format!("client: call {i} learned incarnation {inc}")
            }
            Event::Copy(i) => {
                let Phase::Requesting { inc, copies } = s.calls[i].phase else {
                    return "no copy".into();
                };
                s.calls[i].phase = Phase::Requesting {
                    inc,
                    copies: copies + 1,
                };
                let call = s.calls[i];
                let env = request(
                    call.id,
                    call.kind,
                    inc,
                    u32::from(copies) + 1,
                    s.client.ack_up_to(),
                );
                s.net.push((true, env.encode_to_vec()));
                format!("client: call {i} sends {}", show(&env))
            }
            Event::GiveUp(i) => {
                let copies = match s.calls[i].phase {
                    Phase::Requesting { copies, .. } => copies,
                    _ => 0,
                };
                let outcome = Outcome::GaveUp {
                    may_have_run: copies > 0,
                };
                s.calls[i].phase = Phase::Done(outcome);
                s.client.end_call(s.calls[i].id);
                format!("client: call {i} gives up ({outcome:?})")
            }
            Event::Deliver(j) => {
                let (to_server, bytes) = s.net.remove(j);
                let Ok(env) = Envelope::decode(bytes.as_slice()) else {
                    return "undecodable".into();
                };
                if to_server {
                    self.server_receives(s, env)
                } else {
                    self.client_receives(s, env)
                }
            }
            Event::Duplicate(j) => {
                s.dups += 1;
                let m = s.net[j].clone();
                let line = format!("network: duplicates {}", show_msg(&m));
                s.net.push(m);
                line
            }
            Event::Drop(j) => {
                s.drops += 1;
                let m = s.net.remove(j);
                format!("network: loses {}", show_msg(&m))
            }
            Event::Complete(k) => {
                let job = s.running.remove(k);
                let env = Envelope {
                    version: VERSION,
                    r#type: MessageType::Reply as i32,
                    request_id: job.id,
                    session_id: SESSION,
                    incarnation: s.incarnation,
                    attempt: job.attempt,
                    payload: Bytes::from(job.run.to_be_bytes().to_vec()),
                    ..Envelope::default()
                };
                let bytes = env.encode_to_vec();
                if job.tracked {
                    s.history
                        .complete(SESSION, job.id, Bytes::from(bytes.clone()), self.now);
                }
                s.net.push((false, bytes));
                format!("server: handler of id {} returns, sends REPLY", job.id)
            }
            Event::Crash => {
                s.crashes += 1;
                s.incarnation += 1;
                s.history = History::new(self.config.history.clone());
                s.running.clear();
                format!("server: crashes, restarts as incarnation {}", s.incarnation)
            }
            Event::Forget => {
                s.forgets += 1;
                if s.history.forget(SESSION, self.now) {
                    "server: a flood of other sessions forgets the session (tombstone kept)"
                        .to_owned()
                } else {
                    "server: a flood of other sessions is refused (no room for a tombstone)"
                        .to_owned()
                }
            }
        }
    }

    fn server_receives(&self, s: &mut State, env: Envelope) -> String {
        let mut line = format!("server receives {}", show(&env));
        let control = |ty: MessageType, status: Option<Status>| Envelope {
            version: VERSION,
            r#type: ty as i32,
            request_id: env.request_id,
            session_id: SESSION,
            incarnation: s.incarnation,
            status: status.map(|st| Box::new(crate::envelope::WireStatus::from(&st))),
            ..Envelope::default()
        };
        match MessageType::try_from(env.r#type) {
            Ok(MessageType::Ping) => {
                let pong = control(MessageType::Pong, None);
                s.net.push((false, pong.encode_to_vec()));
                line.push_str(" -> PONG");
            }
            Ok(MessageType::Ack) => {
                s.history
                    .ack(SESSION, env.request_id, env.ack_up_to, self.now);
            }
            Ok(MessageType::Request) => {
                let req = Request {
                    session: SESSION,
                    request_id: env.request_id,
                    attempt: env.attempt,
                    incarnation: env.incarnation,
                    ack_up_to: env.ack_up_to,
                    oneway: env.protocol == ExchangeProtocol::R as i32,
                    idempotent: env.idempotent,
                    want_accept: env.want_accept,
                };
                // One honest client: the checker explores orderings, not
                // forged senders (those are tested against the engine).
                let admission = admit(
                    &mut s.history,
                    &req,
                    &Owner::Local,
                    &|| true,
                    s.incarnation,
                    false,
                    self.now,
                )
                .admission;
                let _ = write!(line, " -> {admission:?}");
                let answer = match admission {
                    Admission::Run => {
                        s.runs.push((req.request_id, s.incarnation));
                        let run = s.runs.len() as u64;
                        let _ = write!(line, " (execution #{run})");
                        if req.oneway {
                            None
                        } else {
                            s.running.push(Job {
                                id: req.request_id,
                                attempt: req.attempt,
                                tracked: req.tracked(),
                                run,
                            });
                            req.want_accept.then(|| control(MessageType::Accept, None))
                        }
                    }
                    Admission::Replay(bytes) => {
                        s.net.push((false, bytes.to_vec()));
                        None
                    }
                    Admission::InProgress if !req.oneway => Some(control(
                        if req.want_accept {
                            MessageType::Accept
                        } else {
                            MessageType::InProgress
                        },
                        None,
                    )),
                    Admission::Evicted if !req.oneway => Some(control(
                        MessageType::Error,
                        Some(Status::aborted(
                            "reply no longer in history; outcome unknown",
                        )),
                    )),
                    Admission::Restarted if !req.oneway => Some(control(
                        MessageType::Error,
                        Some(Status::with_details(
                            Code::Aborted,
                            "outcome unknown: server restarted",
                            SERVER_RESTARTED,
                            Bytes::new(),
                        )),
                    )),
                    _ => None,
                };
                if let Some(answer) = answer {
                    s.net.push((false, answer.encode_to_vec()));
                }
            }
            _ => line.push_str(" (ignored)"),
        }
        line
    }

    fn client_receives(&self, s: &mut State, env: Envelope) -> String {
        let line = format!("client receives {}", show(&env));
        let Ok(kind) = MessageType::try_from(env.r#type) else {
            return line;
        };
        let id = env.request_id;
        let delivery = s.client.deliver(env, kind, self.now);
        if let Some(ack) = delivery.ack {
            let env = Envelope {
                version: VERSION,
                r#type: MessageType::Ack as i32,
                request_id: ack,
                session_id: SESSION,
                ack_up_to: s.client.ack_up_to(),
                ..Envelope::default()
            };
            s.net.push((true, env.encode_to_vec()));
        }
        if delivery.kind == Routed::Completed {
            let result = s.client.entry(id).and_then(|e| e.result.take());
            s.client.end_call(id);
            let outcome = match result {
                Some(Final::OutcomeUnknown) => Outcome::Unknown,
                Some(Final::Reply(Ok(_))) => Outcome::Ok,
                Some(Final::Reply(Err(status))) => Outcome::Failed(status.code()),
                None => Outcome::Failed(Code::Unknown),
            };
            if let Some(call) = s.calls.iter_mut().find(|c| c.id == id) {
                call.phase = Phase::Done(outcome);
            }
            return format!("{line}: call ends {outcome:?}");
        }
        format!("{line}: {:?}", delivery.kind)
    }
}

fn request(id: u64, kind: Kind, inc: u64, attempt: u32, ack_up_to: u64) -> Envelope {
    Envelope {
        version: VERSION,
        r#type: MessageType::Request as i32,
        request_id: id,
        session_id: SESSION,
        service: "m.S".into(),
        method_id: 1,
        incarnation: inc,
        attempt,
        protocol: match kind {
            Kind::OneWay => ExchangeProtocol::R,
            Kind::Rra => ExchangeProtocol::Rra,
            _ => ExchangeProtocol::Rr,
        } as i32,
        ack_up_to,
        want_accept: kind == Kind::Async,
        idempotent: kind == Kind::Idempotent,
        ..Envelope::default()
    }
}

fn show(env: &Envelope) -> String {
    let ty = MessageType::try_from(env.r#type)
        .map(|t| format!("{t:?}").to_uppercase())
        .unwrap_or_else(|_| "?".into());
    let mut out = format!("{ty} id={}", env.request_id);
    if env.r#type == MessageType::Request as i32 {
        let _ = write!(out, " attempt={} inc={}", env.attempt, env.incarnation);
    } else if env.incarnation != 0 {
        let _ = write!(out, " inc={}", env.incarnation);
    }
    if env.ack_up_to != 0 {
        let _ = write!(out, " ack_up_to={}", env.ack_up_to);
    }
    if let Some(status) = &env.status {
        let _ = write!(out, " status={}", status.message);
    }
    out
}

fn show_msg((to_server, bytes): &Msg) -> String {
    let dir = if *to_server { "to server" } else { "to client" };
    match Envelope::decode(bytes.as_slice()) {
        Ok(env) => format!("{} {dir}", show(&env)),
        Err(_) => format!("? {dir}"),
    }
}
