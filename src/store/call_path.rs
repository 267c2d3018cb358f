//! Which database work a call's set-up path does, in debug builds: the tasks that
//! handle an incoming INVITE and run its call are marked with the call's Call-ID, and
//! every query they start through the store is recorded with the place in the store
//! that started it. The intake (the CRM match) runs in a task of its own and is not
//! recorded: the set-up path's own list must stay empty until the first phone rings, and
//! a test reads it then. Release builds record nothing and the marks cost nothing.

#[cfg(debug_assertions)]
use std::collections::HashMap;
#[cfg(debug_assertions)]
use std::sync::Mutex;

/// Marks and records (debug builds).
#[derive(Debug, Default)]
pub(crate) struct CallPaths {
    #[cfg(debug_assertions)]
    inner: Mutex<Marks>,
}

#[cfg(debug_assertions)]
#[derive(Debug, Default)]
struct Marks {
    /// The Call-ID each marked task works for.
    tasks: HashMap<tokio::task::Id, String>,
    /// Per Call-ID: how many tasks are marked, and the queries they started.
    calls: HashMap<String, (usize, Vec<String>)>,
}

/// Records a few per call at most: enough to name the culprit.
#[cfg(debug_assertions)]
const KEPT: usize = 16;

/// Keeps the current task marked until dropped.
#[must_use = "the task is marked only while the guard lives"]
pub struct CallPathGuard {
    #[cfg(debug_assertions)]
    owner: Option<(std::sync::Arc<CallPaths>, tokio::task::Id)>,
}

impl CallPaths {
    #[cfg(debug_assertions)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A query started at `at`; recorded if the current task is marked.
    #[cfg(debug_assertions)]
    pub(crate) fn query(&self, at: &std::panic::Location<'_>) {
        let Some(task) = tokio::task::try_id() else {
            return;
        };
        let mut marks = self.lock();
        let Some(call) = marks.tasks.get(&task).cloned() else {
            return;
        };
        if let Some((_, queries)) = marks.calls.get_mut(&call)
            && queries.len() < KEPT
        {
            queries.push(format!("{}:{}", at.file(), at.line()));
        }
    }

    #[cfg(not(debug_assertions))]
    pub(crate) fn query(&self, _at: &std::panic::Location<'_>) {}

    #[cfg(debug_assertions)]
    pub(crate) fn mark(self: &std::sync::Arc<Self>, call_id: &str) -> CallPathGuard {
        let Some(task) = tokio::task::try_id() else {
            return CallPathGuard { owner: None };
        };
        let mut marks = self.lock();
        marks.tasks.insert(task, call_id.to_owned());
        marks.calls.entry(call_id.to_owned()).or_default().0 += 1;
        CallPathGuard {
            owner: Some((self.clone(), task)),
        }
    }

    #[cfg(not(debug_assertions))]
    pub(crate) fn mark(self: &std::sync::Arc<Self>, _call_id: &str) -> CallPathGuard {
        CallPathGuard {}
    }

    /// What the marked tasks of `call_id` have queried so far (`file:line` in the store).
    #[cfg(debug_assertions)]
    pub(crate) fn queries(&self, call_id: &str) -> Option<Vec<String>> {
        self.lock().calls.get(call_id).map(|(_, q)| q.clone())
    }

    #[cfg(not(debug_assertions))]
    pub(crate) fn queries(&self, _call_id: &str) -> Option<Vec<String>> {
        None
    }
}

impl Drop for CallPathGuard {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        if let Some((paths, task)) = self.owner.take() {
            let mut marks = paths.lock();
            if let Some(call) = marks.tasks.remove(&task)
                && let Some((count, _)) = marks.calls.get_mut(&call)
            {
                *count -= 1;
                if *count == 0 {
                    marks.calls.remove(&call);
                }
            }
        }
    }
}
