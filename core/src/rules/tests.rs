use uuid::Uuid;

use super::*;
use crate::Error;
use crate::event::{EventType, ObjectEvent, ObjectState};

fn rule(json: &str) -> Rule {
    let spec: RuleSpec = serde_json::from_str(json).unwrap();
    Rule::compile(&spec, "rules", Limits::default()).unwrap()
}

fn error(json: &str) -> (String, String) {
    let spec: RuleSpec = serde_json::from_str(json).unwrap();
    match Rule::compile(&spec, "rules", Limits::default()).unwrap_err() {
        Error::Invalid { field, message } => (field, message),
        other => panic!("{other}"),
    }
}

fn put(key: &str, size: i64) -> ObjectEvent {
    let state = ObjectState {
        sequence: 1,
        size,
        content_type: Some("image/jpeg; q=1".into()),
        metadata: [("team".to_string(), "ml".to_string())].into(),
        tags: [("stage".to_string(), "raw".to_string())].into(),
        ..Default::default()
    };
    let mut e = ObjectEvent::new(
        Uuid::nil(),
        EventType::ObjectCreatedPut,
        0,
        "photos".into(),
        key.into(),
        1,
        Some(state),
    );
    e.requester = Some("alice".into());
    e
}

#[test]
fn the_contract_example_matches_what_it_should() {
    let r = rule(
        r#"{"events": ["ObjectCreated:*"], "prefix": ["photos/"], "suffix": [".jpg", ".png"],
                     "size": {"min": 1024}, "metadata": {"team": "ml"}}"#,
    );
    assert!(r.matches(&put("photos/cat.jpg", 2048)));
    assert!(r.matches(&put("photos/cat.png", 1024)));
    assert!(!r.matches(&put("photos/cat.gif", 2048)), "suffix");
    assert!(!r.matches(&put("videos/cat.jpg", 2048)), "prefix");
    assert!(!r.matches(&put("photos/cat.jpg", 1023)), "size");
    let mut other_team = put("photos/cat.jpg", 2048);
    other_team.metadata.insert("team".into(), "web".into());
    assert!(!r.matches(&other_team), "metadata");
    let mut removed = put("photos/cat.jpg", 2048);
    removed.event_type = EventType::ObjectRemovedDelete;
    assert!(!r.matches(&removed), "event type");
}

#[test]
fn removals_are_judged_by_the_object_they_removed() {
    let r = rule(
        r#"{"events": ["ObjectRemoved:*"], "metadata": {"team": "ml"}, "size": {"max": 5000}}"#,
    );
    let before = put("a", 100).after_state().unwrap();
    let mut e = ObjectEvent::new(
        Uuid::nil(),
        EventType::ObjectRemovedDelete,
        0,
        "photos".into(),
        "a".into(),
        2,
        None,
    );
    e.previous = Some(before);
    assert!(r.matches(&e));
}

#[test]
fn every_condition_and_combinator() {
    let e = put("raw/2026/img-001.jpg", 10);
    let yes = [
        r#"{}"#,
        r#"{"events": ["*"]}"#,
        r#"{"events": ["ObjectCreated:Put"]}"#,
        r#"{"buckets": ["photos", "other"]}"#,
        r#"{"regex": "^raw/\\d{4}/img-\\d+\\.jpg$"}"#,
        r#"{"content_type": ["image/*"]}"#,
        r#"{"content_type": ["IMAGE/JPEG"]}"#,
        r#"{"metadata": {"team": {"exists": true}, "cost": {"exists": false}}}"#,
        r#"{"tags": {"stage": "raw"}}"#,
        r#"{"requester": ["bob", "alice"]}"#,
        r#"{"all": [{"prefix": ["raw/"]}, {"suffix": [".jpg"]}]}"#,
        r#"{"any": [{"prefix": ["x/"]}, {"suffix": [".jpg"]}]}"#,
        r#"{"not": {"prefix": ["x/"]}}"#,
    ];
    // The same answers on a view of the record (maps read from the Avro bytes).
    let mut record = Vec::new();
    crate::codec::object_event::encode(&e, &mut record);
    let view = crate::codec::view::read(&record).unwrap().unwrap();
    // And on the leading fields alone, for the rules that test nothing else.
    let summary = crate::codec::object_event::scan_summary(&record).unwrap();
    let later = ["content_type", "metadata", "tags", "requester", "size"];
    for json in yes {
        assert!(rule(json).matches(&e), "{json}");
        assert!(rule(json).matches_view(&view), "{json}");
        let leading = !later.iter().any(|f| json.contains(f));
        assert_eq!(rule(json).tests_only_summary(), leading, "{json}");
        if leading {
            assert!(rule(json).matches_summary(&summary), "{json}");
        }
    }
    let no = [
        r#"{"events": ["ObjectRemoved:*"]}"#,
        r#"{"buckets": ["other"]}"#,
        r#"{"regex": "^cooked/"}"#,
        r#"{"content_type": ["video/*"]}"#,
        r#"{"metadata": {"team": "web"}}"#,
        r#"{"tags": {"stage": {"exists": false}}}"#,
        r#"{"requester": ["bob"]}"#,
        r#"{"all": [{"prefix": ["raw/"]}, {"suffix": [".png"]}]}"#,
        r#"{"any": [{"prefix": ["x/"]}, {"suffix": [".png"]}]}"#,
        r#"{"not": {"prefix": ["raw/"]}}"#,
    ];
    for json in no {
        assert!(!rule(json).matches(&e), "{json}");
        assert!(!rule(json).matches_view(&view), "{json}");
        let leading = !later.iter().any(|f| json.contains(f));
        assert_eq!(rule(json).tests_only_summary(), leading, "{json}");
        if leading {
            assert!(!rule(json).matches_summary(&summary), "{json}");
        }
    }
    for json in [
        r#"{"not": {"size": {"min": 1}}}"#,
        r#"{"any": [{"prefix": ["x/"]}, {"tags": {"a": "b"}}]}"#,
    ] {
        assert!(!rule(json).tests_only_summary(), "{json}: nested");
    }
    // Rules a reader need not read a record for.
    for json in [
        r#"{}"#,
        r#"{"events": ["*"]}"#,
        r#"{"all": [{}, {"events": ["*"]}]}"#,
        r#"{"any": [{"prefix": ["x/"]}, {}]}"#,
    ] {
        assert!(rule(json).takes_every_event(), "{json}");
    }
    let some = yes
        .iter()
        .chain(&no)
        .filter(|j| !j.contains("\"*\"") && **j != "{}");
    for json in some {
        assert!(!rule(json).takes_every_event(), "{json}");
    }
}

#[test]
fn bad_rules_name_the_field() {
    let cases = [
        (
            r#"{"events": ["ObjectCreate:Put"]}"#,
            "rules.events[0]",
            "unknown event type",
        ),
        (
            r#"{"events": ["Nothing:*"]}"#,
            "rules.events[0]",
            "matches no event type",
        ),
        (
            r#"{"regex": "(unclosed"}"#,
            "rules.regex",
            "invalid regular expression",
        ),
        (
            r#"{"regex": "a{1000}{1000}"}"#,
            "rules.regex",
            "invalid regular expression",
        ),
        (
            r#"{"size": {"min": 10, "max": 5}}"#,
            "rules.size",
            "do not make a range",
        ),
        (r#"{"size": {}}"#, "rules.size", "needs min, max"),
        (
            r#"{"prefix": ["ok", ""]}"#,
            "rules.prefix[1]",
            "must not be empty",
        ),
        (
            r#"{"any": [{"all": [{"regex": "("}]}]}"#,
            "rules.any[0].all[0].regex",
            "invalid",
        ),
    ];
    for (json, field, needle) in cases {
        let (f, m) = error(json);
        assert_eq!(f, field, "{json}: {m}");
        assert!(m.contains(needle), "{json}: {m}");
    }
    let deep = (0..12).fold(r#"{"prefix": ["a"]}"#.to_string(), |inner, _| {
        format!(r#"{{"not": {inner}}}"#)
    });
    assert!(error(&deep).1.contains("nested deeper than 8"));
    let wide = format!(
        r#"{{"prefix": [{}]}}"#,
        (0..300)
            .map(|i| format!("\"p{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(error(&wide).1.contains("too complex"));
    let unknown: Result<RuleSpec, _> = serde_json::from_str(r#"{"prefixes": ["a"]}"#);
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `prefixes`")
    );
}
