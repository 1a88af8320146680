//! `GET /v1/watch/ws`: the watch stream over a WebSocket. Each event is a text frame of the
//! SSE event's JSON with `"cursor"` (its id) and `"type"` added; resume with `?since=CURSOR`.
//! Idle connections get pings; a watcher that is cut off gets a text frame
//! `{"error": {"reason", "resume"}}` and a close frame (1008, policy violation).

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Query};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::pump::{Feed, Frame};
use super::{WatchQuery, open};
use crate::http::State;
use crate::http::error::ApiError;

pub async fn watch_ws(
    state: State,
    query: Result<Query<WatchQuery>, QueryRejection>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    // Checked before the upgrade: bad input is a 400 naming the parameter, as for SSE.
    let feed = open(&state, query, None).await?;
    let (mut parts, _) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|r| ApiError::new(r.status(), "websocket_required", r.body_text()))?;
    Ok(upgrade
        .on_upgrade(move |socket| stream(socket, feed))
        .into_response())
}

async fn stream(mut socket: WebSocket, mut feed: Feed) {
    loop {
        let frame = tokio::select! {
            frame = feed.next() => frame,
            incoming = socket.recv() => match incoming {
                // Pongs, and anything the client says, are ignored; a close or error ends.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        let message = match frame {
            None => return,
            Some(Frame::Event {
                id,
                event_type,
                data,
            }) => {
                // The shared JSON object with the watcher's cursor and the type put first.
                let head = json!({"cursor": id, "type": event_type}).to_string();
                let body = data.strip_prefix('{').unwrap_or(&data);
                let text = match body.trim_start().starts_with('}') {
                    true => head,
                    false => format!("{},{body}", &head[..head.len() - 1]),
                };
                Message::Text(text.into())
            }
            Some(Frame::Heartbeat) => Message::Ping(Default::default()),
            Some(Frame::Error(error)) => {
                let text = json!({ "error": error }).to_string();
                let _ = socket.send(Message::Text(text.into())).await;
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::POLICY,
                        reason: "cut off; see the error frame".into(),
                    })))
                    .await;
                return;
            }
        };
        if socket.send(message).await.is_err() {
            return;
        }
    }
}
