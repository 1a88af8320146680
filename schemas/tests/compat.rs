//! Every schema file parses, is listed in `lib.rs`, and each version is BACKWARD compatible
//! with the one before it (a reader on version N decodes data written with N-1).

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use tidemark_schemas::{CONFIG_EVENT, OBJECT_EVENT, SchemaFile};

/// `family.vN.avsc` files in this folder, by family, ordered by version.
fn files_on_disk() -> BTreeMap<String, BTreeMap<u32, String>> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut families: BTreeMap<String, BTreeMap<u32, String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".avsc") else {
            continue;
        };
        let (family, version) = stem
            .rsplit_once(".v")
            .unwrap_or_else(|| panic!("{name}: name it <family>.v<N>.avsc"));
        let version: u32 = version
            .parse()
            .unwrap_or_else(|_| panic!("{name}: version is not a number"));
        families
            .entry(family.to_string())
            .or_default()
            .insert(version, std::fs::read_to_string(&path).unwrap());
    }
    families
}

#[test]
fn every_schema_parses_and_evolves_backward_compatibly() {
    let families = files_on_disk();
    assert!(families.contains_key("object_event") && families.contains_key("config_event"));
    for (family, versions) in &families {
        let numbers: Vec<u32> = versions.keys().copied().collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as u32).collect::<Vec<_>>(),
            "{family}: versions must be 1, 2, 3, ..."
        );
        let mut previous: Option<Schema> = None;
        for (v, text) in versions {
            let schema = Schema::parse_str(text)
                .unwrap_or_else(|e| panic!("{family}.v{v}.avsc does not parse: {e}"));
            if let Some(old) = &previous {
                SchemaCompatibility::can_read(old, &schema).unwrap_or_else(|e| {
                    panic!(
                        "{family}.v{v} cannot read data written with v{}: {e}",
                        v - 1
                    )
                });
            }
            previous = Some(schema);
        }
    }
}

#[test]
fn every_file_is_compiled_in_with_its_version() {
    let families = files_on_disk();
    let check = |family: &str, compiled: &[SchemaFile]| {
        let on_disk = &families[family];
        assert_eq!(
            compiled.len(),
            on_disk.len(),
            "{family}: list every version file in schemas/src/lib.rs"
        );
        for file in compiled {
            assert_eq!(
                file.text, on_disk[&file.version],
                "{family} v{} differs from its file",
                file.version
            );
        }
    };
    check("object_event", OBJECT_EVENT);
    check("config_event", CONFIG_EVENT);
}

#[test]
fn object_event_has_every_contract_field_and_type() {
    let text = tidemark_schemas::object_event_latest().text;
    let schema: serde_json::Value = serde_json::from_str(text).unwrap();
    let fields: Vec<&str> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for required in [
        "event_id",
        "event_type",
        "event_time",
        "bucket",
        "key",
        "version_id",
        "sequence",
        "size",
        "etag",
        "content_type",
        "sha256",
        "metadata",
        "tags",
        "storage_class",
        "requester",
        "source_ip",
        "request_id",
        "region",
        "node",
        "previous",
    ] {
        assert!(fields.contains(&required), "ObjectEvent lacks {required}");
    }
    let doc = schema["fields"][1]["doc"].as_str().unwrap();
    for t in [
        "ObjectCreated:Put",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectTagging:Put",
        "ObjectTagging:Delete",
        "ObjectMetadata:Update",
        "LifecycleTransition",
        "LifecycleExpiration:Delete",
        "ObjectAccessed:Get",
        "ObjectAccessed:Head",
        "ObjectAccess:Denied",
        "BucketCreated",
        "BucketRemoved",
        "BucketConfig:Changed",
        "System:Health",
        "System:Capacity",
    ] {
        assert!(doc.contains(t), "event_type doc does not list {t}");
    }
}
