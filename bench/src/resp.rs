//! A minimal blocking Redis client (RESP2 over TCP, `TCP_NODELAY`): just
//! GET, SET and PING, one command per round trip, no pipelining, no
//! allocation beyond the reply. It is the best case of "plain GET/SET
//! without the shim", so the comparison with the sidecar is conservative.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// One connection to a Redis server.
pub struct RespClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
}

/// A decoded reply (what GET, SET and PING return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`.
    Simple(String),
    /// `:n`.
    Integer(i64),
    /// `$n` with its bytes, or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
}

impl RespClient {
    /// Connects to `addr` with `timeout` on connect, reads and writes.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("cannot connect to Redis at {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        Ok(RespClient {
            writer: stream,
            reader,
            out: Vec::with_capacity(8 * 1024),
            line: Vec::with_capacity(64),
        })
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.out.clear();
        write!(self.out, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.out, "${}\r\n", arg.len())?;
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
        self.writer
            .write_all(&self.out)
            .context("cannot send to Redis")?;
        self.read_reply()
    }

    fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .context("cannot read from Redis")?;
        if n < 3 || !self.line.ends_with(b"\r\n") {
            bail!("Redis closed the connection or sent a malformed line");
        }
        self.line.truncate(n - 2);
        Ok(())
    }

    fn number(&self) -> anyhow::Result<i64> {
        std::str::from_utf8(&self.line[1..])
            .ok()
            .and_then(|s| s.parse().ok())
            .with_context(|| {
                format!(
                    "malformed number in Redis reply `{}`",
                    String::from_utf8_lossy(&self.line)
                )
            })
    }

    fn read_reply(&mut self) -> anyhow::Result<Reply> {
        self.read_line()?;
        match self.line.first() {
            Some(b'+') => Ok(Reply::Simple(
                String::from_utf8_lossy(&self.line[1..]).into_owned(),
            )),
            Some(b'-') => bail!("Redis error: {}", String::from_utf8_lossy(&self.line[1..])),
            Some(b':') => Ok(Reply::Integer(self.number()?)),
            Some(b'$') => {
                let len = self.number()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).context("bulk length")?;
                let mut data = vec![0u8; len + 2];
                self.reader
                    .read_exact(&mut data)
                    .context("cannot read a Redis bulk reply")?;
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
            _ => bail!(
                "unexpected Redis reply `{}`",
                String::from_utf8_lossy(&self.line)
            ),
        }
    }

    /// `GET key`.
    pub fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        match self.command(&[b"GET", key])? {
            Reply::Bulk(value) => Ok(value),
            other => bail!("unexpected reply to GET: {other:?}"),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self.command(&[b"SET", key, value])? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => bail!("unexpected reply to SET: {other:?}"),
        }
    }

    /// `PING`.
    pub fn ping(&mut self) -> anyhow::Result<()> {
        match self.command(&[b"PING"])? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            other => bail!("unexpected reply to PING: {other:?}"),
        }
    }
}
