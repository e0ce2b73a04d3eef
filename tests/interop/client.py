"""Python gRPC client of the interop fixture, calling a server given on
the command line; prints one `PASS <check>` line per check and `ALL OK` at
the end, exits non-zero at the first failure.

usage: client.py --port P --gen DIR --version v1|v2 --peer v1|v2 [--auth TOKEN]

With --auth, it checks the server's bearer-token interceptor instead: calls
without the token, or with a wrong one, are refused with UNAUTHENTICATED
and never run; with it they run.
"""
import argparse
import sys
import time

import grpc

from common import everything, load, same

TIMEOUT = 10.0
# The deadline of the call that must end by its deadline.
DEADLINE = 2.0


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"PASS {name}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--version", choices=["v1", "v2"], required=True)
    ap.add_argument("--peer", choices=["v1", "v2"], required=True)
    ap.add_argument("--auth")
    args = ap.parse_args()
    pb2, pb2_grpc, RpcStatus = load(args.gen, args.version)
    channel = grpc.insecure_channel(f"127.0.0.1:{args.port}")
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    stub = pb2_grpc.InteropStub(channel)
    if args.auth:
        auth_checks(stub, pb2, args.auth)
        print("ALL OK", flush=True)
        return

    # Every field type, every oneof case, round-trips bit for bit.
    for variant in range(5):
        req = everything(pb2, variant)
        reply = stub.Echo(req, timeout=TIMEOUT)
        check(f"echo variant {variant}", same(req, reply), f"{req} != {reply}")
    check("echo empty message", same(stub.Echo(pb2.Everything(), timeout=TIMEOUT), pb2.Everything()))
    check("ping", stub.Ping(pb2.Empty(), timeout=TIMEOUT) == pb2.Empty())

    # Schema evolution: fields the peer does not know.
    if args.version == "v2":
        req = everything(pb2, 0)
        req.added_text = "from v2"
        req.added_numbers.extend([1, -2, 3])
        req.added_inner.label = "v2 inner"
        reply = stub.Echo(req, timeout=TIMEOUT)
        if args.peer == "v1":
            # Our Rust v1 server drops unknown fields (prost); the rest is intact.
            check("v2 fields unknown to a v1 server are ignored",
                  reply.added_text == "" and len(reply.added_numbers) == 0 and not reply.HasField("added_inner")
                  and same(reply, everything(pb2, 0)), str(reply))
            try:
                stub.Added(pb2.Note(text="new"), timeout=TIMEOUT)
                check("new method on a v1 server", False, "no error")
            except grpc.RpcError as e:
                check("new method on a v1 server is UNIMPLEMENTED", e.code() == grpc.StatusCode.UNIMPLEMENTED, str(e))
        else:
            check("v2 fields round-trip on a v2 server", same(req, reply), str(reply))
            note = stub.Added(pb2.Note(text="new", priority=7), timeout=TIMEOUT)
            check("new method on a v2 server", note.text == "new" and note.priority == 7, str(note))

    # A typed raises error, decodable from grpc-status-details-bin.
    count = stub.Withdraw(pb2.Amount(delta=30), timeout=TIMEOUT)
    check("withdraw", count.value == 70, str(count))
    try:
        stub.Withdraw(pb2.Amount(delta=1000), timeout=TIMEOUT)
        check("overdrawn raised", False, "no error")
    except grpc.RpcError as e:
        check("overdrawn code", e.code() == grpc.StatusCode.FAILED_PRECONDITION, str(e.code()))
        check("overdrawn message", e.details() == "insufficient funds \u2713", repr(e.details()))
        raw = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
        check("overdrawn details present", raw is not None)
        status = RpcStatus.FromString(raw)
        check("details status code", status.code == 9, str(status))
        any_ = status.details[0]
        check("details type url", any_.type_url == "type.googleapis.com/interop.v1.Overdrawn", any_.type_url)
        err = pb2.Overdrawn()
        check("details unpack", any_.Unpack(err) and err.balance == 70 and err.requested == 1000, str(err))

    # Every status code with its message.
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        number = code.value[0]
        message = f"failure {number} \u2713 \u00fc"
        try:
            stub.Fail(pb2.Failure(code=number, message=message), timeout=TIMEOUT)
            check(f"status {code.name}", False, "no error")
        except grpc.RpcError as e:
            check(f"status {code.name}", e.code() == code and e.details() == message, f"{e.code()} {e.details()!r}")

    # A deadline set here is the handler's deadline there. The nap is far
    # longer than the deadline, which alone ends the call; the deadline is
    # generous enough that a busy machine still delivers the request before
    # it (no verdict on how fast the call ended).
    try:
        stub.Sleep(pb2.Nap(millis=60000), timeout=DEADLINE)
        check("deadline exceeded", False, "no error")
    except grpc.RpcError as e:
        check("deadline exceeded", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, str(e.code()))
    seen = stub.LastSleep(pb2.Empty(), timeout=TIMEOUT)
    # grpc-timeout carries three significant figures, rounded up by the
    # gRPC core: the handler may see up to 1% more than was asked.
    check("handler saw the deadline",
          seen.had_deadline and 0 < seen.remaining_ms <= int(DEADLINE * 1000 * 1.01), str(seen))
    seen = stub.Sleep(pb2.Nap(millis=1), timeout=TIMEOUT)
    check("no deadline below the timeout", seen.had_deadline and seen.remaining_ms <= int(TIMEOUT * 1000) + 500, str(seen))

    # One-way: an empty reply at once; the note arrives.
    check("post", stub.Post(pb2.Note(text="hello \u2713"), timeout=TIMEOUT) is not None)
    # Polled until it arrives (30 s: a safety net, not the verdict).
    give_up = time.monotonic() + 30.0
    while time.monotonic() < give_up:
        if "hello \u2713" in stub.Posted(pb2.Empty(), timeout=TIMEOUT).texts:
            break
        time.sleep(0.02)
    check("posted", "hello \u2713" in stub.Posted(pb2.Empty(), timeout=TIMEOUT).texts)

    # Metadata.
    notes = stub.Meta(pb2.Empty(), metadata=[("trace-id", "abc-123"), ("x-tenant", "t1")], timeout=TIMEOUT)
    check("metadata", list(notes.texts) == ["trace-id=abc-123", "x-tenant=t1"], str(list(notes.texts)))

    print("ALL OK", flush=True)


def auth_checks(stub, pb2, token):
    # The balance starts at 100: a refused withdrawal must not have run.
    for name, metadata in [
        ("no token", []),
        ("a wrong token", [("authorization", "Bearer not-" + token)]),
        ("a malformed credential", [("authorization", token)]),
    ]:
        try:
            stub.Withdraw(pb2.Amount(delta=30), metadata=metadata, timeout=TIMEOUT)
            check(f"{name} refused", False, "no error")
        except grpc.RpcError as e:
            check(f"{name} refused", e.code() == grpc.StatusCode.UNAUTHENTICATED, f"{e.code()} {e.details()!r}")
    good = [("authorization", "Bearer " + token)]
    count = stub.Withdraw(pb2.Amount(delta=30), metadata=good, timeout=TIMEOUT)
    check("the token's call ran, and it alone", count.value == 70, str(count))


if __name__ == "__main__":
    main()
