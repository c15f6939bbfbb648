//! The peer wire framing: every frame is a 4-byte big-endian length
//! followed by that many bytes.
//!
//! - [`FrameDecoder`] reads frames. It refuses a frame longer than the
//!   configured limit, and its buffer grows with the bytes that actually
//!   arrive, never with the length a peer announces, so a peer that
//!   announces 64 MiB and sends nothing costs this node nothing.
//! - [`FrameSink`] writes frames to one connection from any task. The
//!   sending task writes to the socket itself when the socket has room (the
//!   usual case for small messages: no task hop, no wake-up), and a flusher
//!   task writes what is left when the socket is full. Frames keep the order
//!   in which they were sent.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;
/// Most bytes the decoder reserves ahead of what has arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// A frame ready for the wire: `payload` behind its length prefix.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(LENGTH_BYTES + payload.len());
    // Payloads are bounded by `max_message_bytes` (far below 4 GiB) before they get here.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(payload);
    out.freeze()
}

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame over the limit.
    #[error("peer frame of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        /// Length the peer announced.
        announced: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The connection failed.
    #[error("peer connection: {0}")]
    Io(#[from] io::Error),
}

/// Decodes length-prefixed frames of at most `limit` bytes.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limit: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `limit` bytes.
    pub fn new(limit: usize) -> FrameDecoder {
        FrameDecoder { limit }
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(head) = src.get(..LENGTH_BYTES) else {
            return Ok(None);
        };
        let mut length = [0u8; LENGTH_BYTES];
        length.copy_from_slice(head);
        let announced = u32::from_be_bytes(length) as usize;
        if announced > self.limit {
            return Err(FrameError::TooLong {
                announced,
                limit: self.limit,
            });
        }
        let total = LENGTH_BYTES + announced;
        if src.len() < total {
            // Room for what is likely to arrive next, not for the whole claim.
            src.reserve((total - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(LENGTH_BYTES);
        Ok(Some(src.split_to(announced)))
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefused {
    /// More than the sink's backlog limit is waiting for the socket.
    Full,
    /// The connection is closed.
    Closed,
}

struct Backlog {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
}

/// Writes frames to one TCP connection, from any task, in the order sent.
pub struct FrameSink {
    socket: OwnedWriteHalf,
    backlog: Mutex<Backlog>,
    /// Wakes the flusher when frames wait in the backlog.
    pending: Notify,
    backlog_limit: usize,
}

impl FrameSink {
    /// A sink over `socket` that holds at most `backlog_limit` bytes while
    /// the socket is full. Run [`FrameSink::flush_until_closed`] beside it.
    pub fn new(socket: OwnedWriteHalf, backlog_limit: usize) -> FrameSink {
        FrameSink {
            socket,
            backlog: Mutex::new(Backlog {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            pending: Notify::new(),
            backlog_limit,
        }
    }

    /// Sends one frame (from [`frame`]): written now if the socket takes it
    /// whole, otherwise queued for the flusher. Never blocks.
    pub fn send(&self, frame: Bytes) -> Result<(), SendRefused> {
        let mut backlog = self.backlog.lock();
        if backlog.closed {
            return Err(SendRefused::Closed);
        }
        let rest = if backlog.frames.is_empty() {
            match self.socket.try_write(&frame) {
                Ok(written) if written == frame.len() => return Ok(()),
                Ok(written) => frame.slice(written..),
                // Full, or failed: the flusher finds out which.
                Err(_) => frame,
            }
        } else if backlog.bytes + frame.len() > self.backlog_limit {
            return Err(SendRefused::Full);
        } else {
            frame
        };
        backlog.bytes += rest.len();
        backlog.frames.push_back(rest);
        drop(backlog);
        self.pending.notify_one();
        Ok(())
    }

    /// Moves every frame into the backlog without writing (used before a
    /// connection is handed to senders, so order is kept).
    pub fn preload(&self, frames: impl IntoIterator<Item = Bytes>) {
        let mut backlog = self.backlog.lock();
        for frame in frames {
            backlog.bytes += frame.len();
            backlog.frames.push_back(frame);
        }
        drop(backlog);
        self.pending.notify_one();
    }

    /// Writes what senders could not, until the connection fails or `stop`
    /// is cancelled; then refuses further frames.
    pub async fn flush_until_closed(&self, stop: &CancellationToken) -> io::Result<()> {
        let result = self.flush_loop(stop).await;
        let mut backlog = self.backlog.lock();
        backlog.closed = true;
        backlog.frames.clear();
        backlog.bytes = 0;
        result
    }

    async fn flush_loop(&self, stop: &CancellationToken) -> io::Result<()> {
        loop {
            let drained = self.write_backlog()?;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                ready = self.socket.writable(), if !drained => ready?,
                _ = self.pending.notified(), if drained => {}
            }
        }
    }

    /// Writes the backlog until it is empty (true) or the socket is full (false).
    fn write_backlog(&self) -> io::Result<bool> {
        let mut guard = self.backlog.lock();
        let backlog = &mut *guard;
        while let Some(front) = backlog.frames.front_mut() {
            match self.socket.try_write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    backlog.bytes -= written;
                    if written == front.len() {
                        backlog.frames.pop_front();
                    } else {
                        front.advance(written);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_splits_frames_and_waits_for_the_rest() {
        let mut decoder = FrameDecoder::new(16);
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&frame(b"hello"));
        buffer.extend_from_slice(&frame(b"wor")[..5]);
        assert_eq!(
            decoder.decode(&mut buffer).ok().flatten().as_deref(),
            Some(&b"hello"[..])
        );
        assert!(matches!(decoder.decode(&mut buffer), Ok(None)));
        buffer.extend_from_slice(b"o");
        assert!(matches!(decoder.decode(&mut buffer), Ok(None)));
        buffer.extend_from_slice(b"r");
        assert_eq!(
            decoder.decode(&mut buffer).ok().flatten().as_deref(),
            Some(&b"wor"[..])
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn decoder_refuses_oversized_claims_without_reserving_them() {
        let mut decoder = FrameDecoder::new(64 * 1024 * 1024);
        let mut buffer = BytesMut::new();
        buffer.put_u32(60 * 1024 * 1024);
        assert!(matches!(decoder.decode(&mut buffer), Ok(None)));
        assert!(buffer.capacity() <= LENGTH_BYTES + RESERVE_STEP + 64);

        let mut small = FrameDecoder::new(8);
        let mut buffer = BytesMut::new();
        buffer.put_u32(9);
        assert!(matches!(
            small.decode(&mut buffer),
            Err(FrameError::TooLong {
                announced: 9,
                limit: 8
            })
        ));
    }
}
