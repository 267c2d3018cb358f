//! Leadline's media relay in a process of its own, driven over UDP with a small part of
//! rtpengine's "ng" control protocol, so that `rtp_load` measures Leadline and rtpengine
//! with the very same client (bench/rtp-relay).
//!
//! A request is a cookie, a space and a bencoded dictionary; the reply repeats the cookie
//! before its own dictionary, as rtpengine does:
//!
//! | command  | request keys                      | reply                       |
//! |----------|-----------------------------------|-----------------------------|
//! | `ping`   |                                   | `{result: pong}`            |
//! | `offer`  | `call-id`, `from-tag`, `sdp`      | `{result: ok, sdp}`         |
//! | `answer` | `call-id`, `from-tag`, `to-tag`, `sdp` | `{result: ok, sdp}`    |
//! | `delete` | `call-id`                         | `{result: ok}`              |
//!
//! `offer` starts a `MediaSession` (the first one for a call-id) and returns the caller's
//! SDP rewritten for the callee; `answer` returns the callee's SDP rewritten for the
//! caller. Anything the host cannot do is answered `{result: error, error-reason}`, never
//! with a panic. A retransmitted request is simply applied again: the rewrite of the same
//! SDP on the same session gives the same ports, so no reply cache is needed.
//!
//! The relay runs as in the gateway: the library's `MediaEngine`, one task per call, on a
//! multi-threaded tokio runtime with two workers (the bench machine's cores); the control
//! loop runs on those workers too.
//!
//! Usage: `rtp_relay_host --listen 127.0.0.1:0 --ports 20000-29999 --ip 127.0.0.1`
//! The first line on stdout is the bound control address.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use leadline::media::{MediaEngine, MediaSession, PortPool, PortRange, Side};
use tokio::net::UdpSocket;

use bencode::Value;

#[derive(Parser)]
#[command(about = "Leadline's RTP relay behind a minimal rtpengine ng control protocol")]
struct Args {
    /// UDP address of the ng control socket (port 0: any free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// RTP port range of the relay, such as 20000-29999.
    #[arg(long)]
    ports: PortRange,
    /// Address the relay binds and puts in SDP.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Worker threads of the runtime: the gateway runs one per core.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// Media timeout of the sessions. Never armed here (the bench deletes its calls), so it
/// only has to be valid.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest control datagram read; ng requests with one SDP are far smaller.
const MAX_DATAGRAM: usize = 65_535;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rtp_relay_host: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Spawned rather than run by `block_on`, so the control loop shares the two workers
    // with the relay tasks instead of getting a thread of its own.
    let host = runtime.spawn(async move {
        let socket = UdpSocket::bind(args.listen).await?;
        let engine = MediaEngine::new(PortPool::new(args.ports, args.ip), args.ip, MEDIA_TIMEOUT);
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", socket.local_addr()?)?;
        stdout.flush()?;
        serve(socket, Host::new(engine)).await
    });
    match runtime.block_on(host) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("rtp_relay_host: {err}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("rtp_relay_host: the control loop failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Answers control datagrams until the process is killed.
async fn serve(socket: UdpSocket, mut host: Host) -> std::io::Result<()> {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            // An ICMP error of an earlier reply: that client is gone, the others are not.
            Err(_) => continue,
        };
        let reply = host.datagram(&buffer[..len]);
        if let Err(err) = socket.send_to(&reply, from).await {
            eprintln!("rtp_relay_host: reply to {from} not sent: {err}");
        }
    }
}

/// The calls the host relays, by call-id.
struct Host {
    engine: MediaEngine,
    calls: HashMap<Vec<u8>, MediaSession>,
}

impl Host {
    fn new(engine: MediaEngine) -> Self {
        Self {
            engine,
            calls: HashMap::new(),
        }
    }

    /// One control datagram in, its reply out.
    fn datagram(&mut self, datagram: &[u8]) -> Vec<u8> {
        let (cookie, body) = ng::split(datagram);
        let reply = match ng::request(body) {
            Ok(request) => self.apply(&request),
            Err(reason) => Err(reason),
        };
        let reply = reply.unwrap_or_else(|reason| {
            Value::dict([
                ("result", Value::from("error")),
                ("error-reason", Value::from(reason.as_str())),
            ])
        });
        ng::message(cookie, &reply)
    }

    fn apply(&mut self, request: &Value) -> Result<Value, String> {
        let command = string(request, "command")?;
        match command.as_slice() {
            b"ping" => Ok(Value::dict([("result", Value::from("pong"))])),
            b"offer" => {
                let call_id = string(request, "call-id")?;
                string(request, "from-tag")?;
                let sdp = sdp(request)?;
                let session = match self.calls.entry(call_id) {
                    std::collections::hash_map::Entry::Occupied(call) => call.into_mut(),
                    std::collections::hash_map::Entry::Vacant(call) => {
                        let session = self.engine.session().map_err(|err| err.to_string())?;
                        call.insert(session)
                    }
                };
                Ok(rewritten(session.sdp_from(Side::Caller, &sdp)))
            }
            b"answer" => {
                let call_id = string(request, "call-id")?;
                string(request, "from-tag")?;
                string(request, "to-tag")?;
                let sdp = sdp(request)?;
                let session = self
                    .calls
                    .get(&call_id)
                    .ok_or_else(|| "unknown call-id: no offer came for it".to_owned())?;
                Ok(rewritten(session.sdp_from(Side::Callee, &sdp)))
            }
            b"delete" => {
                let call_id = string(request, "call-id")?;
                let session = self
                    .calls
                    .remove(&call_id)
                    .ok_or_else(|| "unknown call-id".to_owned())?;
                // Closing waits for the relay task to end; the control loop does not.
                tokio::spawn(session.close());
                Ok(Value::dict([("result", Value::from("ok"))]))
            }
            other => Err(format!(
                "unknown command '{}'",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

fn rewritten(sdp: Vec<u8>) -> Value {
    Value::dict([("result", Value::from("ok")), ("sdp", Value::Bytes(sdp))])
}

/// A string value of the request, or the reason it is missing.
fn string(request: &Value, key: &str) -> Result<Vec<u8>, String> {
    match request.get(key) {
        Some(Value::Bytes(bytes)) if !bytes.is_empty() => Ok(bytes.clone()),
        Some(_) => Err(format!("'{key}' is not a non-empty string")),
        None => Err(format!("'{key}' is missing")),
    }
}

/// The request's SDP, which must hold an audio stream the relay can take part in.
fn sdp(request: &Value) -> Result<Vec<u8>, String> {
    let sdp = string(request, "sdp")?;
    if leadline::media::sdp::audio(&sdp).is_none() {
        return Err("'sdp' has no active audio stream".to_owned());
    }
    Ok(sdp)
}

/// The framing of rtpengine's ng protocol: `COOKIE SP BENCODED-DICTIONARY`.
pub mod ng {
    use super::bencode::{self, Value};

    /// The cookie and the rest. Without a space the whole datagram is taken as the
    /// cookie, so even that gets an error reply the sender can match.
    pub fn split(datagram: &[u8]) -> (&[u8], &[u8]) {
        match datagram.iter().position(|&b| b == b' ') {
            Some(space) => (&datagram[..space], &datagram[space + 1..]),
            None => (datagram, &[]),
        }
    }

    /// The request dictionary of a body, or why it is not one.
    pub fn request(body: &[u8]) -> Result<Value, String> {
        if body.is_empty() {
            return Err("no bencoded dictionary after the cookie".to_owned());
        }
        match bencode::decode(body) {
            Ok(value @ Value::Dict(_)) => Ok(value),
            Ok(_) => Err("the request is not a bencoded dictionary".to_owned()),
            Err(err) => Err(format!("invalid bencode: {err}")),
        }
    }

    pub fn message(cookie: &[u8], body: &Value) -> Vec<u8> {
        let mut out = Vec::with_capacity(cookie.len() + 512);
        out.extend_from_slice(cookie);
        out.push(b' ');
        bencode::encode(body, &mut out);
        out
    }
}

/// Bencode (BEP 3), as ng uses it: byte strings, integers, lists and dictionaries.
pub mod bencode {
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Value {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<Value>),
        /// Keys come out sorted, as BEP 3 requires of an encoder.
        Dict(BTreeMap<Vec<u8>, Value>),
    }

    impl Value {
        pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
            Value::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v))
                    .collect(),
            )
        }

        /// The value under `key` of a dictionary.
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Dict(entries) => entries.get(key.as_bytes()),
                _ => None,
            }
        }

        pub fn as_bytes(&self) -> Option<&[u8]> {
            match self {
                Value::Bytes(bytes) => Some(bytes),
                _ => None,
            }
        }
    }

    impl From<&str> for Value {
        fn from(text: &str) -> Self {
            Value::Bytes(text.as_bytes().to_vec())
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum DecodeError {
        #[error("the data ends inside a value")]
        Truncated,
        #[error("unexpected byte {byte:#04x} at offset {at}")]
        Unexpected { byte: u8, at: usize },
        #[error("the integer or length at offset {0} is not a valid number")]
        BadNumber(usize),
        #[error("nested deeper than {MAX_DEPTH} levels")]
        TooDeep,
        #[error("a dictionary key at offset {0} is not a string")]
        KeyNotString(usize),
        #[error("{0} bytes follow the value")]
        Trailing(usize),
    }

    /// Lists and dictionaries nest no deeper than this: ng needs three levels, and a
    /// bound keeps a hostile datagram from exhausting the stack.
    pub const MAX_DEPTH: usize = 32;

    /// Decodes one value that must fill the whole input.
    pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
        let mut decoder = Decoder { input, at: 0 };
        let value = decoder.value(0)?;
        match input.len() - decoder.at {
            0 => Ok(value),
            rest => Err(DecodeError::Trailing(rest)),
        }
    }

    struct Decoder<'a> {
        input: &'a [u8],
        at: usize,
    }

    impl Decoder<'_> {
        fn peek(&self) -> Result<u8, DecodeError> {
            self.input
                .get(self.at)
                .copied()
                .ok_or(DecodeError::Truncated)
        }

        fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
            if depth > MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            match self.peek()? {
                b'i' => {
                    self.at += 1;
                    let start = self.at;
                    let digits = self.until(b'e')?;
                    let number = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<i64>().ok())
                        .ok_or(DecodeError::BadNumber(start))?;
                    Ok(Value::Int(number))
                }
                b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
                b'l' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    while self.peek()? != b'e' {
                        items.push(self.value(depth + 1)?);
                    }
                    self.at += 1;
                    Ok(Value::List(items))
                }
                b'd' => {
                    self.at += 1;
                    let mut entries = std::collections::BTreeMap::new();
                    while self.peek()? != b'e' {
                        if !self.peek()?.is_ascii_digit() {
                            return Err(DecodeError::KeyNotString(self.at));
                        }
                        let key = self.bytes()?.to_vec();
                        let value = self.value(depth + 1)?;
                        entries.insert(key, value);
                    }
                    self.at += 1;
                    Ok(Value::Dict(entries))
                }
                byte => Err(DecodeError::Unexpected { byte, at: self.at }),
            }
        }

        /// `LENGTH:BYTES`; the length is checked against what is left before slicing.
        fn bytes(&mut self) -> Result<&[u8], DecodeError> {
            let start = self.at;
            let digits = self.until(b':')?;
            let len = std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or(DecodeError::BadNumber(start))?;
            let end = self
                .at
                .checked_add(len)
                .filter(|&end| end <= self.input.len())
                .ok_or(DecodeError::Truncated)?;
            let bytes = &self.input[self.at..end];
            self.at = end;
            Ok(bytes)
        }

        /// The bytes up to `end`, which is consumed too.
        fn until(&mut self, end: u8) -> Result<&[u8], DecodeError> {
            let rest = &self.input[self.at..];
            let len = rest
                .iter()
                .position(|&b| b == end)
                .ok_or(DecodeError::Truncated)?;
            self.at += len + 1;
            Ok(&rest[..len])
        }
    }

    pub fn encode(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Int(number) => {
                out.push(b'i');
                out.extend_from_slice(number.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(bytes) => encode_bytes(bytes, out),
            Value::List(items) => {
                out.push(b'l');
                for item in items {
                    encode(item, out);
                }
                out.push(b'e');
            }
            Value::Dict(entries) => {
                out.push(b'd');
                for (key, value) in entries {
                    encode_bytes(key, out);
                    encode(value, out);
                }
                out.push(b'e');
            }
        }
    }

    fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(bytes.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(bytes);
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn an_ng_offer_round_trips() {
            let raw = b"d7:call-id2:c17:command5:offer5:flagsl4:asyme3:numi-7e3:sdp3:v=0e";
            let value = decode(raw).unwrap();
            assert_eq!(
                value.get("command").and_then(Value::as_bytes),
                Some(&b"offer"[..])
            );
            assert_eq!(value.get("num"), Some(&Value::Int(-7)));
            let mut out = Vec::new();
            encode(&value, &mut out);
            assert_eq!(out, raw);
        }

        #[test]
        fn bad_input_names_its_problem() {
            assert_eq!(decode(b"5:ab"), Err(DecodeError::Truncated));
            assert_eq!(
                decode(b"99999999999999999999999:"),
                Err(DecodeError::BadNumber(0))
            );
            assert_eq!(decode(b"ixe"), Err(DecodeError::BadNumber(1)));
            assert_eq!(decode(b"di1e1:ae"), Err(DecodeError::KeyNotString(1)));
            assert_eq!(decode(b"1:ax"), Err(DecodeError::Trailing(1)));
            assert_eq!(
                decode(b"-1:a"),
                Err(DecodeError::Unexpected { byte: b'-', at: 0 })
            );
            let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
            assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        }

        proptest! {
            #[test]
            fn any_input_decodes_or_fails_without_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = decode(&input);
            }

            #[test]
            fn what_decodes_encodes_back_when_keys_are_sorted(
                entries in proptest::collection::btree_map("[a-z-]{1,8}", "[ -~]{0,20}", 0..8),
            ) {
                let value = Value::Dict(entries.into_iter().map(|(k, v)| (k.into_bytes(), Value::from(v.as_str()))).collect());
                let mut out = Vec::new();
                encode(&value, &mut out);
                prop_assert_eq!(decode(&out), Ok(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        let pool = PortPool::new(
            "40000-40003".parse().expect("a valid range"),
            "127.0.0.1".parse().expect("an address"),
        );
        Host::new(MediaEngine::new(
            pool,
            "127.0.0.1".parse().expect("an address"),
            MEDIA_TIMEOUT,
        ))
    }

    fn reply(datagram: &[u8]) -> (Vec<u8>, Value) {
        let out = host().datagram(datagram);
        let (cookie, body) = ng::split(&out);
        (
            cookie.to_vec(),
            bencode::decode(body).expect("the host replies in bencode"),
        )
    }

    #[tokio::test]
    async fn garbage_gets_an_ng_error_with_the_cookie() {
        for datagram in [
            &b"abc"[..],
            b"abc ",
            b"abc d7:command",
            b"abc le",
            b"abc d7:command4:fooxe",
        ] {
            let (cookie, value) = reply(datagram);
            assert_eq!(cookie, b"abc");
            assert_eq!(
                value.get("result"),
                Some(&Value::from("error")),
                "{datagram:?}"
            );
            assert!(value.get("error-reason").is_some());
        }
    }

    #[tokio::test]
    async fn answer_without_offer_and_offer_without_audio_are_refused() {
        let (_, value) =
            reply(b"1 d7:call-id1:x7:command6:answer8:from-tag1:a6:to-tag1:b3:sdp3:v=0e");
        assert_eq!(value.get("result"), Some(&Value::from("error")));
        let (_, value) = reply(b"1 d7:command4:pinge");
        assert_eq!(value.get("result"), Some(&Value::from("pong")));
    }
}
