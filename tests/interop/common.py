"""Shared by the interop scripts: loading the generated modules and the
edge-value messages both sides send."""
import importlib
import math
import sys

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1
F32_MAX = 3.4028234663852886e38
F32_MIN_SUB = 1.401298464324817e-45  # 2**-149, exact in f32
RESERVED = ("rpc-", "grpc-", ":")
RESERVED_KEYS = {"content-type", "te", "user-agent", "content-length", "accept-encoding", "host"}


def load(gen_dir, version):
    """(messages module, grpc module, google.rpc.Status class)."""
    sys.path.insert(0, gen_dir)
    name = "interop" if version == "v1" else "interop_v2"
    pb2 = importlib.import_module(name + "_pb2")
    grpc_mod = importlib.import_module(name + "_pb2_grpc")
    status_pb2 = importlib.import_module("google.rpc.status_pb2")
    return pb2, grpc_mod, status_pb2.Status


def scalars(pb2):
    big = pb2.Scalars(
        f_double=1.7976931348623157e308, f_float=F32_MAX, f_int32=I32_MAX, f_int64=I64_MAX,
        f_uint32=U32_MAX, f_uint64=U64_MAX, f_sint32=I32_MAX, f_sint64=I64_MAX,
        f_fixed32=U32_MAX, f_fixed64=U64_MAX, f_sfixed32=I32_MAX, f_sfixed64=I64_MAX,
        f_bool=True, f_string="h\u00e9llo w\u00f6rld \u2713 \U0001f980 \u65e5\u672c\u8a9e",
        f_bytes=b"\x00\xff\xfe\x80 not utf8 \xc3\x28",
    )
    small = pb2.Scalars(
        f_double=5e-324, f_float=F32_MIN_SUB, f_int32=I32_MIN, f_int64=I64_MIN,
        f_uint32=0, f_uint64=0, f_sint32=I32_MIN, f_sint64=I64_MIN,
        f_fixed32=0, f_fixed64=0, f_sfixed32=I32_MIN, f_sfixed64=I64_MIN,
        f_bool=False, f_string="", f_bytes=b"",
    )
    special = pb2.Scalars(
        f_double=math.nan, f_float=math.inf, f_int32=-1, f_int64=-1, f_sint32=-1, f_sint64=-1,
        f_sfixed32=-1, f_sfixed64=-1, f_string="nul \x00 and \U0010ffff", f_bytes=b"\x00",
    )
    other = pb2.Scalars(f_double=-math.inf, f_float=-math.nan)
    return [big, small, special, other]


def everything(pb2, variant):
    """The edge-value message; `variant` picks the oneof case (0..4)."""
    s = scalars(pb2)
    e = pb2.Everything(
        scalars=s[0], many=s,
        doubles=[math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.0],
        floats=[math.nan, -math.inf, F32_MIN_SUB, -0.0, 0.5],
        int64s=[I64_MIN, I64_MAX, -1, 0], uint64s=[0, U64_MAX], sint64s=[I64_MIN, I64_MAX, -1],
        fixed32s=[0, U32_MAX], bools=[True, False, True], strings=["", "\u00fc", "\U0001f980"],
        blobs=[b"", b"\xff\x00", b"\x80"],
        nested=pb2.Inner(label="nested", values=[0], color=pb2.COLOR_RED),
        color=pb2.COLOR_GREEN, colors=[pb2.COLOR_RED, pb2.COLOR_UNSPECIFIED, pb2.COLOR_BLUE],
        maybe=0, empty=pb2.Empty(), inner_list=[pb2.Inner(), pb2.Inner(label="x")],
    )
    e.counts[""] = I64_MIN
    e.counts["\u043a\u043b\u044e\u0447"] = I64_MAX
    e.inners[-1].CopyFrom(pb2.Inner(label="neg", values=[-1, I32_MIN], color=pb2.COLOR_BLUE))
    e.inners[0].CopyFrom(pb2.Inner())
    e.names[U64_MAX] = "big"
    e.names[0] = ""
    e.flags[True] = b"\xff"
    e.flags[False] = b""
    if variant == 0:
        e.inner.CopyFrom(pb2.Inner(label="in oneof", values=[1, 2, 3]))
    elif variant == 1:
        e.text = ""
    elif variant == 2:
        e.picked = pb2.COLOR_GREEN
    elif variant == 3:
        e.number = I64_MIN
    return e


def same(a, b):
    """Bit-exact equality (NaN and -0.0 included), map order ignored."""
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def user_metadata(pairs):
    out = []
    for k, v in pairs:
        if k.startswith(RESERVED) or k in RESERVED_KEYS or k.endswith("-bin"):
            continue
        out.append(f"{k}={v}")
    return sorted(out)
