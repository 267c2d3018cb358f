//! The HTTPS listener of the API and console: the router plain HTTP serves, over TLS with
//! the reloading certificate of [`crate::tls`], HTTP/2 or HTTP/1.1 as the client's ALPN
//! chooses. A client that fails its handshake (plain HTTP on this port, an untrusted
//! certificate) loses its connection and nothing else: the listener keeps accepting.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::HOST;
use axum::http::request::Parts;
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt as _;

/// A client that connects and never finishes its handshake must not hold a task (and
/// shutdown) for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an accept error that is not one connection's (no file descriptors left), as
/// `axum::serve` does: retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` over TLS until `stop` turns true (or its sender goes),
/// then lets the open connections finish their requests, as the plain listener does.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                tracing::error!(%err, "HTTPS accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS handshake timed out");
                    return;
                }
            };
            let service = router.map_request(move |request: Request<Incoming>| {
                let (mut parts, body) = request.into_parts();
                as_served_over_tls(&mut parts);
                // What the audit log and the sign-in throttle read, as on plain HTTP.
                parts.extensions.insert(ConnectInfo(peer));
                Request::from_parts(parts, axum::body::Body::new(body))
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, %err, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Errors of one connection (it went away before it was accepted), not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Makes a request read the same over HTTP/1.1 and HTTP/2: `Host` set and an absolute
/// `https://` URI. HTTP/2 names the host in `:authority` only (the Origin check of the
/// sign-in compares `Host`); HTTP/1.1 sends an origin-form URI without a scheme (the
/// session cookie gets `Secure` from the scheme). A request naming no host at all
/// (HTTP/1.0) is left as it is.
fn as_served_over_tls(parts: &mut Parts) {
    let authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
    });
    let Some(authority) = authority else {
        return;
    };
    if !parts.headers.contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, host);
    }
    let mut uri = parts.uri.clone().into_parts();
    uri.scheme = Some(Scheme::HTTPS);
    uri.authority = Some(authority);
    uri.path_and_query
        .get_or_insert(PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::from_parts(uri) {
        parts.uri = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: axum::http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn http1_requests_get_the_https_scheme_from_their_host() {
        let mut p = parts(
            Request::builder()
                .uri("/api/v1/session?x=1")
                .header(HOST, "crm.example.com:8443"),
        );
        as_served_over_tls(&mut p);
        assert_eq!(
            p.uri.to_string(),
            "https://crm.example.com:8443/api/v1/session?x=1"
        );
        assert_eq!(p.uri.path(), "/api/v1/session");
        assert!(
            crate::session::cookie::is_https(&p),
            "the cookie gets Secure"
        );
    }

    #[test]
    fn http2_requests_get_a_host_header_from_their_authority() {
        let mut p = parts(Request::builder().uri("https://crm.example.com/console/"));
        as_served_over_tls(&mut p);
        assert_eq!(p.headers[HOST], "crm.example.com");
        assert_eq!(p.uri.to_string(), "https://crm.example.com/console/");
    }

    #[test]
    fn a_request_naming_no_host_is_left_alone() {
        let mut p = parts(Request::builder().uri("/healthz"));
        as_served_over_tls(&mut p);
        assert_eq!(p.uri.to_string(), "/healthz");
        assert!(!p.headers.contains_key(HOST));
    }
}
