//! Grant endings and due times from other replicas: a dedicated connection
//! (outside the pool, which would hand it to others) that `LISTEN`s on
//! [`super::ENDED_CHANNEL`] and announces each ending on this replica's
//! `ended` broadcast, so transfers streaming here under a grant another
//! replica ended are cut; and on [`super::DUE_CHANNEL`], waking this
//! replica's scheduler when another replica issued or validated a grant, so
//! the grant's sunset happens on time even when the replica that issued it
//! is gone by then. NOTIFY is sent in the transaction that makes the change,
//! so an announcement never precedes the commit.
//!
//! Notifications sent while the connection is down are lost; on every
//! (re)connection, after `LISTEN` is in place, the listener reads the grants
//! that ended since the connection was lost (less a margin for clock skew)
//! and announces them all, and wakes the scheduler, which re-reads every
//! due time from the store: an ending is announced at least once, and no
//! due time is missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{DUE_CHANNEL, ENDED_CHANNEL, PostgresSettings};
use crate::clock::Timestamp;
use crate::grant::GrantEnded;
use crate::grant::{Cause, GrantId};

/// How far before the loss of the connection the resync reaches back:
/// replicas' clocks and in-flight transactions may disagree by this much.
const RESYNC_MARGIN: Duration = Duration::from_secs(60);

/// The wait between reconnection attempts.
const RETRY: Duration = Duration::from_millis(500);

pub struct Listener {
    pub(super) settings: PostgresSettings,
    pub(super) origin: String,
    pub(super) ended: broadcast::Sender<GrantEnded>,
    /// Wakes the grant scheduler, which then re-reads the next due time.
    pub(super) rearm: Arc<Notify>,
}

/// `<grant id> <origin>`.
pub(super) fn due_payload(id: GrantId, origin: &str) -> String {
    format!("{id} {origin}")
}

fn parse_due(payload: &str) -> Option<(GrantId, &str)> {
    let (id, origin) = payload.split_once(' ')?;
    Some((id.parse().ok()?, origin))
}

/// `<grant id> <cause> <origin>`.
pub(super) fn payload(id: GrantId, cause: Cause, origin: &str) -> String {
    format!("{id} {} {origin}", cause.as_str())
}

fn parse(payload: &str) -> Option<(GrantId, Cause, &str)> {
    let mut parts = payload.splitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    let cause = parts.next()?.parse().ok()?;
    Some((id, cause, parts.next()?))
}

impl Listener {
    /// Listens until `stop`, reconnecting whenever the connection is lost.
    /// `connected` is told each time `LISTEN` is in place and the resync done.
    pub async fn run(self, stop: CancellationToken, connected: Option<mpsc::UnboundedSender<()>>) {
        // From the start: nothing streams before the first connection, but a
        // replica that started while the database was away may have missed some.
        let mut lost_at: Option<Timestamp> = None;
        loop {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.session(&mut lost_at, connected.as_ref()) => outcome,
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "lost the PostgreSQL LISTEN connection; grant endings on other replicas reach this one after it reconnects");
            }
            lost_at
                .get_or_insert_with(|| Timestamp::from_datetime(time::OffsetDateTime::now_utc()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// One connection: LISTEN, resync, then announce until it fails.
    async fn session(
        &self,
        lost_at: &mut Option<Timestamp>,
        connected: Option<&mpsc::UnboundedSender<()>>,
    ) -> Result<(), tokio_postgres::Error> {
        let config = super::named(&self.settings, "xborder-listen");
        let (client, mut connection) = config.connect(NoTls).await?;
        let (tx, mut notifications) = mpsc::unbounded_channel();
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let pump = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx
                            .send((n.channel().to_owned(), n.payload().to_owned()))
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        client
            .batch_execute(&format!("LISTEN {ENDED_CHANNEL}; LISTEN {DUE_CHANNEL}"))
            .await?;
        let since = lost_at
            .take()
            .map_or(0, |at| at.unix_ms() - RESYNC_MARGIN.as_millis() as i64);
        let rows = client
            .query(
                "SELECT id, ended_cause FROM grants WHERE state <> 'active' AND ended_at >= $1 \
                 ORDER BY ended_at",
                &[&since],
            )
            .await?;
        for row in rows {
            let (id, cause): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let (Ok(id), Ok(cause)) = (id.parse(), cause.parse()) {
                let _ = self.ended.send(GrantEnded {
                    id,
                    cause,
                    remote: true,
                });
            }
        }
        // Due times set while the connection was down: the scheduler re-reads them all.
        self.rearm.notify_one();
        tracing::info!("listening for grant endings and due times on other replicas");
        if let Some(connected) = connected {
            let _ = connected.send(());
        }
        while let Some((channel, payload)) = notifications.recv().await {
            if channel == DUE_CHANNEL {
                match parse_due(&payload) {
                    Some((_, origin)) if origin == self.origin => {}
                    Some((id, _)) => {
                        tracing::debug!(grant_id = %id, "a grant's due time changed on another replica");
                        self.rearm.notify_one();
                    }
                    None => tracing::warn!(payload, "a due time this gateway cannot read"),
                }
                continue;
            }
            match parse(&payload) {
                Some((_, _, origin)) if origin == self.origin => {}
                Some((id, cause, _)) => {
                    tracing::info!(grant_id = %id, cause = cause.as_str(), "grant ended on another replica");
                    let _ = self.ended.send(GrantEnded {
                        id,
                        cause,
                        remote: true,
                    });
                }
                None => tracing::warn!(payload, "a grant ending this gateway cannot read"),
            }
        }
        drop(client);
        match pump.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back() {
        let id = GrantId::new();
        let text = payload(id, Cause::Manual, "abc");
        assert_eq!(parse(&text), Some((id, Cause::Manual, "abc")));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse_due(&due_payload(id, "abc")), Some((id, "abc")));
        assert_eq!(parse_due("nonsense here"), None);
    }
}
