//! The Redis protocol (RESP2) as the sink needs it: commands as arrays of bulk strings,
//! pipelined, and the replies they get.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::socket::Stream;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Replies nest no deeper than this (the sink's commands answer flat replies).
const MAX_DEPTH: usize = 8;
/// A bulk reply larger than this is a protocol error here (the sink reads ids and `OK`).
const MAX_BULK: usize = 1 << 20;

/// One connection.
pub struct Conn {
    io: BufReader<Stream>,
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn {
            io: BufReader::new(stream),
            out: Vec::with_capacity(4096),
        }
    }

    /// Queue `args` as one command (sent by [`Conn::flush`]).
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            let a = a.as_ref();
            self.out
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        let io = self.io.get_mut();
        io.write_all(&self.out).await?;
        io.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Send one command and read its reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        self.command(args);
        self.flush().await?;
        self.reply().await
    }

    pub async fn reply(&mut self) -> std::io::Result<Reply> {
        self.read(0).await
    }

    fn read(&mut self, depth: usize) -> futures::future::BoxFuture<'_, std::io::Result<Reply>> {
        Box::pin(async move {
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1);
            Ok(match kind {
                "+" => Reply::Simple(rest.to_string()),
                "-" => Reply::Error(rest.to_string()),
                ":" => Reply::Int(number(rest)?),
                "$" => {
                    let n = number(rest)?;
                    if n < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    let n = n as usize;
                    if n > MAX_BULK {
                        return Err(bad(format!("a bulk reply of {n} bytes")));
                    }
                    let mut buf = vec![0; n + 2];
                    self.io.read_exact(&mut buf).await?;
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
                "*" => {
                    let n = number(rest)?;
                    if n < 0 {
                        return Ok(Reply::Array(None));
                    }
                    if depth >= MAX_DEPTH || n > 1_000_000 {
                        return Err(bad("a reply nested too deep or too long".into()));
                    }
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read(depth + 1).await?);
                    }
                    Reply::Array(Some(items))
                }
                other => return Err(bad(format!("a reply starting with '{other}'"))),
            })
        })
    }

    /// One CRLF-terminated line, without it.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = (&mut self.io)
            .take(64 * 1024)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        if !buf.ends_with(b"\r\n") || buf.len() < 3 {
            return Err(bad("a reply line without CRLF".into()));
        }
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).map_err(|_| bad("a reply line that is not UTF-8".into()))
    }
}

fn number(text: &str) -> std::io::Result<i64> {
    text.parse()
        .map_err(|_| bad(format!("'{text}' where a number was expected")))
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("not the Redis protocol: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn replies(bytes: &'static [u8], n: usize) -> Vec<std::io::Result<Reply>> {
        let (client, mut server) = tokio::io::duplex(1024);
        server.write_all(bytes).await.unwrap();
        drop(server);
        let mut conn = Conn::new(Box::new(client));
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(conn.reply().await);
        }
        out
    }

    #[tokio::test]
    async fn replies_of_every_kind_parse() {
        let got = replies(
            b"+OK\r\n-WRONGTYPE no\r\n:42\r\n$5\r\n1-0\r\n\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n",
            6,
        )
        .await;
        let got: Vec<Reply> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("WRONGTYPE no".into()),
                Reply::Int(42),
                Reply::Bulk(Some(b"1-0\r\n".to_vec())),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"a".to_vec())), Reply::Int(1)])),
            ]
        );
        let bad = replies(b"HTTP/1.1 400\r\n", 1).await;
        assert!(
            bad[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("not the Redis protocol")
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let (client, _server) = tokio::io::duplex(16);
        let mut conn = Conn::new(Box::new(client));
        conn.command(&["XADD", "s", "*"]);
        assert_eq!(conn.out, b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n");
    }
}
