"""Python gRPC server of the interop fixture (the same semantics as the
Rust one in tests/grpc_interop.rs). Listens on 127.0.0.1 (an ephemeral
port), prints `READY <port>`, serves until stdin closes or 120 s pass.

usage: server.py --gen DIR --version v1|v2
"""
import argparse
import sys
import threading
import time
from concurrent import futures

import grpc

from common import load, user_metadata


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", required=True)
    ap.add_argument("--version", choices=["v1", "v2"], required=True)
    args = ap.parse_args()
    pb2, pb2_grpc, RpcStatus = load(args.gen, args.version)
    from google.protobuf import any_pb2

    lock = threading.Lock()
    state = {"balance": 100, "withdrawals": 0, "last": pb2.DeadlineSeen(), "notes": []}

    class Interop(pb2_grpc.InteropServicer):
        def Echo(self, request, context):
            return request

        def Ping(self, request, context):
            return pb2.Empty()

        def Withdraw(self, request, context):
            with lock:
                if request.delta > state["balance"]:
                    err = pb2.Overdrawn(balance=state["balance"], requested=request.delta)
                    any_ = any_pb2.Any()
                    any_.Pack(err)
                    status = RpcStatus(code=9, message="insufficient funds \u2713", details=[any_])
                    context.set_trailing_metadata([("grpc-status-details-bin", status.SerializeToString())])
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "insufficient funds \u2713")
                state["balance"] -= request.delta
                state["withdrawals"] += 1
                return pb2.Count(value=state["balance"], executions=state["withdrawals"])

        def Fail(self, request, context):
            code = next(c for c in grpc.StatusCode if c.value[0] == request.code)
            context.abort(code, request.message)

        def Sleep(self, request, context):
            remaining = context.time_remaining()
            seen = pb2.DeadlineSeen(had_deadline=remaining is not None and remaining < 1e6,
                                    remaining_ms=int(max(0, min(remaining or 0, 1e6)) * 1000))
            with lock:
                state["last"] = seen
            wait = request.millis / 1000
            if remaining is not None and remaining < wait:
                time.sleep(max(0, remaining))
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while sleeping")
            time.sleep(wait)
            return seen

        def LastSleep(self, request, context):
            with lock:
                return state["last"]

        def Post(self, request, context):
            with lock:
                state["notes"].append(request.text)
            from google.protobuf import empty_pb2
            return empty_pb2.Empty()

        def Posted(self, request, context):
            with lock:
                return pb2.Notes(texts=list(state["notes"]))

        def Meta(self, request, context):
            return pb2.Notes(texts=user_metadata(context.invocation_metadata()))

        if args.version == "v2":
            def Added(self, request, context):
                return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb2_grpc.add_InteropServicer_to_server(Interop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(timeout=120)
    server.stop(grace=0)


if __name__ == "__main__":
    main()
