//! The NATS client protocol as the sink speaks it: the `INFO` / `CONNECT` handshake (TLS when
//! asked for, user and password or a token), one inbox subscription, `HPUB` with headers, and
//! the `MSG` / `HMSG` replies JetStream acknowledges with.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::client::Outbound;
use crate::socket::{self, Stream};

/// A line, or a message, longer than this is a protocol error here (acknowledgements are
/// small).
const MAX_LINE: u64 = 64 * 1024;
const MAX_MESSAGE: usize = 1 << 20;

/// How the sink logs in.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

/// A message delivered to the inbox.
#[derive(Debug)]
pub struct Inbound {
    pub subject: String,
    /// The status of a header-only message (`NATS/1.0 503` when no stream takes a subject).
    pub status: Option<u16>,
    pub payload: Vec<u8>,
}

pub struct Conn {
    io: BufReader<Stream>,
    out: Vec<u8>,
    /// `_INBOX.<random>`: acknowledgements come to `<inbox>.<n>`.
    pub inbox: String,
    /// The largest payload the server takes.
    pub max_payload: usize,
}

impl Conn {
    /// Connect, upgrade to TLS when `tls` or the server requires it, log in, and subscribe to
    /// the inbox.
    pub async fn open(
        out: &Outbound,
        host: &str,
        port: u16,
        tls: bool,
        auth: &Auth,
    ) -> Result<Conn, String> {
        let tcp = socket::connect_tcp(out, host, port).await?;
        let mut plain = BufReader::new(tcp);
        let info = read_info(&mut plain).await?;
        let server_tls = info["tls_required"].as_bool() == Some(true);
        let stream: Stream = if tls || server_tls {
            socket::start_tls(out, host, port, plain.into_inner()).await?
        } else {
            Box::new(plain.into_inner())
        };
        if info["headers"].as_bool() == Some(false) {
            return Err(format!(
                "{host}:{port} does not support message headers (NATS 2.2 or later needed)"
            ));
        }
        let mut connect = json!({
            "verbose": false, "pedantic": false, "tls_required": tls || server_tls,
            "name": "tidemark", "lang": "rust", "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1, "headers": true, "no_responders": true,
        });
        if let Some(u) = &auth.username {
            connect["user"] = json!(u);
        }
        if let Some(p) = &auth.password {
            connect["pass"] = json!(p);
        }
        if let Some(t) = &auth.token {
            connect["auth_token"] = json!(t);
        }
        let inbox = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
        let mut conn = Conn {
            io: BufReader::new(stream),
            out: Vec::with_capacity(4096),
            inbox,
            max_payload: info["max_payload"].as_u64().unwrap_or(1 << 20) as usize,
        };
        conn.out
            .extend_from_slice(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
        conn.flush().await.map_err(|e| e.to_string())?;
        loop {
            let line = conn.line().await.map_err(|e| e.to_string())?;
            match line.as_str() {
                "PONG" => break,
                "+OK" => {}
                l if l.starts_with("INFO ") => {}
                l if l.starts_with("-ERR") => {
                    return Err(format!(
                        "the server refused the connection: {}",
                        &l[4..].trim()
                    ));
                }
                other => return Err(format!("unexpected answer to CONNECT: {other}")),
            }
        }
        let sub = format!("SUB {}.* 1\r\n", conn.inbox);
        conn.out.extend_from_slice(sub.as_bytes());
        Ok(conn)
    }

    /// Queue `HPUB subject reply` with `headers` and `payload` (sent by [`Conn::flush`]).
    pub fn publish(
        &mut self,
        subject: &str,
        reply: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) {
        let mut h = String::from("NATS/1.0\r\n");
        for (name, value) in headers {
            h.push_str(name);
            h.push_str(": ");
            h.push_str(value);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        let total = h.len() + payload.len();
        self.out.extend_from_slice(
            format!("HPUB {subject} {reply} {} {total}\r\n", h.len()).as_bytes(),
        );
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        let io = self.io.get_mut();
        io.write_all(&self.out).await?;
        io.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// The next message to the inbox, answering the server's `PING`s on the way.
    pub async fn next(&mut self) -> Result<Inbound, String> {
        loop {
            let line = self.line().await.map_err(|e| e.to_string())?;
            let mut parts = line.split_ascii_whitespace();
            match parts.next() {
                Some("PING") => {
                    self.out.extend_from_slice(b"PONG\r\n");
                    self.flush().await.map_err(|e| e.to_string())?;
                }
                Some("PONG" | "+OK" | "INFO") => {}
                Some("-ERR") => return Err(format!("the server said: {}", &line[4..].trim())),
                Some(kind @ ("MSG" | "HMSG")) => {
                    let args: Vec<&str> = parts.collect();
                    let subject = args.first().copied().unwrap_or_default().to_string();
                    let sizes: Vec<usize> = match kind {
                        // MSG subject sid [reply] bytes
                        "MSG" => vec![parse(args.last())?],
                        // HMSG subject sid [reply] header-bytes total-bytes
                        _ => vec![
                            parse(args.get(args.len().wrapping_sub(2)))?,
                            parse(args.last())?,
                        ],
                    };
                    let total = *sizes.last().unwrap();
                    if total > MAX_MESSAGE {
                        return Err(format!("a message of {total} bytes to the inbox"));
                    }
                    let mut buf = vec![0; total + 2];
                    self.io
                        .read_exact(&mut buf)
                        .await
                        .map_err(|e| e.to_string())?;
                    buf.truncate(total);
                    let (status, payload) = if sizes.len() == 2 {
                        let header_len = sizes[0].min(total);
                        let head = String::from_utf8_lossy(&buf[..header_len]);
                        let status = head
                            .lines()
                            .next()
                            .and_then(|l| l.strip_prefix("NATS/1.0"))
                            .and_then(|rest| rest.split_whitespace().next())
                            .and_then(|code| code.parse().ok());
                        (status, buf[header_len..].to_vec())
                    } else {
                        (None, buf)
                    };
                    return Ok(Inbound {
                        subject,
                        status,
                        payload,
                    });
                }
                _ => return Err(format!("not the NATS protocol: '{line}'")),
            }
        }
    }

    async fn line(&mut self) -> std::io::Result<String> {
        read_line(&mut self.io).await
    }
}

fn parse(n: Option<&&str>) -> Result<usize, String> {
    n.and_then(|n| n.parse().ok())
        .ok_or_else(|| "a message line without its size".to_string())
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = io.take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

async fn read_info<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> Result<Value, String> {
    let line = read_line(io).await.map_err(|e| e.to_string())?;
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| format!("not a NATS server (it said '{}')", truncate(&line)))?;
    serde_json::from_str(json).map_err(|e| format!("the server's INFO is not JSON: {e}"))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_carries_its_headers_and_sizes() {
        let (client, _server) = tokio::io::duplex(16);
        let mut conn = Conn {
            io: BufReader::new(Box::new(client)),
            out: Vec::new(),
            inbox: "_INBOX.x".into(),
            max_payload: 1024,
        };
        conn.publish(
            "tidemark.photos",
            "_INBOX.x.1",
            &[("Nats-Msg-Id", "e1")],
            b"{}",
        );
        let text = String::from_utf8(conn.out).unwrap();
        assert_eq!(
            text,
            "HPUB tidemark.photos _INBOX.x.1 29 31\r\nNATS/1.0\r\nNats-Msg-Id: e1\r\n\r\n{}\r\n"
        );
    }

    #[tokio::test]
    async fn acknowledgements_and_no_responders_parse() {
        let (client, mut server) = tokio::io::duplex(4096);
        server
            .write_all(
                b"PING\r\nMSG _INBOX.x.1 1 22\r\n{\"stream\":\"S\",\"seq\":1}\r\n\
                  HMSG _INBOX.x.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
            )
            .await
            .unwrap();
        let mut conn = Conn {
            io: BufReader::new(Box::new(client)),
            out: Vec::new(),
            inbox: "_INBOX.x".into(),
            max_payload: 1024,
        };
        let ack = conn.next().await.unwrap();
        assert_eq!(ack.subject, "_INBOX.x.1");
        assert_eq!(ack.status, None);
        assert_eq!(ack.payload, br#"{"stream":"S","seq":1}"#);
        let none = conn.next().await.unwrap();
        assert_eq!(
            (none.subject.as_str(), none.status),
            ("_INBOX.x.2", Some(503))
        );
        let mut pong = [0; 6];
        server.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"PONG\r\n");
    }
}
