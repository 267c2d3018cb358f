//! No input panics the e-mail core: arbitrary bytes, MIME-shaped bytes and forward-shaped
//! text go through `parse`, `correspondence`, `forward::detect` and `parse_vcards`.

use leadline::mail::forward::{detect, inline_forward};
use leadline::mail::{Insiders, correspondence, parse, parse_vcards};
use leadline::matcher::parse_email;
use proptest::collection::vec;
use proptest::prelude::*;

fn insiders() -> Insiders {
    Insiders::new(
        [parse_email("in@leadline.example").unwrap()],
        [parse_email("a@b.c").unwrap()],
    )
}

/// Everything downstream of the bytes: what the IMAP and SMTP adapters will call.
fn read_all(raw: &[u8]) {
    if let Ok(mail) = parse(raw) {
        let _ = correspondence(&mail, &insiders());
        let _ = detect(&mail, &insiders());
        for card in &mail.vcards {
            let _ = parse_vcards(&card.content);
        }
        for nested in &mail.messages {
            let _ = detect(nested, &insiders());
        }
    }
    let _ = parse_vcards(raw);
}

/// Pieces of real messages, so generated input reaches deep into the MIME parser.
fn mime_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"From: A <a@b.c>\r\n".to_vec()),
        Just(b"To: in@leadline.example, \"X, Y\" <x@y.z>\r\n".to_vec()),
        Just(b"Subject: Fwd: =?utf-8?B?w7w=?=\r\n".to_vec()),
        Just(b"Date: Tue, 2 Nov 2021 09:26:50 +0100\r\n".to_vec()),
        Just(b"Content-Type: multipart/mixed; boundary=b\r\n".to_vec()),
        Just(b"Content-Type: multipart/alternative; boundary=\"c\"\r\n".to_vec()),
        Just(b"Content-Type: message/rfc822\r\n".to_vec()),
        Just(b"Content-Type: text/html; charset=iso-2022-jp\r\n".to_vec()),
        Just(b"Content-Type: text/x-vcard; name=\"a.vcf\"\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: base64\r\n".to_vec()),
        Just(b"Content-Transfer-Encoding: quoted-printable\r\n".to_vec()),
        Just(b"Content-Disposition: attachment; filename*=utf-8''%C3%BC.pdf\r\n".to_vec()),
        Just(b"--b\r\n".to_vec()),
        Just(b"--b--\r\n".to_vec()),
        Just(b"--c\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"---------- Forwarded message ---------\r\n".to_vec()),
        Just(b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;ENCODING=QUOTED-PRINTABLE:=C3\r\n".to_vec()),
        Just(b"END:VCARD\r\n".to_vec()),
        Just(b"<p>=E2=80=\r\n".to_vec()),
        vec(any::<u8>(), 0..24),
    ]
}

/// Lines of forwarded text: markers, labels, addresses and noise.
fn forward_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("---------- Forwarded message ---------".to_owned()),
        Just("________________________________".to_owned()),
        Just("> Begin forwarded message:".to_owned()),
        Just("From: John Doe <john@acme.com>".to_owned()),
        Just("Von: ".to_owned()),
        Just("*Sent:* x".to_owned()),
        Just("----- Message transmis ----- De : J <j@a.b>À : x@y.zObjet : s".to_owned()),
        Just("Am 28/10/2021 schrieb „J D” <j@a.b>:".to_owned()),
        Just("送信元：".to_owned()),
        "[A-Za-zÄÖÜäöüß:>@<\\-_*\"„” .,\t]{0,60}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in vec(any::<u8>(), 0..2048)) {
        read_all(&raw);
    }

    #[test]
    fn mime_shaped_bytes_never_panic(pieces in vec(mime_piece(), 0..48)) {
        read_all(&pieces.concat());
    }

    #[test]
    fn forward_shaped_text_never_panics(
        subject in prop_oneof![Just(None), Just(Some("FW: x".to_owned())), "\\PC{0,20}".prop_map(Some)],
        lines in vec(forward_line(), 0..30),
    ) {
        let body = lines.join("\n");
        if let Some(found) = inline_forward(subject.as_deref(), &body) {
            // Whatever is found is a matchable address (M3) or a name.
            prop_assert!(found.from.is_some() || found.from_name.is_some());
        }
    }
}
