//! Queues, bindings and consumers in the engine: declaring a queue (or updating its arguments)
//! with its bindings, closing a consumer (its unacked messages go back to the queue), and
//! resolving where a publish goes (topic patterns, with a cache of routing keys).

use super::{Queue, Target, Writer};
use crate::broker::{BrokerError, DEAD_LETTERS, topic};
use std::collections::BTreeSet;
use std::sync::Arc;
use tracing::info;

/// Routing keys whose bound queues are remembered.
const ROUTE_CACHE: usize = 4096;

impl Writer {
    /// Stops a consumer; its unacked messages go back to its queue, to go out again first.
    pub(super) fn close_consumer(&mut self, consumer: u64) {
        let Some(c) = self.consumers.remove(&consumer) else { return };
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.held -= c.inflight.len() as u64;
            q.returned.extend(c.inflight);
            q.consumers.retain(|id| *id != consumer);
            self.dirty.insert(c.queue);
        }
    }

    /// Creates a queue (or updates its arguments in place) and adds bindings.
    pub(super) async fn declare(
        &mut self,
        name: &str,
        ordered: bool,
        delivery_limit: Option<i64>,
        dead_letter_key: &str,
        patterns: &[String],
    ) -> Result<(), sqlx::Error> {
        match self.queues.get_mut(name) {
            Some(q) => {
                if q.ordered != ordered || q.delivery_limit != delivery_limit || q.dead_letter_key != dead_letter_key {
                    // Unlike a RabbitMQ queue, this one can change its arguments in place: the
                    // router refuses to flip `ordered` on a reload, so this happens at a start.
                    info!(queue = name, ordered, ?delivery_limit, was_ordered = q.ordered, "queue arguments updated");
                    sqlx::query(
                        "UPDATE queues SET ordered = ?2, delivery_limit = ?3, dead_letter_key = ?4 WHERE id = ?1",
                    )
                    .bind(q.id)
                    .bind(ordered)
                    .bind(delivery_limit)
                    .bind(dead_letter_key)
                    .execute(self.db.tx().await?)
                    .await?;
                    q.ordered = ordered;
                    q.delivery_limit = delivery_limit;
                    q.dead_letter_key = dead_letter_key.to_string();
                    self.dirty.insert(name.to_string());
                }
            }
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO queues (name, ordered, delivery_limit, dead_letter_key) VALUES (?1, ?2, ?3, ?4) \
                     RETURNING id",
                )
                .bind(name)
                .bind(ordered)
                .bind(delivery_limit)
                .bind(dead_letter_key)
                .fetch_one(self.db.tx().await?)
                .await?;
                self.names.insert(id, name.to_string());
                self.queues.insert(
                    name.to_string(),
                    Queue {
                        id,
                        name: name.to_string(),
                        ordered,
                        delivery_limit,
                        dead_letter_key: dead_letter_key.to_string(),
                        patterns: BTreeSet::new(),
                        rows: 0,
                        held: 0,
                        cursor: 0,
                        returned: BTreeSet::new(),
                        consumers: Vec::new(),
                    },
                );
            }
        }
        let Some(q) = self.queues.get_mut(name) else { return Ok(()) };
        for p in patterns {
            if q.patterns.insert(p.clone()) {
                sqlx::query("INSERT OR IGNORE INTO bindings (queue_id, pattern) VALUES (?1, ?2)")
                    .bind(q.id)
                    .bind(p)
                    .execute(self.db.tx().await?)
                    .await?;
                self.routes.clear();
            }
        }
        Ok(())
    }

    /// The queues a publish goes to, and the routing key it keeps.
    pub(super) fn resolve(&mut self, to: &Target) -> Result<(Arc<[String]>, String), BrokerError> {
        match to {
            Target::Events(key) => {
                if let Some(qs) = self.routes.get(key) {
                    return Ok((qs.clone(), key.clone()));
                }
                let mut qs: Vec<String> = self
                    .queues
                    .values()
                    .filter(|q| q.patterns.iter().any(|p| topic::matches(p, key)))
                    .map(|q| q.name.clone())
                    .collect();
                if qs.is_empty() {
                    return Err(BrokerError::NotRouted(format!("no queue is bound to routing key {key:?}")));
                }
                qs.sort();
                let qs: Arc<[String]> = qs.into();
                if self.routes.len() >= ROUTE_CACHE {
                    self.routes.clear();
                }
                self.routes.insert(key.clone(), qs.clone());
                Ok((qs, key.clone()))
            }
            Target::Queue(q) => {
                if !self.queues.contains_key(q) {
                    return Err(BrokerError::NotRouted(format!("queue {q} does not exist")));
                }
                Ok((Arc::from(vec![q.clone()]), q.clone()))
            }
            Target::DeadLetters(route) => Ok((Arc::from(vec![DEAD_LETTERS.to_string()]), route.clone())),
        }
    }
}
