//! `POST /v1/ingest/s3-events`: S3 / MinIO event notifications (`{"Records": [...]}`) become
//! events, through the same path as `POST /v1/mutations` (forwarded to the node that writes
//! each key). Each record is answered: `accepted` (with its event), `duplicate` (its source
//! identity was accepted before: nothing appended), `ignored` (a test event, a read) or
//! `refused` (the error names the field, e.g. `Records[2].s3.object.key`).

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::ingest::s3_events::{Record, parse_notification};
use tidemark_core::ingest::{Mutation, RequestContext};

use super::State;
use super::error::ApiError;

pub async fn post(
    axum::extract::State(app): State,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    caller: super::auth::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let records = parse_notification(&body?)?;
    for r in &records {
        if let Record::Change { mutation, .. } = r {
            caller.check_bucket(&mutation.bucket)?;
        }
    }
    let seen_store = app.node.s3_seen.clone();
    let _claim = seen_store.claim().await;
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Change { source_id, .. } => Some(source_id.as_str()),
            _ => None,
        })
        .collect();
    let mut seen = seen_store.seen(&ids)?.into_iter();
    let mut in_body = HashSet::new();
    let mut results: Vec<Value> = Vec::with_capacity(records.len());
    // Fresh changes, grouped by request context (one append per run of equal contexts).
    let mut fresh: Vec<(usize, Mutation, RequestContext, String)> = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        results.push(match record {
            Record::Ignored(why) => json!({"status": "ignored", "reason": why}),
            Record::Refused(e) => refused(&e),
            Record::Change {
                mutation,
                mut ctx,
                source_id,
            } => {
                let duplicate = seen.next().unwrap_or(false) || !in_body.insert(source_id.clone());
                if duplicate {
                    json!({"status": "duplicate"})
                } else {
                    // The store's requester when it names one; otherwise whoever posted.
                    let poster = super::mutations::request_context(&headers, peer);
                    ctx.requester = ctx.requester.or(poster.requester);
                    ctx.source_ip = ctx.source_ip.or(poster.source_ip);
                    fresh.push((i, *mutation, ctx, source_id));
                    Value::Null
                }
            }
        });
    }
    let mut accepted_ids = Vec::new();
    for group in fresh.chunk_by(|a, b| a.2 == b.2) {
        let ctx = group[0].2.clone();
        let mutations = group.iter().map(|(_, m, _, _)| m.clone()).collect();
        let outcomes = super::mutations::write(&app, &headers, mutations, &ctx).await?;
        for ((i, _, _, source_id), outcome) in group.iter().zip(outcomes) {
            let mut v = tidemark_core::ingest::writer::result_to_json(&outcome);
            if v.get("event_id").is_some() {
                v["status"] = "accepted".into();
                accepted_ids.push(source_id.as_str());
            } else {
                v["status"] = "refused".into();
            }
            results[*i] = v;
        }
    }
    // Only after the events are durable (see dedup.rs).
    seen_store.record(&accepted_ids)?;
    Ok(Json(json!({ "results": results })))
}

fn refused(e: &Error) -> Value {
    let mut error = ApiError::item(e);
    if let Error::Invalid { field, .. } = e {
        error["field"] = field.clone().into();
    }
    json!({"status": "refused", "error": error})
}
