//! The dead-letter queue: events a subscription gave up on, kept durably on the
//! `_deadletters` topic (the catalog's shape: created / updated / deleted entries, rebuilt on
//! every start). An event is written here *before* the subscription's position moves past it,
//! so nothing is dropped: it is either delivered, or listed here until a redrive delivers it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidemark_core::catalog::{Action, Catalog};
use tidemark_core::time::{format_us, now_us};
use uuid::Uuid;

use crate::sink::Delivery;
use crate::{Error, Result};

/// Topic holding dead letters.
pub const DEAD_LETTERS_TOPIC: &str = "_deadletters";
const KIND: &str = "dead-letter";

/// One dead event, as stored and as listed (without the event bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: Uuid,
    pub subscription: String,
    pub partition: u32,
    pub offset: u64,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Attempts made, over the live delivery and every redrive.
    pub attempts: u32,
    pub error: String,
    pub status: Option<i32>,
    pub dead_at: String,
    /// The record as read from the log (Confluent wire format), base64.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub wire: String,
}

impl DeadLetter {
    pub fn new(
        subscription: &str,
        d: &Delivery,
        attempts: u32,
        error: &str,
        status: Option<i32>,
    ) -> Self {
        DeadLetter {
            id: Uuid::now_v7(),
            subscription: subscription.to_string(),
            partition: d.partition,
            offset: d.offset,
            event_id: Some(d.event().event_id),
            event_type: Some(d.event().event_type.as_str().to_string()),
            bucket: Some(d.event().bucket.clone()),
            key: Some(d.event().key.clone()),
            attempts,
            error: error.to_string(),
            status,
            dead_at: format_us(now_us()),
            wire: STANDARD.encode(&d.wire),
        }
    }

    pub fn wire(&self) -> Bytes {
        STANDARD.decode(&self.wire).unwrap_or_default().into()
    }

    /// The listing view: everything but the event bytes.
    pub fn summary(&self) -> DeadLetter {
        DeadLetter {
            wire: String::new(),
            ..self.clone()
        }
    }
}

pub struct DeadLetters {
    catalog: Arc<Catalog>,
}

impl DeadLetters {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        DeadLetters { catalog }
    }

    fn name(subscription: &str, id: Uuid) -> String {
        format!("{subscription}/{id}")
    }

    /// Durably add a dead letter; returns once it is in the log.
    pub async fn add(&self, letter: &DeadLetter) -> Result<()> {
        let text = serde_json::to_string(letter).expect("a dead letter serializes");
        self.catalog
            .change(
                KIND,
                &Self::name(&letter.subscription, letter.id),
                Action::Create,
                Some(text),
                None,
            )
            .await?;
        Ok(())
    }

    /// Record another failed redrive of a dead letter.
    pub async fn update(&self, letter: &DeadLetter) -> Result<()> {
        let text = serde_json::to_string(letter).expect("a dead letter serializes");
        self.catalog
            .change(
                KIND,
                &Self::name(&letter.subscription, letter.id),
                Action::Update,
                Some(text),
                None,
            )
            .await?;
        Ok(())
    }

    pub async fn remove(&self, subscription: &str, id: Uuid) -> Result<()> {
        self.catalog
            .change(
                KIND,
                &Self::name(subscription, id),
                Action::Delete,
                None,
                None,
            )
            .await?;
        Ok(())
    }

    /// A subscription's dead letters, oldest first: at most `limit`, after the letter `after`.
    pub fn page(&self, subscription: &str, after: Option<Uuid>, limit: usize) -> Vec<DeadLetter> {
        let prefix = format!("{subscription}/");
        // Ids are UUIDv7 in their hyphenated form, so name order is time order.
        let after = after.map(|id| Self::name(subscription, id));
        self.catalog
            .list_prefix(KIND, &prefix, after.as_deref(), limit)
            .into_iter()
            .filter_map(|e| serde_json::from_str(&e.spec).ok())
            .collect()
    }

    /// All of a subscription's dead letters, oldest first.
    pub fn list(&self, subscription: &str) -> Vec<DeadLetter> {
        self.page(subscription, None, usize::MAX)
    }

    pub fn get(&self, subscription: &str, id: Uuid) -> Result<DeadLetter> {
        let entry = self
            .catalog
            .get(KIND, &Self::name(subscription, id))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "dead letter {id} of subscription '{subscription}' does not exist"
                ))
            })?;
        serde_json::from_str(&entry.spec).map_err(|e| {
            Error::Core(tidemark_core::Error::Corrupt(format!(
                "dead letter {id} is unreadable: {e}"
            )))
        })
    }

    pub fn count(&self, subscription: &str) -> usize {
        self.catalog.count_prefix(KIND, &format!("{subscription}/"))
    }
}
