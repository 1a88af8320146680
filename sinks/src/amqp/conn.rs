//! One AMQP connection with one channel in confirm mode: the handshake (PLAIN login, tuning,
//! virtual host), publishing persistent messages, and the broker's confirms, returns and
//! closes.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::frame::{self, Args, BODY, Field, HEADER, HEARTBEAT, METHOD, Reader};
use crate::client::Outbound;
use crate::socket::{self, Stream};

/// Classes and methods (class, method) the publisher uses.
const CONNECTION_START: (u16, u16) = (10, 10);
const CONNECTION_TUNE: (u16, u16) = (10, 30);
const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
const CONNECTION_CLOSE: (u16, u16) = (10, 50);
const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
const CHANNEL_CLOSE: (u16, u16) = (20, 40);
const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
const BASIC_ACK: (u16, u16) = (60, 80);
const BASIC_NACK: (u16, u16) = (60, 120);
const BASIC_RETURN: (u16, u16) = (60, 50);

/// The channel everything goes on.
const CHANNEL: u16 = 1;
/// The largest frame we ask for (the broker may offer less).
const FRAME_MAX: u32 = 128 * 1024;
/// A frame larger than this from the broker is a protocol error here.
const MAX_INBOUND: u32 = 1 << 20;

/// Where and as whom to connect.
pub struct Login<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
    pub vhost: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// Properties of a published message.
pub struct Properties<'a> {
    pub content_type: &'a str,
    pub message_id: &'a str,
    pub kind: &'a str,
    pub timestamp: u64,
    pub headers: Vec<(&'a str, &'a str)>,
}

/// What the broker said about published messages.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirm {
    /// Delivery tags up to and including this one (or just this one) are confirmed.
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    /// A mandatory message no queue took (before its `Ack`).
    Returned {
        code: u16,
        text: String,
    },
}

pub struct Conn {
    io: BufReader<Stream>,
    out: Vec<u8>,
    frame_max: usize,
    /// The delivery tag of the last message published on the channel.
    pub published: u64,
}

impl Conn {
    pub async fn open(out: &Outbound, login: &Login<'_>) -> Result<Conn, String> {
        let stream = socket::connect(
            out,
            login.host,
            login.port,
            login.tls,
            std::time::Duration::from_secs(10),
        )
        .await?;
        let mut conn = Conn {
            io: BufReader::new(stream),
            out: Vec::with_capacity(8192),
            frame_max: FRAME_MAX as usize,
            published: 0,
        };
        conn.out.extend_from_slice(frame::PROTOCOL_HEADER);
        conn.flush().await?;
        let (method, _) = conn.method(0).await?;
        if method != CONNECTION_START {
            return Err(format!("expected Connection.Start, got {method:?}"));
        }
        let mut plain = vec![0u8];
        plain.extend_from_slice(login.username.as_bytes());
        plain.push(0);
        plain.extend_from_slice(login.password.as_bytes());
        let client = [
            ("product", Field::Str("tidemark")),
            ("version", Field::Str(env!("CARGO_PKG_VERSION"))),
            (
                "capabilities",
                Field::Table(vec![
                    ("publisher_confirms", Field::Bool(true)),
                    ("basic.nack", Field::Bool(true)),
                    // A refused login is answered with a close saying why, not a bare hang-up.
                    ("authentication_failure_close", Field::Bool(true)),
                    ("connection.blocked", Field::Bool(false)),
                ]),
            ),
        ];
        let start_ok = Args::default()
            .table(&client)
            .short("PLAIN")
            .long(&plain)
            .short("en_US");
        frame::method(&mut conn.out, 0, 10, 11, start_ok);
        conn.flush().await?;
        let (method, args) = conn.method(0).await?;
        if method != CONNECTION_TUNE {
            return Err(conn.refused(method, &args, "logging in"));
        }
        let mut r = Reader::new(&args);
        let _channel_max = r.u16()?;
        let offered = r.u32()?;
        let frame_max = match offered {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        conn.frame_max = frame_max as usize;
        // No heartbeats: a pooled connection the broker dropped fails its next batch, which
        // is retried on a new one.
        let tune_ok = Args::default().u16(1).u32(frame_max).u16(0);
        frame::method(&mut conn.out, 0, 10, 31, tune_ok);
        let open = Args::default().short(login.vhost).short("").u8(0);
        frame::method(&mut conn.out, 0, 10, 40, open);
        conn.flush().await?;
        let (method, args) = conn.method(0).await?;
        if method != CONNECTION_OPEN_OK {
            return Err(conn.refused(method, &args, "opening the virtual host"));
        }
        frame::method(&mut conn.out, CHANNEL, 20, 10, Args::default().short(""));
        conn.flush().await?;
        let (method, args) = conn.method(CHANNEL).await?;
        if method != CHANNEL_OPEN_OK {
            return Err(conn.refused(method, &args, "opening a channel"));
        }
        frame::method(&mut conn.out, CHANNEL, 85, 10, Args::default().u8(0));
        conn.flush().await?;
        let (method, args) = conn.method(CHANNEL).await?;
        if method != CONFIRM_SELECT_OK {
            return Err(conn.refused(method, &args, "turning on publisher confirms"));
        }
        Ok(conn)
    }

    /// Why the broker answered `method` (a close, with its reply code and text) to `doing`.
    fn refused(&self, method: (u16, u16), args: &[u8], doing: &str) -> String {
        if method == CONNECTION_CLOSE || method == CHANNEL_CLOSE {
            let mut r = Reader::new(args);
            let code = r.u16().unwrap_or(0);
            let text = r.short().unwrap_or_default();
            return format!("the broker refused {doing}: {code} {text}");
        }
        format!("unexpected {method:?} while {doing}")
    }

    /// Queue a persistent message for `exchange` / `routing_key` (sent by [`Conn::flush`]);
    /// `mandatory`: returned if no queue takes it.
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        props: &Properties<'_>,
        body: &[u8],
    ) {
        let publish = Args::default()
            .u16(0)
            .short(exchange)
            .short(routing_key)
            .u8(mandatory as u8);
        frame::method(&mut self.out, CHANNEL, 60, 40, publish);
        // Content type, headers, delivery mode, message id, timestamp, type, app id.
        let flags: u16 =
            (1 << 15) | (1 << 13) | (1 << 12) | (1 << 7) | (1 << 6) | (1 << 5) | (1 << 3);
        let headers: Vec<(&str, Field<'_>)> = props
            .headers
            .iter()
            .map(|(k, v)| (*k, Field::Str(v)))
            .collect();
        let header = Args::default()
            .u16(60)
            .u16(0)
            .u64(body.len() as u64)
            .u16(flags)
            .short(props.content_type)
            .table(&headers)
            .u8(2)
            .short(props.message_id)
            .u64(props.timestamp)
            .short(props.kind)
            .short("tidemark");
        frame::frame(&mut self.out, HEADER, CHANNEL, &header.0);
        for chunk in body.chunks(self.frame_max - 8) {
            frame::frame(&mut self.out, BODY, CHANNEL, chunk);
        }
        self.published += 1;
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        let io = self.io.get_mut();
        io.write_all(&self.out).await.map_err(|e| e.to_string())?;
        io.flush().await.map_err(|e| e.to_string())?;
        self.out.clear();
        Ok(())
    }

    /// The next confirm, return or close from the broker.
    pub async fn confirm(&mut self) -> Result<Confirm, String> {
        let (method, args) = self.method(CHANNEL).await?;
        let mut r = Reader::new(&args);
        match method {
            BASIC_ACK | BASIC_NACK => {
                let tag = r.u64()?;
                let multiple = r.u8()? & 1 == 1;
                Ok(match method {
                    BASIC_ACK => Confirm::Ack { tag, multiple },
                    _ => Confirm::Nack { tag, multiple },
                })
            }
            BASIC_RETURN => {
                let code = r.u16()?;
                let text = r.short()?;
                // Its content header and body follow.
                let (_, header) = self.frame().await?;
                // class-id, weight, then the body's size.
                let size = Reader::new(header.get(4..).unwrap_or_default())
                    .u64()
                    .unwrap_or(0);
                let mut read = 0u64;
                while read < size {
                    let (_, body) = self.frame().await?;
                    read += body.len() as u64;
                }
                Ok(Confirm::Returned { code, text })
            }
            other => Err(self.refused(other, &args, "publishing")),
        }
    }

    /// The next method frame (heartbeats are skipped by [`Conn::frame`]), checked to be on
    /// `channel` or the connection's.
    async fn method(&mut self, channel: u16) -> Result<((u16, u16), Vec<u8>), String> {
        let (ch, payload) = self.frame().await?;
        if ch != channel && ch != 0 {
            return Err(format!("a frame on channel {ch}"));
        }
        let mut r = Reader::new(&payload);
        let method = (r.u16()?, r.u16()?);
        let args = payload[4..].to_vec();
        if method == CONNECTION_CLOSE || method == CHANNEL_CLOSE {
            // Answer the close (CloseOk), then report it.
            let ok = if method == CONNECTION_CLOSE {
                (10, 51)
            } else {
                (20, 41)
            };
            frame::method(&mut self.out, ch, ok.0, ok.1, Args::default());
            let _ = self.flush().await;
        }
        Ok((method, args))
    }

    /// The next method, header or body frame: (channel, payload).
    async fn frame(&mut self) -> Result<(u16, Vec<u8>), String> {
        loop {
            let mut head = [0u8; 7];
            self.io
                .read_exact(&mut head)
                .await
                .map_err(|e| format!("the broker closed the connection: {e}"))?;
            let kind = head[0];
            let channel = u16::from_be_bytes([head[1], head[2]]);
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
            if size > MAX_INBOUND {
                return Err(format!("a frame of {size} bytes from the broker"));
            }
            let mut payload = vec![0u8; size as usize + 1];
            self.io
                .read_exact(&mut payload)
                .await
                .map_err(|e| format!("the broker closed the connection: {e}"))?;
            if payload.pop() != Some(0xCE) {
                return Err("not the AMQP 0-9-1 protocol (a frame without its end)".into());
            }
            match kind {
                HEARTBEAT => continue,
                METHOD | HEADER | BODY => return Ok((channel, payload)),
                // The broker answers a wrong protocol header with its own ("AMQP..."), which
                // reads here as a frame of type 'A'.
                b'A' => return Err("the broker speaks another AMQP version".into()),
                other => return Err(format!("a frame of unknown type {other}")),
            }
        }
    }
}
