//! A borrowed view of an object event: every string points into the record it was read from,
//! so a consumer that only copies fields into columns (the lake, the Iceberg journal) or
//! tests them (subscription rules) never allocates an [`ObjectEvent`].
//!
//! A view is read only from records of the current schema version laid out the way our
//! encoder lays them out: maps in one block with strictly increasing keys. Anything else
//! (another writer schema, maps in several blocks, repeated or unsorted keys) is not an
//! error here but "no view" (`Ok(None)`), and the caller decodes the full event instead, so a
//! view always holds exactly what [`object_event::decode`] would give.

use std::borrow::Cow;
use std::collections::btree_map;

use uuid::Uuid;

use super::binary::Reader;
use super::object_event;
use crate::event::{EventSummary, EventType, ObjectEvent, ObjectState, StringMap};
use crate::{Error, Result};

/// A `map<string>`: raw Avro entries already checked, or a decoded map.
#[derive(Debug, Clone, Copy)]
pub enum MapView<'a> {
    /// `count` key/value string pairs, back to back, keys strictly increasing, every length
    /// one byte (strings under 64 bytes). A one-byte length is ASCII, so the block is valid
    /// UTF-8 exactly when every string is: it was checked at once, and entries are sliced out
    /// of it with no check of their own.
    Short {
        entries: &'a str,
        count: usize,
    },
    /// The same with longer strings: each was checked, and is checked again as it is read.
    Avro {
        entries: &'a [u8],
        count: usize,
    },
    Decoded(&'a StringMap),
}

impl<'a> MapView<'a> {
    pub fn len(&self) -> usize {
        match self {
            MapView::Short { count, .. } | MapView::Avro { count, .. } => *count,
            MapView::Decoded(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in key order.
    pub fn iter(&self) -> MapIter<'a> {
        match *self {
            MapView::Short { entries, count } => MapIter::Short(entries, count),
            MapView::Avro { entries, count } => MapIter::Avro(Reader::new(entries), count),
            MapView::Decoded(m) => MapIter::Decoded(m.iter()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        match self {
            MapView::Short { .. } | MapView::Avro { .. } => {
                self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
            }
            MapView::Decoded(m) => m.get(name).map(String::as_str),
        }
    }

    pub fn to_map(&self) -> StringMap {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

pub enum MapIter<'a> {
    /// What is left of a [`MapView::Short`] block, and how many entries.
    Short(&'a str, usize),
    Avro(Reader<'a>, usize),
    Decoded(btree_map::Iter<'a, String, String>),
}

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        match self {
            MapIter::Short(rest, left) => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                let k = short_str(rest);
                let v = short_str(rest);
                Some((k, v))
            }
            MapIter::Avro(r, left) => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Checked when the view was read: these cannot fail.
                let k = r.str().expect("map key checked when the view was read");
                let v = r.str().expect("map value checked when the view was read");
                Some((k, v))
            }
            MapIter::Decoded(it) => it.next().map(|(k, v)| (k.as_str(), v.as_str())),
        }
    }
}

/// The next string of a [`MapView::Short`] block, which `rest` then starts after.
fn short_str<'a>(rest: &mut &'a str) -> &'a str {
    // A one-byte Avro length is the zigzag of a length under 64.
    let len = usize::from(rest.as_bytes()[0] >> 1);
    let (s, after) = rest[1..].split_at(len);
    *rest = after;
    s
}

/// The object before the change ([`ObjectState`]), borrowed.
#[derive(Debug, Clone)]
pub struct StateView<'a> {
    pub version_id: Option<&'a str>,
    pub sequence: i64,
    pub size: i64,
    pub etag: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub metadata: MapView<'a>,
    pub tags: MapView<'a>,
    pub storage_class: Option<&'a str>,
    pub last_modified: i64,
    pub headers: MapView<'a>,
    pub checksum: Option<&'a str>,
    pub part_sizes: Option<Cow<'a, [i64]>>,
}

/// An [`ObjectEvent`], borrowed: the same fields, in the same order.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub event_time: i64,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    pub sequence: i64,
    pub size: Option<i64>,
    pub etag: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub metadata: MapView<'a>,
    pub tags: MapView<'a>,
    pub storage_class: Option<&'a str>,
    pub requester: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub region: Option<&'a str>,
    pub node: Option<&'a str>,
    pub previous: Option<StateView<'a>>,
    pub user_agent: Option<&'a str>,
    pub headers: MapView<'a>,
    pub checksum: Option<&'a str>,
    pub part_sizes: Option<Cow<'a, [i64]>>,
    pub removed_version_id: Option<&'a str>,
}

impl<'a> StateView<'a> {
    pub fn of(s: &'a ObjectState) -> StateView<'a> {
        StateView {
            version_id: s.version_id.as_deref(),
            sequence: s.sequence,
            size: s.size,
            etag: s.etag.as_deref(),
            content_type: s.content_type.as_deref(),
            sha256: s.sha256.as_deref(),
            metadata: MapView::Decoded(&s.metadata),
            tags: MapView::Decoded(&s.tags),
            storage_class: s.storage_class.as_deref(),
            last_modified: s.last_modified,
            headers: MapView::Decoded(&s.headers),
            checksum: s.checksum.as_deref(),
            part_sizes: s.part_sizes.as_deref().map(Cow::Borrowed),
        }
    }

    pub fn to_state(&self) -> ObjectState {
        ObjectState {
            version_id: owned(self.version_id),
            sequence: self.sequence,
            size: self.size,
            etag: owned(self.etag),
            content_type: owned(self.content_type),
            sha256: owned(self.sha256),
            metadata: self.metadata.to_map(),
            tags: self.tags.to_map(),
            storage_class: owned(self.storage_class),
            last_modified: self.last_modified,
            headers: self.headers.to_map(),
            checksum: owned(self.checksum),
            part_sizes: self.part_sizes.as_deref().map(<[i64]>::to_vec),
        }
    }
}

impl<'a> EventView<'a> {
    /// A view of an event already decoded.
    pub fn of(e: &'a ObjectEvent) -> EventView<'a> {
        EventView {
            event_id: e.event_id,
            event_type: e.event_type,
            event_time: e.event_time,
            bucket: &e.bucket,
            key: &e.key,
            version_id: e.version_id.as_deref(),
            sequence: e.sequence,
            size: e.size,
            etag: e.etag.as_deref(),
            content_type: e.content_type.as_deref(),
            sha256: e.sha256.as_deref(),
            metadata: MapView::Decoded(&e.metadata),
            tags: MapView::Decoded(&e.tags),
            storage_class: e.storage_class.as_deref(),
            requester: e.requester.as_deref(),
            source_ip: e.source_ip.as_deref(),
            request_id: e.request_id.as_deref(),
            region: e.region.as_deref(),
            node: e.node.as_deref(),
            previous: e.previous.as_ref().map(StateView::of),
            user_agent: e.user_agent.as_deref(),
            headers: MapView::Decoded(&e.headers),
            checksum: e.checksum.as_deref(),
            part_sizes: e.part_sizes.as_deref().map(Cow::Borrowed),
            removed_version_id: e.removed_version_id.as_deref(),
        }
    }

    /// An event's leading fields, every later field absent: what a rule that tests only
    /// those ([`Rule::tests_only_summary`](crate::rules::Rule::tests_only_summary)) is
    /// matched against.
    pub fn of_summary(s: &EventSummary<'a>) -> EventView<'a> {
        EventView {
            event_id: s.event_id,
            event_type: s.event_type,
            event_time: s.event_time,
            bucket: s.bucket,
            key: s.key,
            version_id: s.version_id,
            sequence: s.sequence,
            size: s.size,
            etag: s.etag,
            content_type: None,
            sha256: None,
            metadata: MapView::Decoded(&EMPTY),
            tags: MapView::Decoded(&EMPTY),
            storage_class: None,
            requester: None,
            source_ip: None,
            request_id: None,
            region: None,
            node: None,
            previous: None,
            user_agent: None,
            headers: MapView::Decoded(&EMPTY),
            checksum: None,
            part_sizes: None,
            removed_version_id: s.removed_version_id,
        }
    }

    pub fn to_event(&self) -> ObjectEvent {
        ObjectEvent {
            event_id: self.event_id,
            event_type: self.event_type,
            event_time: self.event_time,
            bucket: self.bucket.to_owned(),
            key: self.key.to_owned(),
            version_id: owned(self.version_id),
            sequence: self.sequence,
            size: self.size,
            etag: owned(self.etag),
            content_type: owned(self.content_type),
            sha256: owned(self.sha256),
            metadata: self.metadata.to_map(),
            tags: self.tags.to_map(),
            storage_class: owned(self.storage_class),
            requester: owned(self.requester),
            source_ip: owned(self.source_ip),
            request_id: owned(self.request_id),
            region: owned(self.region),
            node: owned(self.node),
            previous: self.previous.as_ref().map(StateView::to_state),
            user_agent: owned(self.user_agent),
            headers: self.headers.to_map(),
            checksum: owned(self.checksum),
            part_sizes: self.part_sizes.as_deref().map(<[i64]>::to_vec),
            removed_version_id: owned(self.removed_version_id),
        }
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// Read a view of a current-version Avro payload (no wire header). `Ok(None)`: the record is
/// laid out in a way a view does not take (see the module comment); decode it in full.
pub fn read(bytes: &[u8]) -> Result<Option<EventView<'_>>> {
    let mut r = Reader::new(bytes);
    let s = object_event::read_summary(&mut r)?;
    macro_rules! map {
        () => {
            match map_view(&mut r)? {
                Some(m) => m,
                None => return Ok(None),
            }
        };
    }
    let mut view = EventView::of_summary(&s);
    view.content_type = r.opt_str()?;
    view.sha256 = r.opt_str()?;
    view.metadata = map!();
    view.tags = map!();
    view.storage_class = r.opt_str()?;
    view.requester = r.opt_str()?;
    view.source_ip = r.opt_str()?;
    view.request_id = r.opt_str()?;
    view.region = r.opt_str()?;
    view.node = r.opt_str()?;
    if r.present()? {
        view.previous = Some(StateView {
            version_id: r.opt_str()?,
            sequence: r.long()?,
            size: r.long()?,
            etag: r.opt_str()?,
            content_type: r.opt_str()?,
            sha256: r.opt_str()?,
            metadata: map!(),
            tags: map!(),
            storage_class: r.opt_str()?,
            last_modified: r.long()?,
            headers: map!(),
            checksum: r.opt_str()?,
            part_sizes: r.opt_longs()?.map(Cow::Owned),
        });
    }
    view.user_agent = r.opt_str()?;
    view.headers = map!();
    view.checksum = r.opt_str()?;
    view.part_sizes = r.opt_longs()?.map(Cow::Owned);
    view.removed_version_id = r.opt_str()?;
    if !r.is_empty() {
        return Err(Error::BadInput(format!(
            "avro: {} trailing bytes after the ObjectEvent record",
            bytes.len() - r.position()
        )));
    }
    Ok(Some(view))
}

static EMPTY: StringMap = StringMap::new();

/// A map in our encoder's layout (one block, keys strictly increasing), entries checked;
/// `None` for any other layout.
fn map_view<'a>(r: &mut Reader<'a>) -> Result<Option<MapView<'a>>> {
    let count = r.long()?;
    if count == 0 {
        return Ok(Some(MapView::Short {
            entries: "",
            count: 0,
        }));
    }
    let Ok(count) = usize::try_from(count) else {
        return Ok(None); // a block with its byte size
    };
    let start = r.position();
    let mut last: Option<&[u8]> = None;
    let mut short = true;
    for _ in 0..count {
        let at = r.position();
        let k = r.bytes()?;
        short &= r.position() - at == k.len() + 1;
        let at = r.position();
        let v = r.bytes()?;
        short &= r.position() - at == v.len() + 1;
        // Byte order is the order of the strings.
        if last.is_some_and(|last| last >= k) {
            return Ok(None);
        }
        last = Some(k);
    }
    let end = r.position();
    let block = r.slice(start, end);
    let entries = if short {
        let text = std::str::from_utf8(block).map_err(|e| {
            Error::BadInput(format!(
                "avro: a map string at byte {} is not valid UTF-8",
                start + e.valid_up_to()
            ))
        })?;
        MapView::Short {
            entries: text,
            count,
        }
    } else {
        let mut check = Reader::new(block);
        for _ in 0..2 * count {
            check.str().map_err(|e| {
                Error::BadInput(format!("{e} (counted from the map at byte {start})"))
            })?;
        }
        MapView::Avro {
            entries: block,
            count,
        }
    };
    if r.long()? != 0 {
        return Ok(None); // a second block
    }
    Ok(Some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::binary::{put_long, put_str};
    use crate::codec::tests::random_event;

    #[test]
    fn views_hold_what_the_full_decoder_gives() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let e = random_event(&mut rng);
            let mut buf = Vec::new();
            object_event::encode(&e, &mut buf);
            let view = read(&buf).unwrap().expect("our encoder's layout");
            assert_eq!(view.to_event(), e);
            assert_eq!(EventView::of(&e).to_event(), e);
            for (k, v) in e.metadata.iter() {
                assert_eq!(view.metadata.get(k), Some(v.as_str()));
            }
            assert_eq!(view.metadata.get("\u{10FFFF}absent"), None);
        }
    }

    /// Whatever bytes a view accepts, the full decoder accepts and decodes to the same event;
    /// whatever it refuses, the full decoder refuses too.
    #[test]
    fn damaged_records_never_give_a_view_the_full_decoder_disagrees_with() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..3_000 {
            let e = random_event(&mut rng);
            let mut buf = Vec::new();
            object_event::encode(&e, &mut buf);
            match rng.u8(0..3) {
                0 => {
                    let at = rng.usize(0..buf.len());
                    buf[at] = rng.u8(..);
                }
                1 => buf.truncate(rng.usize(0..buf.len())),
                _ => buf.push(rng.u8(..)),
            }
            match read(&buf) {
                Ok(Some(view)) => assert_eq!(object_event::decode(&buf).unwrap(), view.to_event()),
                Ok(None) => {}
                Err(_) => assert!(object_event::decode(&buf).is_err()),
            }
        }
    }

    #[test]
    fn maps_in_another_layout_give_no_view() {
        let e = crate::event::sample_event(1);
        let mut buf = Vec::new();
        object_event::encode(&e, &mut buf);
        let plain = read(&buf).unwrap().unwrap();
        assert!(!plain.metadata.is_empty());
        // The same event with its metadata written as two one-entry blocks, and with its keys
        // out of order: both valid Avro, neither our layout.
        let entries: Vec<_> = e.metadata.iter().collect();
        assert!(entries.len() >= 2, "the sample has two metadata entries");
        for layout in ["blocks", "unsorted"] {
            let mut buf = Vec::new();
            let mut other = e.clone();
            other.metadata.clear();
            object_event::encode(&other, &mut buf);
            let at = metadata_at(&buf);
            let mut map = Vec::new();
            match layout {
                "blocks" => {
                    for (k, v) in &entries {
                        put_long(&mut map, 1);
                        put_str(&mut map, k);
                        put_str(&mut map, v);
                    }
                }
                _ => {
                    put_long(&mut map, entries.len() as i64);
                    for (k, v) in entries.iter().rev() {
                        put_str(&mut map, k);
                        put_str(&mut map, v);
                    }
                }
            }
            put_long(&mut map, 0);
            // The empty map is the one byte 0 at `at`.
            assert_eq!(buf[at], 0);
            let record = [&buf[..at], &map, &buf[at + 1..]].concat();
            assert!(read(&record).unwrap().is_none(), "{layout}");
            assert_eq!(object_event::decode(&record).unwrap(), e, "{layout}");
        }
    }

    /// Map strings of 64 bytes and more (two-byte lengths) read as short ones do, and bad
    /// UTF-8 in a map is refused either way, as the full decoder refuses it.
    #[test]
    fn long_map_strings_and_bad_utf8_in_maps() {
        let short = crate::event::sample_event(3);
        let mut long = short.clone();
        long.metadata.insert("long-".repeat(16), "é".repeat(40));
        for (e, is_short) in [(&short, true), (&long, false)] {
            let mut buf = Vec::new();
            object_event::encode(e, &mut buf);
            let view = read(&buf).unwrap().unwrap();
            assert_eq!(view.to_event(), *e);
            assert_eq!(matches!(view.metadata, MapView::Short { .. }), is_short);
            assert_eq!(view.metadata.get("team"), Some("ml"));
            // A byte of a metadata value made invalid UTF-8.
            let at = match is_short {
                true => buf.windows(5).position(|w| w == b"cam-3").unwrap(),
                false => buf.windows(2).position(|w| w == "é".as_bytes()).unwrap() + 1,
            };
            buf[at] = 0xff;
            let err = read(&buf).unwrap_err().to_string();
            assert!(err.contains("UTF-8"), "{err}");
            assert!(object_event::decode(&buf).is_err());
        }
    }

    /// Where the metadata map starts in a record.
    fn metadata_at(record: &[u8]) -> usize {
        let mut r = Reader::new(record);
        object_event::read_summary(&mut r).unwrap();
        r.opt_str().unwrap(); // content_type
        r.opt_str().unwrap(); // sha256
        r.position()
    }
}
