//! The journal's records and the decisions about them: what one call write of the
//! B2BUA is as a line of JSON, how a journal file reads back (in order, a torn last line
//! left out, an unreadable line set aside), and which errors mean the database could not
//! be reached (a write to journal) rather than a write the database refused.

use serde::{Deserialize, Serialize};

use crate::crm::model::{Millis, QueueId, UserId};
use crate::store::{CallEvent, CallLeg, StoreError};

/// One write the B2BUA makes for a call, with everything needed to apply it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "write", rename_all = "snake_case")]
pub enum CallWrite {
    /// A call event. `node` is set on the opening event of a call this node's B2BUA
    /// opened (`calls.node_id`).
    Event {
        event: CallEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    Queue {
        call_id: String,
        queue: QueueId,
        wait_ms: Option<i64>,
    },
    Transferred {
        call_id: String,
        user: UserId,
        at: Millis,
    },
    Legs {
        call_id: String,
        legs: Vec<CallLeg>,
    },
    Media {
        call_id: String,
        /// The relay's statistics as JSON, as the call log keeps them.
        stats: Option<String>,
        recording: Option<Recording>,
    },
}

/// A recording named by a journaled media write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub file: String,
    pub duration_ms: u64,
    pub voicemail: bool,
}

impl CallWrite {
    pub fn call_id(&self) -> &str {
        match self {
            CallWrite::Event { event, .. } => &event.call_id,
            CallWrite::Queue { call_id, .. }
            | CallWrite::Transferred { call_id, .. }
            | CallWrite::Legs { call_id, .. }
            | CallWrite::Media { call_id, .. } => call_id,
        }
    }

    /// One journal line, newline included.
    pub fn encode(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a call write always serialises to JSON");
        line.push('\n');
        line
    }
}

/// One complete line of a journal file.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// Where the line starts in the file.
    pub start: u64,
    /// Where the next line starts: the replay checkpoint once this one is applied.
    pub end: u64,
    pub text: &'a str,
    /// The write, or why the line cannot be read (bad data: set aside, never retried).
    pub write: Result<CallWrite, String>,
}

/// The complete lines of `bytes` (a journal file read from `offset`), in file order. A
/// last line without its newline is a write a crash cut short: it was never
/// acknowledged, so it is not returned.
pub fn decode(bytes: &[u8], offset: u64) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0usize;
    while let Some(len) = bytes[start..].iter().position(|b| *b == b'\n') {
        let raw = &bytes[start..start + len];
        let (text, write) = match std::str::from_utf8(raw) {
            Ok(text) => (
                text,
                serde_json::from_str::<CallWrite>(text).map_err(|e| e.to_string()),
            ),
            Err(e) => ("", Err(e.to_string())),
        };
        let end = start + len + 1;
        lines.push(Line {
            start: offset + start as u64,
            end: offset + end as u64,
            text,
            write,
        });
        start = end;
    }
    lines
}

/// Where a torn last line starts (a crash in the middle of an append), if there is one:
/// the file is cut back to there before anything is appended behind it.
pub fn torn_tail(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return None;
    }
    Some(bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1))
}

/// The database could not be reached (no connection, the pool waited in vain, the
/// server going down): the write is journaled. Anything else (a constraint, bad data, a
/// bug) is the write's own failure and is reported as before.
pub fn is_unreachable(err: &StoreError) -> bool {
    match err {
        StoreError::Database(err) => sqlx_unreachable(err),
        _ => false,
    }
}

fn sqlx_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| unreachable_code(&code)),
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs of a lost or refused connection: class 08 (connection
/// exception) and the server shutting down or not yet up (57P01–57P03).
pub fn unreachable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::model::{CallEventKind, Direction};

    fn ringing(call_id: &str) -> CallWrite {
        CallWrite::Event {
            event: CallEvent {
                call_id: call_id.to_owned(),
                event: CallEventKind::Ringing,
                direction: Direction::Incoming,
                from: "+4930111".to_owned(),
                to: "+4930222".to_owned(),
                user: None,
                outcome: None,
                at: 1_700_000_000_000,
                diverted_from: Some("+4930333".to_owned()),
                verstat: Some("TN-Validation-Passed".to_owned()),
            },
            node: Some("node-1".to_owned()),
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let writes = [
            ringing("a"),
            CallWrite::Queue {
                call_id: "a".to_owned(),
                queue: QueueId::from("q".to_owned()),
                wait_ms: Some(1200),
            },
            CallWrite::Media {
                call_id: "a".to_owned(),
                stats: Some("{\"x\":1}".to_owned()),
                recording: Some(Recording {
                    file: "r.wav".to_owned(),
                    duration_ms: 5,
                    voicemail: true,
                }),
            },
        ];
        for write in writes {
            let line = write.encode();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let lines = decode(line.as_bytes(), 0);
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].write.as_ref().unwrap(), &write);
        }
    }

    #[test]
    fn lines_come_back_in_file_order_with_their_offsets() {
        let file: String = ["a", "b", "c"].map(|id| ringing(id).encode()).concat();
        let lines = decode(file.as_bytes(), 100);
        let ids: Vec<&str> = lines
            .iter()
            .map(|l| l.write.as_ref().unwrap().call_id())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(lines[0].start, 100);
        assert_eq!(lines[2].end, 100 + file.len() as u64);
        assert_eq!(lines[1].start, lines[0].end);
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_found() {
        let whole = ringing("a").encode();
        let file = format!("{whole}{{\"write\":\"ev");
        assert_eq!(decode(file.as_bytes(), 0).len(), 1);
        assert_eq!(torn_tail(file.as_bytes()), Some(whole.len()));
        assert_eq!(torn_tail(whole.as_bytes()), None);
        assert_eq!(torn_tail(b"{\"wri"), Some(0));
        assert_eq!(torn_tail(b""), None);
    }

    #[test]
    fn an_unreadable_line_is_reported_not_skipped() {
        let file = format!("not json\n{}", ringing("b").encode());
        let lines = decode(file.as_bytes(), 0);
        assert!(lines[0].write.is_err());
        assert_eq!(lines[0].text, "not json");
        assert_eq!(lines[1].write.as_ref().unwrap().call_id(), "b");
    }

    #[test]
    fn only_a_lost_connection_counts_as_the_database_unreachable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unreachable(&StoreError::Database(sqlx::Error::Io(
            refused
        ))));
        assert!(is_unreachable(&StoreError::Database(
            sqlx::Error::PoolTimedOut
        )));
        assert!(unreachable_code("08006"));
        assert!(unreachable_code("57P01"));
        assert!(
            !unreachable_code("23505"),
            "a unique violation is the write's own"
        );
        assert!(!is_unreachable(&StoreError::not_found("call", "x")));
        assert!(!is_unreachable(&StoreError::Corrupt("x".to_owned())));
        assert!(!is_unreachable(&StoreError::Database(
            sqlx::Error::RowNotFound
        )));
    }
}
