//! The background task that keeps a process's snapshot current with changes other
//! processes make (see the parent module for why `LISTEN`/`NOTIFY`). Never on the call
//! path: calls read whatever snapshot is there.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, Change};
use crate::store::{Backend, Store};

/// A full re-read, against notifications lost to a crash between commit and notify.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed rebuild is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// Runs until `cancel`.
pub async fn run(store: Store, cancel: CancellationToken) {
    match (store.backend(), store.url()) {
        (Backend::Postgres, Some(url)) => listen(&store, &url, &cancel).await,
        _ => retry_stale(&store, &cancel).await,
    }
}

/// SQLite: every change is this process's own; only a rebuild that failed is left.
async fn retry_stale(store: &Store, cancel: &CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
        if store.cache().is_stale() {
            let _ = store.rebuild_config().await;
        }
    }
}

async fn listen(store: &Store, url: &str, cancel: &CancellationToken) {
    // The listener is read by a task of its own: a read cut short by a timer could lose
    // part of a message.
    let (sender, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_notifications(url.to_owned(), sender));
    let mut resync_at = tokio::time::Instant::now() + RESYNC;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(resync_at) => {
                resync(store).await;
                resync_at = tokio::time::Instant::now() + RESYNC;
            }
            () = tokio::time::sleep(RETRY), if store.cache().is_stale() => {
                let _ = store.rebuild_config().await;
            }
            next = heard.recv() => match next {
                Some(Heard::Listening) => resync(store).await,
                Some(Heard::Changed(first)) => {
                    let mut payloads = vec![first];
                    while let Ok(Heard::Changed(more)) = heard.try_recv() {
                        payloads.push(more);
                    }
                    apply(store, &payloads).await;
                }
                None => break,
            },
        }
    }
    reader.abort();
}

enum Heard {
    /// (Re)connected and listening: what was sent before may be missed, read it all.
    Listening,
    Changed(String),
}

async fn read_notifications(url: String, sender: tokio::sync::mpsc::UnboundedSender<Heard>) {
    let mut backoff = RETRY;
    loop {
        let mut listener = match subscribe(&url).await {
            Ok(listener) => {
                backoff = RETRY;
                listener
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for configuration changes; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        // Listening first, then reading: nothing committed in between is missed.
        if sender.send(Heard::Listening).is_err() {
            return;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if sender
                        .send(Heard::Changed(notification.payload().to_owned()))
                        .is_err()
                    {
                        return;
                    }
                }
                // The connection was lost and is re-established: what was sent meanwhile
                // is gone, so everything is read again.
                Ok(None) => {
                    if sender.send(Heard::Listening).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "configuration change listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies a burst of notifications: one rebuild for any number of configuration
/// changes, one read per address of record.
async fn apply(store: &Store, payloads: &[String]) {
    let mut config = false;
    let mut aors: Vec<String> = Vec::new();
    for payload in payloads {
        match Change::parse(payload, store.cache().node()) {
            Some(Change::Config) => config = true,
            Some(Change::Binding(aor)) if !aors.contains(&aor) => aors.push(aor),
            _ => {}
        }
    }
    if config {
        store.config_changed_elsewhere();
        if let Err(err) = store.rebuild_config().await {
            tracing::warn!(%err, "cannot rebuild the configuration snapshot; retrying");
            store
                .cache()
                .stale
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
    for aor in aors {
        if let Err(err) = store.reload_aor(&aor).await {
            tracing::warn!(%err, %aor, "cannot re-read bindings; the next full read will");
        }
    }
}

async fn resync(store: &Store) {
    store.config_changed_elsewhere();
    if let Err(err) = store.rebuild_config().await {
        tracing::warn!(%err, "cannot rebuild the configuration snapshot; retrying");
        store
            .cache()
            .stale
            .store(true, std::sync::atomic::Ordering::Release);
    }
    if let Err(err) = store.reload_all_bindings().await {
        tracing::warn!(%err, "cannot re-read the bindings; retrying at the next full read");
    }
}
