//! Criterion benchmark of the ObjectEvent codec: the direct path vs apache-avro's Value path.
//! Run: `cargo bench -p tidemark-benches`.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidemark_core::codec::{object_event, value};
use tidemark_core::event::sample_event;

fn codec(c: &mut Criterion) {
    let event = sample_event(42);
    let schema = Schema::parse_str(tidemark_schemas::object_event_latest().text).unwrap();
    let mut group = c.benchmark_group("object_event_round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            object_event::encode(&event, &mut buf);
            object_event::decode(&buf).unwrap()
        })
    });
    let writer = GenericDatumWriter::builder(&schema)
        .validate(false)
        .build()
        .unwrap();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    group.bench_function("apache_avro_value", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            writer
                .write_value(&mut buf, value::to_value(&event))
                .unwrap();
            value::from_value(reader.read_value(&mut &buf[..]).unwrap()).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
