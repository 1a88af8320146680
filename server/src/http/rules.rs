//! `POST /v1/rules/test`: evaluate a rule against sample events, to try it before a
//! subscription uses it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::event::ObjectEvent;
use tidemark_core::rules::{Limits, Rule, RuleSpec};

use super::error::{ApiError, parse_json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    rule: RuleSpec,
    /// Events in their JSON view (as `log tail --json` prints them); `event_type`, `bucket`
    /// and `key` are required.
    events: Vec<Value>,
}

pub async fn test(body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let req: TestRequest = parse_json(&body?)?;
    let rule = Rule::compile(&req.rule, "rule", Limits::default())?;
    let matches = req
        .events
        .iter()
        .enumerate()
        .map(|(i, v)| ObjectEvent::from_json(v, &format!("events[{i}]")).map(|e| rule.matches(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "matches": matches })))
}
