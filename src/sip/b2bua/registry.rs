//! The live calls, owned by one task: which call holds a dialog with a given Call-ID.
//! A consultation transfer's REFER names, with `Replaces`, a dialog of another call; the
//! asking call's driver sends its request here and the registry passes it to the call
//! that holds the dialog (or answers that none does). Calls enter their dialogs' Call-IDs
//! as they get them and leave when they end. No map is shared: the task owns it and is
//! reached through its command channel.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::driver::HandoverAsk;

/// A live call's id in the registry.
pub(crate) type CallToken = u64;

enum Command {
    Enter {
        call: CallToken,
        call_id: String,
        to: mpsc::UnboundedSender<HandoverAsk>,
    },
    Leave {
        call: CallToken,
    },
    Ask {
        from: CallToken,
        call_id: String,
        ask: HandoverAsk,
        /// Answered only when no other live call holds the Call-ID: the ask comes back.
        none: oneshot::Sender<HandoverAsk>,
    },
}

/// The handle every call uses; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    commands: mpsc::UnboundedSender<Command>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Registry {
    /// Starts the registry's task; it ends when the last handle is dropped.
    pub fn spawn() -> Self {
        let (commands, mut receiver) = mpsc::unbounded_channel::<Command>();
        tokio::spawn(async move {
            let mut calls: HashMap<String, (CallToken, mpsc::UnboundedSender<HandoverAsk>)> =
                HashMap::new();
            while let Some(command) = receiver.recv().await {
                match command {
                    Command::Enter { call, call_id, to } => {
                        calls.insert(call_id, (call, to));
                    }
                    Command::Leave { call } => calls.retain(|_, (owner, _)| *owner != call),
                    Command::Ask {
                        from,
                        call_id,
                        ask,
                        none,
                    } => match calls.get(&call_id) {
                        // A call's own dialogs are not "another call".
                        Some((owner, to)) if *owner != from => {
                            if let Err(mpsc::error::SendError(ask)) = to.send(ask) {
                                let _ = none.send(ask);
                            }
                        }
                        _ => {
                            let _ = none.send(ask);
                        }
                    },
                }
            }
        });
        Self {
            commands,
            next: Default::default(),
        }
    }

    /// A new call's token.
    pub(crate) fn token(&self) -> CallToken {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// `call` holds a dialog with this Call-ID; asks for it reach `to`.
    pub(crate) fn enter(
        &self,
        call: CallToken,
        call_id: &str,
        to: &mpsc::UnboundedSender<HandoverAsk>,
    ) {
        let _ = self.commands.send(Command::Enter {
            call,
            call_id: call_id.to_owned(),
            to: to.clone(),
        });
    }

    /// `call` ended: its dialogs are no longer found.
    pub(crate) fn leave(&self, call: CallToken) {
        let _ = self.commands.send(Command::Leave { call });
    }

    /// Passes `ask` to the live call other than `from` holding a dialog with
    /// `call_id`. `Err` gives it back when there is none.
    pub(crate) async fn ask(
        &self,
        from: CallToken,
        call_id: &str,
        ask: HandoverAsk,
    ) -> Result<(), HandoverAsk> {
        let (none, back) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Ask { ask, .. })) =
            self.commands.send(Command::Ask {
                from,
                call_id: call_id.to_owned(),
                ask,
                none,
            })
        {
            return Err(ask);
        }
        match back.await {
            Ok(ask) => Err(ask),
            // Passed on: the registry dropped its way back.
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::call::Replaces;

    fn ask() -> (
        HandoverAsk,
        oneshot::Receiver<Result<super::super::driver::Takeover, u16>>,
    ) {
        let (states, _) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        let replaces = Replaces::parse("consult@anna;to-tag=a;from-tag=b").unwrap();
        (
            HandoverAsk {
                replaces,
                states,
                reply,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn t10_an_ask_reaches_the_other_call_holding_the_dialog_only() {
        let registry = Registry::spawn();
        let (holder, other) = (registry.token(), registry.token());
        let (to, mut asks) = mpsc::unbounded_channel();
        registry.enter(holder, "consult@anna", &to);

        let (request, _answer) = ask();
        assert!(registry.ask(other, "consult@anna", request).await.is_ok());
        let passed = asks.recv().await.expect("the holder gets the ask");
        assert_eq!(passed.replaces.call_id, "consult@anna");

        let (request, _answer) = ask();
        assert!(
            registry.ask(holder, "consult@anna", request).await.is_err(),
            "a call's own dialog is not another call"
        );
        let (request, _answer) = ask();
        assert!(
            registry.ask(other, "unknown@anna", request).await.is_err(),
            "no live call holds it"
        );

        registry.leave(holder);
        let (request, _answer) = ask();
        assert!(
            registry.ask(other, "consult@anna", request).await.is_err(),
            "an ended call is found no more"
        );
    }
}
