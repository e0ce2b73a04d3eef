//! [`BytesCodec`]: the gRPC codec of the gRPC face. Messages stay encoded
//! (protobuf bytes in, protobuf bytes out): the dispatcher and the engine
//! decode them, as they do for UDP and TCP, so nothing is decoded twice.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A tonic codec whose messages are already-encoded protobuf bytes.
/// (Not a unit struct: tonic-build's output constructs codecs with
/// `Default::default()`.)
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec {
    _private: (),
}

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec::default()
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}
