//! Request bodies for one webhook delivery: one event, or a batch, in the format the subscription
//! chose. Rendering is pure (no I/O, no clock), so a retry of the same items sends the same bytes
//! and the same signature input.
//!
//! - `s3`: AWS S3's event notification structure with its field names, so existing S3/Lambda
//!   handlers parse it unchanged. Keys are form-encoded as S3 does (space → `+`, `/` kept, the
//!   rest of the non-alphanumerics as `%XX`). `sequencer` is the per-key sequence as 16 uppercase
//!   hex digits, so comparing two sequencers as strings orders them, as S3 documents. Each record
//!   also carries a `tidemark` object (event id = idempotency key, sequence, log position, replay
//!   job); S3 consumers ignore fields they do not know.
//! - `cloudevents-binary` / `cloudevents-structured`: CloudEvents 1.0 over HTTP. `source` is
//!   `{context source}/buckets/{bucket}` (e.g. `/tidemark/eu-west-1/buckets/photos`): a relative
//!   URI reference naming the producer and the bucket, so `source` + `id` is unique and consumers
//!   can route per bucket without parsing `data`. `subject` is the key. `sequence` (the sequence
//!   extension) is the per-key sequence zero-padded to 19 digits, because that extension requires
//!   values to be lexicographically orderable. Extension values are strings in both modes, so a
//!   consumer reads the same thing whichever mode it gets. Binary mode cannot hold several
//!   events, so a batch is sent in batched mode (`application/cloudevents-batch+json`), whichever
//!   of the two was chosen.
//! - `avro`: the event's Confluent-wire bytes (magic 0, 4-byte schema id, Avro binary) exactly as
//!   read from the log, so the receiver decodes them with any schema-registry deserializer. The
//!   content type is our own vendor type, `application/vnd.tidemark.confluent-avro`: the body is
//!   neither a bare Avro datum (`avro/binary`) nor an object container file (`application/avro`),
//!   and a generic name would invite decoding it as one. The schema id is repeated in
//!   `tidemark-schema-id` so receivers can route without reading the body. One record per request.

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use tidemark_core::event::ObjectEvent;
use tidemark_core::time::format_us;
use uuid::Uuid;

use super::s3;

/// How events are put in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    S3,
    CloudeventsBinary,
    CloudeventsStructured,
    Avro,
}

impl Format {
    /// The name used in subscription JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::S3 => "s3",
            Format::CloudeventsBinary => "cloudevents-binary",
            Format::CloudeventsStructured => "cloudevents-structured",
            Format::Avro => "avro",
        }
    }

    /// Whether one request may carry several events.
    pub fn supports_batches(self) -> bool {
        !matches!(self, Format::Avro)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_CLOUDEVENT: &str = "application/cloudevents+json";
pub const CONTENT_TYPE_CLOUDEVENT_BATCH: &str = "application/cloudevents-batch+json";
pub const CONTENT_TYPE_AVRO: &str = "application/vnd.tidemark.confluent-avro";

/// One event to deliver: decoded, plus the raw Confluent-wire Avro bytes it was read as, and
/// where it sits in the log.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub event: &'a ObjectEvent,
    /// Sent unchanged by the `avro` format.
    pub wire: &'a [u8],
    pub partition: u32,
    pub offset: u64,
}

/// What the subscription adds to every payload.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The subscription name; S3's `configurationId`.
    pub subscription: &'a str,
    /// CloudEvents `source` base naming this deployment, e.g. `/tidemark/eu-1`.
    pub source: &'a str,
    /// `Some(job id)` when the delivery is a replay, so receivers can tell re-deliveries apart.
    pub replay: Option<&'a str>,
}

/// A rendered request: what goes in `Content-Type`, the extra headers, and the body.
#[derive(Debug, Clone)]
pub struct Payload {
    pub content_type: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("nothing to deliver: a request needs at least one event")]
    Empty,
    #[error(
        "format '{format}' sends one event per request but {count} were given; \
         set the subscription's batch.max_events to 1"
    )]
    BatchNotSupported { format: Format, count: usize },
    #[error(
        "event {event_id} is not in Confluent wire format ({len} bytes; expected magic byte 0 \
         and a 4-byte schema id before the Avro body)"
    )]
    NotConfluentWire { event_id: Uuid, len: usize },
}

/// Renders `items` (in log order) as one request body in `format`.
pub fn render(format: Format, ctx: &Context, items: &[Item]) -> Result<Payload, FormatError> {
    if items.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(match (format, items) {
        (Format::S3, _) => {
            #[derive(serde::Serialize)]
            struct Records<'a> {
                #[serde(rename = "Records")]
                records: Vec<s3::S3Record<'a>>,
            }
            let records = items.iter().map(|item| s3::s3_record(ctx, item)).collect();
            // Sized for a typical record, so the buffer is not regrown and copied as it fills.
            let mut body = Vec::with_capacity(1024 * items.len());
            serde_json::to_writer(&mut body, &Records { records }).expect("records serialize");
            Payload {
                content_type: CONTENT_TYPE_JSON,
                headers: Vec::new(),
                body: body.into(),
            }
        }
        (Format::CloudeventsBinary, [item]) => cloudevent_binary(ctx, item),
        (Format::CloudeventsStructured, [item]) => {
            json_payload(CONTENT_TYPE_CLOUDEVENT, cloudevent_structured(ctx, item))
        }
        (Format::CloudeventsBinary | Format::CloudeventsStructured, _) => {
            let events: Vec<Value> = items
                .iter()
                .map(|item| cloudevent_structured(ctx, item))
                .collect();
            json_payload(CONTENT_TYPE_CLOUDEVENT_BATCH, Value::Array(events))
        }
        (Format::Avro, [item]) => avro(ctx, item)?,
        (Format::Avro, _) => {
            return Err(FormatError::BatchNotSupported {
                format,
                count: items.len(),
            });
        }
    })
}

fn json_payload(content_type: &'static str, body: Value) -> Payload {
    Payload {
        content_type,
        headers: Vec::new(),
        body: Bytes::from(body.to_string()),
    }
}

/// One CloudEvents context attribute: its name, its binary-mode header and its canonical
/// string value.
struct Attribute {
    name: &'static str,
    header: HeaderName,
    value: String,
}

/// Binary mode maps every attribute to a header named `ce-` + the attribute name (3.1.3.1).
macro_rules! attribute {
    ($name:literal, $value:expr) => {
        Attribute {
            name: $name,
            header: HeaderName::from_static(concat!("ce-", $name)),
            value: $value,
        }
    };
}

/// The context attributes of one event, in the order they are written. `data` and
/// `datacontenttype` are left to each mode.
fn cloudevent_attributes(ctx: &Context, item: &Item) -> Vec<Attribute> {
    let e = item.event;
    let mut attributes = vec![
        attribute!("specversion", "1.0".to_string()),
        attribute!("id", e.event_id.to_string()),
        attribute!("source", cloudevent_source(ctx, &e.bucket)),
        attribute!(
            "type",
            format!("io.tidemark.object.{}", e.event_type.as_str())
        ),
        attribute!("time", format_us(e.event_time)),
        attribute!("sequence", format!("{:019}", e.sequence.max(0))),
        attribute!("tidemarkpartition", item.partition.to_string()),
        attribute!("tidemarkoffset", item.offset.to_string()),
    ];
    // `subject` must be non-empty when present; bucket and system events have no key.
    if !e.key.is_empty() {
        attributes.push(attribute!("subject", e.key.clone()));
    }
    if let Some(job) = ctx.replay {
        attributes.push(attribute!("tidemarkreplay", job.to_string()));
    }
    attributes
}

fn cloudevent_source(ctx: &Context, bucket: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    format!(
        "{}/buckets/{}",
        ctx.source.trim_end_matches('/'),
        percent_encode(bucket, keep, false)
    )
}

fn cloudevent_structured(ctx: &Context, item: &Item) -> Value {
    let mut event: Map<String, Value> = cloudevent_attributes(ctx, item)
        .into_iter()
        .map(|a| (a.name.to_string(), Value::String(a.value)))
        .collect();
    event.insert("datacontenttype".into(), CONTENT_TYPE_JSON.into());
    event.insert("data".into(), item.event.to_json());
    Value::Object(event)
}

fn cloudevent_binary(ctx: &Context, item: &Item) -> Payload {
    let headers = cloudevent_attributes(ctx, item)
        .into_iter()
        .map(|a| (a.header, encoded_header_value(&a.value)))
        .collect();
    Payload {
        content_type: CONTENT_TYPE_JSON,
        headers,
        body: Bytes::from(item.event.to_json().to_string()),
    }
}

/// The HTTP binding (3.1.3.2) requires space, `"`, `%` and everything outside U+0021..U+007E to
/// be percent-encoded as UTF-8 bytes; what is left is visible ASCII, always a valid header value.
fn encoded_header_value(value: &str) -> HeaderValue {
    let keep = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    HeaderValue::try_from(percent_encode(value, keep, false))
        .expect("percent-encoded text is visible ASCII")
}

fn avro(ctx: &Context, item: &Item) -> Result<Payload, FormatError> {
    let schema_id = match item.wire {
        [0, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => {
            return Err(FormatError::NotConfluentWire {
                event_id: item.event.event_id,
                len: item.wire.len(),
            });
        }
    };
    let mut headers = vec![
        (
            HeaderName::from_static("tidemark-schema-id"),
            HeaderValue::from(schema_id),
        ),
        (
            HeaderName::from_static("tidemark-partition"),
            HeaderValue::from(item.partition),
        ),
        (
            HeaderName::from_static("tidemark-offset"),
            HeaderValue::from(item.offset),
        ),
    ];
    if let Some(job) = ctx.replay {
        headers.push((
            HeaderName::from_static("tidemark-replay"),
            encoded_header_value(job),
        ));
    }
    Ok(Payload {
        content_type: CONTENT_TYPE_AVRO,
        headers,
        body: Bytes::copy_from_slice(item.wire),
    })
}

/// Percent-encodes every UTF-8 byte of `text` that `keep` rejects, as `%XX` with upper-case hex;
/// with `space_as_plus`, spaces become `+` (form encoding) instead of `%20`.
pub(super) fn percent_encode(text: &str, keep: impl Fn(u8) -> bool, space_as_plus: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else if b == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::s3::s3_key;
    use tidemark_core::event::sample_event;

    use super::*;

    const WIRE: &[u8] = &[0, 0, 0, 1, 2, 0xaa, 0xbb];
    const CTX: Context<'static> = Context {
        subscription: "thumbnails",
        source: "/tidemark/eu-west-1",
        replay: None,
    };

    fn item(event: &ObjectEvent, offset: u64) -> Item<'_> {
        Item {
            event,
            wire: WIRE,
            partition: 3,
            offset,
        }
    }

    fn body_json(p: &Payload) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    fn header<'p>(p: &'p Payload, name: &str) -> Option<&'p str> {
        let (_, v) = p.headers.iter().find(|(n, _)| n.as_str() == name)?;
        Some(v.to_str().unwrap())
    }

    #[test]
    fn names_and_batch_support() {
        for (f, name) in [
            (Format::S3, "\"s3\""),
            (Format::CloudeventsBinary, "\"cloudevents-binary\""),
            (Format::CloudeventsStructured, "\"cloudevents-structured\""),
            (Format::Avro, "\"avro\""),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), name);
            assert_eq!(serde_json::from_str::<Format>(name).unwrap(), f);
            assert_eq!(f.supports_batches(), f != Format::Avro);
        }
    }

    /// A version removed for good is named as S3 names it: the removed version, no size or
    /// ETag (the event's object fields hold what is current afterwards).
    #[test]
    fn a_removed_version_is_the_records_version() {
        let mut e = sample_event(9);
        e.event_type = tidemark_core::event::EventType::ObjectRemovedDelete;
        e.removed_version_id = Some("gone-version".into());
        let p = render(Format::S3, &CTX, &[item(&e, 1)]).unwrap();
        let o = &body_json(&p)["Records"][0]["s3"]["object"];
        assert_eq!(o["versionId"], "gone-version", "{o}");
        assert!(o.get("size").is_none() && o.get("eTag").is_none(), "{o}");
    }

    #[test]
    fn s3_records_use_s3_field_names() {
        let mut e = sample_event(7);
        e.event_time = 1_795_356_000_123_456;
        e.sequence = 0x2b;
        let p = render(Format::S3, &CTX, &[item(&e, 41)]).unwrap();
        assert_eq!(p.content_type, "application/json");
        let r = &body_json(&p)["Records"][0];
        assert_eq!(r["eventVersion"], "2.1");
        assert_eq!(r["eventSource"], "tidemark:s3");
        assert_eq!(r["awsRegion"], "eu-west-1");
        assert_eq!(r["eventTime"], "2026-11-22T14:00:00.123Z");
        assert_eq!(r["eventName"], "ObjectCreated:Put");
        assert_eq!(
            r["userIdentity"]["principalId"],
            e.requester.clone().unwrap()
        );
        assert_eq!(r["requestParameters"]["sourceIPAddress"], "10.1.2.3");
        assert_eq!(r["responseElements"]["x-amz-id-2"], "node-1");
        let s3 = &r["s3"];
        assert_eq!(s3["s3SchemaVersion"], "1.0");
        assert_eq!(s3["configurationId"], "thumbnails");
        assert_eq!(s3["bucket"]["arn"], "arn:aws:s3:::photos");
        assert_eq!(s3["object"]["key"], "raw/2026/11/22/img-00000007.jpg");
        assert_eq!(s3["object"]["size"], e.size.unwrap());
        assert_eq!(
            s3["object"]["eTag"],
            e.etag.clone().unwrap().trim_matches('"')
        );
        assert_eq!(s3["object"]["sequencer"], "000000000000002B");
        assert_eq!(r["tidemark"]["eventId"], e.event_id.to_string());
        assert_eq!(r["tidemark"]["offset"], 41);
        assert!(r["tidemark"].get("replay").is_none());

        // Several items are several records, in order, and a replay is marked.
        let replay = Context {
            replay: Some("job-9"),
            ..CTX
        };
        let e2 = sample_event(8);
        let p = render(Format::S3, &replay, &[item(&e, 1), item(&e2, 2)]).unwrap();
        let records = body_json(&p)["Records"].as_array().unwrap().clone();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1]["tidemark"]["eventId"], e2.event_id.to_string());
        assert_eq!(records[0]["tidemark"]["replay"], "job-9");
    }

    #[test]
    fn s3_keys_are_form_encoded_like_s3() {
        assert_eq!(s3_key("photos/my file.jpg"), "photos/my+file.jpg");
        assert_eq!(s3_key("a+b=c&d"), "a%2Bb%3Dc%26d");
        assert_eq!(s3_key("été/ü 1"), "%C3%A9t%C3%A9/%C3%BC+1");
        assert_eq!(s3_key("x-y_z.*~"), "x-y_z.*%7E");
    }

    #[test]
    fn cloudevents_binary_puts_attributes_in_headers() {
        let e = sample_event(3);
        let p = render(Format::CloudeventsBinary, &CTX, &[item(&e, 17)]).unwrap();
        assert_eq!(p.content_type, "application/json");
        assert_eq!(body_json(&p), e.to_json());
        assert_eq!(header(&p, "ce-specversion"), Some("1.0"));
        assert_eq!(header(&p, "ce-id"), Some(e.event_id.to_string().as_str()));
        assert_eq!(
            header(&p, "ce-source"),
            Some("/tidemark/eu-west-1/buckets/photos")
        );
        assert_eq!(
            header(&p, "ce-type"),
            Some("io.tidemark.object.ObjectCreated:Put")
        );
        assert_eq!(header(&p, "ce-subject"), Some(e.key.as_str()));
        assert_eq!(
            header(&p, "ce-time"),
            Some(format_us(e.event_time).as_str())
        );
        assert_eq!(header(&p, "ce-sequence"), Some("0000000000000000005"));
        assert_eq!(header(&p, "ce-tidemarkpartition"), Some("3"));
        assert_eq!(header(&p, "ce-tidemarkoffset"), Some("17"));
        assert_eq!(header(&p, "ce-tidemarkreplay"), None);

        let replay = Context {
            replay: Some("job 1"),
            ..CTX
        };
        let p = render(Format::CloudeventsBinary, &replay, &[item(&e, 17)]).unwrap();
        assert_eq!(header(&p, "ce-tidemarkreplay"), Some("job%201"));
    }

    #[test]
    fn cloudevents_header_values_are_percent_encoded() {
        let mut e = sample_event(1);
        e.key = "Euro € 😀 \"q\" 100%/ok".into();
        let p = render(Format::CloudeventsBinary, &CTX, &[item(&e, 0)]).unwrap();
        assert_eq!(
            header(&p, "ce-subject"),
            Some("Euro%20%E2%82%AC%20%F0%9F%98%80%20%22q%22%20100%25/ok")
        );
        // The body keeps the key as it is.
        assert_eq!(body_json(&p)["key"], e.key.as_str());
    }

    #[test]
    fn cloudevents_structured_carries_everything_in_the_body() {
        let e = sample_event(2);
        let replay = Context {
            replay: Some("job-2"),
            ..CTX
        };
        let p = render(Format::CloudeventsStructured, &replay, &[item(&e, 9)]).unwrap();
        assert_eq!(p.content_type, "application/cloudevents+json");
        assert!(p.headers.is_empty());
        let ce = body_json(&p);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], e.event_id.to_string());
        assert_eq!(ce["type"], "io.tidemark.object.ObjectCreated:Put");
        assert_eq!(ce["source"], "/tidemark/eu-west-1/buckets/photos");
        assert_eq!(ce["subject"], e.key.as_str());
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["data"], e.to_json());
        assert_eq!(ce["tidemarkoffset"], "9");
        assert_eq!(ce["tidemarkpartition"], "3");
        assert_eq!(ce["tidemarkreplay"], "job-2");
    }

    #[test]
    fn cloudevents_batches_use_batched_mode_in_both_modes() {
        let (a, b) = (sample_event(1), sample_event(2));
        for format in [Format::CloudeventsBinary, Format::CloudeventsStructured] {
            let p = render(format, &CTX, &[item(&a, 1), item(&b, 2)]).unwrap();
            assert_eq!(p.content_type, "application/cloudevents-batch+json");
            let batch = body_json(&p);
            let events = batch.as_array().unwrap();
            assert_eq!(events.len(), 2);
            assert_eq!(events[0]["id"], a.event_id.to_string());
            assert_eq!(events[1]["data"], b.to_json());
            assert!(events.iter().all(|ev| ev["specversion"] == "1.0"));
        }
    }

    #[test]
    fn avro_sends_the_wire_bytes_one_at_a_time() {
        let e = sample_event(4);
        let p = render(Format::Avro, &CTX, &[item(&e, 5)]).unwrap();
        assert_eq!(p.content_type, CONTENT_TYPE_AVRO);
        assert_eq!(&p.body[..], WIRE);
        assert_eq!(header(&p, "tidemark-schema-id"), Some("258"));

        let err = render(Format::Avro, &CTX, &[item(&e, 5), item(&e, 6)]).unwrap_err();
        assert!(matches!(
            err,
            FormatError::BatchNotSupported { count: 2, .. }
        ));
        assert!(err.to_string().contains("batch.max_events"), "{err}");

        let bad = Item {
            wire: &[1, 0, 0],
            ..item(&e, 5)
        };
        let err = render(Format::Avro, &CTX, &[bad]).unwrap_err();
        assert!(matches!(err, FormatError::NotConfluentWire { len: 3, .. }));
    }

    #[test]
    fn nothing_to_render_is_an_error() {
        for f in [Format::S3, Format::CloudeventsBinary, Format::Avro] {
            assert!(matches!(render(f, &CTX, &[]), Err(FormatError::Empty)));
        }
    }
}
