//! Requests the gateway sends on its own behalf (carrier REGISTER, NAT keep-alive OPTIONS,
//! later the B2BUA's outgoing legs): build one, send it in an rsipstack client
//! transaction on our endpoint, and await its final response.
//!
//! Owns addressing (where a request goes, which of our addresses a peer sees) and the
//! mapping of what the transaction layer reports into [`ClientError`]. It decides nothing
//! about what a response means: callers do.
//!
//! Responses reach the transaction through our own receive loops (`endpoint`): UDP on the
//! listening socket, TCP and TLS on the connection the request went out on.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use rsipstack::sip::{
    Header, HeadersExt as _, Method, Param, Request, Response, SipMessage, StatusCode,
    StatusCodeKind, Transport, Uri, typed,
};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;

use super::endpoint::{EndpointError, EndpointHandle, TcpFlow};

/// How long opening a TCP connection to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long resolving a host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve the host '{host}': {reason}")]
    Resolve { host: String, reason: String },
    #[error("'{0}' is not a SIP URI")]
    Uri(String),
    /// Nothing answered: our deadline passed, or the transaction's own timer (Timer F,
    /// RFC 3261 §17.1.2.2) ended it.
    #[error("no response within {0:?}")]
    NoResponse(Duration),
    /// A TCP connection broke while sending (RFC 3261 §8.1.3.1: treated like a 503).
    #[error("the connection to the peer failed")]
    ConnectionFailed,
    // Boxed: rsipstack's error is large and these are rare.
    #[error(transparent)]
    Endpoint(Box<EndpointError>),
    #[error("SIP stack: {0}")]
    Stack(Box<rsipstack::Error>),
}

impl From<EndpointError> for ClientError {
    fn from(err: EndpointError) -> Self {
        ClientError::Endpoint(Box::new(err))
    }
}

impl From<rsipstack::Error> for ClientError {
    fn from(err: rsipstack::Error) -> Self {
        ClientError::Stack(Box::new(err))
    }
}

/// Where a request goes: an address and the transport to reach it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// `host:port` to one address: an IP literal as it is, a name through the system resolver
/// (A/AAAA; no SRV/NAPTR lookups, RFC 3263, yet: carriers give host and port).
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ClientError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |reason: String| ClientError::Resolve {
        host: host.to_owned(),
        reason,
    };
    let mut addrs =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(err)) => return Err(failed(err.to_string())),
            Err(_) => return Err(failed(format!("no answer within {RESOLVE_TIMEOUT:?}"))),
        };
    addrs
        .next()
        .ok_or_else(|| failed("the name has no address".to_owned()))
}

/// The parts of a request that differ from one to the next; the rest (Via with a new
/// branch, Max-Forwards, User-Agent, Content-Length) is added by [`SipClient::request`].
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: Method,
    pub uri: &'a str,
    pub from: &'a str,
    pub from_tag: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub headers: Vec<Header>,
}

/// Sends requests through our endpoint; cheap to clone.
#[derive(Clone)]
pub struct SipClient {
    endpoint: EndpointHandle,
    /// The proxy in front of several nodes: every request goes to it, with a Route
    /// naming it (unless the caller set a Route, e.g. a phone's Path).
    proxy: Option<SocketAddr>,
}

impl SipClient {
    pub fn new(endpoint: EndpointHandle) -> Self {
        Self {
            endpoint,
            proxy: None,
        }
    }

    /// Sends every request through `proxy` (`--sip-proxy`), if there is one.
    pub fn through(self, proxy: Option<SocketAddr>) -> Self {
        Self { proxy, ..self }
    }

    /// Whether requests go through the proxy (`--sip-proxy`).
    pub fn through_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// Where a request for `target` really goes: the proxy (over UDP) when there is one.
    fn next_hop(&self, target: Target) -> Target {
        match self.proxy {
            Some(addr) => Target {
                addr,
                transport: Transport::Udp,
            },
            None => target,
        }
    }

    pub fn endpoint(&self) -> &EndpointHandle {
        &self.endpoint
    }

    /// Our address as `peer` should see it in Via and Contact: the bound address, or,
    /// bound to a wildcard, the local address the OS would send to `peer` from (a
    /// `0.0.0.0` Contact would send the peer's requests nowhere). Behind NAT the peer
    /// still sees another address; its `received`/`rport` (RFC 3581) covers responses.
    pub fn local_addr_for(&self, peer: SocketAddr) -> SocketAddr {
        self.local_addr_over(peer, Transport::Udp)
    }

    /// [`SipClient::local_addr_for`] for a request over `transport`: over TLS our TLS
    /// listener's port (RFC 3261 §18.2.2: where the peer would open a connection back);
    /// without a TLS listener the carrier reaches us only over our own connection.
    pub fn local_addr_over(&self, peer: SocketAddr, transport: Transport) -> SocketAddr {
        let local = match (transport, self.endpoint.tls_local) {
            (Transport::Tls, Some(tls)) => tls,
            _ => self.endpoint.local,
        };
        if !local.ip().is_unspecified() {
            return local;
        }
        let unspecified: SocketAddr = match peer {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // A connected UDP socket sends nothing; it only asks the routing table.
        let routed = UdpSocket::bind(unspecified)
            .and_then(|socket| socket.connect(peer).map(|()| socket))
            .and_then(|socket| socket.local_addr());
        match routed {
            Ok(addr) => SocketAddr::new(addr.ip(), local.port()),
            Err(_) => local,
        }
    }

    /// A complete request to `target`, with a Via for our address towards it.
    pub fn request(&self, parts: Outgoing<'_>, target: Target) -> Result<Request, ClientError> {
        let uri = |text: &str| Uri::try_from(text).map_err(|_| ClientError::Uri(text.to_owned()));
        let target = self.next_hop(target);
        let local = self.local_addr_over(target.addr, target.transport);
        let via = self.endpoint.inner.get_via(
            Some(SipAddr {
                r#type: Some(target.transport),
                addr: local.into(),
            }),
            None,
        )?;
        let from = typed::From {
            display_name: None,
            uri: uri(parts.from)?,
            params: vec![Param::Tag(parts.from_tag.into())],
        };
        let to = typed::To {
            display_name: None,
            uri: uri(parts.to)?,
            params: vec![],
        };
        let mut request = self.endpoint.inner.make_request(
            parts.method,
            uri(parts.uri)?,
            via,
            from,
            to,
            parts.cseq,
            Some(parts.call_id.to_owned().into()),
        );
        let routed = parts.headers.iter().any(|h| matches!(h, Header::Route(_)));
        if let Some(proxy) = self.proxy
            && !routed
        {
            request
                .headers
                .push(Header::Route(format!("<sip:{proxy};lr>").into()));
        }
        request.headers.extend(parts.headers);
        Ok(request)
    }

    /// The TLS connection to the carrier at `peer`, opened if there is none; its
    /// certificate must verify for `host`.
    pub async fn tls_flow(&self, peer: SocketAddr, host: &str) -> Result<TcpFlow, ClientError> {
        Ok(self.endpoint.tls_flow(peer, host, CONNECT_TIMEOUT).await?)
    }

    /// The TCP connection to `peer`, opened if there is none.
    pub async fn tcp_flow(&self, peer: SocketAddr) -> Result<TcpFlow, ClientError> {
        Ok(self.endpoint.tcp_flow(peer, CONNECT_TIMEOUT).await?)
    }

    /// Sends `request` to `target` in a new client transaction and returns the final
    /// response (provisional ones are skipped). Fails with [`ClientError::NoResponse`]
    /// when nothing final arrives within `deadline` or the transaction times out first.
    /// Any response the peer sent, whatever its status, is `Ok`.
    pub async fn send(
        &self,
        request: Request,
        target: Target,
        deadline: Duration,
    ) -> Result<Response, ClientError> {
        let key = TransactionKey::from_request(&request, TransactionRole::Client)?;
        let target = self.next_hop(target);
        let connection = match target.transport {
            Transport::Udp => None,
            // Opened by the caller (`EndpointHandle::tls_flow`), which knows the name
            // the certificate must carry.
            Transport::Tls => Some(
                self.endpoint
                    .flow_to(Transport::Tls, target.addr, CONNECT_TIMEOUT)
                    .await?
                    .connection,
            ),
            _ => Some(self.tcp_flow(target.addr).await?.connection),
        };
        let mut tx = Transaction::new_client(key, request, self.endpoint.inner.clone(), connection);
        tx.destination = Some(SipAddr {
            r#type: Some(target.transport),
            addr: target.addr.into(),
        });
        tx.send().await?;
        let final_response = async {
            while let Some(message) = tx.receive().await {
                if let SipMessage::Response(response) = message
                    && response.status_code.kind() != StatusCodeKind::Provisional
                {
                    return Some(response);
                }
            }
            None
        };
        // Dropping the transaction at the deadline detaches it; a late response is then
        // absorbed by the endpoint as one for no transaction.
        let response = match tokio::time::timeout(deadline, final_response).await {
            Ok(Some(response)) => response,
            Ok(None) | Err(_) => return Err(ClientError::NoResponse(deadline)),
        };
        match local_verdict(&response, &self.endpoint.inner.user_agent) {
            Some(LocalVerdict::Timeout) => Err(ClientError::NoResponse(deadline)),
            Some(LocalVerdict::ConnectionFailed) => Err(ClientError::ConnectionFailed),
            None => Ok(response),
        }
    }
}

enum LocalVerdict {
    Timeout,
    ConnectionFailed,
}

/// rsipstack reports its own timeout (Timer B/F) as a 408 and a broken stream as a 503,
/// built from our request: our User-Agent and a To without tag. A peer's response has
/// its own tag (RFC 3261 §8.2.6.2) and its own User-Agent or Server.
fn local_verdict(response: &Response, user_agent: &str) -> Option<LocalVerdict> {
    let verdict = match response.status_code {
        StatusCode::RequestTimeout => LocalVerdict::Timeout,
        StatusCode::ServiceUnavailable => LocalVerdict::ConnectionFailed,
        _ => return None,
    };
    let ours = response
        .headers
        .iter()
        .any(|h| matches!(h, Header::UserAgent(ua) if ua.value() == user_agent));
    let untagged = response
        .to_header()
        .ok()
        .and_then(|to| to.tag().ok())
        .is_some_and(|tag| tag.is_none());
    (ours && untagged).then_some(verdict)
}

/// A `Retry-After` in seconds (RFC 3261 §20.33), comments and parameters ignored.
pub fn retry_after(response: &Response) -> Option<u32> {
    response.headers.iter().find_map(|h| match h {
        Header::RetryAfter(value) => value
            .value()
            .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
            .next()
            .and_then(|secs| secs.parse().ok()),
        _ => None,
    })
}

/// The reason phrase as the peer wrote it, else the standard one.
pub fn reason_phrase(response: &Response) -> String {
    response
        .wire_reason
        .clone()
        .unwrap_or_else(|| response.status_code.text().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> Response {
        let text = text.replace('\n', "\r\n");
        match SipMessage::try_from(text.as_str()).expect("parses") {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!("not a response"),
        }
    }

    const HEAD: &str = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\n\
        From: <sip:a@b>;tag=1\nCall-ID: c\nCSeq: 1 REGISTER\n";

    #[test]
    fn our_own_timeout_is_told_from_a_peers_408() {
        let local = response(&format!(
            "SIP/2.0 408 Request Timeout\n{HEAD}To: <sip:a@b>\nUser-Agent: Leadline/1\n\
             Content-Length: 0\n\n"
        ));
        assert!(matches!(
            local_verdict(&local, "Leadline/1"),
            Some(LocalVerdict::Timeout)
        ));
        let peer = response(&format!(
            "SIP/2.0 408 Request Timeout\n{HEAD}To: <sip:a@b>;tag=x\nUser-Agent: Leadline/1\n\
             Content-Length: 0\n\n"
        ));
        assert!(local_verdict(&peer, "Leadline/1").is_none());
        let other = response(&format!(
            "SIP/2.0 503 Service Unavailable\n{HEAD}To: <sip:a@b>\nServer: carrier\n\
             Retry-After: 120 (maintenance);duration=60\nContent-Length: 0\n\n"
        ));
        assert!(local_verdict(&other, "Leadline/1").is_none());
        assert_eq!(retry_after(&other), Some(120));
    }

    #[test]
    fn the_peers_reason_phrase_is_kept() {
        let r = response(&format!(
            "SIP/2.0 403 Account Suspended\n{HEAD}To: <sip:a@b>;tag=x\nContent-Length: 0\n\n"
        ));
        assert_eq!(reason_phrase(&r), "Account Suspended");
        let r = response(&format!(
            "SIP/2.0 403 Forbidden\n{HEAD}To: <sip:a@b>;tag=x\nContent-Length: 0\n\n"
        ));
        assert_eq!(reason_phrase(&r), "Forbidden");
    }

    #[tokio::test]
    async fn ip_literals_resolve_without_a_lookup() {
        assert_eq!(
            resolve("192.0.2.7", 5070).await.unwrap(),
            "192.0.2.7:5070".parse().unwrap()
        );
        assert_eq!(
            resolve("[2001:db8::1]", 5060).await.unwrap(),
            "[2001:db8::1]:5060".parse().unwrap()
        );
        assert!(matches!(
            resolve("no-such-host.invalid", 5060).await,
            Err(ClientError::Resolve { .. })
        ));
    }
}
