//! Serving a built gateway: the listeners' accept loops and the background
//! services until shutdown, then the drain.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::build::started_event;
use super::{Gateway, Listener, Listeners, Services, StartError, conn, local, local_addr, ops};
use crate::grants;
use crate::notify::Notifier;
use crate::tls;

impl Gateway {
    /// Records the start in the audit log, then serves on `listeners` until
    /// `shutdown` resolves, drains within the grace period, and returns once
    /// every transfer has its receipt.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let Self {
            services,
            tls_tx,
            relay,
            hangup,
            endings,
        } = self;
        let Listeners {
            border,
            admin,
            ops,
            local,
        } = listeners;
        let local = match (local, relay) {
            (Some(listener), Some(relay)) => Some((listener, relay)),
            (Some(_), None) => return Err(StartError::LocalUnconfigured),
            (None, _) => None,
        };
        let review = &services.review;
        let started = started_event(&services.config, review, &services.log_key);
        services.store.record(services.clock.now(), started).await?;
        services.listener_metrics.known_listeners(
            std::iter::once(Listener::Border)
                .chain(admin.as_ref().map(|_| Listener::Admin))
                .map(Listener::name),
        );
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let acceptors = TaskTracker::new();
        // Subscribed before the scheduler starts, so no ending is missed; it
        // counts through the drain and stops when `serve` returns.
        let count_endings = tokio::spawn(grants::count_endings(
            services.review.ended.subscribe(),
            services.grant_metrics.clone(),
        ));

        // Runs until every connection is done, so transfers still draining
        // are cut when another replica ends their grant.
        let stop_listening = CancellationToken::new();
        let listening = endings.map(|l| tokio::spawn(l.run(stop_listening.clone(), None)));
        tracing::info!(listener = "border", addr = %local_addr(&border), "listening");
        acceptors.spawn(conn::accept_loop(
            border,
            Listener::Border,
            services.clone(),
            stop_accepting.clone(),
            connections.clone(),
        ));
        if let Some(admin) = admin {
            tracing::info!(listener = "admin", addr = %local_addr(&admin), "listening");
            acceptors.spawn(conn::accept_loop(
                admin,
                Listener::Admin,
                services.clone(),
                stop_accepting.clone(),
                connections.clone(),
            ));
        }
        if let Some(ops) = ops {
            tracing::info!(listener = "ops", addr = %local_addr(&ops), "listening");
            acceptors.spawn(ops::serve(ops, services.clone(), stop_accepting.clone()));
        }
        if let Some((listener, relay)) = local {
            tracing::info!(listener = "local", addr = %local_addr(&listener), "listening");
            acceptors.spawn(local::serve(listener, relay, stop_accepting.clone()));
        }
        acceptors.spawn(grants::run(services.review.clone(), stop_accepting.clone()));
        let notifier = Notifier::new(
            services.store.clone(),
            services.clock.clone(),
            services.review.notices.clone(),
            services.config.notify.clone(),
            services.notice_metrics.clone(),
        );
        acceptors.spawn(notifier.run(stop_accepting.clone()));
        acceptors.spawn(forget_idle_rate_keys(
            services.clone(),
            stop_accepting.clone(),
        ));
        acceptors.spawn(tls::reload::run(
            services.config.clone(),
            tls_tx,
            hangup,
            services.audit.clone(),
            stop_accepting.clone(),
        ));

        shutdown.await;
        let grace = services.config.timeouts.shutdown_grace;
        // Stop accepting first (the listeners close when their loops end),
        // then say so: whoever reads the log may rely on it.
        stop_accepting.cancel();
        services.draining.cancel();
        acceptors.close();
        acceptors.wait().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new connections, draining in-flight exchanges"
        );
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "grace period over; closing the connections still open"
            );
            services.closing.cancel();
            connections.wait().await;
        } else {
            tracing::info!("drained; all exchanges finished");
        }
        // Every transfer that ran is closed with its receipt before the
        // process may exit; a store that stays away leaves them open, to be
        // closed as interrupted at the next start.
        let tasks = &services.transfers.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "transfers not closed within the grace period; the next start closes them as interrupted"
            );
        }
        count_endings.abort();
        stop_listening.cancel();
        if let Some(listening) = listening {
            let _ = listening.await;
        }
        Ok(())
    }
}

/// Keeps the rate limiters' per-key state bounded.
async fn forget_idle_rate_keys(services: Arc<Services>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => services.limiters.values().for_each(|l| l.forget_idle()),
        }
    }
}
