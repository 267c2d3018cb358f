//! One SMTP or LMTP session as a state machine without I/O.
//!
//! Bytes go in with [`Session::push`]; [`Session::step`] says what to do next: send a
//! reply, hand a message to the handler, close, or read more. The session never holds
//! more than one command line (bounded by [`Limits::max_line`]) plus what one `push`
//! brought, and never more of a message than [`Limits::max_message`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use smtp_proto::Request;

use super::data::{DataReader, TooLarge};
use super::reply::{Enhanced, Reply};

/// Bounds on what one client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message text, in bytes after dot-unstuffing (advertised as `SIZE`).
    pub max_message: usize,
    /// Longest command line with its CRLF. RFC 5321 4.5.3.1.4 allows 512 octets; the
    /// extensions' parameters (RFC 1870, 3461, 6531) need more, hence the slack.
    pub max_line: usize,
    /// Accepted recipients per message; RFC 5321 4.5.3.1.8 asks for at least 100.
    pub max_recipients: usize,
    /// Failed commands (5xx replies) before the session is closed with 421: a client
    /// that guesses addresses or speaks another protocol gets a bounded number of tries.
    pub max_errors: usize,
}

impl Limits {
    pub const DEFAULT_MAX_LINE: usize = 2048;
    pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
    pub const DEFAULT_MAX_ERRORS: usize = 20;

    /// The defaults, with a message bound (the `mail_max_message` setting).
    pub fn new(max_message: usize) -> Limits {
        Limits {
            max_message,
            max_line: Self::DEFAULT_MAX_LINE,
            max_recipients: Self::DEFAULT_MAX_RECIPIENTS,
            max_errors: Self::DEFAULT_MAX_ERRORS,
        }
    }
}

/// Which protocol the client chose with its greeting command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HELO or EHLO (RFC 5321): one reply after the message.
    Smtp,
    /// LHLO (RFC 2033): one reply per accepted recipient after the message.
    Lmtp,
}

/// Decides, per RCPT TO, whether this listener takes mail for an address.
pub trait Recipients: Send + Sync + 'static {
    fn accepts(&self, address: &str) -> bool;
}

impl<F> Recipients for F
where
    F: Fn(&str) -> bool + Send + Sync + 'static,
{
    fn accepts(&self, address: &str) -> bool {
        self(address)
    }
}

/// A complete message, as the client sent it.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    pub protocol: Protocol,
    /// The client's address.
    pub peer: SocketAddr,
    /// The reverse-path of MAIL FROM; `None` for the null path `<>` of a bounce.
    pub mail_from: Option<String>,
    /// The accepted recipients, in the order of their RCPT commands.
    pub rcpts: Vec<String>,
    /// The message text, dot-unstuffed, without the final `.` line: the bytes as received.
    pub raw: Vec<u8>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A 25 MiB message printed byte by byte helps nobody.
        f.debug_struct("Delivery")
            .field("protocol", &self.protocol)
            .field("peer", &self.peer)
            .field("mail_from", &self.mail_from)
            .field("rcpts", &self.rcpts)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

/// What the handler made of a [`Delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Stored: the client may forget the message (250).
    Accepted,
    /// Not stored: the client must keep it and try again later (451).
    Failed,
}

/// What the connection should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this reply. Replies may be gathered and sent together before the next read
    /// (RFC 2920 pipelining).
    Reply(Reply),
    /// Send the replies so far, give this message to the handler, then call
    /// [`Session::delivered`]; the session takes no input until then.
    Deliver(Delivery),
    /// Send the replies so far and close the connection.
    Close,
    /// Send the replies so far, then read more and [`Session::push`] it.
    NeedInput,
}

#[derive(Debug)]
enum Mode {
    Command,
    /// A command line grew past the bound: skip to its end.
    SkipLine,
    Data(DataReader),
    /// A message is with the handler; its recipients, for LMTP's replies per recipient.
    Delivering {
        rcpts: Vec<String>,
    },
    Closed,
}

/// The envelope of the message being given (RFC 5321 3.3).
#[derive(Debug)]
struct Transaction {
    mail_from: Option<String>,
    rcpts: Vec<String>,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    hostname: String,
    limits: Limits,
    peer: SocketAddr,
    /// Unread input from `start` on; read bytes are dropped before asking for more.
    input: Vec<u8>,
    start: usize,
    mode: Mode,
    /// `None` until HELO, EHLO or LHLO.
    protocol: Option<Protocol>,
    transaction: Option<Transaction>,
    replies: VecDeque<Reply>,
    errors: usize,
}

const OK: Enhanced = Enhanced(2, 0, 0);
const SYNTAX: Enhanced = Enhanced(5, 5, 2);
const BAD_ARGUMENTS: Enhanced = Enhanced(5, 5, 4);
const BAD_SEQUENCE: Enhanced = Enhanced(5, 5, 1);

impl Session {
    /// A new session; its first step is the 220 greeting (RFC 5321 4.3.1).
    pub fn new(hostname: impl Into<String>, limits: Limits, peer: SocketAddr) -> Session {
        let hostname = hostname.into();
        let greeting = Reply::plain(220, &[&format!("{hostname} Leadline ESMTP/LMTP ready")]);
        Session {
            hostname,
            limits,
            peer,
            input: Vec::new(),
            start: 0,
            mode: Mode::Command,
            protocol: None,
            transaction: None,
            replies: VecDeque::from([greeting]),
            errors: 0,
        }
    }

    /// Adds bytes read from the client. Call it only after [`Step::NeedInput`], so that
    /// at most one read is held beside a partial command line.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        if !matches!(self.mode, Mode::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes held in memory: input not yet dropped, plus the message text taken so far.
    pub fn held(&self) -> usize {
        let message = match &self.mode {
            Mode::Data(reader) => reader.held(),
            _ => 0,
        };
        self.input.len() + message
    }

    /// The protocol the client chose, once it greeted.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// What to do next.
    pub fn step(&mut self, recipients: &dyn Recipients) -> Step {
        loop {
            if let Some(reply) = self.replies.pop_front() {
                return Step::Reply(reply);
            }
            let unread = &self.input[self.start..];
            match &mut self.mode {
                Mode::Closed => return Step::Close,
                Mode::Delivering { .. } => {
                    debug_assert!(false, "step called before delivered");
                    return Step::NeedInput;
                }
                Mode::SkipLine => match unread.iter().position(|&b| b == b'\n') {
                    Some(lf) => {
                        self.start += lf + 1;
                        self.mode = Mode::Command;
                    }
                    None => {
                        self.start = self.input.len();
                        return self.need_input();
                    }
                },
                Mode::Command => match unread.iter().position(|&b| b == b'\n') {
                    Some(lf) if lf < self.limits.max_line => {
                        let line = self.input[self.start..=self.start + lf].to_vec();
                        self.start += lf + 1;
                        self.command(&line, recipients);
                    }
                    Some(lf) => {
                        self.start += lf + 1;
                        self.line_too_long();
                    }
                    None if unread.len() >= self.limits.max_line => {
                        self.start = self.input.len();
                        self.mode = Mode::SkipLine;
                        self.line_too_long();
                    }
                    None => return self.need_input(),
                },
                Mode::Data(reader) => {
                    let (taken, done) = reader.feed(unread);
                    self.start += taken;
                    if !done {
                        return self.need_input();
                    }
                    if let Mode::Data(reader) = std::mem::replace(&mut self.mode, Mode::Command)
                        && let Some(delivery) = self.end_of_data(reader)
                    {
                        return Step::Deliver(delivery);
                    }
                }
            }
        }
    }

    fn need_input(&mut self) -> Step {
        self.compact();
        Step::NeedInput
    }

    /// Drops the bytes already read: what is left is at most a partial command line.
    fn compact(&mut self) {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
    }

    /// The handler's answer to the last [`Step::Deliver`]: 250 or 451, once in SMTP, per
    /// recipient in LMTP (RFC 2033 4.2).
    pub fn delivered(&mut self, handled: Handled) {
        let Mode::Delivering { rcpts } = std::mem::replace(&mut self.mode, Mode::Command) else {
            debug_assert!(false, "delivered without a delivery");
            return;
        };
        let reply = |rcpt: Option<&str>| match handled {
            Handled::Accepted => Reply::new(
                250,
                OK,
                match rcpt {
                    Some(rcpt) => format!("<{rcpt}> message accepted"),
                    None => "message accepted".to_owned(),
                },
            ),
            // RFC 3463 4.3.0: a temporary failure of the mail system; the client retries.
            Handled::Failed => Reply::new(
                451,
                Enhanced(4, 3, 0),
                "temporary failure storing the message, try again later",
            ),
        };
        if self.protocol == Some(Protocol::Lmtp) {
            for rcpt in &rcpts {
                self.replies.push_back(reply(Some(rcpt)));
            }
        } else {
            self.replies.push_back(reply(None));
        }
    }

    /// The client said nothing for too long: 421 (RFC 5321 4.5.3.2), then close.
    pub fn timed_out(&mut self) -> Reply {
        self.mode = Mode::Closed;
        Reply::new(
            421,
            Enhanced(4, 4, 2),
            format!("{} idle for too long, closing connection", self.hostname),
        )
    }

    /// The server stops: 421 (RFC 5321 3.8), then close.
    pub fn shutting_down(&mut self) -> Reply {
        self.mode = Mode::Closed;
        Reply::new(
            421,
            Enhanced(4, 3, 2),
            format!("{} shutting down, try again later", self.hostname),
        )
    }

    fn command(&mut self, line: &[u8], recipients: &dyn Recipients) {
        let mut bytes = line.iter();
        match Request::parse(&mut bytes) {
            Ok(request) => self.request(request, recipients),
            Err(error) => self.refuse(parse_error(error)),
        }
    }

    fn request(&mut self, request: Request<Cow<'_, str>>, recipients: &dyn Recipients) {
        match request {
            Request::Ehlo { .. } => self.hello(Protocol::Smtp, true),
            Request::Helo { .. } => self.hello(Protocol::Smtp, false),
            Request::Lhlo { .. } => self.hello(Protocol::Lmtp, true),
            Request::Mail { from } => self.mail(&from.address, from.size),
            Request::Rcpt { to } => self.rcpt(&to.address, recipients),
            Request::Data => self.data(),
            Request::Rset => {
                // RFC 5321 4.1.1.5: abort the transaction, keep the greeting.
                self.transaction = None;
                self.reply(Reply::new(250, OK, "OK"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, OK, "OK")),
            // RFC 5321 3.5.3, 7.3: 252 neither confirms nor denies an address.
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                Enhanced(2, 5, 0),
                "cannot VRFY user, but will accept message for the forward address",
            )),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                OK,
                "commands: HELO EHLO LHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
            )),
            Request::Quit => {
                self.reply(Reply::new(
                    221,
                    OK,
                    format!("{} closing connection", self.hostname),
                ));
                self.mode = Mode::Closed;
            }
            // Known verbs of extensions not offered in EHLO (RFC 5321 4.2.4).
            other => self.refuse(Reply::new(
                502,
                BAD_SEQUENCE,
                format!("{} not implemented", other.name()),
            )),
        }
    }

    /// HELO/EHLO/LHLO: start afresh (RFC 5321 4.1.4) and name the protocol.
    fn hello(&mut self, protocol: Protocol, extended: bool) {
        self.protocol = Some(protocol);
        self.transaction = None;
        if !extended {
            self.reply(Reply::plain(250, &[&self.hostname]));
            return;
        }
        // RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING, RFC 2034
        // ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8: the text is kept as bytes, so 8-bit and
        // UTF-8 headers cost nothing.
        let size = format!("SIZE {}", self.limits.max_message);
        self.reply(Reply::plain(
            250,
            &[
                &self.hostname,
                "PIPELINING",
                &size,
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "SMTPUTF8",
            ],
        ));
    }

    fn mail(&mut self, from: &str, size: usize) {
        if self.protocol.is_none() {
            return self.refuse(Reply::new(
                503,
                BAD_SEQUENCE,
                "say EHLO, HELO or LHLO first",
            ));
        }
        if self.transaction.is_some() {
            return self.refuse(Reply::new(503, BAD_SEQUENCE, "nested MAIL command"));
        }
        // RFC 1870 6.2: refuse a declared size over the bound before any text is sent.
        if size > self.limits.max_message {
            return self.refuse(Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!(
                    "message size exceeds fixed maximum message size of {} bytes",
                    self.limits.max_message
                ),
            ));
        }
        self.transaction = Some(Transaction {
            mail_from: (!from.is_empty()).then(|| from.to_owned()),
            rcpts: Vec::new(),
        });
        self.reply(Reply::new(250, Enhanced(2, 1, 0), "sender OK"));
    }

    fn rcpt(&mut self, to: &str, recipients: &dyn Recipients) {
        let max = self.limits.max_recipients;
        let Some(transaction) = &mut self.transaction else {
            return self.refuse(Reply::new(503, BAD_SEQUENCE, "need MAIL before RCPT"));
        };
        if transaction.rcpts.len() >= max {
            // RFC 5321 4.5.3.1.10: 452, the client sends the rest in another message.
            return self.reply(Reply::new(452, Enhanced(4, 5, 3), "too many recipients"));
        }
        if !recipients.accepts(to) {
            return self.refuse(Reply::new(
                550,
                Enhanced(5, 1, 1),
                format!("<{to}>: no such mailbox here; this server takes mail for the CRM forward address only"),
            ));
        }
        transaction.rcpts.push(to.to_owned());
        self.reply(Reply::new(250, Enhanced(2, 1, 5), "recipient OK"));
    }

    fn data(&mut self) {
        let Some(transaction) = &self.transaction else {
            return self.refuse(Reply::new(503, BAD_SEQUENCE, "need MAIL before DATA"));
        };
        if transaction.rcpts.is_empty() {
            // RFC 2033 4.2 wants 503 in LMTP; RFC 5321 3.3 has 554 for SMTP.
            let code = if self.protocol == Some(Protocol::Lmtp) {
                503
            } else {
                554
            };
            return self.refuse(Reply::new(code, BAD_SEQUENCE, "no valid recipients"));
        }
        self.mode = Mode::Data(DataReader::new(self.limits.max_message));
        self.reply(Reply::plain(354, &["end data with <CR><LF>.<CR><LF>"]));
    }

    /// The final dot arrived: the message for the handler, or 552 if it was too large.
    fn end_of_data(&mut self, reader: DataReader) -> Option<Delivery> {
        let transaction = self.transaction.take()?;
        match reader.finish() {
            Ok(raw) => {
                self.mode = Mode::Delivering {
                    rcpts: transaction.rcpts.clone(),
                };
                Some(Delivery {
                    protocol: self.protocol.unwrap_or(Protocol::Smtp),
                    peer: self.peer,
                    mail_from: transaction.mail_from,
                    rcpts: transaction.rcpts,
                    raw,
                })
            }
            Err(TooLarge) => {
                let replies = match self.protocol {
                    Some(Protocol::Lmtp) => transaction.rcpts.len(),
                    _ => 1,
                };
                let reply = Reply::new(
                    552,
                    Enhanced(5, 3, 4),
                    format!(
                        "message exceeds fixed maximum message size of {} bytes",
                        self.limits.max_message
                    ),
                );
                for _ in 0..replies {
                    self.reply(reply.clone());
                }
                // One error however many replies, so that an LMTP client's 421 (if it
                // comes) follows all of them.
                self.count_error();
                None
            }
        }
    }

    fn line_too_long(&mut self) {
        // RFC 5321 4.5.3.1.4 names 500 for a line that is too long.
        self.refuse(Reply::new(500, SYNTAX, "line too long"));
    }

    fn reply(&mut self, reply: Reply) {
        self.replies.push_back(reply);
    }

    /// A failure reply, counted towards [`Limits::max_errors`].
    fn refuse(&mut self, reply: Reply) {
        debug_assert!(reply.is_permanent_failure());
        self.replies.push_back(reply);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.limits.max_errors && !matches!(self.mode, Mode::Closed) {
            self.replies.push_back(Reply::new(
                421,
                Enhanced(4, 7, 0),
                format!("{} too many errors, closing connection", self.hostname),
            ));
            self.mode = Mode::Closed;
        }
    }
}

/// The reply to a line `smtp-proto` could not read.
fn parse_error(error: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match error {
        E::UnknownCommand => Reply::new(500, SYNTAX, "command not recognized"),
        E::SyntaxError { syntax } => Reply::new(501, BAD_ARGUMENTS, format!("syntax: {syntax}")),
        E::InvalidSenderAddress => {
            Reply::new(501, Enhanced(5, 1, 7), "sender address is not valid")
        }
        E::InvalidRecipientAddress => {
            Reply::new(501, Enhanced(5, 1, 3), "recipient address is not valid")
        }
        E::InvalidParameter { param } => Reply::new(
            501,
            BAD_ARGUMENTS,
            format!("invalid value of parameter {param}"),
        ),
        // RFC 5321 4.1.1.11: 555 for MAIL/RCPT parameters not recognized.
        E::UnsupportedParameter { param } => Reply::new(
            555,
            BAD_ARGUMENTS,
            format!("parameter {param} not supported"),
        ),
        E::NeedsMoreData { .. } | E::ResponseTooLong | E::InvalidResponse { .. } => {
            Reply::new(500, SYNTAX, "command not recognized")
        }
    }
}
