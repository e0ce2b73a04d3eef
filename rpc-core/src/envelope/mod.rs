//! The envelope of `idl/rpc/envelope.idl` (package `rpc.v1`): one per
//! datagram or frame.
//!
//! These prost types are what `rpcgen rust idl/rpc/envelope.idl` generates
//! for the messages of that file; a test in `tests/` checks that they
//! agree, field by field, with the IDL.

mod header;

pub use header::{peek_header, peek_type_and_id, EnvelopeHeader};

/// Version of the envelope format described here.
pub const VERSION: u32 = 1;

/// `details_type` of the status that says "outcome unknown: server restarted"
/// (the empty message `rpc.v1.ServerRestarted` of the IDL; `idl/PROTOCOL.md`,
/// section 7.2).
pub const SERVER_RESTARTED: &str = "rpc.v1.ServerRestarted";

/// What a message is. Numbers are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// Never sent; a receiver drops it.
    Unspecified = 0,
    /// Client to server: run `method_id` on `payload`.
    Request = 1,
    /// Server to client: the result or a failure.
    Reply = 2,
    /// Client to server (RRA): the client has the reply to `request_id`.
    Ack = 3,
    /// Server to client: the request is registered and will run.
    Accept = 4,
    /// Server to client: this copy was not run (refused, or ABORTED:
    /// outcome unknown); a request that ran gets a REPLY.
    Error = 5,
    /// Server to client: a duplicate of a request that is still running.
    InProgress = 6,
    /// Client to server: tell me your incarnation.
    Ping = 7,
    /// Server to client: the answer to PING.
    Pong = 8,
    /// Client to server: the caller abandoned the call (never answered).
    Cancel = 9,
}

/// The exchange protocol a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ExchangeProtocol {
    /// Not given: the server assumes RR.
    Unspecified = 0,
    /// Request only.
    R = 1,
    /// Request, reply.
    Rr = 2,
    /// Request, reply, acknowledgement.
    Rra = 3,
}

/// A status as the envelope carries it (the IDL's `message Status`): gRPC's
/// code number, a message, an optional typed error. Handlers and callers
/// see it as [`crate::Status`]; the two convert both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Full protobuf name of the typed error in `details`.
    #[prost(string, tag = "3")]
    pub details_type: String,
    /// The typed error, protobuf-encoded.
    #[prost(bytes = "bytes", tag = "4")]
    pub details: bytes::Bytes,
}

/// One message of the protocol (see the field docs in the IDL).
///
/// `Message` is implemented by hand (below) with the field numbers and
/// types of the IDL, so that encoding the payload copies its bytes instead
/// of cloning the `Bytes` handle (a clone of a `Bytes` made from a `Vec`
/// allocates); the bytes on the wire are the same as the generated code
/// writes (checked in `tests/envelope.rs`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct Envelope {
    /// Protocol version ([`VERSION`]).
    pub version: u32,
    /// What this message is ([`MessageType`]).
    pub r#type: i32,
    /// Unique per client session and increasing.
    pub request_id: u64,
    /// The client session.
    pub session_id: u64,
    /// Object reference: the service's full name.
    pub service: std::borrow::Cow<'static, str>,
    /// Object reference: the instance (empty: default).
    pub instance: String,
    /// Stable method id.
    pub method_id: u32,
    /// The server's incarnation.
    pub incarnation: u64,
    /// Remaining time budget in microseconds (0: none).
    pub deadline_us: u64,
    /// Which copy of the request this is (1 for the first).
    pub attempt: u32,
    /// The failure, in REPLY and ERROR (boxed: most messages carry none,
    /// and every message moves through several async functions).
    pub status: Option<Box<WireStatus>>,
    /// Arguments or result.
    pub payload: bytes::Bytes,
    /// Metadata carried with the call.
    pub metadata: crate::metadata::Metadata,
    /// Exchange protocol of the request ([`ExchangeProtocol`]).
    pub protocol: i32,
    /// Cumulative acknowledgement.
    pub ack_up_to: u64,
    /// Answer with ACCEPT as soon as the request is registered.
    pub want_accept: bool,
    /// The method is idempotent (a hint: servers go by the method's
    /// declaration).
    pub idempotent: bool,
    /// Address-validation cookie (PONG: issued; REQUEST: echoed; 0: none).
    pub cookie: u64,
}

/// Most metadata entries an envelope may carry; a message with more is
/// malformed (checked while decoding, so that a flood of entries costs
/// little before it is refused).
pub const MAX_METADATA_ENTRIES: usize = 64;

/// Most bytes of metadata keys and values together in one envelope.
pub const MAX_METADATA_BYTES: usize = 16 << 10;

/// Whether `metadata` is within [`MAX_METADATA_ENTRIES`] and
/// [`MAX_METADATA_BYTES`] (a peer refuses an envelope that is not).
pub fn metadata_within_caps(metadata: &crate::metadata::Metadata) -> bool {
    metadata.len() <= MAX_METADATA_ENTRIES && metadata.text_len() <= MAX_METADATA_BYTES
}

/// Bytes a `cookie` field takes on the wire (its key, two bytes, and eight).
pub(crate) const COOKIE_FIELD_LEN: usize = 10;

/// An encoded envelope with a `cookie` field appended: the decoder takes the
/// last copy of a field, so it replaces any cookie the message had.
pub(crate) fn with_cookie(message: &[u8], cookie: u64) -> bytes::Bytes {
    let mut out = Vec::with_capacity(message.len() + COOKIE_FIELD_LEN);
    out.extend_from_slice(message);
    if cookie != 0 {
        prost::encoding::fixed64::encode(tag::COOKIE, &cookie, &mut out);
    }
    bytes::Bytes::from(out)
}

/// Field numbers of [`Envelope`] (as in `idl/rpc/envelope.idl`).
pub(crate) mod tag {
    pub(crate) const VERSION: u32 = 1;
    pub(crate) const TYPE: u32 = 2;
    pub(crate) const REQUEST_ID: u32 = 3;
    pub(crate) const SESSION_ID: u32 = 4;
    pub(crate) const SERVICE: u32 = 5;
    pub(crate) const INSTANCE: u32 = 6;
    pub(crate) const METHOD_ID: u32 = 7;
    pub(crate) const INCARNATION: u32 = 8;
    pub(crate) const DEADLINE_US: u32 = 9;
    pub(crate) const ATTEMPT: u32 = 10;
    pub(crate) const STATUS: u32 = 11;
    pub(crate) const PAYLOAD: u32 = 12;
    pub(crate) const METADATA: u32 = 13;
    pub(crate) const PROTOCOL: u32 = 14;
    pub(crate) const ACK_UP_TO: u32 = 15;
    pub(crate) const WANT_ACCEPT: u32 = 16;
    pub(crate) const IDEMPOTENT: u32 = 17;
    pub(crate) const COOKIE: u32 = 18;
}

/// The `deadline_us` field of a request due at `deadline`: the
/// microseconds left at `now`, at least 1, since 0 means "no deadline"
/// (which is what a call without a deadline sends).
pub(crate) fn deadline_us(
    deadline: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) -> u64 {
    deadline.map_or(0, |d| {
        u64::try_from(d.saturating_duration_since(now).as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    })
}

impl Envelope {
    /// The largest any copy of this request can encode to: `attempt`,
    /// `incarnation` and `cookie` at their widest (a copy may carry a
    /// server's incarnation and cookie), `ack_up_to` at `ack_bound` (a
    /// copy's is always below its own request id) and `deadline_us` as
    /// given. The envelope is left as it was.
    pub(crate) fn widest_copy_len(&mut self, ack_bound: u64, deadline_us: u64) -> usize {
        let saved = (
            self.attempt,
            self.ack_up_to,
            self.incarnation,
            self.deadline_us,
            self.cookie,
        );
        self.attempt = u32::MAX;
        self.ack_up_to = ack_bound;
        self.incarnation = u64::MAX;
        self.deadline_us = deadline_us;
        self.cookie = u64::MAX;
        let size = prost::Message::encoded_len(self);
        (
            self.attempt,
            self.ack_up_to,
            self.incarnation,
            self.deadline_us,
            self.cookie,
        ) = saved;
        size
    }

    /// A REQUEST of a call, first copy: version, type, ids, the method and
    /// the payload. The caller sets what else the call needs (protocol,
    /// deadline, incarnation, `ack_up_to`, metadata, ...).
    #[inline]
    pub fn request(
        session_id: u64,
        request_id: u64,
        service: impl Into<std::borrow::Cow<'static, str>>,
        method_id: u32,
        payload: bytes::Bytes,
    ) -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Request as i32,
            request_id,
            session_id,
            service: service.into(),
            method_id,
            attempt: 1,
            payload,
            ..Envelope::default()
        }
    }

    /// A PING (section 7.3 of `idl/PROTOCOL.md`).
    #[inline]
    pub fn ping(session_id: u64, request_id: u64, attempt: u32, ack_up_to: u64) -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Ping as i32,
            request_id,
            session_id,
            attempt,
            ack_up_to,
            ..Envelope::default()
        }
    }

    /// An ACK of `request_id`'s answer, carrying the client's `ack_up_to`.
    #[inline]
    pub fn ack(session_id: u64, request_id: u64, ack_up_to: u64) -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Ack as i32,
            request_id,
            session_id,
            ack_up_to,
            ..Envelope::default()
        }
    }

    /// A server message about (`session_id`, `request_id`) with no payload:
    /// PONG, ACCEPT, IN_PROGRESS, an ERROR (with its `status`) or the frame
    /// of a REPLY. `incarnation` is the server's (0 only for a message a
    /// client makes up for itself).
    #[inline]
    pub fn answer(
        kind: MessageType,
        session_id: u64,
        request_id: u64,
        incarnation: u64,
        status: Option<WireStatus>,
    ) -> Envelope {
        Envelope {
            version: VERSION,
            r#type: kind as i32,
            request_id,
            session_id,
            incarnation,
            status: status.map(Box::new),
            ..Envelope::default()
        }
    }

    /// A CANCEL: the caller abandoned (`session_id`, `request_id`).
    #[inline]
    pub fn cancel(session_id: u64, request_id: u64) -> Envelope {
        Envelope {
            version: VERSION,
            r#type: MessageType::Cancel as i32,
            request_id,
            session_id,
            ..Envelope::default()
        }
    }

    /// An ERROR: this copy of (`session_id`, `request_id`) was not run.
    #[inline]
    pub fn error(
        session_id: u64,
        request_id: u64,
        incarnation: u64,
        status: WireStatus,
    ) -> Envelope {
        Envelope::answer(
            MessageType::Error,
            session_id,
            request_id,
            incarnation,
            Some(status),
        )
    }

    /// Appends the encoding to `buf`, without computing the length first
    /// as `prost::Message::encode` does (callers that checked the size
    /// against a limit already know it).
    pub(crate) fn encode_unchecked(&self, buf: &mut Vec<u8>) {
        prost::Message::encode_raw(self, buf);
    }

    /// Decodes as [`prost::Message::decode`] does, except that a `service`
    /// for which `known` returns a static name borrows that name instead
    /// of allocating a copy (a server decodes one per request, and knows
    /// the names it serves).
    ///
    /// # Errors
    /// As [`prost::Message::decode`].
    pub(crate) fn decode_naming(
        mut buf: impl bytes::Buf,
        known: impl Fn(&[u8]) -> Option<&'static str>,
    ) -> Result<Envelope, prost::DecodeError> {
        use prost::encoding::{decode_key, decode_varint, DecodeContext, WireType};
        let mut env = Envelope::default();
        while buf.has_remaining() {
            let (field, wire_type) = decode_key(&mut buf)?;
            if field == tag::SERVICE && wire_type == WireType::LengthDelimited {
                // Looked at in place; anything unusual (a length cut short,
                // a name split across chunks, an unknown name) is left to
                // the general path below, errors included.
                let chunk = buf.chunk();
                let mut rest = chunk;
                let named = decode_varint(&mut rest).ok().and_then(|len| {
                    let len = usize::try_from(len).ok()?;
                    let name = known(rest.get(..len)?)?;
                    Some((name, chunk.len() - rest.len() + len))
                });
                if let Some((name, consumed)) = named {
                    env.service = std::borrow::Cow::Borrowed(name);
                    buf.advance(consumed);
                    continue;
                }
            }
            prost::Message::merge_field(
                &mut env,
                field,
                wire_type,
                &mut buf,
                DecodeContext::default(),
            )?;
        }
        Ok(env)
    }
}

impl prost::Message for Envelope {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{bool, fixed64, int32, message, string, uint32, uint64};
        if self.version != 0 {
            uint32::encode(tag::VERSION, &self.version, buf);
        }
        if self.r#type != 0 {
            int32::encode(tag::TYPE, &self.r#type, buf);
        }
        if self.request_id != 0 {
            uint64::encode(tag::REQUEST_ID, &self.request_id, buf);
        }
        if self.session_id != 0 {
            fixed64::encode(tag::SESSION_ID, &self.session_id, buf);
        }
        if !self.service.is_empty() {
            // A `Cow` (a caller's name is a `&'static str`: no copy per
            // call), written as prost writes a string.
            encode_slice(tag::SERVICE, self.service.as_bytes(), buf);
        }
        if !self.instance.is_empty() {
            string::encode(tag::INSTANCE, &self.instance, buf);
        }
        if self.method_id != 0 {
            uint32::encode(tag::METHOD_ID, &self.method_id, buf);
        }
        if self.incarnation != 0 {
            fixed64::encode(tag::INCARNATION, &self.incarnation, buf);
        }
        if self.deadline_us != 0 {
            uint64::encode(tag::DEADLINE_US, &self.deadline_us, buf);
        }
        if self.attempt != 0 {
            uint32::encode(tag::ATTEMPT, &self.attempt, buf);
        }
        if let Some(status) = &self.status {
            message::encode(tag::STATUS, &**status, buf);
        }
        if !self.payload.is_empty() {
            // Copied, not `put(self.payload.clone())` as prost's bytes
            // encoder does: no reference-count promotion per encode.
            encode_slice(tag::PAYLOAD, &self.payload, buf);
        }
        crate::metadata::wire::encode(tag::METADATA, &self.metadata, buf);
        if self.protocol != 0 {
            int32::encode(tag::PROTOCOL, &self.protocol, buf);
        }
        if self.ack_up_to != 0 {
            uint64::encode(tag::ACK_UP_TO, &self.ack_up_to, buf);
        }
        if self.want_accept {
            bool::encode(tag::WANT_ACCEPT, &self.want_accept, buf);
        }
        if self.idempotent {
            bool::encode(tag::IDEMPOTENT, &self.idempotent, buf);
        }
        if self.cookie != 0 {
            fixed64::encode(tag::COOKIE, &self.cookie, buf);
        }
    }

    fn merge_field(
        &mut self,
        field: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{
            bool, bytes as bytes_field, fixed64, int32, message, skip_field, string, uint32, uint64,
        };
        let (result, name) = match field {
            tag::VERSION => (
                uint32::merge(wire_type, &mut self.version, buf, ctx),
                "version",
            ),
            tag::TYPE => (int32::merge(wire_type, &mut self.r#type, buf, ctx), "type"),
            tag::REQUEST_ID => (
                uint64::merge(wire_type, &mut self.request_id, buf, ctx),
                "request_id",
            ),
            tag::SESSION_ID => (
                fixed64::merge(wire_type, &mut self.session_id, buf, ctx),
                "session_id",
            ),
            tag::SERVICE => (
                string::merge(wire_type, self.service.to_mut(), buf, ctx),
                "service",
            ),
            tag::INSTANCE => (
                string::merge(wire_type, &mut self.instance, buf, ctx),
                "instance",
            ),
            tag::METHOD_ID => (
                uint32::merge(wire_type, &mut self.method_id, buf, ctx),
                "method_id",
            ),
            tag::INCARNATION => (
                fixed64::merge(wire_type, &mut self.incarnation, buf, ctx),
                "incarnation",
            ),
            tag::DEADLINE_US => (
                uint64::merge(wire_type, &mut self.deadline_us, buf, ctx),
                "deadline_us",
            ),
            tag::ATTEMPT => (
                uint32::merge(wire_type, &mut self.attempt, buf, ctx),
                "attempt",
            ),
            tag::STATUS => (
                message::merge(
                    wire_type,
                    &mut **self.status.get_or_insert_with(Box::default),
                    buf,
                    ctx,
                ),
                "status",
            ),
            tag::PAYLOAD => (
                bytes_field::merge(wire_type, &mut self.payload, buf, ctx),
                "payload",
            ),
            tag::METADATA => (
                crate::metadata::wire::merge_entry(
                    wire_type,
                    &mut self.metadata,
                    buf,
                    ctx,
                    (MAX_METADATA_ENTRIES, MAX_METADATA_BYTES),
                ),
                "metadata",
            ),
            tag::PROTOCOL => (
                int32::merge(wire_type, &mut self.protocol, buf, ctx),
                "protocol",
            ),
            tag::ACK_UP_TO => (
                uint64::merge(wire_type, &mut self.ack_up_to, buf, ctx),
                "ack_up_to",
            ),
            tag::WANT_ACCEPT => (
                bool::merge(wire_type, &mut self.want_accept, buf, ctx),
                "want_accept",
            ),
            tag::IDEMPOTENT => (
                bool::merge(wire_type, &mut self.idempotent, buf, ctx),
                "idempotent",
            ),
            tag::COOKIE => (
                fixed64::merge(wire_type, &mut self.cookie, buf, ctx),
                "cookie",
            ),
            _ => return skip_field(wire_type, field, buf, ctx),
        };
        result.map_err(|mut error| {
            error.push("Envelope", name);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{bool, fixed64, int32, message, string, uint32, uint64};
        let mut len = 0;
        if self.version != 0 {
            len += uint32::encoded_len(tag::VERSION, &self.version);
        }
        if self.r#type != 0 {
            len += int32::encoded_len(tag::TYPE, &self.r#type);
        }
        if self.request_id != 0 {
            len += uint64::encoded_len(tag::REQUEST_ID, &self.request_id);
        }
        if self.session_id != 0 {
            len += fixed64::encoded_len(tag::SESSION_ID, &self.session_id);
        }
        if !self.service.is_empty() {
            len += slice_len(tag::SERVICE, self.service.len());
        }
        if !self.instance.is_empty() {
            len += string::encoded_len(tag::INSTANCE, &self.instance);
        }
        if self.method_id != 0 {
            len += uint32::encoded_len(tag::METHOD_ID, &self.method_id);
        }
        if self.incarnation != 0 {
            len += fixed64::encoded_len(tag::INCARNATION, &self.incarnation);
        }
        if self.deadline_us != 0 {
            len += uint64::encoded_len(tag::DEADLINE_US, &self.deadline_us);
        }
        if self.attempt != 0 {
            len += uint32::encoded_len(tag::ATTEMPT, &self.attempt);
        }
        if let Some(status) = &self.status {
            len += message::encoded_len(tag::STATUS, &**status);
        }
        if !self.payload.is_empty() {
            len += slice_len(tag::PAYLOAD, self.payload.len());
        }
        if !self.metadata.is_empty() {
            len += crate::metadata::wire::encoded_len(tag::METADATA, &self.metadata);
        }
        if self.protocol != 0 {
            len += int32::encoded_len(tag::PROTOCOL, &self.protocol);
        }
        if self.ack_up_to != 0 {
            len += uint64::encoded_len(tag::ACK_UP_TO, &self.ack_up_to);
        }
        if self.want_accept {
            len += bool::encoded_len(tag::WANT_ACCEPT, &self.want_accept);
        }
        if self.idempotent {
            len += bool::encoded_len(tag::IDEMPOTENT, &self.idempotent);
        }
        if self.cookie != 0 {
            len += fixed64::encoded_len(tag::COOKIE, &self.cookie);
        }
        len
    }

    fn clear(&mut self) {
        *self = Envelope::default();
    }
}

/// Writes a length-delimited field from a slice, as prost writes a string
/// or bytes field (but without cloning a `Bytes` handle).
fn encode_slice(tag: u32, value: &[u8], buf: &mut impl bytes::BufMut) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

/// The encoded length of what [`encode_slice`] writes for `len` bytes.
fn slice_len(tag: u32, len: usize) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    key_len(tag) + encoded_len_varint(len as u64) + len
}

impl From<&crate::Status> for WireStatus {
    fn from(s: &crate::Status) -> WireStatus {
        WireStatus {
            code: s.code().as_i32(),
            message: s.message().to_owned(),
            details_type: s.details_type().to_owned(),
            details: s.details().clone(),
        }
    }
}

impl From<WireStatus> for crate::Status {
    fn from(s: WireStatus) -> crate::Status {
        crate::Status::with_details(
            crate::Code::from_i32(s.code),
            s.message,
            s.details_type,
            s.details,
        )
    }
}

impl From<Box<WireStatus>> for crate::Status {
    fn from(s: Box<WireStatus>) -> crate::Status {
        crate::Status::from(*s)
    }
}

impl From<crate::Protocol> for ExchangeProtocol {
    fn from(p: crate::Protocol) -> ExchangeProtocol {
        match p {
            crate::Protocol::R => ExchangeProtocol::R,
            crate::Protocol::RR => ExchangeProtocol::Rr,
            crate::Protocol::RRA => ExchangeProtocol::Rra,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
