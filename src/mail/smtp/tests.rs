//! The session without sockets: scripted clients, and arbitrary bytes.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;

const FORWARD: &str = "crm-abcdefghij234567abcd@leadline.example";

fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().expect("an address")
}

fn forward() -> ForwardAddress {
    ForwardAddress::parse(FORWARD).expect("the forward address")
}

fn session(max_message: usize) -> Session {
    Session::new("mx.leadline.example", Limits::new(max_message), peer())
}

/// Runs a client's bytes through the session; handler answers come from `handled`.
struct Run {
    replies: Vec<Reply>,
    deliveries: Vec<Delivery>,
    closed: bool,
}

impl Run {
    fn codes(&self) -> Vec<u16> {
        self.replies.iter().map(|r| r.code).collect()
    }

    fn text(&self) -> String {
        self.replies.iter().map(Reply::to_string).collect()
    }
}

fn run_with(session: &mut Session, input: &[u8], piece: usize, handled: Handled) -> Run {
    let recipients = forward();
    let mut run = Run {
        replies: Vec::new(),
        deliveries: Vec::new(),
        closed: false,
    };
    let mut pieces = input.chunks(piece.max(1));
    loop {
        match session.step(&recipients) {
            Step::Reply(reply) => run.replies.push(reply),
            Step::Deliver(delivery) => {
                run.deliveries.push(delivery);
                session.delivered(handled);
            }
            Step::Close => {
                run.closed = true;
                return run;
            }
            Step::NeedInput => match pieces.next() {
                Some(piece) => session.push(piece),
                None => return run,
            },
        }
    }
}

fn talk(input: &str) -> Run {
    run_with(
        &mut session(1 << 20),
        input.as_bytes(),
        usize::MAX,
        Handled::Accepted,
    )
}

fn message(hello: &str, rcpts: &[&str], text: &str) -> String {
    let mut out = format!("{hello} client.example\r\nMAIL FROM:<anna@company.example>\r\n");
    for rcpt in rcpts {
        out.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    out.push_str("DATA\r\n");
    out.push_str(text);
    out.push_str(".\r\nQUIT\r\n");
    out
}

const TEXT: &str = "From: anna@company.example\r\nSubject: hi\r\n\r\nHello\r\n";

#[test]
fn e16_smtp_message_for_the_forward_address_is_delivered() {
    let run = talk(&message("EHLO", &[FORWARD], TEXT));
    assert_eq!(run.codes(), [220, 250, 250, 250, 354, 250, 221]);
    assert!(run.closed);
    let [delivery] = run.deliveries.as_slice() else {
        panic!("one delivery: {:?}", run.deliveries);
    };
    assert_eq!(delivery.protocol, Protocol::Smtp);
    assert_eq!(delivery.mail_from.as_deref(), Some("anna@company.example"));
    assert_eq!(delivery.rcpts, [FORWARD]);
    assert_eq!(delivery.raw, TEXT.as_bytes());
    assert_eq!(delivery.peer, peer());
}

#[test]
fn e16_the_same_bytes_whatever_the_pieces() {
    let input = message("EHLO", &[FORWARD], TEXT);
    let whole = talk(&input);
    for piece in [1, 2, 3, 5, 8, 13] {
        let run = run_with(
            &mut session(1 << 20),
            input.as_bytes(),
            piece,
            Handled::Accepted,
        );
        assert_eq!(run.codes(), whole.codes(), "pieces of {piece}");
        assert_eq!(run.deliveries, whole.deliveries, "pieces of {piece}");
    }
}

#[test]
fn greeting_and_ehlo_advertise_the_extensions() {
    let run = talk("EHLO client.example\r\n");
    let text = run.text();
    assert!(text.starts_with("220 mx.leadline.example "), "{text}");
    for keyword in [
        "250-mx.leadline.example\r\n",
        "250-PIPELINING\r\n",
        &format!("250-SIZE {}\r\n", 1 << 20),
        "250-8BITMIME\r\n",
        "250-ENHANCEDSTATUSCODES\r\n",
        "250 SMTPUTF8\r\n",
    ] {
        assert!(text.contains(keyword), "{keyword:?} missing in {text}");
    }
}

#[test]
fn helo_gets_a_single_line() {
    let run = talk("HELO client.example\r\n");
    assert_eq!(run.replies[1].to_string(), "250 mx.leadline.example\r\n");
}

#[test]
fn e16_lmtp_answers_once_per_accepted_recipient() {
    let input = message("LHLO", &[FORWARD, "someone@else.example", FORWARD], TEXT);
    let run = talk(&input);
    // RFC 2033 4.2: two accepted recipients, two replies after the dot.
    assert_eq!(
        run.codes(),
        [220, 250, 250, 250, 550, 250, 354, 250, 250, 221]
    );
    assert_eq!(run.deliveries.len(), 1);
    assert_eq!(run.deliveries[0].protocol, Protocol::Lmtp);
    assert_eq!(run.deliveries[0].rcpts, [FORWARD, FORWARD]);
}

#[test]
fn e16_lmtp_handler_failure_is_451_per_recipient() {
    let input = message("LHLO", &[FORWARD, FORWARD], TEXT);
    let run = run_with(
        &mut session(1 << 20),
        input.as_bytes(),
        usize::MAX,
        Handled::Failed,
    );
    assert_eq!(run.codes(), [220, 250, 250, 250, 250, 354, 451, 451, 221]);
    assert!(run.text().contains("451 4.3.0 "));
}

#[test]
fn e16_smtp_handler_failure_is_451_so_the_client_retries() {
    let input = message("EHLO", &[FORWARD], TEXT);
    let run = run_with(
        &mut session(1 << 20),
        input.as_bytes(),
        usize::MAX,
        Handled::Failed,
    );
    assert_eq!(run.codes(), [220, 250, 250, 250, 354, 451, 221]);
}

#[test]
fn e16_other_recipients_are_refused_with_550() {
    let run = talk(&message("EHLO", &["sales@leadline.example"], TEXT));
    // The text after the refused DATA is read as commands (a client must wait for 354).
    assert_eq!(run.codes()[..5], [220, 250, 250, 550, 554]);
    assert!(run.deliveries.is_empty());
    assert!(
        run.text()
            .contains("550 5.1.1 <sales@leadline.example>: no such mailbox here")
    );
}

#[test]
fn e16_forward_address_matches_without_regard_to_case() {
    let address = forward();
    assert!(address.matches(FORWARD));
    assert!(address.matches("CRM-ABCDEFGHIJ234567ABCD@Leadline.Example"));
    assert!(address.matches("crm-abcdefghij234567abcd@leadline.example."));
    assert!(!address.matches("crm-abcdefghij234567abce@leadline.example"));
    assert!(!address.matches("crm-abcdefghij234567abcd@other.example"));
    assert!(!address.matches("crm-abcdefghij234567abcd"));
    assert!(!address.matches("x.crm-abcdefghij234567abcd@leadline.example"));
}

#[test]
fn forward_address_parse_refuses_what_is_not_one() {
    for bad in [
        "",
        "crm-@leadline.example",
        "sales@leadline.example",
        "crm-abc@",
        "crm-abc",
        "crm-a b@leadline.example",
        "crm-abc@lead line.example",
    ] {
        assert!(ForwardAddress::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        ForwardAddress::parse("CRM-Abc@Leadline.Example")
            .unwrap()
            .to_string(),
        "crm-abc@leadline.example"
    );
    // A4: logs must not show the secret.
    assert!(!format!("{:?}", forward()).contains("abcdefghij"));
}

#[test]
fn commands_out_of_sequence_get_503() {
    let run = talk("MAIL FROM:<a@b.example>\r\n");
    assert_eq!(run.codes(), [220, 503]);
    let run = talk(&format!("EHLO c\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\n"));
    assert_eq!(run.codes(), [220, 250, 503, 503]);
    let run = talk("EHLO c\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(run.codes(), [220, 250, 250, 503]);
    // SMTP: DATA with no accepted recipient is 554; LMTP: 503 (RFC 2033 4.2).
    let run = talk("EHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n");
    assert_eq!(run.codes(), [220, 250, 250, 554]);
    let run = talk("LHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n");
    assert_eq!(run.codes(), [220, 250, 250, 503]);
}

#[test]
fn rset_ends_the_transaction_and_ehlo_starts_afresh() {
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nRSET\r\nDATA\r\n\
         MAIL FROM:<a@b.example>\r\nEHLO c\r\nRCPT TO:<{FORWARD}>\r\n"
    );
    let run = talk(&input);
    assert_eq!(run.codes(), [220, 250, 250, 250, 250, 503, 250, 250, 503]);
}

#[test]
fn noop_vrfy_help_unknown_and_unoffered_commands() {
    let run = talk("NOOP\r\nVRFY anna\r\nHELP\r\nFOO bar\r\nSTARTTLS\r\nAUTH PLAIN\r\nEXPN x\r\n");
    assert_eq!(run.codes(), [220, 250, 252, 214, 500, 502, 502, 502]);
    assert!(run.text().contains("252 2.5.0 "));
    assert!(run.text().contains("500 5.5.2 "));
}

#[test]
fn syntax_errors_get_501() {
    let run = talk("EHLO c\r\nMAIL FROM:a@b.example\r\nRCPT TO:<>\r\nHELO\r\n");
    assert_eq!(run.codes(), [220, 250, 501, 503, 501]);
}

#[test]
fn null_reverse_path_is_accepted_as_none() {
    let input = format!("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\nx\r\n.\r\n");
    let run = talk(&input);
    assert_eq!(run.codes(), [220, 250, 250, 250, 354, 250]);
    assert_eq!(run.deliveries[0].mail_from, None);
}

#[test]
fn dot_stuffed_text_is_unstuffed() {
    let text = "Subject: dots\r\n\r\n..leading dot\r\n...\r\n.\r\n";
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\n{text}QUIT\r\n"
    );
    let run = talk(&input);
    assert_eq!(
        run.deliveries[0].raw,
        b"Subject: dots\r\n\r\n.leading dot\r\n..\r\n"
    );
}

#[test]
fn pipelined_commands_after_the_dot_wait_for_the_handler() {
    // RFC 2920: the client may send the next MAIL right after the dot; its reply comes
    // after the message's.
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\nx\r\n.\r\n\
         MAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n"
    );
    let run = talk(&input);
    assert_eq!(
        run.codes(),
        [220, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    );
    let texts: Vec<&[u8]> = run.deliveries.iter().map(|d| d.raw.as_slice()).collect();
    assert_eq!(texts, [b"x\r\n", b"y\r\n"]);
}

#[test]
fn e16_declared_size_over_the_bound_is_552_at_mail() {
    let mut session = session(100_000);
    let input =
        "EHLO c\r\nMAIL FROM:<a@b.example> SIZE=100001\r\nMAIL FROM:<a@b.example> SIZE=100000\r\n";
    let run = run_with(
        &mut session,
        input.as_bytes(),
        usize::MAX,
        Handled::Accepted,
    );
    assert_eq!(run.codes(), [220, 250, 552, 250]);
    assert!(run.text().contains("552 5.3.4 "));
}

#[test]
fn e16_text_over_the_bound_is_read_to_the_end_then_552() {
    let mut session = session(1000);
    let mut input = format!(
        "LHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nRCPT TO:<{FORWARD}>\r\nDATA\r\n"
    )
    .into_bytes();
    for _ in 0..100 {
        input.extend_from_slice(&[b'x'; 98]);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let mut max_held = 0;
    let recipients = forward();
    let mut codes = Vec::new();
    let mut pieces = input.chunks(512);
    loop {
        max_held = max_held.max(session.held());
        match session.step(&recipients) {
            Step::Reply(reply) => codes.push(reply.code),
            Step::Deliver(delivery) => panic!("delivered {delivery:?}"),
            Step::Close => break,
            Step::NeedInput => match pieces.next() {
                Some(piece) => session.push(piece),
                None => break,
            },
        }
    }
    // LMTP: one 552 per recipient; then the session goes on (NOOP).
    assert_eq!(codes, [220, 250, 250, 250, 250, 354, 552, 552, 250]);
    assert!(max_held <= 1000 + 512, "held {max_held} bytes");
}

#[test]
fn too_many_recipients_get_452() {
    let mut limits = Limits::new(1 << 20);
    limits.max_recipients = 2;
    let mut session = Session::new("mx", limits, peer());
    let input = format!(
        "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<{FORWARD}>\r\nRCPT TO:<{FORWARD}>\r\nRCPT TO:<{FORWARD}>\r\n"
    );
    let run = run_with(
        &mut session,
        input.as_bytes(),
        usize::MAX,
        Handled::Accepted,
    );
    assert_eq!(run.codes(), [220, 250, 250, 250, 250, 452]);
    assert!(run.text().contains("452 4.5.3 "));
}

#[test]
fn a_long_command_line_is_refused_and_skipped() {
    let mut input = b"EHLO c\r\nNOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 10_000));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    for piece in [7, 100, usize::MAX] {
        let mut session = session(1 << 20);
        let run = run_with(&mut session, &input, piece, Handled::Accepted);
        assert_eq!(run.codes(), [220, 250, 500, 250], "pieces of {piece}");
        assert!(session.held() < Limits::DEFAULT_MAX_LINE);
    }
}

#[test]
fn too_many_errors_close_the_session_with_421() {
    let input = "BAD\r\n".repeat(Limits::DEFAULT_MAX_ERRORS + 5);
    let run = talk(&input);
    let codes = run.codes();
    assert_eq!(codes.len(), 1 + Limits::DEFAULT_MAX_ERRORS + 1);
    assert_eq!(codes.last(), Some(&421));
    assert!(run.closed);
}

#[test]
fn timeout_and_shutdown_say_421_and_close() {
    let mut session = session(1000);
    let reply = session.timed_out();
    assert_eq!(reply.code, 421);
    assert!(reply.to_string().starts_with("421 4.4.2 "));
    let recipients = forward();
    assert_eq!(
        session.step(&recipients),
        Step::Reply(Reply::plain(
            220,
            &["mx.leadline.example Leadline ESMTP/LMTP ready"]
        ))
    );
    assert_eq!(session.step(&recipients), Step::Close);
    let mut session = self::session(1000);
    assert!(
        session
            .shutting_down()
            .to_string()
            .starts_with("421 4.3.2 ")
    );
}

#[test]
fn recipients_can_be_a_closure() {
    let mut session = session(1000);
    let only_x = |address: &str| address == "x@y.example";
    let mut replies = Vec::new();
    session.push(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nRCPT TO:<z@y.example>\r\n",
    );
    while let Step::Reply(reply) = session.step(&only_x) {
        replies.push(reply.code);
    }
    assert_eq!(replies, [220, 250, 250, 250, 550]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a client sends, in whatever pieces: no panic, replies well formed, memory
    /// bounded by the limits.
    #[test]
    fn arbitrary_bytes_never_panic(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        lmtp in any::<bool>(),
        handled_ok in any::<bool>(),
    ) {
        let limits = Limits { max_message: 500, max_line: 200, max_recipients: 3, max_errors: 10 };
        let mut session = Session::new("mx", limits, peer());
        let recipients = forward();
        let mut pieces = chunks.iter();
        let hello: &[u8] = if lmtp { b"LHLO c\r\n" } else { b"EHLO c\r\n" };
        session.push(hello);
        for _ in 0..10_000 {
            prop_assert!(session.held() <= 500 + 200 + 300 + 8);
            match session.step(&recipients) {
                Step::Reply(reply) => {
                    prop_assert!((200..600).contains(&reply.code));
                    let wire = reply.to_bytes();
                    prop_assert!(wire.ends_with(b"\r\n"));
                    prop_assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), reply.lines().len());
                }
                Step::Deliver(delivery) => {
                    prop_assert!(delivery.raw.len() <= 500);
                    prop_assert!(!delivery.rcpts.is_empty());
                    session.delivered(if handled_ok { Handled::Accepted } else { Handled::Failed });
                }
                Step::Close => break,
                Step::NeedInput => match pieces.next() {
                    Some(piece) => session.push(piece),
                    None => break,
                },
            }
        }
    }

    /// Commands built from the real verbs with arbitrary arguments exercise the session's
    /// states more than random bytes do.
    #[test]
    fn arbitrary_commands_never_panic(
        commands in prop::collection::vec(
            (prop::sample::select(vec![
                "EHLO", "HELO", "LHLO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP",
                "VRFY", "QUIT", "BDAT", "STARTTLS", ".", "..", "",
            ]), "[ -~]{0,40}"),
            0..40,
        ),
    ) {
        let mut session = session(300);
        let recipients = |address: &str| address.starts_with('c');
        let mut input = Vec::new();
        for (verb, argument) in &commands {
            input.extend_from_slice(verb.as_bytes());
            input.extend_from_slice(argument.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        session.push(&input);
        for _ in 0..10_000 {
            match session.step(&recipients) {
                Step::Reply(reply) => prop_assert!((200..600).contains(&reply.code)),
                Step::Deliver(delivery) => {
                    prop_assert!(delivery.raw.len() <= 300);
                    session.delivered(Handled::Accepted);
                }
                Step::Close | Step::NeedInput => break,
            }
        }
    }
}
