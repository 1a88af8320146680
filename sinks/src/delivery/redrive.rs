//! Redrive: send dead letters again through the subscription's current sink and retry policy.
//! A delivered letter leaves the queue; one that fails again stays, with its attempts and the
//! new error. Letters go one at a time in queue order, which is log order per key.
//!
//! Only a request sink takes events one by one: a stream sink's dead letters are refused
//! here (its range is replayed into it instead).

use std::sync::Arc;

use uuid::Uuid;

use super::Engine;
use super::context::{Requests, RunCtx, Target};
use super::dead_letters::DeadLetter;
use super::retry::{self, Outcome};
use crate::sink::Delivery;
use crate::{Error, Result};

impl Engine {
    /// Start redriving `ids` (all when `None`) of subscription `name` in the background;
    /// returns the ids taken (letters already being redriven are left to that redrive).
    pub async fn redrive(
        self: &Arc<Self>,
        name: &str,
        ids: Option<Vec<Uuid>>,
    ) -> Result<Vec<Uuid>> {
        let sub = self.subscriptions.get(name)?;
        if let Some(reason) = &sub.stored.disabled {
            return Err(Error::Unavailable(format!(
                "subscription '{name}' is disabled ({reason}); replace it before redriving"
            )));
        }
        let letters = match ids {
            None => self.dead_letters.list(name),
            Some(ids) => ids
                .into_iter()
                .map(|id| self.dead_letters.get(name, id))
                .collect::<Result<Vec<_>>>()?,
        };
        let ctx = Arc::new(self.context(&sub, None)?);
        let Target::Request(to) = &ctx.target else {
            return Err(Error::Conflict(format!(
                "subscription '{name}' writes to {}, which takes no single events; replay the \
                 range of these dead letters into it instead (POST /v1/replays)",
                ctx.target.endpoint()
            )));
        };
        let to = to.clone();
        let letters: Vec<DeadLetter> = {
            let mut busy = self.redriving.lock().unwrap();
            letters.into_iter().filter(|l| busy.insert(l.id)).collect()
        };
        let taken = letters.iter().map(|l| l.id).collect();
        let engine = self.clone();
        tokio::spawn(async move {
            for letter in letters {
                engine.redrive_one(&ctx, &to, letter).await;
            }
        });
        Ok(taken)
    }

    async fn redrive_one(&self, ctx: &RunCtx, to: &Requests, mut letter: DeadLetter) {
        let wire = letter.wire();
        let delivery = match self.codec.decode(&wire) {
            Ok(event) => Arc::new(Delivery::new(
                letter.partition,
                letter.offset,
                event.log_key().into(),
                Arc::new(event),
                wire,
            )),
            Err(e) => {
                letter.error = format!("the record cannot be decoded: {e}");
                self.finish(ctx, letter, false).await;
                return;
            }
        };
        let outcome = retry::attempt(ctx, to, std::slice::from_ref(&delivery)).await;
        match outcome {
            Outcome::Delivered => self.finish(ctx, letter, true).await,
            Outcome::Dead {
                attempts,
                error,
                status,
            } => {
                letter.attempts += attempts;
                letter.error = error;
                letter.status = status;
                self.finish(ctx, letter, false).await;
            }
            Outcome::Gone(message) => {
                letter.error = message;
                self.finish(ctx, letter, false).await;
            }
        }
    }

    async fn finish(&self, ctx: &RunCtx, letter: DeadLetter, delivered: bool) {
        let result = if delivered {
            self.dead_letters.remove(&ctx.name, letter.id).await
        } else {
            self.dead_letters.update(&letter).await
        };
        if let Err(e) = result {
            tracing::error!(subscription = ctx.name, letter = %letter.id, "recording the redrive: {e}");
        }
        self.redriving.lock().unwrap().remove(&letter.id);
    }
}
