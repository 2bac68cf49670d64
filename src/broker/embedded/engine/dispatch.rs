//! What goes out of the engine, after a batch's requests are handled and before its commit:
//! due delayed messages made visible at the tail of their queues, messages pushed to consumers
//! with free prefetch (given-back ones first, then the tail, in sequence order), and messages
//! past their queue's delivery limit moved to the dead-letter queue.

use super::disk::StoredRow;
use super::{Delivered, Writer};
use crate::broker::{DEAD_LETTERS, H_DEAD_AT, H_ERROR, H_NOT_BEFORE, H_REASON, H_ROUTE, Headers, now_ms};
use bytes::Bytes;
use sqlx::Row;
use tracing::warn;

/// Delayed messages made visible per batch at most.
const PROMOTE_CHUNK: i64 = 512;

impl Writer {
    /// Makes due delayed messages visible at the tail of their queues.
    pub(super) async fn promote(&mut self) -> Result<(), sqlx::Error> {
        let now = now_ms() as i64;
        if self.next_due.is_none_or(|d| d > now) {
            return Ok(());
        }
        let due = sqlx::query(
            "SELECT seq, queue_id FROM messages WHERE visible_at > 0 AND visible_at <= ?1 \
             ORDER BY visible_at, seq LIMIT ?2",
        )
        .bind(now)
        .bind(PROMOTE_CHUNK)
        .fetch_all(self.db.tx().await?)
        .await?;
        for r in &due {
            let (old, queue_id): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            let seq = self.next_seq;
            self.next_seq += 1;
            sqlx::query("UPDATE messages SET seq = ?1, visible_at = 0 WHERE seq = ?2")
                .bind(seq)
                .bind(old)
                .execute(self.db.tx().await?)
                .await?;
            if let Some(q) = self.names.get(&queue_id).and_then(|n| self.queues.get_mut(n)) {
                q.rows += 1;
                self.dirty.insert(q.name.clone());
            }
        }
        self.next_due = sqlx::query_scalar("SELECT MIN(visible_at) FROM messages WHERE visible_at > 0")
            .fetch_one(self.db.tx().await?)
            .await?;
        Ok(())
    }

    /// Hands messages to consumers with free prefetch, on every queue something happened to.
    pub(super) async fn push(&mut self, outbox: &mut Vec<(u64, Delivered)>) -> Result<(), sqlx::Error> {
        let dirty = std::mem::take(&mut self.dirty);
        for name in dirty {
            let Some(q) = self.queues.get(&name) else { continue };
            let takers: Vec<u64> =
                if q.ordered { q.consumers.first().copied().into_iter().collect() } else { q.consumers.clone() };
            let mut tail_done = false;
            for consumer in takers {
                while let Some(c) = self.consumers.get(&consumer) {
                    let credit = c.prefetch.saturating_sub(c.inflight.len());
                    // A consumer that still has work is refilled once half its prefetch is
                    // free: one read for many acks instead of one per ack.
                    if credit == 0 || (!c.inflight.is_empty() && credit < (c.prefetch / 2).max(1)) {
                        break;
                    }
                    let Some(q) = self.queues.get_mut(&name) else { break };
                    let rows = if !q.returned.is_empty() {
                        let seqs: Vec<i64> = q.returned.iter().take(credit).copied().collect();
                        for s in &seqs {
                            q.returned.remove(s);
                        }
                        self.db.take_seqs(&seqs).await?
                    } else if !tail_done {
                        let (id, cursor) = (q.id, q.cursor);
                        let rows = self.db.take_next(id, cursor, credit).await?;
                        tail_done = rows.len() < credit;
                        if let (Some(last), Some(q)) = (rows.last(), self.queues.get_mut(&name)) {
                            q.cursor = q.cursor.max(last.seq);
                        }
                        rows
                    } else {
                        break;
                    };
                    for row in rows {
                        let Some(q) = self.queues.get_mut(&name) else { break };
                        if q.delivery_limit.is_some_and(|limit| row.deliveries > limit) {
                            self.dead_letter_over_limit(&name, row).await?;
                            continue;
                        }
                        q.held += 1;
                        let Some(c) = self.consumers.get_mut(&consumer) else { break };
                        c.inflight.insert(row.seq);
                        let headers = serde_json::from_str(&row.headers).map(Headers).unwrap_or_default();
                        outbox.push((
                            consumer,
                            Delivered {
                                seq: row.seq,
                                body: Bytes::from(row.body),
                                headers,
                                routing_key: row.routing_key,
                                message_id: row.message_id,
                                redelivered: row.deliveries > 0,
                            },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves a message delivered more often than its queue allows to the dead-letter queue, as
    /// RabbitMQ does with `x-delivery-limit`, saying why in `hookrelay-*` headers.
    async fn dead_letter_over_limit(&mut self, queue: &str, row: StoredRow) -> Result<(), sqlx::Error> {
        let Some(q) = self.queues.get_mut(queue) else { return Ok(()) };
        let limit = q.delivery_limit.unwrap_or_default();
        let mut h = serde_json::from_str(&row.headers).map(Headers).unwrap_or_default();
        h.remove(H_NOT_BEFORE);
        h.set(H_ROUTE, q.dead_letter_key.as_str());
        h.set(H_REASON, "delivery_limit");
        h.set(
            H_ERROR,
            format!(
                "delivered {} times without an ack (the delivery limit of queue {queue} is {limit}): the router \
                 crashed or stopped while handling it each time",
                row.deliveries
            ),
        );
        h.set(H_DEAD_AT, now_ms());
        warn!(queue, deliveries = row.deliveries, limit, "delivery limit reached; dead-lettering");
        q.rows -= 1;
        let route = q.dead_letter_key.clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        let dl = self.queues.get(DEAD_LETTERS).map(|d| d.id).unwrap_or_default();
        sqlx::query(
            "UPDATE messages SET seq = ?1, queue_id = ?2, routing_key = ?3, headers = ?4, deliveries = 0, \
             message_id = ?5 WHERE seq = ?6",
        )
        .bind(seq)
        .bind(dl)
        .bind(route)
        .bind(serde_json::to_string(&h.0).unwrap_or_else(|_| "{}".into()))
        // A dead letter of its own: the store indexes dead letters by message id.
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(row.seq)
        .execute(self.db.tx().await?)
        .await?;
        if let Some(d) = self.queues.get_mut(DEAD_LETTERS) {
            d.rows += 1;
        }
        self.dirty.insert(DEAD_LETTERS.to_string());
        Ok(())
    }
}
