//! SIP answers that used to be wrong or missing: a request without a From tag (RFC 2543
//! style) is refused with a 400 naming the fault instead of silence, over UDP and TCP; an
//! in-dialog request for a dialog we never had gets `481 Call/Transaction Does Not Exist`.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::TestApp;

/// Sends the request `text` writes (given our address, for its Via) and returns the
/// first answer that is not 100, over `transport`.
async fn ask(
    gateway: std::net::SocketAddr,
    transport: &str,
    text: impl Fn(std::net::SocketAddr) -> String,
) -> String {
    let deadline = Duration::from_secs(10);
    if transport == "udp" {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let text = text(socket.local_addr().unwrap());
        socket.send_to(text.as_bytes(), gateway).await.unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(deadline, socket.recv_from(&mut buf))
                .await
                .expect("an answer within the deadline")
                .unwrap();
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !answer.starts_with("SIP/2.0 100") {
                return answer;
            }
        }
    }
    let mut stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let text = text(stream.local_addr().unwrap());
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        assert!(n > 0, "the connection closed without an answer");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(end) = text.find("\r\n\r\n") {
            let answer = text[..end].to_owned();
            if !answer.starts_with("SIP/2.0 100") {
                return answer;
            }
            seen.drain(..end + 4);
        }
    }
}

#[tokio::test]
async fn a_request_without_a_from_tag_is_refused_with_400_naming_it_over_udp_and_tcp() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    for transport in ["udp", "tcp"] {
        let upper = transport.to_ascii_uppercase();
        for method in ["OPTIONS", "INVITE", "REGISTER"] {
            let text = |local| {
                format!(
                    "{method} sip:101@{gw} SIP/2.0\r\nVia: SIP/2.0/{upper} {local};branch=z9hG4bK-nt-{method}\r\n\
                     From: <sip:alice@127.0.0.1>\r\nTo: <sip:101@{gw}>\r\nCall-ID: no-tag-{method}-{transport}\r\n\
                     CSeq: 1 {method}\r\nContact: <sip:alice@{local}>\r\nMax-Forwards: 70\r\n\
                     Content-Length: 0\r\n\r\n"
                )
            };
            let answer = ask(gw, transport, text).await;
            assert!(
                answer.starts_with("SIP/2.0 400 Bad Request: Missing From tag"),
                "{method} over {transport}: {answer}"
            );
            assert!(
                answer.contains(&format!("Call-ID: no-tag-{method}-{transport}")),
                "{answer}"
            );
        }
    }
    // The gateway still serves everyone else.
    let options = |local| {
        format!(
            "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-nt-ok\r\n\
             From: <sip:alice@127.0.0.1>;tag=ok\r\nTo: <sip:{gw}>\r\nCall-ID: tagged-ok\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    assert!(ask(gw, "udp", options).await.starts_with("SIP/2.0 200"));
    app.stop().await;
}

/// RFC 4475 / Sofia `test1.txt`: an INVITE with a To tag for a dialog we never had.
#[tokio::test]
async fn an_in_dialog_request_for_an_unknown_dialog_is_481() {
    let app = TestApp::spawn_for_sipp().await;
    let gw = app.sip_addr();
    for (transport, method) in [("udp", "INVITE"), ("tcp", "INVITE"), ("udp", "BYE")] {
        let upper = transport.to_ascii_uppercase();
        let text = |local| {
            format!(
                "{method} sip:101@{gw} SIP/2.0\r\nVia: SIP/2.0/{upper} {local};branch=z9hG4bK-ud-{method}-{transport}\r\n\
                 From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:101@{gw}>;tag=never-ours\r\n\
                 Call-ID: unknown-dialog-{method}-{transport}\r\nCSeq: 8 {method}\r\n\
                 Contact: <sip:alice@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let answer = ask(gw, transport, text).await;
        assert!(
            answer.starts_with("SIP/2.0 481 Call/Transaction Does Not Exist"),
            "{method} over {transport}: {answer}"
        );
    }
    app.stop().await;
}
