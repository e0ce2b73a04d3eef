"""A conformance peer of the RPC protocol, version 1, over UDP.

Written from the generated `rpc/envelope.proto` (with `demo.proto`, the
service under test) and the specification `idl/PROTOCOL.md` alone: it builds
every datagram itself with the protobuf modules protoc generated from those
files, and asserts what the specification says the server answers. Section
numbers below ("spec 9.2") are those of PROTOCOL.md.

usage: peer.py --server 127.0.0.1:PORT --gen DIR [--proto DIR]
               [--filler-millis MS]

  --gen      the directory protoc wrote rpc/envelope_pb2.py and demo_pb2.py to
  --proto    the directory of the .proto files (default: GEN/proto), read for
             what demo.proto's comments say of each method (id, attributes)

The server is restarted once in the middle (check 7): the peer prints a line
`RESTART` and waits for a line `RESTARTED` on stdin; whoever runs it kills
the server and starts it again on the same address before answering.

Prints `PASS <check>`, `XFAIL <check>: <why>` (a disagreement with the
specification that is known and reported) or `FAIL <check>: <why>` per
assertion, and `ALL OK` at the end when nothing failed; exits 1 otherwise.

No verdict depends on the wall clock. "Did not run" is shown by the
counter's execution count (`Count.executions`, read with the idempotent
`Get`). "No answer" is shown by a later answer: a PING sent after the
datagram in question, on the same socket, whose PONG arrives with nothing
before it. That rests on one assumption beyond the specification: the
server handles the datagrams of one peer in the order they arrive, and
loopback keeps their order, so an answer to the earlier datagram would
arrive before the PONG. Timeouts are only safety nets (generous, with
retransmission), and they bound every loop.
"""

import argparse
import os
import random
import re
import select
import socket
import sys
import time
import traceback

# ---------------------------------------------------------------------------
# Numbers of the specification.

VERSION = 1  # spec 3: field 1 must be 1
MAX_DATAGRAM = 65_000  # spec 14: the UDP server's default datagram limit
HANDLER_SLOTS = 1024  # spec 9.2 step 7: handlers that run at once (default)
MAX_UDP_PAYLOAD = 65_507  # IPv4: 65,535 - 20 (IP header) - 8 (UDP header)

# gRPC status code numbers (spec 13.4).
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
FAILED_PRECONDITION = 9
ABORTED = 10
UNIMPLEMENTED = 12

SERVICE = "demo.v1.Counter"

# Safety nets: how long to wait for an answer before sending another copy,
# and how many copies at most. Loopback does not lose datagrams unless a
# buffer overflows; these only bound the loops.
COPY_WAITS = [1.0, 2.0, 4.0, 5.0, 5.0]
POLL_LIMIT = 30.0  # spec 8.1: the longest wait of a call without deadline
MAX_POLL_INTERVAL = 1.0  # spec 8.1: the maximum timeout caps poll intervals

# ---------------------------------------------------------------------------
# Results.

RESULTS = {"pass": 0, "xfail": 0, "fail": 0}


class CheckFailed(Exception):
    pass


def check(name, cond, detail="", quiet=False):
    """One assertion: prints PASS (unless quiet), or raises (the check it is
    in fails)."""
    if not cond:
        raise CheckFailed(f"{name}: {detail}" if detail else name)
    if not quiet:
        RESULTS["pass"] += 1
        print(f"PASS {name}", flush=True)


def xfail(name, why):
    """A known, reported disagreement of the server with the specification:
    printed, counted, and not a failure."""
    RESULTS["xfail"] += 1
    print(f"XFAIL {name}: {why}", flush=True)


def run_check(title, fn, *args):
    print(f"== {title}", flush=True)
    try:
        return fn(*args)
    except CheckFailed as e:
        RESULTS["fail"] += 1
        print(f"FAIL {e}", flush=True)
    except Exception:  # a crash of the peer itself is a failure too
        RESULTS["fail"] += 1
        print(f"FAIL {title}: the peer raised\n{traceback.format_exc()}", flush=True)
    return None


# ---------------------------------------------------------------------------
# The generated modules and the method ids.


def load(gen):
    sys.path.insert(0, gen)
    from rpc import envelope_pb2  # noqa: E402  (generated at test time)
    import demo_pb2  # noqa: E402

    return envelope_pb2, demo_pb2


def fnv1a32(text):
    """spec 3, field 7: FNV-1a 32 over the UTF-8 bytes; 0 becomes 1."""
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h or 1


def methods_from_proto(path):
    """What the generated .proto says of each rpc in the comments above it
    (spec 3, field 7: the method id; spec 5: the IDL's attributes, such as
    `[idempotent, protocol = RR, style = sync]`), by method name:
    {"id": int, "attrs": {name: value or True}}."""
    methods = {}
    comments = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line.startswith("//"):
            comments.append(line[2:].strip())
            continue
        m = re.match(r"rpc\s+(\w+)\s*\(", line)
        if m:
            info = {"id": None, "attrs": {}}
            for c in comments:
                if c.startswith("method id "):
                    info["id"] = int(c[len("method id "):], 16)
                elif c.startswith("[") and c.endswith("]"):
                    for item in c[1:-1].split(","):
                        key, _, value = item.partition("=")
                        info["attrs"][key.strip()] = value.strip() or True
            methods[m.group(1)] = info
        comments = []
    return methods


# ---------------------------------------------------------------------------
# The wire: one UDP socket, datagrams only from the server (spec 2).


class Wire:
    def __init__(self, pb, server):
        self.pb = pb
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        # Received and not yet taken: (raw bytes, Envelope).
        self.inbox = []
        # Everything the server sent that breaks a rule for every server
        # message (spec 3, 4); checked at the end.
        self.violations = []
        self.fence_id = 1 << 40
        # spec 7.4: the cookie the server gave this socket's address in a
        # PONG; every REQUEST carries it once known.
        self.cookie = 0

    def send(self, data):
        self.sock.sendto(data, self.server)

    def send_env(self, env):
        data = env.SerializeToString()
        self.send(data)
        return data

    def _receive(self, timeout):
        """Receives one datagram (at most `timeout` seconds); True if one came."""
        if timeout <= 0:
            timeout = 0.0
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        data, addr = self.sock.recvfrom(70_000)
        if addr != self.server:
            return True  # spec 2: only datagrams from the server count
        env = self.pb.Envelope()
        try:
            env.ParseFromString(data)
        except Exception as e:  # noqa: BLE001
            self.violations.append(f"undecodable datagram from the server ({e}): {data.hex()}")
            return True
        if env.version != VERSION:
            self.violations.append(f"server message with version {env.version}")
        if env.session_id == 0:
            self.violations.append(f"server message without session_id: {env}")
        if env.incarnation == 0:
            self.violations.append(f"server message without incarnation (spec 7.1): {env}")
        if len(env.metadata) != 0:
            self.violations.append(f"server message with metadata (spec 3, field 13): {env}")
        if env.cookie != 0:
            # spec 7.4: a PONG carries the cookie, and so does any answer
            # to a request from an unverified source.
            self.cookie = env.cookie
        self.inbox.append((data, env))
        return True

    def take(self, pred, timeout):
        """The first received message matching `pred`, waiting at most
        `timeout` seconds for it; None if none came. Others stay in the inbox."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (raw, env) in enumerate(self.inbox):
                if pred(env):
                    del self.inbox[i]
                    return raw, env
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._receive(remaining)

    def drain(self):
        """Reads what has already arrived and empties the inbox; returns it."""
        for _ in range(100_000):
            if not self._receive(0):
                break
        out, self.inbox = self.inbox, []
        return out

    def fence(self, session, about=None):
        """Sends a PING and waits for its PONG: every answer the server sent
        to what this socket sent before the PING has arrived by then (one
        socket each side, loopback keeps datagrams in order, and the server
        handles the datagrams of a socket in the order they came). Returns
        the messages that arrived before the PONG and match `about` (all by
        default: answers to other calls, such as the REPLY a server sends
        when an asynchronous call ends, are no business of the caller)."""
        self.fence_id += 1
        fid = self.fence_id
        ping = session.ping_env(fid)
        for wait in COPY_WAITS:
            self.send_env(ping)
            got = self.take(lambda e, fid=fid: e.type == self.pb.PONG and e.session_id == session.id and e.request_id == fid, wait)
            if got is not None:
                # Everything in the inbox arrived before the PONG.
                before, self.inbox = self.inbox, []
                return [m for m in before if about is None or about(m[1])]
        raise CheckFailed(f"fence: no PONG for PING {fid} after {len(COPY_WAITS)} copies")


# ---------------------------------------------------------------------------
# A client session (spec 6).


class Session:
    def __init__(self, peer, name):
        self.peer = peer
        self.pb = peer.pb
        self.wire = peer.wire
        self.name = name
        self.id = random.SystemRandom().getrandbits(64) or 1  # spec 6.1
        self.next_id = 1  # spec 6.2
        self.finished = set()
        self.ack_up_to = 0  # spec 6.3: L
        self.incarnation = 0  # spec 7.1: the last one the server showed

    def take_id(self):
        n = self.next_id
        self.next_id += 1
        return n

    def finish(self, n):
        """spec 6.3: the call is finished; L advances over finished ids."""
        self.finished.add(n)
        while self.ack_up_to + 1 in self.finished:
            self.ack_up_to += 1

    def ping_env(self, request_id=0, **extra):
        pb = self.pb
        env = pb.Envelope(version=VERSION, type=pb.PING, session_id=self.id, request_id=request_id)
        for k, v in extra.items():
            setattr(env, k, v)
        return env

    def ping(self):
        """spec 7.3: PING until a PONG; learns the incarnation."""
        pb = self.pb
        rid = self.next_id  # spec 6.2: any value; ours: the next call's id
        env = self.ping_env(rid)
        for attempt, wait in enumerate(COPY_WAITS, start=1):
            env.attempt = attempt
            self.wire.send_env(env)
            got = self.wire.take(lambda e: e.session_id == self.id and e.type == pb.PONG and e.request_id == rid, wait)
            if got is not None:
                self.incarnation = got[1].incarnation
                return got
        raise CheckFailed(f"{self.name}: no PONG after {len(COPY_WAITS)} PINGs")

    def request(self, rid, method, message, *, protocol=None, attempt=1, incarnation=None,
                want_accept=False, idempotent=None, deadline_us=0, ack_up_to=None, payload=None):
        """A REQUEST copy (spec 4, 7.2). `incarnation` defaults to the one the
        session knows; `ack_up_to` to the session's L."""
        pb = self.pb
        info = self.peer.methods[method]
        env = pb.Envelope(
            version=VERSION,
            type=pb.REQUEST,
            request_id=rid,
            session_id=self.id,
            service=SERVICE,
            method_id=info["id"],
            incarnation=self.incarnation if incarnation is None else incarnation,
            deadline_us=deadline_us,
            attempt=attempt,
            payload=message.SerializeToString() if payload is None else payload,
            protocol=info["protocol"] if protocol is None else protocol,
            ack_up_to=self.ack_up_to if ack_up_to is None else ack_up_to,
            want_accept=want_accept,
            idempotent=info["idempotent"] if idempotent is None else idempotent,
            cookie=self.wire.cookie,
        )
        return env

    def is_answer_to(self, rid):
        return lambda e: e.session_id == self.id and e.request_id == rid and e.type != self.pb.PONG

    def ack(self, rid):
        """spec 6.4: ACK of an RRA answer, carrying the current L."""
        pb = self.pb
        self.wire.send_env(pb.Envelope(version=VERSION, type=pb.ACK, session_id=self.id,
                                       request_id=rid, ack_up_to=self.ack_up_to))

    def call(self, method, message, **kw):
        """A whole call (spec 8, 12): PING first if no incarnation is known
        for a non-idempotent request, copies with a growing attempt until an
        answer, polling after ACCEPT or IN_PROGRESS, ACK for RRA. Returns
        (raw, env, copies) of the answer (REPLY or ERROR)."""
        pb = self.pb
        info = self.peer.methods[method]
        idempotent = kw.get("idempotent", info["idempotent"])
        if not idempotent and self.incarnation == 0:
            self.ping()
        rid = self.take_id()
        env = self.request(rid, method, message, **kw)
        copies = 0
        registered = False
        poll = 0.05
        start = time.monotonic()
        waits = iter(COPY_WAITS)
        while True:
            copies += 1
            env.attempt = copies
            env.ack_up_to = max(env.ack_up_to, self.ack_up_to)
            self.wire.send_env(env)
            if registered:
                wait = poll
                poll = min(poll * 2, MAX_POLL_INTERVAL)
            else:
                wait = next(waits, None)
                if wait is None:
                    raise CheckFailed(f"{self.name}: {method} call {rid}: no answer after {copies - 1} copies")
            got = self.wire.take(self.is_answer_to(rid), wait)
            while got is not None and got[1].type in (pb.ACCEPT, pb.IN_PROGRESS):
                registered = True
                # Stay for the rest of this wait: the answer may follow.
                got = self.wire.take(self.is_answer_to(rid), wait)
            if got is not None:
                raw, ans = got
                if ans.type in (pb.REPLY, pb.ERROR):
                    if ans.incarnation:
                        self.incarnation = ans.incarnation
                    self.finish(rid)
                    if env.protocol == pb.EXCHANGE_PROTOCOL_RRA:
                        self.ack(rid)
                    return raw, ans, copies
            if time.monotonic() - start > POLL_LIMIT:
                raise CheckFailed(f"{self.name}: {method} call {rid}: no answer within {POLL_LIMIT} s")


# ---------------------------------------------------------------------------
# The peer.


class Peer:
    def __init__(self, args):
        self.pb, self.demo = load(args.gen)
        proto_dir = args.proto or os.path.join(args.gen, "proto")
        host, port = args.server.rsplit(":", 1)
        self.wire = Wire(self.pb, (host, int(port)))
        pb = self.pb
        # What demo.proto says of each method; the id is computed (spec 3)
        # and compared with the one demo.proto writes in check 0.
        self.proto = methods_from_proto(os.path.join(proto_dir, "demo.proto"))
        protocols = {"R": pb.EXCHANGE_PROTOCOL_R, "RR": pb.EXCHANGE_PROTOCOL_RR, "RRA": pb.EXCHANGE_PROTOCOL_RRA}
        self.methods = {
            name: {
                "id": fnv1a32(f"{SERVICE}/{name}"),
                "protocol": protocols[info["attrs"].get("protocol", "RR")],
                "idempotent": info["attrs"].get("idempotent") is True,
            }
            for name, info in self.proto.items()
        }
        self.observer = Session(self, "observer")
        # (session, request id) of the requests gather() has sent.
        self.sent = set()

    def counter(self):
        """The counter's (value, executions) through Get: idempotent, so an
        untracked request that changes nothing (demo.proto: `executions` counts
        how many times a non-idempotent operation ran)."""
        _, ans, _ = self.observer.call("Get", self.demo.Empty())
        if ans.type != self.pb.REPLY or ans.HasField("status"):
            raise CheckFailed(f"Get failed: {ans}")
        c = self.demo.Count.FromString(ans.payload)
        return c.value, c.executions

    def assert_server_message(self, name, env, ty, session, rid, incarnation=None, allowed=()):
        """spec 4: the fields every server message carries, and nothing but
        the fields its type uses."""
        pb = self.pb
        tname = pb.MessageType.Name(ty)
        got = pb.MessageType.Name(env.type) if env.type in pb.MessageType.values() else str(env.type)
        check(f"{name}: type is {tname}", env.type == ty, f"got {got}: {env}", quiet=True)
        check(f"{name}: version 1", env.version == VERSION, str(env), quiet=True)
        check(f"{name}: session_id echoed", env.session_id == session.id, str(env), quiet=True)
        check(f"{name}: request_id echoed", env.request_id == rid, str(env), quiet=True)
        check(f"{name}: incarnation set", env.incarnation != 0, str(env), quiet=True)
        if incarnation is not None:
            check(f"{name}: the server's incarnation", env.incarnation == incarnation,
                  f"{env.incarnation:#x} != {incarnation:#x}", quiet=True)
        # spec 7.4: an answer to an unverified source carries its cookie.
        base = {"version", "type", "session_id", "request_id", "incarnation", "cookie"}
        if ty == pb.PONG:
            # spec 7.4: a PONG to a datagram carries the address's cookie.
            check(f"{name}: PONG carries a cookie", env.cookie != 0, str(env), quiet=True)
            base.add("cookie")
        extra = {f.name for f, _ in env.ListFields()} - base - set(allowed)
        check(f"{name}: {tname} carries nothing else", not extra, f"unexpected fields {sorted(extra)}: {env}", quiet=True)
        inc = "" if incarnation is None else " and the incarnation"
        only = f" (and at most {', '.join(allowed)})" if allowed else ""
        check(f"{name}: {tname} with version 1, the session_id and request_id echoed{inc}, nothing else{only}", True)


# ---------------------------------------------------------------------------
# Check 0: the generated modules encode as the specification's examples.


def check_encoding(p):
    pb, demo = p.pb, p.demo
    sid, inc = 0x0102030405060708, 0x1122334455667788
    # spec 3, field 7.
    check("method id of demo.v1.Counter/Increment is 0x86197da1", fnv1a32("demo.v1.Counter/Increment") == 0x86197DA1)
    want = {"Increment", "IncrementAcked", "Get", "Withdraw", "Slow", "Compute", "Nudge", "Echo"}
    check("demo.proto declares the methods this peer calls", want <= set(p.methods), str(sorted(p.methods)))
    for name, info in p.methods.items():
        written = p.proto[name]["id"] or 0
        check(f"method id of {name} (FNV-1a) is the one demo.proto writes", written == info["id"],
              f"{written:#x} != {info['id']:#x}")
    pr = {n: pb.ExchangeProtocol.Name(m["protocol"]) for n, m in p.methods.items()}
    check("demo.proto's attributes: Increment, Withdraw, Slow RR; IncrementAcked, Compute RRA; Nudge R",
          [pr[n] for n in ("Increment", "Withdraw", "Slow", "IncrementAcked", "Compute", "Nudge")]
          == ["EXCHANGE_PROTOCOL_RR"] * 3 + ["EXCHANGE_PROTOCOL_RRA"] * 2 + ["EXCHANGE_PROTOCOL_R"], str(pr))
    check("demo.proto's attributes: Get and Echo idempotent, the others not",
          {n for n, m in p.methods.items() if m["idempotent"]} == {"Get", "Echo"}, str(p.methods))
    # spec 20.
    ping = pb.Envelope(version=1, type=pb.PING, request_id=1, session_id=sid, attempt=1)
    check("PING encodes as spec 20", ping.SerializeToString().hex() == "080110071801210807060504030201" + "5001",
          ping.SerializeToString().hex())
    pong = pb.Envelope.FromString(bytes.fromhex("08011008180121080706050403020141" + "8877665544332211"))
    check("PONG of spec 20 decodes", (pong.type, pong.request_id, pong.session_id, pong.incarnation) == (pb.PONG, 1, sid, inc), str(pong))
    req = pb.Envelope(version=1, type=pb.REQUEST, request_id=1, session_id=sid, service="demo.v1.Counter",
                      method_id=0x86197DA1, incarnation=inc, deadline_us=250000, attempt=1,
                      payload=demo.Amount(delta=5).SerializeToString(), protocol=pb.EXCHANGE_PROTOCOL_RR)
    want = ("080110011801210807060504030201"
            "2a0f64656d6f2e76312e436f756e746572"
            "38a1fbe5b008"
            "418877665544332211"
            "4890a10f"
            "5001"
            "6202080a"
            "7002")
    check("REQUEST encodes as spec 20", req.SerializeToString().hex() == want, req.SerializeToString().hex())
    reply = pb.Envelope.FromString(bytes.fromhex("080110021801210807060504030201" "418877665544332211500162040805" "1001"))
    count = demo.Count.FromString(reply.payload)
    check("REPLY of spec 20 decodes to Count {5, 1}", (reply.type, count.value, count.executions) == (pb.REPLY, 5, 1), str(reply))
    ack = pb.Envelope(version=1, type=pb.ACK, request_id=2, session_id=sid, ack_up_to=2)
    check("ACK encodes as spec 20", ack.SerializeToString().hex() == "0801100318022108070605040302017802", ack.SerializeToString().hex())
    check("rpc.v1.ServerRestarted is declared in envelope.proto (spec 19)",
          pb.ServerRestarted.DESCRIPTOR.full_name == "rpc.v1.ServerRestarted")


# ---------------------------------------------------------------------------
# Check 1: PING / PONG (spec 7.3).


def check_ping(p):
    pb = p.pb
    s = Session(p, "ping")
    # The fields a PING needs: version, type, session_id; request_id echoed.
    rid = 4242
    s.wire.send_env(s.ping_env(rid))
    got = s.wire.take(lambda e: e.session_id == s.id and e.type == pb.PONG, COPY_WAITS[-1])
    check("PING with version, type, session_id and request_id is answered", got is not None, "no PONG")
    pong = got[1]
    p.assert_server_message("PONG", pong, pb.PONG, s, rid)
    incarnation = pong.incarnation
    # The least PING: no request_id; fields it ignores (attempt, ack_up_to).
    s.wire.send_env(s.ping_env(0))
    got = s.wire.take(lambda e: e.session_id == s.id and e.type == pb.PONG, COPY_WAITS[-1])
    check("PING without request_id is answered", got is not None, "no PONG")
    p.assert_server_message("PONG to a PING without request_id", got[1], pb.PONG, s, 0, incarnation)
    s.wire.send_env(s.ping_env(7, attempt=3, ack_up_to=99))
    got = s.wire.take(lambda e: e.session_id == s.id and e.type == pb.PONG, COPY_WAITS[-1])
    check("PING with attempt and ack_up_to (ignored) is answered", got is not None, "no PONG")
    p.assert_server_message("PONG to a PING with attempt and ack_up_to", got[1], pb.PONG, s, 7, incarnation)
    # A PING creates no session (spec 7.3), so its ack_up_to 99 raised no
    # floor: this session's request 1 runs.
    s.incarnation = incarnation
    v0, e0 = p.counter()
    _, ans, _ = s.call("Increment", p.demo.Amount(delta=1))
    check("a PING's ack_up_to does not raise a floor (request 1 runs after PING ack_up_to 99)",
          ans.type == pb.REPLY and not ans.HasField("status"), str(ans))
    check("every server message of this session named the PONG's incarnation", ans.incarnation == incarnation,
          f"{ans.incarnation:#x} != {incarnation:#x}")
    v1, e1 = p.counter()
    check("that request ran once", (v1, e1) == (v0 + 1, e0 + 1), f"{(v0, e0)} -> {(v1, e1)}")
    return incarnation


# ---------------------------------------------------------------------------
# Check 2: RR with retransmitted copies (spec 5, 8.2, 9.2, 10).


def check_rr_copies(p):
    pb, demo = p.pb, p.demo
    s = Session(p, "rr-copies")
    s.ping()
    inc = s.incarnation
    v0, e0 = p.counter()
    rid = s.take_id()
    delta = 1000
    copies = [s.request(rid, "Increment", demo.Amount(delta=delta), attempt=a) for a in (1, 2, 3)]
    for c in copies:
        check(f"copy {c.attempt} names the incarnation", c.incarnation == inc)
        s.wire.send_env(c)
    # Three copies: three answers, each the stored REPLY (a copy that meets
    # the request running gets IN_PROGRESS, spec 9.2 step 5; then poll).
    replies = []
    attempt = 3
    for _ in range(20):
        if len(replies) == 3:
            break
        got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
        if got is None:
            attempt += 1
            s.wire.send_env(s.request(rid, "Increment", demo.Amount(delta=delta), attempt=attempt))
            continue
        raw, env = got
        check("an answer to a copy is REPLY or IN_PROGRESS", env.type in (pb.REPLY, pb.IN_PROGRESS), str(env))
        if env.type == pb.IN_PROGRESS:
            p.assert_server_message("IN_PROGRESS", env, pb.IN_PROGRESS, s, rid, inc)
            attempt += 1
            s.wire.send_env(s.request(rid, "Increment", demo.Amount(delta=delta), attempt=attempt))
            continue
        replies.append((raw, env))
    check("three copies got three REPLYs", len(replies) == 3, f"{len(replies)} REPLYs")
    raw, env = replies[0]
    p.assert_server_message("REPLY", env, pb.REPLY, s, rid, inc, allowed=("attempt", "payload"))
    check("the REPLY has no status (success)", not env.HasField("status"), str(env))
    count = demo.Count.FromString(env.payload)
    check("the REPLY's Count is the counter after one execution",
          (count.value, count.executions) == (v0 + delta, e0 + 1), f"{count} after {(v0, e0)}")
    check("REPLY.attempt names a copy that was sent", 1 <= env.attempt <= attempt, str(env.attempt))
    check("the three REPLYs are byte-identical (spec 9.2: the stored answer, byte for byte)",
          all(r == raw for r, _ in replies), " / ".join(r.hex() for r, _ in replies))
    check("the three REPLY payloads are byte-identical", all(e.payload == env.payload for _, e in replies))
    # A fourth copy, after the answer: the same stored REPLY again.
    attempt += 1
    s.wire.send_env(s.request(rid, "Increment", demo.Amount(delta=delta), attempt=attempt))
    got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    check("a copy sent after the REPLY arrived gets the same REPLY, byte for byte", got is not None and got[0] == raw,
          "no answer" if got is None else got[0].hex())
    v1, e1 = p.counter()
    check("the request ran exactly once (executions +1, value +delta)", (v1, e1) == (v0 + delta, e0 + 1),
          f"{(v0, e0)} -> {(v1, e1)}")
    s.finish(rid)


# ---------------------------------------------------------------------------
# Check 3: RRA, ACK, and a late duplicate after the ACK (spec 6.3, 6.4).


def check_rra_late_duplicate(p):
    pb, demo = p.pb, p.demo
    s = Session(p, "rra-late")
    s.ping()
    inc = s.incarnation
    # Call 1's first copies are "lost": it stays unfinished, so L stays 0 and
    # the session's floor stays below call 2 while call 2 is answered and
    # acknowledged.
    hole = s.take_id()
    rid = s.take_id()
    delta = 20_000
    v0, e0 = p.counter()
    first = s.request(rid, "IncrementAcked", demo.Amount(delta=delta), attempt=1)
    check("the RRA request asks for protocol RRA", first.protocol == pb.EXCHANGE_PROTOCOL_RRA)
    check("the RRA request's ack_up_to (L) is below its id: call 1 is unfinished", first.ack_up_to == 0)
    first_raw = s.wire.send_env(first)
    got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    attempt = 1
    while got is None and attempt < len(COPY_WAITS):  # safety net
        attempt += 1
        s.wire.send_env(s.request(rid, "IncrementAcked", demo.Amount(delta=delta), attempt=attempt))
        got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[attempt - 1])
    check("the RRA request is answered", got is not None, "no answer")
    raw, env = got
    p.assert_server_message("RRA REPLY", env, pb.REPLY, s, rid, inc, allowed=("attempt", "payload"))
    count = demo.Count.FromString(env.payload)
    check("the RRA REPLY's Count", (count.value, count.executions) == (v0 + delta, e0 + 1), str(count))
    s.finish(rid)
    check("L is still 0 after call 2 finished (call 1 is not)", s.ack_up_to == 0, str(s.ack_up_to))
    s.wire.fence(s)  # answers to the copies before the ACK are in; forget them
    s.ack(rid)  # ACK 2, ack_up_to 0
    # The late duplicate: the first copy again, byte for byte.
    s.wire.send(first_raw)
    before = s.wire.fence(s, lambda e: e.session_id == s.id)
    stray = [e for _, e in before]
    check("ACK and the late duplicate after it get no answer (spec 6.4: dropped at the done marker)",
          not stray, "; ".join(str(e) for e in stray))
    v1, e1 = p.counter()
    check("the late duplicate did not run (executions +1 and value +delta in all)",
          (v1, e1) == (v0 + delta, e0 + 1), f"{(v0, e0)} -> {(v1, e1)}")
    # Call 1 gets through at last: L becomes 2, the floor passes both.
    s.next_id = hole
    _, ans, _ = s.call("Increment", demo.Amount(delta=0))
    s.next_id = rid + 1
    check("call 1 is answered", ans.type == pb.REPLY and not ans.HasField("status"), str(ans))
    check("L is 2 once calls 1 and 2 are finished", s.ack_up_to == 2, str(s.ack_up_to))
    # Call 3 carries ack_up_to 2: the floor rises past call 2 (spec 6.3).
    _, ans, _ = s.call("Increment", demo.Amount(delta=0))
    check("call 3 (carrying ack_up_to 2) is answered", ans.type == pb.REPLY, str(ans))
    s.wire.send(first_raw)
    second = s.request(rid, "IncrementAcked", demo.Amount(delta=delta), attempt=2)
    s.wire.send_env(second)
    before = s.wire.fence(s, lambda e: e.session_id == s.id)
    check("copies of call 2 below the floor get no answer (spec 6.3: dropped)", not before,
          "; ".join(str(e) for _, e in before))
    v2, e2 = p.counter()
    check("they did not run", (v2, e2) == (v1, e1 + 2), f"{(v1, e1)} -> {(v2, e2)} (calls 1 and 3 ran)")


# ---------------------------------------------------------------------------
# Check 4: ACCEPT and polling (spec 8.3, 12.2).


def poll_until_answer(p, s, env, name):
    """Polls (same request, attempt + 1 each, want_accept kept) until REPLY
    or ERROR; returns (raw, env, answers before it)."""
    pb = p.pb
    interim = []
    interval = 0.05
    start = time.monotonic()
    while time.monotonic() - start < POLL_LIMIT:
        env.attempt += 1
        s.wire.send_env(env)
        got = s.wire.take(s.is_answer_to(env.request_id), max(interval, COPY_WAITS[0]))
        if got is not None and got[1].type in (pb.REPLY, pb.ERROR):
            return got[0], got[1], interim
        if got is not None:
            interim.append(got[1])
            # Polls go at the polling pace (spec 8.3): wait out the interval.
            s.wire.take(lambda e: False, interval)
            interval = min(interval * 2, MAX_POLL_INTERVAL)
    raise CheckFailed(f"{name}: no answer within {POLL_LIMIT} s of polling")


def check_accept_and_poll(p):
    pb, demo = p.pb, p.demo
    for method, protocol in (("Slow", pb.EXCHANGE_PROTOCOL_RR), ("Compute", pb.EXCHANGE_PROTOCOL_RRA)):
        s = Session(p, f"accept-{method}")
        s.ping()
        inc = s.incarnation
        v0, e0 = p.counter()
        rid = s.take_id()
        delta = 300 if method == "Slow" else 4000
        env = s.request(rid, method, demo.Work(millis=300, delta=delta), want_accept=True)
        check(f"{method}: protocol from demo.proto", env.protocol == protocol)
        s.wire.send_env(env)
        got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
        check(f"{method}: the first copy with want_accept is answered", got is not None, "no answer")
        # spec 9.2 step 7: ACCEPT is sent when the request is registered and
        # holds a slot, before it runs (step 8): it comes first.
        p.assert_server_message(f"{method} ACCEPT", got[1], pb.ACCEPT, s, rid, inc)
        raw, ans, interim = poll_until_answer(p, s, env, method)
        for i, e in enumerate(interim):
            p.assert_server_message(f"{method} poll {i + 2} while running", e, pb.ACCEPT, s, rid, inc)
        check(f"{method}: every poll carried want_accept and a growing attempt", env.want_accept and env.attempt >= 2)
        p.assert_server_message(f"{method} REPLY after polling", ans, pb.REPLY, s, rid, inc, allowed=("attempt", "payload"))
        count = demo.Count.FromString(ans.payload)
        check(f"{method}: the REPLY's Count", (count.value, count.executions) == (v0 + delta, e0 + 1), str(count))
        check(f"{method}: REPLY.attempt is the copy that ran (the first)", ans.attempt == 1, str(ans.attempt))
        # Another poll: the stored REPLY again (RR), byte for byte.
        if protocol == pb.EXCHANGE_PROTOCOL_RR:
            env.attempt += 1
            s.wire.send_env(env)
            got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
            check(f"{method}: a poll after the result gets the same REPLY", got is not None and got[0] == raw,
                  "no answer" if got is None else str(got[1]))
            s.finish(rid)
        else:
            s.finish(rid)
            s.wire.fence(s)  # answers to the polls before the ACK are in; forget them
            s.ack(rid)
            env.attempt += 1
            s.wire.send_env(env)
            before = s.wire.fence(s, lambda e: e.session_id == s.id)
            check(f"{method}: after the ACK a poll gets no answer (spec 6.4)", not before,
                  "; ".join(str(e) for _, e in before))
        v1, e1 = p.counter()
        check(f"{method}: ran once", (v1, e1) == (v0 + delta, e0 + 1), f"{(v0, e0)} -> {(v1, e1)}")


# ---------------------------------------------------------------------------
# Check 5: a typed raise (spec 13.2).


def check_typed_raise(p):
    pb, demo = p.pb, p.demo
    s = Session(p, "raise")
    v0, e0 = p.counter()
    asked = v0 + 1_000_000
    raw, ans, _ = s.call("Withdraw", demo.Amount(delta=asked))
    p.assert_server_message("Withdraw raising", ans, pb.REPLY, s, ans.request_id, s.incarnation,
                            allowed=("attempt", "status"))
    st = ans.status
    check("the raise travels as a REPLY with a status (it ran)", ans.type == pb.REPLY and ans.HasField("status"), str(ans))
    check("its code is FAILED_PRECONDITION", st.code == FAILED_PRECONDITION, str(st.code))
    check("details_type names demo.v1.Overdrawn", st.details_type == "demo.v1.Overdrawn", st.details_type)
    err = demo.Overdrawn.FromString(st.details)
    check("details decode as Overdrawn {balance, requested}", (err.balance, err.requested) == (v0, asked), str(err))
    check("the REPLY carries no payload", ans.payload == b"", ans.payload.hex())
    v1, _ = p.counter()
    check("the counter is unchanged", v1 == v0, f"{v0} -> {v1}")


# ---------------------------------------------------------------------------
# Check 6: a request whose deadline passed before its slot came free (spec
# 9.2 step 8, 11).


def check_deadline(p, filler_millis):
    pb, demo = p.pb, p.demo
    v0, e0 = p.counter()
    # Fill every handler slot (spec 9.2 step 7: 1024 run at once) with
    # requests that sleep, over four sessions (each well inside the
    # per-session history cap, spec 10).
    sessions = [Session(p, f"filler-{i}") for i in range(4)]
    for s in sessions:
        s.ping()
    fillers = {}
    for i in range(HANDLER_SLOTS):
        s = sessions[i % len(sessions)]
        rid = s.take_id()
        fillers[(s.id, rid)] = s.request(rid, "Slow", demo.Work(millis=filler_millis, delta=0), want_accept=True)
    answers = gather(p, fillers, "filler")
    kinds = {pb.MessageType.Name(e.type) for e in answers.values()}
    check(f"all {HANDLER_SLOTS} fillers ACCEPTed", kinds == {"ACCEPT"} and len(answers) == len(fillers), str(kinds))

    # The probe: an Increment with a deadline of 1 microsecond.
    s = Session(p, "deadline")
    s.ping()
    rid = s.take_id()
    delta = 5_000_000
    probe = s.request(rid, "Increment", demo.Amount(delta=delta), deadline_us=1)
    s.wire.send_env(probe)
    # A second copy (no want_accept): the probe is registered and waits for a
    # slot, so it is IN_PROGRESS (spec 9.2 step 5).
    probe.attempt = 2
    s.wire.send_env(probe)
    got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    check("a copy of the waiting probe gets IN_PROGRESS", got is not None and got[1].type == pb.IN_PROGRESS,
          "no answer" if got is None else str(got[1]))
    p.assert_server_message("IN_PROGRESS of the probe", got[1], pb.IN_PROGRESS, s, rid, s.incarnation)
    # Every filler still runs after that: so every slot was busy when the
    # probe arrived, and it can start only after a filler ends, long after
    # its deadline (arrival + 1 us) passed. (The fence first: no answer to
    # an earlier copy of a filler is taken for an answer to this poll.)
    p.wire.fence(s)
    again = gather(p, fillers, "filler poll")
    kinds = {pb.MessageType.Name(e.type) for e in again.values()}
    check("precondition: every filler still ran after the probe was registered "
          f"(else raise the fillers' {filler_millis} ms)", kinds == {"ACCEPT"} and len(again) == len(fillers), str(kinds))
    raw, ans, interim = poll_until_answer(p, s, probe, "deadline probe")
    check("polls of the waiting probe get IN_PROGRESS", all(e.type == pb.IN_PROGRESS for e in interim),
          "; ".join(str(e) for e in interim))
    p.assert_server_message("deadline ERROR", ans, pb.ERROR, s, rid, s.incarnation, allowed=("attempt", "status"))
    check("the probe's answer is ERROR DEADLINE_EXCEEDED (spec 9.2 step 8, 13.3)",
          ans.type == pb.ERROR and ans.status.code == DEADLINE_EXCEEDED, str(ans))
    probe.attempt += 1
    s.wire.send_env(probe)
    got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    check("a later copy gets the same stored ERROR, byte for byte (spec 13.3: stored)",
          got is not None and got[0] == raw, "no answer" if got is None else str(got[1]))
    s.finish(rid)
    # Let the fillers end (poll them for their REPLYs), then count.
    done = {}
    for _ in range(60):
        todo = {k: v for k, v in fillers.items() if k not in done}
        if not todo:
            break
        for k, e in gather(p, todo, "filler result").items():
            if e.type == pb.REPLY:
                done[k] = e
        if len(done) < len(fillers):
            p.wire.take(lambda e: False, 0.5)  # the polling pace
    check("every filler ended with a REPLY", len(done) == len(fillers), f"{len(done)} of {len(fillers)}")
    v1, e1 = p.counter()
    check("the probe did not run (executions + fillers only, value unchanged)",
          (v1, e1) == (v0, e0 + HANDLER_SLOTS), f"{(v0, e0)} -> {(v1, e1)}")


def gather(p, requests, name, window=64, rounds=6):
    """Sends every request of {(session, id): envelope} (in windows, so that
    no socket buffer overflows) and collects one answer to each; copies
    again (attempt + 1) what got none. Returns {(session, id): answer}."""
    answers = {}
    for _ in range(rounds):
        todo = [k for k in requests if k not in answers]
        if not todo:
            break
        for i in range(0, len(todo), window):
            chunk = set(todo[i:i + window])
            for k in todo[i:i + window]:
                env = requests[k]
                if k in p.sent:
                    env.attempt += 1  # every further copy: attempt + 1
                p.sent.add(k)
                p.wire.send_env(env)
            deadline = time.monotonic() + COPY_WAITS[1]
            while chunk:
                got = p.wire.take(lambda e: (e.session_id, e.request_id) in chunk, deadline - time.monotonic())
                if got is None:
                    break
                key = (got[1].session_id, got[1].request_id)
                answers[key] = got[1]
                chunk.discard(key)
    if len(answers) != len(requests):
        raise CheckFailed(f"{name}: {len(requests) - len(answers)} of {len(requests)} got no answer")
    return answers


# ---------------------------------------------------------------------------
# Check 8: malformed and unexpected datagrams (spec 9.1, 9.2, 14, 15).


def padded_to(env, size):
    """`env` made exactly `size` bytes by unknown fields appended to its
    payload (spec: unknown fields are skipped, so the payload still decodes
    as the method's request; metadata would hit the 64-entry / 16 KiB cap).
    A varint length growing by a byte can skip a size: a second field of a
    few bytes fills the gap."""
    def field(number, n):
        out = bytearray()
        v = (number << 3) | 2
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
        v = n
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
        return bytes(out) + b"x" * n

    base = env.payload
    for extra in range(4):
        head = base + (field(14, extra) if extra else b"")
        env.payload = head
        start = env.ByteSize()
        for k in range(max(0, size - start - 8), size - start + 1):
            env.payload = head + field(15, k)
            if env.ByteSize() == size:
                return env
    raise CheckFailed(f"cannot pad a request to {size} bytes")


def check_malformed(p):
    pb, demo = p.pb, p.demo
    s = Session(p, "malformed")
    s.ping()
    inc = s.incarnation
    wire = s.wire
    v0, e0 = p.counter()

    def silent(name, data, session=None):
        session = session or s
        wire.fence(s)
        wire.send(data)
        # An answer would be for this session, or for session 0.
        before = wire.fence(s, lambda e: e.session_id in (session.id, 0))
        check(f"{name}: dropped, no answer", not before, "; ".join(str(e) for _, e in before))

    def increment(delta, **kw):
        rid = s.take_id()
        env = s.request(rid, "Increment", demo.Amount(delta=delta), **kw)
        s.finish(rid)  # what is sent here gets at most one answer, not waited for
        return env

    def raw_of(env):
        return env.SerializeToString()

    valid = raw_of(increment(1))  # never sent as is
    # Not a protobuf Envelope (spec 9.1 step 2).
    garbage = bytes([0xFF] * 64)
    try:
        pb.Envelope.FromString(garbage)
        decodes = True
    except Exception:  # noqa: BLE001
        decodes = False
    check("the garbage is not a protobuf message", not decodes)
    silent("garbage bytes", garbage)
    silent("an empty datagram (version 0)", b"")
    cut = valid.index(b"demo.v1") + 4
    try:
        pb.Envelope.FromString(valid[:cut])
        decodes = True
    except Exception:  # noqa: BLE001
        decodes = False
    check("the truncated REQUEST does not decode", not decodes)
    silent("a REQUEST truncated inside its service name", valid[:cut])
    head = pb.Envelope.FromString(valid)
    # Fields are written in number order: version, type, request_id, then
    # session_id (field 4, fixed64: a tag byte and 8 bytes).
    sid_at = len(pb.Envelope(version=head.version, type=head.type, request_id=head.request_id).SerializeToString())
    check("session_id follows", valid[sid_at] == 0x21, valid.hex())
    silent("a REQUEST truncated inside its session_id", valid[:sid_at + 4])
    # version 1 written as fixed32 (wire type 5) instead of a varint: not an
    # Envelope as declared (or, read leniently, version 0): dropped either way.
    wrong_wire = bytes([0x0D, 1, 0, 0, 0]) + raw_of(increment(2))[2:]
    silent("a REQUEST whose version has the wrong wire type", wrong_wire)
    # version not 1 (step 3).
    for v in (2, 0, 1 << 31):
        env = increment(3, )
        env.version = v
        silent(f"a REQUEST with version {v}", raw_of(env))
    # Types a server does not take (step 5).
    for t in (0, pb.REPLY, pb.ACCEPT, pb.ERROR, pb.IN_PROGRESS, pb.PONG, 99):
        env = increment(4)
        env.type = t
        silent(f"a message of type {t}", raw_of(env))
    # session_id 0 (step 4), a REQUEST and a PING.
    env = increment(5)
    env.session_id = 0
    silent("a REQUEST with session_id 0", raw_of(env))
    silent("a PING with session_id 0", raw_of(pb.Envelope(version=VERSION, type=pb.PING, request_id=9)))
    # protocol outside 0..3 (spec 9.2 step 1).
    env = increment(6)
    env.protocol = 7
    silent("a REQUEST with protocol 7", raw_of(env))
    # ack_up_to at or above its own id (spec 15): the floor rises first.
    # The session must be one the server knows (spec 6.3): a call that runs
    # (and counts: ran, below) makes it known.
    _, ans, _ = s.call("Increment", demo.Amount(delta=0))
    check("a call makes the session known to the server", ans.type == pb.REPLY, str(ans))
    ran = 1
    env = increment(7)
    env.ack_up_to = env.request_id
    silent("a REQUEST whose ack_up_to is its own id, session known (spec 15: dropped as stale)", raw_of(env))
    s.ack_up_to = max(s.ack_up_to, env.request_id)
    # An ACK for an id the server does not hold (spec 6.4): ignored.
    silent("an ACK for an id the server does not hold",
           raw_of(pb.Envelope(version=VERSION, type=pb.ACK, session_id=s.id, request_id=s.next_id + 1000,
                              ack_up_to=s.ack_up_to)))
    # Over the size limit (spec 14): dropped silently; at the limit: served.
    for size in (MAX_DATAGRAM + 1, MAX_UDP_PAYLOAD):
        env = padded_to(increment(8), size)
        silent(f"a {size}-byte REQUEST (over the {MAX_DATAGRAM}-byte limit)", raw_of(env))
    big_delta = 600
    env = padded_to(increment(big_delta), MAX_DATAGRAM)
    rid = env.request_id
    wire.send_env(env)
    got = wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    check(f"a {MAX_DATAGRAM}-byte REQUEST (at the limit) is served", got is not None and got[1].type == pb.REPLY,
          "no answer" if got is None else str(got[1]))

    # Unknown service, unknown method: ERROR UNIMPLEMENTED (spec 9.2 step 3).
    for name, mutate in (("an unknown service", lambda e: setattr(e, "service", "demo.v1.Nobody")),
                         ("an unknown method id", lambda e: setattr(e, "method_id", 0x12345678))):
        env = increment(9)
        mutate(env)
        wire.drain()
        wire.send_env(env)
        got = wire.take(s.is_answer_to(env.request_id), COPY_WAITS[-1])
        check(f"{name}: answered", got is not None, "no answer")
        p.assert_server_message(f"{name}", got[1], pb.ERROR, s, env.request_id, inc, allowed=("attempt", "status"))
        check(f"{name}: ERROR UNIMPLEMENTED", got[1].status.code == UNIMPLEMENTED, str(got[1].status))
        env.protocol = pb.EXCHANGE_PROTOCOL_R
        env.request_id = s.take_id()
        env.ack_up_to = env.request_id - 1
        s.finish(env.request_id)
        silent(f"{name} with protocol R (never answered, spec 9.2 step 3)", raw_of(env))

    # A payload that is not a valid Amount (a varint cut short): ERROR
    # INVALID_ARGUMENT, not run, stored (spec 9.2 step 8, 13.3, 19).
    env = increment(10)
    env.payload = b"\x08\xff\xff"
    try:
        demo.Amount.FromString(env.payload)
        decodes = True
    except Exception:  # noqa: BLE001
        decodes = False
    check("the bad payload does not decode as Amount", not decodes)
    wire.drain()
    wire.send_env(env)
    got = wire.take(s.is_answer_to(env.request_id), COPY_WAITS[-1])
    check("a REQUEST with an undecodable payload is answered", got is not None, "no answer")
    first_raw, ans = got
    name = "undecodable payload: ERROR INVALID_ARGUMENT (spec 9.2 step 8, 13.3)"
    check("undecodable payload: code INVALID_ARGUMENT", ans.HasField("status") and ans.status.code == INVALID_ARGUMENT,
          str(ans))
    check(name, ans.type == pb.ERROR, str(ans))
    if ans.type == pb.ERROR:
        p.assert_server_message("undecodable payload", ans, pb.ERROR, s, env.request_id, inc,
                                allowed=("attempt", "status"))
    env.attempt = 2
    wire.send_env(env)
    got = wire.take(s.is_answer_to(env.request_id), COPY_WAITS[-1])
    check("undecodable payload: a later copy gets the same stored answer, byte for byte",
          got is not None and got[0] == first_raw, "no answer" if got is None else str(got[1]))

    # Nothing of the above ran but the request at the limit; the server
    # still serves a normal call.
    v1, e1 = p.counter()
    check("only the request at the size limit ran", (v1, e1) == (v0 + big_delta, e0 + ran + 1),
          f"{(v0, e0)} -> {(v1, e1)}")
    after = Session(p, "after-malformed")
    _, ans, _ = after.call("Increment", demo.Amount(delta=1))
    check("a normal call after all of them is served", ans.type == pb.REPLY and not ans.HasField("status"), str(ans))
    v2, e2 = p.counter()
    check("and ran once", (v2, e2) == (v1 + 1, e1 + 1), f"{(v1, e1)} -> {(v2, e2)}")


# ---------------------------------------------------------------------------
# Check 7: a server killed and restarted (spec 7.2).


def before_restart(p):
    pb, demo = p.pb, p.demo
    s = Session(p, "restart")
    s.ping()
    old = s.incarnation
    # Call 1 runs before the crash.
    rid = s.take_id()
    first = s.request(rid, "Increment", demo.Amount(delta=70))
    s.wire.send_env(first)
    got = s.wire.take(s.is_answer_to(rid), COPY_WAITS[-1])
    check("before the restart: call 1 runs", got is not None and got[1].type == pb.REPLY,
          "no answer" if got is None else str(got[1]))
    # Call 2 was registered before the crash and is still running when it
    # comes (an asynchronous Slow of 10 s).
    rid2 = s.take_id()
    slow = s.request(rid2, "Slow", demo.Work(millis=10_000, delta=1), want_accept=True)
    s.wire.send_env(slow)
    got = s.wire.take(s.is_answer_to(rid2), COPY_WAITS[-1])
    check("before the restart: call 2 (Slow) is ACCEPTed", got is not None and got[1].type == pb.ACCEPT,
          "no answer" if got is None else str(got[1]))
    # Call 3's first copy is built before the crash, and delivered after it
    # (a copy late in the network).
    rid3 = s.take_id()
    late = s.request(rid3, "Increment", demo.Amount(delta=300))
    return {"session": s, "old": old, "first": first, "slow": slow, "late": late}


def after_restart(p, st):
    pb, demo = p.pb, p.demo
    s = st["session"]
    old = st["old"]
    v0, e0 = p.counter()
    probe = Session(p, "restart-ping")
    probe.ping()
    new = probe.incarnation
    check("the restarted server shows a new incarnation", new not in (0, old), f"{old:#x} -> {new:#x}")

    def restarted(name, env):
        s.wire.drain()
        s.wire.send_env(env)
        got = s.wire.take(s.is_answer_to(env.request_id), COPY_WAITS[-1])
        check(f"{name}: answered", got is not None, "no answer")
        ans = got[1]
        p.assert_server_message(name, ans, pb.ERROR, s, env.request_id, new, allowed=("attempt", "status"))
        check(f"{name}: ERROR ABORTED", ans.status.code == ABORTED, str(ans.status))
        check(f"{name}: details_type rpc.v1.ServerRestarted", ans.status.details_type == "rpc.v1.ServerRestarted",
              ans.status.details_type)
        pb.ServerRestarted.FromString(ans.status.details)
        check(f"{name}: details decode as the empty ServerRestarted", ans.status.details == b"",
              ans.status.details.hex())
        return ans

    first = st["first"]
    check("the pre-crash copy names the old incarnation", first.incarnation == old)
    restarted("a pre-crash copy of call 1, attempt 1", first)
    first.attempt = 2
    restarted("a copy of call 1, attempt 2", first)
    slow = st["slow"]
    slow.attempt = 2
    restarted("a poll of call 2, running when the server was killed", slow)
    restarted("the first copy of call 3, built before the crash, arriving after it", st["late"])
    v1, e1 = p.counter()
    check("none of them ran at the new incarnation", (v1, e1) == (v0, e0), f"{(v0, e0)} -> {(v1, e1)}")
    for rid in (1, 2, 3):
        s.finish(rid)
    s.incarnation = new  # spec 13.1: the ERROR's incarnation is the new one
    _, ans, _ = s.call("Increment", demo.Amount(delta=5))
    check("a new call naming the new incarnation runs", ans.type == pb.REPLY and not ans.HasField("status"), str(ans))
    v2, e2 = p.counter()
    check("and ran once", (v2, e2) == (v1 + 5, e1 + 1), f"{(v1, e1)} -> {(v2, e2)}")


# ---------------------------------------------------------------------------
# Two disagreements found while writing this peer, since settled: a new
# session's first request below its own floor, and a one-way request naming
# another incarnation.


def check_fresh_session_floor(p):
    """Spec 15: "REQUEST with ack_up_to at or above its own id: the floor
    rises first, so the request is dropped as stale"; spec 6.3: the floor of
    a session the server creates starts at that request's ack_up_to. The
    server creates the session with that floor and runs the request, which
    is at or below it."""
    pb, demo = p.pb, p.demo
    s = Session(p, "fresh-ack")
    s.ping()
    v0, e0 = p.counter()
    env = s.request(1, "Increment", demo.Amount(delta=90_000), ack_up_to=1)
    s.wire.fence(s)
    s.wire.send_env(env)
    before = s.wire.fence(s, lambda e: e.session_id == s.id)
    check("the first REQUEST of a new session whose ack_up_to is its own id gets no answer "
          "(spec 15: dropped as stale)", not before, "; ".join(str(e) for _, e in before))
    v1, e1 = p.counter()
    check("and did not run", (v1, e1) == (v0, e0), f"{(v0, e0)} -> {(v1, e1)}")


def check_ownership_and_verification(p):
    """Spec 6.6: a session belongs to the address that created it; a copy
    from another address is refused (PERMISSION_DENIED) and gets nothing of
    the session. Spec 7.4: an answer more than three times the size of the
    request it answers, to an address not verified by a cookie, comes as a
    PONG with the cookie; with the cookie, the answer itself comes."""
    pb, demo = p.pb, p.demo
    s = Session(p, "owner")
    s.ping()
    raw, ans, _ = s.call("Increment", demo.Amount(delta=1))
    check("ownership: the owner's call is answered", ans.type == pb.REPLY, str(ans))
    other = Wire(pb, p.wire.server)
    try:
        copy = s.request(1, "Increment", demo.Amount(delta=1), attempt=2)
        copy.cookie = 0
        other.send_env(copy)
        got = other.take(lambda e: e.session_id == s.id and e.request_id == 1, COPY_WAITS[-1])
        check("a copy of another address's request gets ERROR PERMISSION_DENIED (spec 6.6)",
              got is not None and got[1].type == pb.ERROR and got[1].status.code == 7,
              "no answer" if got is None else str(got[1]))
        check("and never the stored reply", got is None or got[0] != raw)

        t = Session(p, "unverified")
        t.wire = other  # never sent a PING: no cookie
        rid = t.take_id()
        big = t.request(rid, "Echo", demo.Blob(data=b"x" * 3000), want_accept=True)
        big.cookie = 0  # not the cookie the ERROR above carried: unverified
        other.send_env(big)
        got = other.take(lambda e: e.session_id == t.id and e.type == pb.REPLY, COPY_WAITS[-1] * 4)
        check("an unverified address gets answers up to three times its request (the echo's REPLY)",
              got is not None, "no REPLY")
        check("an answer to an unverified address carries the address's cookie (spec 7.4)",
              got is not None and got[1].cookie != 0, "no REPLY" if got is None else str(got[1]))
        other.drain()  # the ACCEPT that came before the REPLY
        poll = t.request(rid, "Echo", None, payload=b"", want_accept=True, attempt=2)
        poll.cookie = 0
        sent = other.send_env(poll)
        got = other.take(lambda e: e.session_id == t.id and e.request_id == rid, COPY_WAITS[-1])
        check("a bare poll of a stored 3,000-byte answer from an unverified address gets a PONG "
              "with a cookie, at most three times the poll (spec 7.4)",
              got is not None and got[1].type == pb.PONG and got[1].cookie != 0 and len(got[0]) <= 3 * len(sent),
              "no answer" if got is None else f"{len(got[0])} bytes for {len(sent)}: {got[1]}")
        poll.attempt = 3
        poll.cookie = other.cookie
        other.send_env(poll)
        got = other.take(lambda e: e.session_id == t.id and e.request_id == rid, COPY_WAITS[-1])
        check("with the cookie, the stored answer comes (spec 7.4)",
              got is not None and got[1].type == pb.REPLY and len(got[1].payload) >= 3000,
              "no answer" if got is None else str(got[1].type))
    finally:
        p.wire.violations.extend(other.violations)
        other.sock.close()


def check_oneway_other_incarnation(p, st):
    """Spec 7.2 and 9.2 step 6: a one-way request naming another non-zero
    incarnation is dropped without an answer and never runs."""
    demo = p.demo
    v0, e0 = p.counter()
    s = Session(p, "oneway-old-incarnation")
    s.incarnation = st["old"]
    s.wire.send_env(s.request(1, "Nudge", demo.Amount(delta=11)))
    s.wire.fence(s)  # the one-way request was handled before the PONG
    v1, e1 = p.counter()
    check("a one-way request naming the old incarnation is dropped and does not run (spec 7.2)",
          (v1, e1) == (v0, e0), f"{(v0, e0)} -> {(v1, e1)}")


# ---------------------------------------------------------------------------


def wait_for_restart():
    print("RESTART", flush=True)
    r, _, _ = select.select([sys.stdin], [], [], 120.0)
    line = sys.stdin.readline() if r else ""
    if line.strip() != "RESTARTED":
        raise CheckFailed(f"restart: expected a line RESTARTED on stdin, got {line!r}")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="HOST:PORT of the demo server (UDP)")
    ap.add_argument("--gen", required=True)
    ap.add_argument("--proto")
    ap.add_argument("--filler-millis", type=int, default=6000,
                    help="how long the requests that fill every handler slot sleep (check 6)")
    args = ap.parse_args()
    p = Peer(args)

    run_check("0. the generated modules and the specification's examples", check_encoding, p)
    run_check("1. PING and PONG", check_ping, p)
    run_check("2. RR: retransmitted copies of one request", check_rr_copies, p)
    run_check("3. RRA: ACK, then a late duplicate", check_rra_late_duplicate, p)
    run_check("4. ACCEPT and polling", check_accept_and_poll, p)
    run_check("5. a typed raise", check_typed_raise, p)
    run_check("8. malformed and unexpected datagrams", check_malformed, p)
    run_check("6. a passed deadline", check_deadline, p, args.filler_millis)
    run_check("6b. a new session's first request at or below its own floor", check_fresh_session_floor, p)
    run_check("6c. a session belongs to its address; unverified addresses", check_ownership_and_verification, p)
    state = run_check("7. restart: before", before_restart, p)
    restarted_ok = run_check("7. restart: the server is killed and started again", wait_for_restart)
    if state is not None and restarted_ok:
        run_check("7. restart: after", after_restart, p, state)
        run_check("7b. a one-way request naming the old incarnation", check_oneway_other_incarnation,
                  p, state)

    def no_violations():
        check("every server message had version 1, a session_id, an incarnation and no metadata",
              not p.wire.violations, "; ".join(p.wire.violations[:5]))
    run_check("every server message", no_violations)

    print(f"conformance: {RESULTS['pass']} passed, {RESULTS['xfail']} expected failures, "
          f"{RESULTS['fail']} failed", flush=True)
    if RESULTS["fail"]:
        sys.exit(1)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
