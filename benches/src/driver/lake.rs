//! The Parquet lake sink's writing path, against pyarrow's `write_table` writing the same rows
//! with the same settings on one thread, interleaved in the same run:
//!
//! - (a) from Arrow arrays: `encode` of the record batch `Rows::finish` built;
//! - (b) end to end from the log: read the leading fields of every Avro record (Confluent
//!   wire format, the server's codec) as the partition's reader does to test a prefix rule,
//!   then its whole view as the segment writer does, into the segment's file
//!   (`SegmentFile::push_view`: straight into the Arrow builders, every 20,000 rows handed
//!   to the file's encoder thread), then `finish`, as a partition worker does for a segment;
//! - the peer: `benches/py/pyarrow_write.py` reads the file (a) wrote into a pyarrow Table
//!   (untimed) and times `write_table` of it into memory.
//!
//! Neither side writes to disk: the figures are the encoder's, not the file system's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use apache_avro::Schema;
use clap::{Args, ValueEnum};
use tidemark_core::codec::view::EventView;
use tidemark_core::codec::{EventCodec, SchemaSource};
use tidemark_core::event::{EventType, ObjectEvent, StringMap, sample_event};
use tidemark_sinks::lake::columns::Rows;
use tidemark_sinks::lake::encode::{
    Compression, DEFAULT_PAGE_BYTES, DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL, ParquetOptions,
    encode,
};
use tidemark_sinks::lake::segment_file::SegmentFile;

use super::median;

#[derive(Args)]
pub struct LakeArgs {
    /// Events (rows of the one file written per measurement).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Measurements per path, interleaved (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Parquet codec, for both writers.
    #[arg(long, value_enum, default_value_t = Codec::Zstd)]
    compression: Codec,
    /// zstd level, for both writers.
    #[arg(long, default_value_t = DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
    /// Rows per row group.
    #[arg(long, default_value_t = DEFAULT_ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// Target data page size before compression.
    #[arg(long, default_value_t = DEFAULT_PAGE_BYTES)]
    page_bytes: usize,
    /// Skip the pyarrow peer (python3 with pyarrow is needed for it).
    #[arg(long)]
    no_pyarrow: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Codec {
    Zstd,
    Snappy,
    None,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Snappy => "snappy",
            Codec::None => "none",
        }
    }
}

/// The log partition the rows claim to come from (one file holds one partition's rows).
const PARTITION: u32 = 3;
/// The registry id the records are framed with.
const SCHEMA_ID: u32 = 1;
/// Event time of the first event; events follow at 200 per second (200,000 in under 17
/// minutes, about what one hour directory of a busy bucket holds).
const START_US: i64 = 1_795_356_000_000_000;
const EVENT_GAP_US: i64 = 5_000;

/// The current object event schema under [`SCHEMA_ID`]: what the server's registry gives its
/// codec, so records decode on the same direct path.
struct Current(Arc<Schema>);

impl SchemaSource for Current {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        (id == SCHEMA_ID).then(|| self.0.clone())
    }
}

/// splitmix64's finalizer: a fixed, well-spread hash of `i` for the choices in [`event`].
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event `i` of the log: `sample_event(i)` varied deterministically. Five buckets with their
/// own key shapes and content types (two unversioned), puts (a third of them first puts,
/// without previous state), multipart uploads, copies, removals (delete markers in versioned
/// buckets) and tag changes; zero to three metadata entries, zero to two tags, a SHA-256 on a
/// quarter of the objects, sizes from 1 KiB to 256 MiB, a few requesters, addresses and nodes.
fn event(i: u64) -> ObjectEvent {
    let mut e = sample_event(i);
    let h = mix(i);
    let pick = |shift: u32, n: u64| (h >> shift) % n;
    e.event_time = START_US + i as i64 * EVENT_GAP_US;
    let (bucket, key, content_type, versioned) = match pick(0, 10) {
        0..=5 => (
            "photos",
            format!("raw/2026/11/22/cam-{:02}/img-{i:08}.jpg", pick(8, 17)),
            "image/jpeg",
            true,
        ),
        6 => (
            "photos",
            format!("thumbs/2026/11/22/img-{i:08}_256.webp"),
            "image/webp",
            true,
        ),
        7 => (
            "logs",
            format!(
                "app/{}/2026/11/22/{:02}/part-{i:06}.log.gz",
                ["api", "web", "worker"][pick(8, 3) as usize],
                (i / 10_000) % 24
            ),
            "application/gzip",
            false,
        ),
        8 => (
            "ml-data",
            format!("datasets/train/shard-{:05}-of-02048.tfrecord", i % 2048),
            "application/octet-stream",
            false,
        ),
        _ => (
            "backups",
            format!("db/pg-main/base-{:016x}.tar.zst", mix(i ^ 0x55)),
            "application/zstd",
            true,
        ),
    };
    e.bucket = bucket.into();
    e.key = key;
    e.content_type = Some(content_type.into());
    e.size = Some((1i64 << (10 + pick(12, 19))) + pick(20, 4096) as i64);
    match pick(16, 4) {
        0 => e.metadata.clear(),
        1 => {}
        2 => e.metadata = StringMap::from([("source".into(), "uploader-2.3".into())]),
        _ => {
            let t = (e.event_time / 1_000_000) % 86_400;
            e.metadata.insert(
                "exif-datetime".into(),
                format!(
                    "2026:11:22 {:02}:{:02}:{:02}",
                    t / 3600,
                    t / 60 % 60,
                    t % 60
                ),
            );
        }
    }
    match pick(20, 3) {
        0 => e.tags.clear(),
        1 => {}
        _ => {
            e.tags.insert("retention".into(), "30d".into());
        }
    }
    if pick(24, 4) == 0 {
        e.sha256 = Some(format!(
            "{:016x}{:016x}{:016x}{:016x}",
            mix(i ^ 1),
            mix(i ^ 2),
            mix(i ^ 3),
            mix(i ^ 4)
        ));
    }
    e.requester = Some(
        [
            "arn:aws:iam::123456789012:user/ingest",
            "arn:aws:iam::123456789012:role/etl",
            "anonymous",
        ][pick(28, 3) as usize]
            .into(),
    );
    e.source_ip = Some(format!("10.1.{}.{}", pick(30, 4), pick(32, 200)));
    e.node = Some(format!("node-{}", pick(40, 3)));
    if bucket == "backups" {
        e.storage_class = Some("GLACIER_IR".into());
    }
    if !versioned {
        e.version_id = None;
    }
    let (content_type, storage_class) = (e.content_type.clone(), e.storage_class.clone());
    if let Some(p) = e.previous.as_mut() {
        p.last_modified = e.event_time - (1 + pick(36, 10_000) as i64) * 1_000_000;
        p.content_type = content_type;
        p.storage_class = storage_class;
        if !versioned {
            p.version_id = None;
        }
    }
    match pick(44, 100) {
        0..=59 => {
            if pick(52, 3) == 0 {
                e.previous = None;
                e.sequence = 1;
            }
        }
        60..=69 => {
            e.event_type = EventType::ObjectCreatedCompleteMultipartUpload;
            e.size = Some((64 << 20) + pick(12, 192 << 20) as i64);
            if pick(52, 2) == 0 {
                e.previous = None;
                e.sequence = 1;
            }
        }
        70..=74 => e.event_type = EventType::ObjectCreatedCopy,
        75..=89 => {
            // The object is gone: its fields are empty, the previous state says what it was.
            if versioned {
                e.event_type = EventType::ObjectRemovedDeleteMarkerCreated;
                e.version_id = Some(format!("{:032x}", mix(i ^ 0xdead)));
            } else {
                e.event_type = EventType::ObjectRemovedDelete;
            }
            e.size = None;
            e.etag = None;
            e.content_type = None;
            e.sha256 = None;
            e.metadata.clear();
            e.tags.clear();
            e.storage_class = None;
        }
        _ => {
            // Only the tags changed.
            e.event_type = EventType::ObjectTaggingPut;
            e.tags = StringMap::from([
                ("project".into(), "tidemark".into()),
                ("reviewed".into(), "yes".into()),
            ]);
            if let Some(p) = e.previous.as_mut() {
                p.size = e.size.unwrap_or_default();
                p.etag = e.etag.clone();
                p.sha256 = e.sha256.clone();
            }
        }
    }
    e
}

/// The log: every event's record in the Confluent wire format, back to back in memory.
struct Log {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Log {
    fn write(codec: &EventCodec, events: &[ObjectEvent]) -> Log {
        let mut log = Log {
            bytes: Vec::new(),
            ends: Vec::with_capacity(events.len()),
        };
        for e in events {
            codec.encode(e, &mut log.bytes);
            log.ends.push(log.bytes.len());
        }
        log
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = &self.bytes[start..end];
            start = end;
            record
        })
    }
}

fn options(args: &LakeArgs) -> anyhow::Result<ParquetOptions> {
    let o = ParquetOptions {
        compression: match args.compression {
            Codec::Zstd => Compression::Zstd(args.zstd_level),
            Codec::Snappy => Compression::Snappy,
            Codec::None => Compression::None,
        },
        row_group_rows: args.row_group_rows,
        page_bytes: args.page_bytes,
    };
    o.writer_properties().map_err(anyhow::Error::msg)?;
    Ok(o)
}

/// A view of `record`, which the bench's records all allow.
fn view<'a>(codec: &EventCodec, record: &'a [u8]) -> anyhow::Result<EventView<'a>> {
    codec
        .view(record)?
        .context("a record the bench wrote gives no view")
}

/// (b): from the log's records to a Parquet file, as a partition worker writes a segment: its
/// reader reads each record's leading fields to test the subscription's rule (a prefix, as
/// most lake subscriptions have), and the segment writer reads the whole view from the
/// delivery, its one check, and pushes it into the segment's file, whose encoder thread
/// encodes each full chunk of rows while the next is read. Seconds and the file.
fn end_to_end(codec: &EventCodec, log: &Log, o: &ParquetOptions) -> anyhow::Result<(f64, Vec<u8>)> {
    let start = Instant::now();
    let mut file = SegmentFile::new();
    for (offset, record) in log.records().enumerate() {
        let summary = codec
            .summary(record)?
            .context("a record the bench wrote has a summary")?;
        std::hint::black_box(summary.key.starts_with("photos/"));
        file.push_view(o, &view(codec, record)?, PARTITION, offset as u64, &mut 1);
    }
    let file = file.finish(o).map_err(anyhow::Error::msg)?;
    Ok((start.elapsed().as_secs_f64(), file))
}

/// A Parquet file's rows, as one batch, and the rows of each of its row groups.
fn read_back(file: &[u8]) -> anyhow::Result<(arrow_array::RecordBatch, Vec<i64>)> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(file),
    )?;
    let groups = (reader.metadata().row_groups().iter())
        .map(|g| g.num_rows())
        .collect();
    let schema = reader.schema().clone();
    let batches = reader.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok((
        arrow_select::concat::concat_batches(&schema, &batches)?,
        groups,
    ))
}

/// (b) in steps, to see where its time goes: read all views (once), push all, finish, encode
/// (seconds).
fn steps(codec: &EventCodec, log: &Log, o: &ParquetOptions) -> anyhow::Result<[f64; 4]> {
    let t0 = Instant::now();
    let views = log
        .records()
        .map(|r| view(codec, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t1 = Instant::now();
    let mut rows = Rows::new();
    for (offset, e) in views.iter().enumerate() {
        rows.push_view(e, PARTITION, offset as u64);
    }
    let t2 = Instant::now();
    let batch = rows.finish();
    let t3 = Instant::now();
    let file = encode(&batch, o).map_err(anyhow::Error::msg)?;
    let t4 = Instant::now();
    std::hint::black_box(file);
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3].map(|d| d.as_secs_f64()))
}

/// pyarrow in a python3 process that stays up for the whole run, so its writes interleave
/// with ours and each is timed warm.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    version: String,
    arrow_bytes: f64,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn start(file: &[u8], rows: usize, args: &LakeArgs) -> anyhow::Result<Peer> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("pyarrow_write.py");
        std::fs::write(
            &script,
            include_str!("../../../benches/py/pyarrow_write.py"),
        )?;
        let input = dir.path().join("rows.parquet");
        std::fs::write(&input, file)?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&input)
            .args(["--compression", args.compression.name()])
            .args(["--zstd-level", &args.zstd_level.to_string()])
            .args(["--row-group-rows", &args.row_group_rows.to_string()])
            .args(["--page-bytes", &args.page_bytes.to_string()])
            .arg("--stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("run python3 (install pyarrow with `pip install pyarrow`)")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("python3 stdout")?);
        let mut peer = Peer {
            child,
            stdin,
            stdout,
            version: String::new(),
            arrow_bytes: 0.0,
            _dir: dir,
        };
        let ready = peer.line()?;
        if ready["rows"].as_u64() != Some(rows as u64) {
            bail!("pyarrow read {} rows, not {rows}", ready["rows"]);
        }
        peer.version = ready["pyarrow"].as_str().unwrap_or("?").to_string();
        peer.arrow_bytes = ready["arrow_bytes"].as_f64().unwrap_or(f64::NAN);
        Ok(peer)
    }

    fn line(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the pyarrow peer exited early (its error is above)");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// One timed `write_table`: seconds and the file's size.
    fn write(&mut self) -> anyhow::Result<(f64, u64)> {
        let stdin = self.stdin.as_mut().context("peer stdin")?;
        stdin.write_all(b"write\n")?;
        stdin.flush()?;
        let v = self.line()?;
        Ok((
            v["seconds"].as_f64().context("seconds")?,
            v["bytes"].as_u64().context("bytes")?,
        ))
    }

    /// Close the peer; its summary (per-column sizes of both files).
    fn finish(mut self) -> anyhow::Result<serde_json::Value> {
        drop(self.stdin.take());
        let summary = self.line()?;
        self.child.wait()?;
        Ok(summary)
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn ratios(ours: &[f64], theirs: &[f64]) -> String {
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| format!("{:.2}x", a / b))
        .collect::<Vec<_>>()
        .join(" ")
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

pub fn run(args: LakeArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.runs == 0 {
        bail!("--events and --runs must be positive");
    }
    let o = options(&args)?;
    let n = args.events;
    let schema = Schema::parse_str(tidemark_schemas::object_event_latest().text)?;
    let codec = EventCodec::new(SCHEMA_ID, Arc::new(Current(Arc::new(schema))))?;
    let events: Vec<ObjectEvent> = (0..n as u64).map(event).collect();
    let log = Log::write(&codec, &events);
    // The records must decode to the events, or the end-to-end figure means nothing.
    for (record, e) in log.records().zip(&events) {
        if codec.decode(record)? != *e {
            bail!("record of {} does not decode to its event", e.key);
        }
    }
    let mut rows = Rows::with_capacity(n);
    for (offset, e) in events.iter().enumerate() {
        rows.push(e, PARTITION, offset as u64);
    }
    let plain_bytes = rows.approx_bytes() as f64;
    let batch = rows.finish();
    drop(events);
    let mut arrow_bytes = 0;
    for column in batch.columns() {
        arrow_bytes += column.to_data().get_slice_memory_size()?;
    }
    let arrow_bytes = arrow_bytes as f64;
    let file = encode(&batch, &o).map_err(anyhow::Error::msg)?;
    // The end-to-end path must write the same rows in the same row groups. Its encoder takes
    // the rows a chunk at a time, so a page may end a few rows away from where one `encode`
    // of them all ends it: the bytes may differ a little, never the rows.
    let streamed = end_to_end(&codec, &log, &o)?.1;
    if read_back(&streamed)? != read_back(&file)? {
        bail!("the end-to-end path wrote different rows (or row groups) from the same events");
    }
    println!(
        "(b)'s file: {} bytes, (a)'s {} bytes ({:+.2} %)",
        thousands(streamed.len() as f64),
        thousands(file.len() as f64),
        100.0 * (streamed.len() as f64 / file.len() as f64 - 1.0)
    );
    let mut peer = if args.no_pyarrow {
        None
    } else {
        Some(Peer::start(&file, n, &args)?)
    };

    let (file_bytes, log_bytes) = (file.len() as f64, log.bytes.len() as f64);
    let codec_name = match o.compression {
        Compression::Zstd(level) => format!("zstd level {level}"),
        Compression::Snappy => "snappy".into(),
        Compression::None => "no compression".into(),
    };
    let groups = n.div_ceil(o.row_group_rows);
    println!(
        "Parquet lake: {} events -> one Parquet file in memory, one core, median of {} runs, \
         interleaved in a rotated order",
        thousands(n as f64),
        args.runs
    );
    println!(
        "  log: {} Avro records in the Confluent wire format, {:.1} MB ({:.0} bytes/event); \
         Arrow batch {:.1} MB; plain values (Rows::approx_bytes) {:.1} MB",
        thousands(n as f64),
        mb(log_bytes),
        log_bytes / n as f64,
        mb(arrow_bytes),
        mb(plain_bytes)
    );
    println!(
        "  settings, both writers: {codec_name}; {} rows per row group ({groups} in this \
         file); data pages of {} bytes / at most 20,000 rows, format v1; dictionaries on, \
         plain fallback past a 1 MiB dictionary page; statistics per column chunk and per page \
         (column and offset indexes); Arrow schema embedded; values written 1,024 at a time",
        thousands(o.row_group_rows as f64),
        thousands(o.page_bytes as f64)
    );
    println!(
        "  MB/s columns: Arrow = the batch's Arrow buffers ({:.1} MB) per second, file = the \
         writer's own output per second, log = Avro records per second",
        mb(arrow_bytes)
    );
    if let Some(p) = peer.as_ref() {
        println!(
            "  peer: pyarrow {} write_table into a BufferOutputStream, cpu_count 1, \
             io_thread_count 1, of a Table read from the file (a) writes ({:.1} MB of Arrow \
             buffers, Table.nbytes)",
            p.version,
            mb(p.arrow_bytes)
        );
    }
    let (mut a, mut b, mut p) = (Vec::new(), Vec::new(), Vec::new());
    let mut step_times: [Vec<f64>; 4] = Default::default();
    let mut peer_bytes = 0;
    for run in 0..args.runs {
        // A rotated order, so no path always runs right after another.
        for k in 0..3 {
            match (run + k) % 3 {
                0 => {
                    let start = Instant::now();
                    let out = encode(&batch, &o).map_err(anyhow::Error::msg)?;
                    a.push(start.elapsed().as_secs_f64());
                    std::hint::black_box(out);
                }
                1 => b.push(end_to_end(&codec, &log, &o)?.0),
                _ => {
                    if let Some(peer) = peer.as_mut() {
                        let (t, bytes) = peer.write()?;
                        p.push(t);
                        peer_bytes = bytes;
                    }
                }
            }
        }
        for (all, t) in step_times.iter_mut().zip(steps(&codec, &log, &o)?) {
            all.push(t);
        }
    }
    let summary = peer.map(Peer::finish).transpose()?;

    let rate = |ts: &[f64]| -> Vec<f64> { ts.iter().map(|t| n as f64 / t).collect() };
    let (ra, rb, rp) = (rate(&a), rate(&b), rate(&p));
    let (ta, tb) = (median(a.clone()), median(b.clone()));
    println!();
    println!(
        "  {:<44} {:>11} {:>11} {:>10} {:>10} {:>11}",
        "path", "rows/s", "Arrow MB/s", "file MB/s", "log MB/s", "vs pyarrow"
    );
    let tp = (!p.is_empty()).then(|| median(p.clone()));
    let vs = |t: f64| tp.map_or("-".to_string(), |tp| format!("{:.2}x", tp / t));
    println!(
        "  {:<44} {:>11} {:>11.1} {:>10.1} {:>10} {:>11}",
        "(a) tidemark encode, from Arrow arrays",
        thousands(n as f64 / ta),
        mb(arrow_bytes) / ta,
        mb(file_bytes) / ta,
        "-",
        vs(ta)
    );
    println!(
        "  {:<44} {:>11} {:>11.1} {:>10.1} {:>10.1} {:>11}",
        "(b) tidemark end to end, from Avro records",
        thousands(n as f64 / tb),
        mb(arrow_bytes) / tb,
        mb(file_bytes) / tb,
        mb(log_bytes) / tb,
        vs(tb)
    );
    if let Some(tp) = tp {
        println!(
            "  {:<44} {:>11} {:>11.1} {:>10.1} {:>10} {:>11}",
            "pyarrow write_table, 1 thread",
            thousands(n as f64 / tp),
            mb(arrow_bytes) / tp,
            mb(peer_bytes as f64) / tp,
            "-",
            "1.00x"
        );
    }
    let [d, pu, f, e] = step_times.map(median);
    println!(
        "  (b) in steps: views {:.0} ms, Rows::push_view {:.0} ms, finish {:.0} ms, encode {:.0} ms \
         (sum {:.0} ms; (a) {:.0} ms, (b) {:.0} ms)",
        d * 1e3,
        pu * 1e3,
        f * 1e3,
        e * 1e3,
        (d + pu + f + e) * 1e3,
        ta * 1e3,
        tb * 1e3
    );
    println!(
        "  per run, rows/s: (a) {}; (b) {}",
        ra.iter()
            .map(|r| thousands(*r))
            .collect::<Vec<_>>()
            .join(" "),
        rb.iter()
            .map(|r| thousands(*r))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let Some(summary) = summary else {
        println!("  file: {} bytes", thousands(file_bytes));
        return Ok(());
    };
    let tp = tp.context("peer timings")?;
    println!(
        "  per run, rows/s: pyarrow {}; (a)/pyarrow {}; (b)/pyarrow {}",
        rp.iter()
            .map(|r| thousands(*r))
            .collect::<Vec<_>>()
            .join(" "),
        ratios(&ra, &rp),
        ratios(&rb, &rp)
    );
    let size_diff = (file_bytes / peer_bytes as f64 - 1.0) * 100.0;
    println!(
        "  file size: tidemark {} bytes, pyarrow {} bytes ({size_diff:+.1} %); footers {} / {} \
         bytes",
        thousands(file_bytes),
        thousands(peer_bytes as f64),
        summary["footer_bytes"][0],
        summary["footer_bytes"][1]
    );
    // The columns whose sizes differ most, to say where a size difference comes from.
    let mut columns: Vec<(String, f64, f64)> = summary["columns"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let size = |i: usize| v[i].as_f64().unwrap_or(0.0);
                    (k.clone(), size(0), size(1))
                })
                .collect()
        })
        .unwrap_or_default();
    columns.sort_by(|x, y| (y.1 - y.2).abs().total_cmp(&(x.1 - x.2).abs()));
    println!(
        "  largest column differences (tidemark / pyarrow bytes): {}",
        columns
            .iter()
            .take(5)
            .map(|(k, ours, theirs)| format!(
                "{k} {} / {} ({:+.1} %)",
                thousands(*ours),
                thousands(*theirs),
                (ours / theirs - 1.0) * 100.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (qa, qb) = (tp / ta, tp / tb);
    println!(
        "  targets: (a) >= 0.8x pyarrow: {} ({qa:.2}x); (b) >= 0.5x pyarrow: {} ({qb:.2}x); \
         file size within 5 % of pyarrow's: {} ({size_diff:+.1} %)",
        met(qa >= 0.8),
        met(qb >= 0.5),
        met(size_diff.abs() <= 5.0),
    );
    Ok(())
}
