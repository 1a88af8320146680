//! The one way mutations are written, whatever front they came through (the HTTP API, content
//! uploads, the S3 API, S3-event ingest, sync, restore): a [`Writer`] applies a batch in order
//! and answers a typed result per mutation. The [`Ingestor`] is the writer of one node that
//! writes every partition (the embedded log); the server's node writer routes each mutation
//! to the node that writes its partition on a shared Kafka cluster.
//!
//! Preconditions (the object exists, the version matches) are checked under the ingest lock in
//! the same step that queues the event, so a delete or tag of an object that a concurrent
//! delete removed is refused as [`Error::NotFound`], never half-done.
//!
//! Results cross nodes as the HTTP API's JSON (`{"event_id", "partition", "offset"}` or
//! `{"error": {"code", "message", "field"?}}`); [`result_to_json`] and [`result_from_json`]
//! are the two directions, with the codes of [`Error::code`].

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Accepted, Ingestor, Mutation, RequestContext};
use crate::log::Position;
use crate::{Error, Result};

/// One result per mutation, in input order; the outer error means nothing was written.
pub type Written = Result<Vec<Result<Accepted>>>;

/// Where mutations are written.
pub trait Writer: Send + Sync {
    /// Apply `mutations` in order, each on the node that writes its partition. Answers once
    /// every accepted event is durable in the log.
    fn write<'a>(
        &'a self,
        mutations: Vec<Mutation>,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Written>;
}

/// A node that writes every partition itself (a mutation of a partition it does not own is
/// refused with [`Error::NotOwner`]).
impl Writer for Ingestor {
    fn write<'a>(
        &'a self,
        mutations: Vec<Mutation>,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Written> {
        self.apply(mutations, ctx).boxed()
    }
}

/// A mutation's result as the HTTP API answers it.
pub fn result_to_json(result: &Result<Accepted>) -> Value {
    match result {
        Ok(a) => json!({
            "event_id": a.event_id,
            "partition": a.position.partition,
            "offset": a.position.offset,
        }),
        Err(e) => {
            let mut error = json!({"code": e.code(), "message": e.to_string()});
            if let Error::Invalid { field, message } = e {
                error["field"] = field.clone().into();
                error["message"] = message.clone().into();
            }
            json!({ "error": error })
        }
    }
}

/// A result another node answered, typed again. Anything unreadable is `Internal`-kind.
pub fn result_from_json(v: &Value) -> Result<Accepted> {
    if let (Some(id), Some(partition), Some(offset)) = (
        v["event_id"].as_str(),
        v["partition"].as_u64(),
        v["offset"].as_u64(),
    ) {
        let event_id = Uuid::parse_str(id)
            .map_err(|e| Error::Corrupt(format!("a node answered event id '{id}': {e}")))?;
        return Ok(Accepted {
            event_id,
            position: Position {
                partition: partition as u32,
                offset,
            },
        });
    }
    let error = &v["error"];
    let message = error["message"].as_str().unwrap_or("refused").to_string();
    Err(Error::from_code(
        error["code"].as_str().unwrap_or("internal"),
        message,
        error["field"].as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_the_trip_between_nodes() {
        let accepted = Accepted {
            event_id: Uuid::now_v7(),
            position: Position {
                partition: 3,
                offset: 42,
            },
        };
        let back = result_from_json(&result_to_json(&Ok(accepted))).unwrap();
        assert_eq!(back.position.offset, 42);
        for e in [
            Error::NotFound("object b/k does not exist".into()),
            Error::Conflict("version v1 is not current".into()),
            Error::Unavailable("the log is down".into()),
            Error::invalid("mutations[0].key", "too long"),
            Error::NotOwner(2),
        ] {
            let kind = e.kind();
            let text = e.to_string();
            let back = result_from_json(&result_to_json(&Err(e))).unwrap_err();
            assert_eq!(back.kind(), kind, "{back}");
            assert_eq!(back.to_string(), text);
        }
    }
}
