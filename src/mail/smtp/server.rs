//! The tokio side: accept connections, read and write bytes with deadlines, run the
//! handler, stop on cancellation. Every decision is the [`Session`]'s.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Error;
use super::session::{Delivery, Handled, Limits, Recipients, Session, Step};

/// Settings of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The name in the greeting and the EHLO reply (the `mail_domain` setting).
    pub hostname: String,
    pub limits: Limits,
    /// Sessions at once; a client past it hears 421 and is closed (RFC 5321 3.8).
    pub max_connections: usize,
    /// How long a client may stay silent, or leave our reply unread (RFC 5321 4.5.3.2
    /// asks servers to wait 5 minutes for a command).
    pub idle_timeout: Duration,
    /// How long the handler may take over one message before the client hears 451 and
    /// tries again later.
    pub handler_timeout: Duration,
}

impl Settings {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(2 * 60);

    /// The defaults for a host name and a message bound (`mail_max_message`).
    pub fn new(hostname: impl Into<String>, max_message: usize) -> Settings {
        Settings {
            hostname: hostname.into(),
            limits: Limits::new(max_message),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            handler_timeout: Self::DEFAULT_HANDLER_TIMEOUT,
        }
    }
}

/// Takes a complete message. The client hears 250 only after `deliver` returned `Ok`, so
/// an error loses nothing: the client keeps the message and tries again (451).
pub trait Deliver: Send + Sync + 'static {
    type Error: Display + Send;

    fn deliver(&self, delivery: Delivery) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<F, Fut, E> Deliver for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Display + Send,
{
    type Error = E;

    fn deliver(&self, delivery: Delivery) -> impl Future<Output = Result<(), E>> + Send {
        self(delivery)
    }
}

/// Bytes asked of the socket per read: what the session holds beside a partial line.
const READ_CHUNK: usize = 16 * 1024;

/// Binds the listener (`--smtp`), so that a taken port is reported at start-up.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves SMTP and LMTP on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets messages already with the handler finish, tells idle clients 421, and
/// returns when every session is over.
pub async fn serve<R, H>(
    listener: TcpListener,
    settings: Settings,
    recipients: R,
    handler: H,
    shutdown: CancellationToken,
) where
    R: Recipients,
    H: Deliver,
{
    let shared = Arc::new(Shared {
        settings,
        recipients,
        handler,
    });
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections));
    let mut sessions = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: transient, and retrying at
                    // once would spin.
                    tracing::warn!(%error, "SMTP accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        while sessions.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("leadline_smtp_refused_total", "reason" => "connections")
                .increment(1);
            // A fresh socket's send buffer is empty: this write does not block, and a
            // client that cannot take it loses only the courtesy.
            let _ = stream.try_write(b"421 4.7.0 too many connections, try again later\r\n");
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("smtp", %peer);
        sessions.spawn(
            async move {
                let _slot = slot;
                if let Err(error) = session(stream, peer, &shared, &shutdown).await {
                    tracing::debug!(%error, "SMTP session ended");
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

struct Shared<R, H> {
    settings: Settings,
    recipients: R,
    handler: H,
}

async fn session<R: Recipients, H: Deliver>(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared<R, H>,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let settings = &shared.settings;
    let mut session = Session::new(settings.hostname.clone(), settings.limits.clone(), peer);
    let mut out = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match session.step(&shared.recipients) {
            Step::Reply(reply) => reply.write_to(&mut out),
            Step::Deliver(delivery) => {
                send(&mut stream, &mut out, settings.idle_timeout).await?;
                let handled = deliver(&shared.handler, delivery, settings.handler_timeout).await;
                session.delivered(handled);
            }
            Step::Close => {
                send(&mut stream, &mut out, settings.idle_timeout).await?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Step::NeedInput => {
                send(&mut stream, &mut out, settings.idle_timeout).await?;
                let read = tokio::select! {
                    // Finishing a message already with the handler is not interrupted
                    // (that is the Deliver arm); a session waiting for input is.
                    () = shutdown.cancelled() => {
                        session.shutting_down().write_to(&mut out);
                        send(&mut stream, &mut out, settings.idle_timeout).await?;
                        return Err(Error::ShuttingDown);
                    }
                    read = tokio::time::timeout(settings.idle_timeout, stream.read(&mut buf)) => read,
                };
                match read {
                    Err(_elapsed) => {
                        session.timed_out().write_to(&mut out);
                        send(&mut stream, &mut out, settings.idle_timeout).await?;
                        return Err(Error::IdleTimeout(settings.idle_timeout));
                    }
                    Ok(Ok(0)) => return Err(Error::ClosedByPeer),
                    Ok(Ok(n)) => session.push(&buf[..n]),
                    Ok(Err(error)) => return Err(Error::Io(error)),
                }
            }
        }
    }
}

async fn deliver<H: Deliver>(handler: &H, delivery: Delivery, limit: Duration) -> Handled {
    let size = delivery.raw.len();
    let rcpts = delivery.rcpts.len();
    let protocol = delivery.protocol;
    match tokio::time::timeout(limit, handler.deliver(delivery)).await {
        Ok(Ok(())) => {
            metrics::counter!("leadline_smtp_messages_total", "outcome" => "accepted").increment(1);
            tracing::info!(size, rcpts, ?protocol, "message accepted");
            Handled::Accepted
        }
        Ok(Err(error)) => {
            metrics::counter!("leadline_smtp_messages_total", "outcome" => "failed").increment(1);
            tracing::warn!(%error, size, "message not stored, client told to retry (451)");
            Handled::Failed
        }
        Err(_elapsed) => {
            metrics::counter!("leadline_smtp_messages_total", "outcome" => "timeout").increment(1);
            tracing::warn!(
                ?limit,
                size,
                "message handler too slow, client told to retry (451)"
            );
            Handled::Failed
        }
    }
}

/// Writes what is gathered; a client that does not read its replies is as idle as one
/// that does not write.
async fn send(stream: &mut TcpStream, out: &mut Vec<u8>, limit: Duration) -> Result<(), Error> {
    if out.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(limit, stream.write_all(out)).await {
        Ok(result) => result?,
        Err(_elapsed) => return Err(Error::IdleTimeout(limit)),
    }
    out.clear();
    Ok(())
}
