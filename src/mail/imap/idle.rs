//! IDLE (RFC 2177) on the selected folder: wait for the server to report a change,
//! re-issue before the server's inactivity timeout, and leave the session usable when the
//! waiting future is dropped.

use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use tokio::time::{Instant, timeout, timeout_at};

use super::session::{Failure, State};
use super::wire::{is_change, outcome_text};
use super::{IdleOutcome, ImapError, ImapSession};

impl ImapSession {
    /// Waits up to `max` for the server to report a change in the selected folder
    /// (IDLE, RFC 2177), re-issuing IDLE every [`Timeouts::idle_renew`](super::Timeouts::idle_renew). Returns at once
    /// with `NewData` when a change was already reported during earlier commands.
    ///
    /// Cancel by dropping the future (e.g. in `tokio::select!` with a shutdown signal):
    /// the session stays usable and the next call ends the IDLE first. Note Dovecot
    /// reports changes with up to ~0.5 s delay.
    pub async fn idle_wait(&mut self, max: Duration) -> Result<IdleOutcome, ImapError> {
        if !self.capabilities.idle() {
            return Err(ImapError::Refused {
                command: "IDLE",
                message: "the server does not offer IDLE (RFC 2177): poll instead".to_owned(),
            });
        }
        let end = Instant::now() + max;
        loop {
            self.make_ready().await?;
            if std::mem::take(&mut self.changes_seen) {
                return Ok(IdleOutcome::NewData);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(IdleOutcome::Timeout);
            }
            let round_end = end.min(now + self.timeouts.idle_renew);
            self.start_idle().await?;
            // A change may come with the continuation already (Dovecot reports what
            // happened since the last command when IDLE starts).
            if !self.changes_seen {
                self.wait_in_idle(round_end).await?;
            }
            self.finish_idle().await?;
        }
    }

    /// Sends IDLE and waits for the continuation (`+ idling`).
    async fn start_idle(&mut self) -> Result<(), ImapError> {
        self.state = State::InCommand("IDLE");
        let limit = self.timeouts.command;
        let tag = match timeout(limit, self.conn.run_command("IDLE")).await {
            Ok(Ok(tag)) => tag,
            Ok(Err(e)) => return Err(self.fail("IDLE", Failure::Imap(e))),
            Err(_) => return Err(self.time_out("IDLE", limit)),
        };
        // From here a dropped future is recoverable: DONE ends the IDLE, and
        // `finish_idle` skips the continuation if it is still unread.
        self.state = State::Idling(tag.clone());
        let conn = &mut self.conn;
        let mut changes = false;
        let run = async {
            loop {
                let response = conn.read_response().await?.ok_or(Failure::Closed)?;
                match response.parsed() {
                    Response::Continue { .. } => return Ok(()),
                    Response::Done {
                        tag: done, outcome, ..
                    } if *done == tag => return Err(Failure::Refused(outcome_text(outcome))),
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(Failure::Bye(outcome_text(outcome))),
                    other => changes |= is_change(other),
                }
            }
        };
        let outcome = timeout(limit, run).await;
        self.changes_seen |= changes;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(self.fail("IDLE", failure)),
            Err(_) => Err(self.time_out("IDLE", limit)),
        }
    }

    /// In IDLE: reads until a change is reported or `until`. Dropping this future is
    /// safe: the state stays `Idling` and nothing half-read is lost (a response is
    /// consumed whole or not at all by `read_response`).
    async fn wait_in_idle(&mut self, until: Instant) -> Result<(), ImapError> {
        loop {
            let response = match timeout_at(until, self.conn.read_response()).await {
                Err(_) => return Ok(()),
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => return Err(self.fail("IDLE", Failure::Closed)),
                Ok(Err(e)) => return Err(self.fail("IDLE", Failure::Io(e))),
            };
            match response.parsed() {
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => {
                    let failure = Failure::Bye(outcome_text(outcome));
                    return Err(self.fail("IDLE", failure));
                }
                other if is_change(other) => {
                    self.changes_seen = true;
                    return Ok(());
                }
                // `* OK Still here` keep-alives and the like.
                _ => {}
            }
        }
    }

    /// Sends DONE and reads up to the IDLE's tagged completion (RFC 2177 3).
    pub(super) async fn finish_idle(&mut self) -> Result<(), ImapError> {
        let State::Idling(tag) = std::mem::replace(&mut self.state, State::InCommand("IDLE"))
        else {
            return Ok(());
        };
        let limit = self.timeouts.command;
        let conn = &mut self.conn;
        let mut changes = false;
        let run = async {
            conn.run_command_untagged("DONE").await?;
            loop {
                let response = conn.read_response().await?.ok_or(Failure::Closed)?;
                match response.parsed() {
                    Response::Done {
                        tag: done,
                        status,
                        outcome,
                    } if *done == tag => {
                        return match status {
                            Status::Ok => Ok(()),
                            _ => Err(Failure::Refused(outcome_text(outcome))),
                        };
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(Failure::Bye(outcome_text(outcome))),
                    // `+ idling` when IDLE was abandoned before its continuation was read.
                    other => changes |= is_change(other),
                }
            }
        };
        let outcome = timeout(limit, run).await;
        self.changes_seen |= changes;
        match outcome {
            Ok(Ok(())) => {
                self.state = State::Ready;
                Ok(())
            }
            Ok(Err(failure)) => Err(self.fail("DONE", failure)),
            Err(_) => Err(self.time_out("DONE", limit)),
        }
    }
}
