//! The live calls, owned by one task: which call holds a dialog with a given Call-ID.
//! A consultation transfer's REFER names, with `Replaces`, a dialog of another call; the
//! asking call's driver sends its request here and the registry passes it to the call
//! that holds the dialog (or answers that none does). Calls enter their dialogs' Call-IDs
//! as they get them and leave when they end. No map is shared: the task owns it and is
//! reached through its command channel.
//!
//! It also passes on the changes of talking calls' dialogs: a dialog rebuilt once
//! confirmed (`slim`) reports on the registry's one dialog-state channel, and
//! the registry sends each change to the inbox of the call routed for its Call-ID. A
//! call then needs no dialog-state channel of its own while it talks (rsipstack's is
//! unbounded, so its first block of 32 large states, about 10 KiB, would live as long
//! as the call); its inbox holds boxes.

use std::collections::HashMap;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use tokio::sync::{mpsc, oneshot};

use super::driver::{HandoverAsk, Inbox, InboxSender};

/// A live call's id in the registry.
pub(crate) type CallToken = u64;

enum Command {
    Enter {
        call: CallToken,
        call_id: String,
        to: InboxSender,
    },
    /// The changes of the dialogs with this Call-ID go to `to` from now on.
    Route {
        call: CallToken,
        call_id: String,
        to: InboxSender,
    },
    Leave {
        call: CallToken,
    },
    Ask {
        from: CallToken,
        call_id: String,
        ask: Box<HandoverAsk>,
        /// Answered only when no other live call holds the Call-ID: the ask comes back.
        none: oneshot::Sender<Box<HandoverAsk>>,
    },
}

/// The handle every call uses; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    commands: mpsc::UnboundedSender<Command>,
    states: DialogStateSender,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What the registry's task owns.
#[derive(Default)]
struct Calls {
    /// For hand-over asks: the Call-IDs of talking calls' dialogs.
    calls: HashMap<String, (CallToken, InboxSender)>,
    /// For dialog changes: the Call-IDs of rebuilt dialogs.
    routes: HashMap<String, (CallToken, InboxSender)>,
}

impl Calls {
    fn command(&mut self, command: Command) {
        match command {
            Command::Enter { call, call_id, to } => {
                self.calls.insert(call_id, (call, to));
            }
            Command::Route { call, call_id, to } => {
                self.routes.insert(call_id, (call, to));
            }
            Command::Leave { call } => {
                self.calls.retain(|_, (owner, _)| *owner != call);
                self.routes.retain(|_, (owner, _)| *owner != call);
            }
            Command::Ask {
                from,
                call_id,
                ask,
                none,
            } => match self.calls.get(&call_id) {
                // A call's own dialogs are not "another call".
                Some((owner, to)) if *owner != from => {
                    if let Err(mpsc::error::SendError(Inbox::Handover(ask))) =
                        to.send(Inbox::Handover(ask))
                    {
                        let _ = none.send(ask);
                    }
                }
                _ => {
                    let _ = none.send(ask);
                }
            },
        }
    }

    /// A change of a dialog nobody is routed for (its call ended) is dropped, as a
    /// closed channel would.
    fn state(&self, state: DialogState) {
        if let Some((_, to)) = self.routes.get(&state.id().call_id) {
            let _ = to.send(Inbox::State(Box::new(state)));
        }
    }
}

impl Registry {
    /// Starts the registry's task; it ends when the last handle is dropped.
    pub fn spawn() -> Self {
        let (commands, receiver) = mpsc::unbounded_channel::<Command>();
        let (states, changes) = mpsc::unbounded_channel();
        tokio::spawn(serve(receiver, changes));
        Self {
            commands,
            states,
            next: Default::default(),
        }
    }

    /// Where rebuilt dialogs report their changes.
    pub(crate) fn states(&self) -> DialogStateSender {
        self.states.clone()
    }

    /// The changes of the dialogs with this Call-ID go to `call`'s inbox. Sent before
    /// such a dialog can be found, so its first change finds the route (the task reads
    /// commands first).
    pub(crate) fn route(&self, call: CallToken, call_id: &str, to: &InboxSender) {
        let _ = self.commands.send(Command::Route {
            call,
            call_id: call_id.to_owned(),
            to: to.clone(),
        });
    }

    /// A new call's token.
    pub(crate) fn token(&self) -> CallToken {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// `call` holds a dialog with this Call-ID; asks for it reach `to`.
    pub(crate) fn enter(&self, call: CallToken, call_id: &str, to: &InboxSender) {
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
        ask: Box<HandoverAsk>,
    ) -> Result<(), Box<HandoverAsk>> {
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

async fn serve(mut commands: mpsc::UnboundedReceiver<Command>, mut states: DialogStateReceiver) {
    let mut calls = Calls::default();
    loop {
        tokio::select! {
            // Commands first: a route is in place before its dialog's first change.
            biased;
            command = commands.recv() => match command {
                Some(command) => calls.command(command),
                None => break,
            },
            Some(state) = states.recv() => calls.state(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::call::Replaces;

    fn ask() -> (
        Box<HandoverAsk>,
        oneshot::Receiver<Result<super::super::driver::Takeover, u16>>,
    ) {
        let (states, _) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        let replaces = Replaces::parse("consult@anna;to-tag=a;from-tag=b").unwrap();
        (
            Box::new(HandoverAsk {
                replaces,
                states,
                token: 0,
                inbox: mpsc::unbounded_channel().0,
                reply,
            }),
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
        let Some(Inbox::Handover(passed)) = asks.recv().await else {
            panic!("the holder gets the ask");
        };
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

    fn ended(call_id: &str) -> DialogState {
        DialogState::Terminated(
            rsipstack::dialog::DialogId {
                call_id: call_id.to_owned(),
                local_tag: "l".to_owned(),
                remote_tag: "r".to_owned(),
            },
            rsipstack::dialog::dialog::TerminatedReason::UacBye,
        )
    }

    /// Waits for the next change in an inbox, skipping nothing else (there is nothing).
    async fn next_change(inbox: &mut mpsc::UnboundedReceiver<Inbox>) -> Option<String> {
        match tokio::time::timeout(std::time::Duration::from_secs(5), inbox.recv()).await {
            Ok(Some(Inbox::State(state))) => Some(state.id().call_id.clone()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn dialog_changes_reach_the_call_routed_for_their_call_id_until_it_leaves() {
        let registry = Registry::spawn();
        let (first, second) = (registry.token(), registry.token());
        let (to_first, mut first_inbox) = mpsc::unbounded_channel();
        let (to_second, mut second_inbox) = mpsc::unbounded_channel();
        registry.route(first, "a@x", &to_first);
        registry.route(second, "b@x", &to_second);
        let states = registry.states();

        states.send(ended("b@x")).unwrap();
        states.send(ended("a@x")).unwrap();
        assert_eq!(next_change(&mut first_inbox).await.as_deref(), Some("a@x"));
        assert_eq!(next_change(&mut second_inbox).await.as_deref(), Some("b@x"));

        // A dialog handed over: its changes follow the new route, and the call that
        // gave it away leaving does not take the route with it.
        registry.route(second, "a@x", &to_second);
        registry.leave(first);
        states.send(ended("a@x")).unwrap();
        assert_eq!(next_change(&mut second_inbox).await.as_deref(), Some("a@x"));

        // A change nobody is routed for is dropped; the next routed one still arrives.
        registry.leave(second);
        states.send(ended("b@x")).unwrap();
        registry.route(first, "c@x", &to_first);
        states.send(ended("c@x")).unwrap();
        assert_eq!(next_change(&mut first_inbox).await.as_deref(), Some("c@x"));
        assert!(second_inbox.try_recv().is_err(), "nothing after leaving");
    }
}
