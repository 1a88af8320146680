//! `POST /v1/rules/test`: a rule evaluated against sample events over HTTP, and every kind of
//! bad rule answered 400 naming the field.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn rules_are_tested_over_http_and_bad_ones_are_named() {
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(&scratch.path().join("data"), &[]);
    let rule = json!({"events": ["ObjectCreated:*"], "prefix": ["photos/"], "suffix": [".jpg", ".png"],
                      "size": {"min": 1024}, "metadata": {"team": "ml"}});
    let event = |key: &str, size: i64, team: &str| json!({"event_type": "ObjectCreated:Put", "bucket": "bkt1", "key": key, "size": size, "metadata": {"team": team}});
    // Real events from the log work as samples too.
    let (status, _) = server.post("/v1/mutations", json!({"mutations": [{"op": "put", "bucket": "bkt1", "key": "photos/x.png", "size": 4096, "metadata": {"team": "ml"}}]}).to_string());
    assert_eq!(status, 200);
    let from_log = log_events(&Backend::Embedded, &server.data_dir).remove(0);
    let events = vec![
        event("photos/a.jpg", 2048, "ml"),
        event("photos/a.gif", 2048, "ml"),
        event("photos/a.jpg", 10, "ml"),
        event("photos/a.jpg", 2048, "web"),
        from_log,
    ];
    let (status, resp) = server.post(
        "/v1/rules/test",
        json!({"rule": rule, "events": events}).to_string(),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["matches"], json!([true, false, false, false, true]));

    let bad: Vec<(Value, &str, &str)> = vec![
        (
            json!({"rule": {"regex": "(x"}, "events": []}),
            "rule.regex",
            "invalid regular expression",
        ),
        (
            json!({"rule": {"events": ["Created"]}, "events": []}),
            "rule.events[0]",
            "unknown event type",
        ),
        (
            json!({"rule": {"any": [{"prefixes": ["a"]}]}, "events": []}),
            "rule.any[0].prefixes",
            "unknown field",
        ),
        (
            json!({"rule": {"size": {"min": -1}}, "events": []}),
            "rule.size",
            "range",
        ),
        (
            json!({"rule": {}, "events": [{"bucket": "b"}]}),
            "events[0].event_type",
            "required",
        ),
        (json!({"rule": {}}), "body", "missing field `events`"),
    ];
    for (body, field, needle) in bad {
        let (status, resp) = server.post("/v1/rules/test", body.to_string());
        assert_eq!(status, 400, "{resp}");
        assert_eq!(resp["error"]["field"], field, "{resp}");
        assert!(
            resp["error"]["message"].as_str().unwrap().contains(needle),
            "{resp}"
        );
    }
    let deep = (0..12).fold(json!({"prefix": ["a"]}), |inner, _| json!({"not": inner}));
    let (status, resp) = server.post(
        "/v1/rules/test",
        json!({"rule": deep, "events": []}).to_string(),
    );
    assert_eq!(status, 400);
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{resp}"
    );
    server.stop();
}
