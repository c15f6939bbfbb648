//! ZMTP 3.0 (the ZeroMQ wire protocol, RFC 23) for the two socket roles the
//! IPC front needs, on tokio streams: a PULL endpoint that libzmq PUSH
//! sockets connect to, and a PUSH connection to a libzmq PULL socket.
//!
//! Only the NULL security mechanism (what Cloudburst's executors use) and
//! single-part messages in practice, though multi-part messages are read
//! and handed over whole. The handshake: both sides send their 64-byte
//! greeting, then a `READY` command naming their socket type; a peer whose
//! greeting is not ZMTP 3.x with NULL, or whose socket type cannot talk to
//! ours, is refused. After it, each message frame is a flags byte (`MORE`,
//! `LONG`, `COMMAND`), a 1- or 8-byte length, and the body. `PING` commands
//! (ZMTP 3.1 heartbeats) are answered with `PONG`; other commands are
//! ignored.
//!
//! Why not libzmq on this side: libzmq moves every message through its own
//! I/O thread, so each request and each reply cost the sidecar two extra
//! thread wake-ups. Here the task that reads a request also answers it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of a ZMTP 3 greeting.
const GREETING_BYTES: usize = 64;
/// Most bytes reserved ahead of a frame's arrival.
const RESERVE_STEP: usize = 64 * 1024;
/// Frame flags.
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// The socket types this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    /// Receives messages (the endpoints executors send requests to).
    Pull,
    /// Sends messages (replies, to the executor's PULL socket).
    Push,
}

impl SocketType {
    fn name(self) -> &'static str {
        match self {
            SocketType::Pull => "PULL",
            SocketType::Push => "PUSH",
        }
    }

    /// The only peer type this one talks to.
    fn peer(self) -> SocketType {
        match self {
            SocketType::Pull => SocketType::Push,
            SocketType::Push => SocketType::Pull,
        }
    }
}

/// Why a connection was refused or closed.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer does not speak ZMTP 3 with the NULL mechanism.
    #[error("bad greeting: {0}")]
    Greeting(&'static str),
    /// The peer's handshake command was missing or malformed.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// The peer's socket type cannot talk to ours.
    #[error("peer socket type `{peer}` cannot talk to {ours}")]
    SocketType {
        /// What the peer announced.
        peer: String,
        /// Ours.
        ours: &'static str,
    },
    /// A frame longer than allowed.
    #[error("frame of {0} bytes is over the limit")]
    TooLong(u64),
}

/// Our greeting: ZMTP 3.0, NULL mechanism.
fn greeting(as_server: bool) -> [u8; GREETING_BYTES] {
    let mut g = [0u8; GREETING_BYTES];
    g[0] = 0xff;
    g[8] = 1; // padding: what libzmq sends for an empty routing id (length + 1)
    g[9] = 0x7f;
    g[10] = 3; // major
    g[11] = 0; // minor
    g[12..16].copy_from_slice(b"NULL");
    g[32] = u8::from(as_server);
    g
}

fn check_greeting(g: &[u8; GREETING_BYTES]) -> Result<(), ZmtpError> {
    if g[0] != 0xff || g[9] & 0x01 == 0 {
        return Err(ZmtpError::Greeting("not a ZMTP signature"));
    }
    if g[10] < 3 {
        return Err(ZmtpError::Greeting("ZMTP before 3.0 is not supported"));
    }
    let mechanism = &g[12..32];
    if &mechanism[..4] != b"NULL" || mechanism[4..].iter().any(|&b| b != 0) {
        return Err(ZmtpError::Greeting("only the NULL mechanism is supported"));
    }
    Ok(())
}

/// A `READY` command announcing `socket_type`.
fn ready_command(socket_type: SocketType) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(5);
    body.put_slice(b"READY");
    let (name, value) = (b"Socket-Type", socket_type.name().as_bytes());
    body.put_u8(name.len() as u8);
    body.put_slice(name);
    body.put_u32(value.len() as u32);
    body.put_slice(value);
    body.freeze()
}

/// The value of property `wanted` in a `READY` command's metadata.
fn ready_property(mut data: &[u8], wanted: &str) -> Result<Option<Vec<u8>>, ZmtpError> {
    let bad = || ZmtpError::Handshake("truncated READY metadata".into());
    while !data.is_empty() {
        let name_len = usize::from(data[0]);
        data = &data[1..];
        let name = data.get(..name_len).ok_or_else(bad)?;
        data = &data[name_len..];
        let value_len = data.get(..4).ok_or_else(bad)?;
        let value_len =
            u32::from_be_bytes([value_len[0], value_len[1], value_len[2], value_len[3]]);
        data = &data[4..];
        let value_len = usize::try_from(value_len).map_err(|_| bad())?;
        let value = data.get(..value_len).ok_or_else(bad)?;
        data = &data[value_len..];
        if name.eq_ignore_ascii_case(wanted.as_bytes()) {
            return Ok(Some(value.to_vec()));
        }
    }
    Ok(None)
}

/// One frame from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message frame (`more`: further frames of the same message follow).
    Message {
        /// The body.
        body: Bytes,
        /// Whether the message continues.
        more: bool,
    },
    /// A command frame: name and data.
    Command {
        /// The command's name (`READY`, `PING`, ...).
        name: String,
        /// Its data.
        data: Bytes,
    },
}

/// Frame codec (after the greeting). Frames longer than `max_frame` are an error.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: u64,
}

impl FrameCodec {
    /// A codec refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> FrameCodec {
        FrameCodec {
            max_frame: max_frame as u64,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ZmtpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ZmtpError> {
        let Some(&flags) = src.first() else {
            return Ok(None);
        };
        let (header, size) = if flags & LONG != 0 {
            if src.len() < 9 {
                return Ok(None);
            }
            let mut size = [0u8; 8];
            size.copy_from_slice(&src[1..9]);
            (9, u64::from_be_bytes(size))
        } else {
            if src.len() < 2 {
                return Ok(None);
            }
            (2, u64::from(src[1]))
        };
        if size > self.max_frame {
            return Err(ZmtpError::TooLong(size));
        }
        let size = size as usize;
        if src.len() < header + size {
            // Grow as the bytes arrive, not by what the header claims: a
            // peer announcing a large frame and sending nothing must not
            // make every connection hold that much memory.
            src.reserve((header + size - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(header);
        let body = src.split_to(size).freeze();
        if flags & COMMAND != 0 {
            let name_len = usize::from(
                *body
                    .first()
                    .ok_or_else(|| ZmtpError::Handshake("empty command frame".into()))?,
            );
            let name = body
                .get(1..1 + name_len)
                .ok_or_else(|| ZmtpError::Handshake("truncated command name".into()))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let data = body.slice(1 + name_len..);
            return Ok(Some(Frame::Command { name, data }));
        }
        Ok(Some(Frame::Message {
            body,
            more: flags & MORE != 0,
        }))
    }
}

/// Encodes one single-part message.
impl Encoder<Bytes> for FrameCodec {
    type Error = ZmtpError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), ZmtpError> {
        put_frame(dst, 0, &body);
        Ok(())
    }
}

fn put_frame(dst: &mut BytesMut, flags: u8, body: &[u8]) {
    if body.len() <= usize::from(u8::MAX) {
        dst.reserve(2 + body.len());
        dst.put_u8(flags);
        dst.put_u8(body.len() as u8);
    } else {
        dst.reserve(9 + body.len());
        dst.put_u8(flags | LONG);
        dst.put_u64(body.len() as u64);
    }
    dst.put_slice(body);
}

/// A `PONG` answering a `PING` whose data is `ping` (TTL, then context).
pub fn pong(ping: &[u8]) -> BytesMut {
    let context = ping.get(2..).unwrap_or_default();
    let mut body = Vec::with_capacity(5 + context.len());
    body.push(4);
    body.extend_from_slice(b"PONG");
    body.extend_from_slice(context);
    let mut out = BytesMut::new();
    put_frame(&mut out, COMMAND, &body);
    out
}

/// Reads frames from a stream, starting with bytes already read (what
/// followed the handshake): those are decoded before the stream is read
/// again, so a request that arrived with the handshake is not left waiting
/// for the next one.
pub struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
    codec: FrameCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of `stream`, after `already_read`, of at most `max_frame` bytes.
    pub fn new(stream: R, already_read: BytesMut, max_frame: usize) -> Self {
        FrameReader {
            stream,
            buffer: already_read,
            codec: FrameCodec::new(max_frame),
        }
    }

    /// The next frame; `None` when the peer closed the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<Frame, ZmtpError>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.buffer.capacity() - self.buffer.len() < 4096 {
                // Doubling with what has arrived: amortized linear for a
                // large frame, never ahead of the bytes actually received.
                self.buffer.reserve(self.buffer.len().max(8192));
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) if self.buffer.is_empty() => return None,
                Ok(0) => {
                    return Some(Err(ZmtpError::Handshake(
                        "connection closed inside a frame".into(),
                    )))
                }
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// Runs the handshake as `ours` on a fresh stream. Returns the bytes
/// already read past the handshake (the start of the first frames).
pub async fn handshake<S>(
    stream: &mut S,
    ours: SocketType,
    as_server: bool,
) -> Result<BytesMut, ZmtpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = BytesMut::with_capacity(GREETING_BYTES + 32);
    hello.put_slice(&greeting(as_server));
    put_frame(&mut hello, COMMAND, &ready_command(ours));
    stream.write_all(&hello).await?;
    let mut theirs = [0u8; GREETING_BYTES];
    // The signature first: a peer that is not ZMTP is refused before we
    // wait for bytes it will never send.
    stream.read_exact(&mut theirs[..10]).await?;
    if theirs[0] != 0xff || theirs[9] & 0x01 == 0 {
        return Err(ZmtpError::Greeting("not a ZMTP signature"));
    }
    stream.read_exact(&mut theirs[10..]).await?;
    check_greeting(&theirs)?;
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buffer = BytesMut::with_capacity(256);
    let ready = loop {
        if let Some(frame) = codec.decode(&mut buffer)? {
            break frame;
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(ZmtpError::Handshake("closed during the handshake".into()));
        }
    };
    let Frame::Command { name, data } = ready else {
        return Err(ZmtpError::Handshake("expected READY, got a message".into()));
    };
    if name != "READY" {
        return Err(ZmtpError::Handshake(format!("expected READY, got {name}")));
    }
    let peer = ready_property(&data, "Socket-Type")?
        .ok_or_else(|| ZmtpError::Handshake("READY without Socket-Type".into()))?;
    if !peer.eq_ignore_ascii_case(ours.peer().name().as_bytes()) {
        return Err(ZmtpError::SocketType {
            peer: String::from_utf8_lossy(&peer).into_owned(),
            ours: ours.name(),
        });
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_frames_round_trip() {
        let mut codec = FrameCodec::new(1 << 20);
        for size in [0usize, 1, 255, 256, 70_000] {
            let body = Bytes::from(vec![7u8; size]);
            let mut wire = BytesMut::new();
            codec.encode(body.clone(), &mut wire).unwrap();
            assert_eq!(wire[0] & LONG != 0, size > 255);
            // Fed one byte at a time, it decodes once, whole.
            let mut buffer = BytesMut::new();
            let mut out = None;
            for b in wire.iter() {
                buffer.put_u8(*b);
                if let Some(frame) = codec.decode(&mut buffer).unwrap() {
                    assert!(out.is_none());
                    out = Some(frame);
                }
            }
            assert_eq!(out, Some(Frame::Message { body, more: false }));
        }
    }

    #[test]
    fn an_announced_frame_does_not_reserve_its_whole_size_up_front() {
        let mut codec = FrameCodec::new(80 << 20);
        let mut wire = BytesMut::new();
        wire.put_u8(LONG);
        wire.put_u64(50 << 20);
        assert!(codec.decode(&mut wire).unwrap().is_none());
        assert!(wire.capacity() < 1 << 20, "reserved {}", wire.capacity());
    }

    #[test]
    fn oversized_frames_are_refused_before_they_are_read() {
        let mut codec = FrameCodec::new(100);
        let mut wire = BytesMut::new();
        wire.put_u8(LONG);
        wire.put_u64(1 << 40);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(ZmtpError::TooLong(_))
        ));
    }

    #[test]
    fn ready_metadata_is_parsed_and_truncation_is_an_error() {
        let ready = ready_command(SocketType::Push);
        let data = &ready[6..];
        assert_eq!(
            ready_property(data, "socket-type").unwrap(),
            Some(b"PUSH".to_vec())
        );
        assert!(ready_property(&data[..data.len() - 1], "Socket-Type").is_err());
        assert_eq!(ready_property(data, "Identity").unwrap(), None);
    }

    #[test]
    fn greetings_other_than_zmtp3_null_are_refused() {
        let good = greeting(true);
        assert!(check_greeting(&good).is_ok());
        let mut old = good;
        old[10] = 2;
        assert!(check_greeting(&old).is_err());
        let mut curve = good;
        curve[12..17].copy_from_slice(b"CURVE");
        assert!(check_greeting(&curve).is_err());
        let mut http = good;
        http[..4].copy_from_slice(b"GET ");
        assert!(check_greeting(&http).is_err());
    }

    #[test]
    fn pings_get_pongs_with_their_context() {
        let pong = pong(&[0, 10, b'c', b't', b'x']);
        assert_eq!(pong[0], COMMAND);
        assert_eq!(&pong[2..], b"\x04PONGctx");
    }
}
