//! What queue and stream sinks (kafka, sqs, lambda, redis-stream, nats) share: one event as a
//! message (a body in the chosen format, its content type and attributes), and templates of
//! event fields for keys, subjects, stream names and FIFO message groups.
//!
//! # Layout
//! - `template.rs`: [`Template`], text with `{bucket}`, `{key}`, `{event_type}`,
//!   `{version_id}` placeholders.
//! - `render.rs`: [`MessageFormat`] and [`Renderer`], an event as a message.

mod render;
mod template;

pub use render::{Message, MessageFormat, Renderer};
pub use template::Template;
