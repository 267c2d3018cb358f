//! Enforcement of the access rules (A1–A3, `crm::access`) for every handler that returns
//! or changes CRM data: loads who is asking and the account's levels once per request,
//! then answers "may see / may edit" for entities, activities, calls and e-mails.
//!
//! Refusals: what the caller may not see answers 404 exactly as if it did not exist
//! (existence itself is not theirs to know) and is absent from lists; what they may see
//! but not change answers 403.

use std::collections::HashMap;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use crate::crm::access::{self, AccessSettings, Level, Viewer};
use crate::crm::model::{EntityRef, MailboxKind, UserId};
use crate::events::CallUpdate;
use crate::store::{
    CallRecord, EmailRecord, EntityRecord, ListScope, MailboxRecord, Page, Paged, StoreError,
};

/// The rights of one request's caller.
#[derive(Debug, Clone)]
pub struct Access {
    pub settings: AccessSettings,
    pub viewer: Viewer,
}

impl Access {
    /// The caller's rights; trunk tokens have none (A1).
    pub async fn of(state: &AppState, principal: &Principal) -> ApiResult<Self> {
        principal.require_employee()?;
        let settings = state.store.access_settings().await?.normalised();
        let viewer = state
            .store
            .viewer(principal.user_id(), principal.is_admin(), settings)
            .await?;
        Ok(Self { settings, viewer })
    }

    pub fn is_admin(&self) -> bool {
        self.viewer.admin
    }

    pub fn me(&self) -> Option<&UserId> {
        self.viewer.user.as_ref()
    }

    pub fn sees(&self, responsible: Option<&UserId>) -> bool {
        access::may_see(self.settings, &self.viewer, responsible)
    }

    pub fn edits(&self, responsible: Option<&UserId>) -> bool {
        access::may_edit(self.settings, &self.viewer, responsible)
    }

    /// For list queries: the responsible employees whose entities the caller sees, or
    /// `None` when they see every entity (unassigned ones included).
    pub fn visible_responsibles(&self) -> Option<Vec<UserId>> {
        if self.viewer.admin || self.settings.agent_view == Level::All {
            return None;
        }
        let mut users: Vec<UserId> = match self.settings.agent_view {
            Level::Queue => self.viewer.queue_mates.iter().cloned().collect(),
            _ => self.viewer.user.iter().cloned().collect(),
        };
        users.sort();
        Some(users)
    }

    /// The rows an agent's list queries may return (see `ListScope`); `None` for admins.
    pub fn list_scope(&self) -> Option<ListScope> {
        if self.viewer.admin {
            return None;
        }
        Some(ListScope {
            // A non-admin principal is always a user (trunks were refused in `of`).
            me: self.viewer.user.clone()?,
            responsibles: self.visible_responsibles(),
        })
    }

    /// Whether the caller sees every entity (admins, and agents at `all`).
    pub fn sees_all_entities(&self) -> bool {
        self.viewer.admin || self.settings.agent_view == Level::All
    }

    /// The entity, if the caller may see it; 404 alike for hidden and missing ones.
    pub async fn see_entity(
        &self,
        state: &AppState,
        entity: &EntityRef,
    ) -> ApiResult<EntityRecord> {
        let record = state.store.get_entity(entity).await?;
        if !self.sees(record.responsible.as_ref()) {
            return Err(hidden(entity));
        }
        Ok(record)
    }

    /// The entity, if the caller may change it: 404 if they may not see it, 403 if they
    /// see it but may not change it.
    pub async fn edit_entity(
        &self,
        state: &AppState,
        entity: &EntityRef,
    ) -> ApiResult<EntityRecord> {
        let record = self.see_entity(state, entity).await?;
        if !self.edits(record.responsible.as_ref()) {
            return Err(self.refuse_edit(entity));
        }
        Ok(record)
    }

    pub fn refuse_edit(&self, entity: &EntityRef) -> ApiError {
        ApiError::Forbidden(format!(
            "you may see {entity} but not change it: agents change {} (ask an admin, or see /settings/access)",
            match self.settings.agent_edit {
                Level::Own => "the entities they are responsible for",
                Level::Queue => "the entities of their queues",
                Level::All => "every entity",
            }
        ))
    }

    /// Whether a reference the caller gives (a deal's contact, a contact's company) is one
    /// they may see; a hidden one is refused exactly like a missing one.
    pub async fn check_reference(
        &self,
        state: &AppState,
        field: &str,
        entity: &EntityRef,
    ) -> ApiResult<()> {
        match self.see_entity(state, entity).await {
            Ok(_) => Ok(()),
            Err(ApiError::NotFound { .. }) => Err(ApiError::field(
                "unknown_reference",
                field.to_owned(),
                format!("{field}: {entity} does not exist"),
            )),
            Err(e) => Err(e),
        }
    }

    /// The responsible of each entity, in order (`None` for a missing one: it counts as
    /// unassigned, so only those who see everything see activities still linked to it).
    pub async fn responsibles(
        &self,
        state: &AppState,
        entities: &[EntityRef],
    ) -> ApiResult<Vec<Option<UserId>>> {
        let map = state.store.entity_responsibles(entities).await?;
        Ok(entities
            .iter()
            .map(|e| map.get(e).cloned().flatten())
            .collect())
    }

    /// A2 for an activity on `entities`.
    pub async fn activity_visible(
        &self,
        state: &AppState,
        entities: &[EntityRef],
    ) -> ApiResult<bool> {
        if self.viewer.admin {
            return Ok(true);
        }
        let responsibles = self.responsibles(state, entities).await?;
        Ok(access::activity_visible(
            self.settings,
            &self.viewer,
            &responsibles,
        ))
    }

    /// A2 for a page of activities (or anything shown on entities): keeps the visible
    /// ones, in order, with one query for the whole page.
    pub async fn keep_visible<T>(
        &self,
        state: &AppState,
        items: Vec<T>,
        entities_of: impl Fn(&T) -> &[EntityRef],
    ) -> ApiResult<Vec<T>> {
        if self.viewer.admin {
            return Ok(items);
        }
        let all: Vec<EntityRef> = items
            .iter()
            .flat_map(|i| entities_of(i).iter().cloned())
            .collect();
        let owners = state.store.entity_responsibles(&all).await?;
        Ok(items
            .into_iter()
            .filter(|item| {
                let responsibles: Vec<Option<UserId>> = entities_of(item)
                    .iter()
                    .map(|e| owners.get(e).cloned().flatten())
                    .collect();
                access::activity_visible(self.settings, &self.viewer, &responsibles)
            })
            .collect())
    }

    /// A3: edit rights on every entity the activity leaves or joins.
    pub async fn may_move(
        &self,
        state: &AppState,
        from: &[EntityRef],
        to: &[EntityRef],
    ) -> ApiResult<bool> {
        if self.viewer.admin {
            return Ok(true);
        }
        let from = self.responsibles(state, from).await?;
        let to = self.responsibles(state, to).await?;
        Ok(access::may_move(self.settings, &self.viewer, &from, &to))
    }

    /// Whether the call concerns the caller: it rang them, they placed or answered it,
    /// or its customer is theirs.
    pub fn concerns(&self, call: &CallRecord) -> bool {
        let Some(me) = self.me() else { return false };
        [&call.user, &call.answered_by, &call.responsible]
            .iter()
            .any(|u| u.as_ref() == Some(me))
            || call.route.contains(me)
            || call.legs.iter().any(|leg| &leg.user == me)
    }

    /// The call window's rule for one update (`CallUpdate::visible_to`).
    pub fn sees_update(&self, update: &CallUpdate) -> bool {
        update.visible_to(self.settings, &self.viewer)
    }

    /// The calls of `calls` the caller may see, in order (one query for all of them).
    pub async fn visible_calls(
        &self,
        state: &AppState,
        calls: Vec<CallRecord>,
    ) -> ApiResult<Vec<CallRecord>> {
        if self.viewer.admin {
            return Ok(calls);
        }
        let ids: Vec<String> = calls.iter().map(|c| c.id.to_string()).collect();
        let links = state.store.call_entities(&ids).await?;
        let all: Vec<EntityRef> = links.values().flatten().cloned().collect();
        let owners = state.store.entity_responsibles(&all).await?;
        Ok(calls
            .into_iter()
            .filter(|call| {
                let responsibles: Vec<Option<UserId>> = links
                    .get(call.id.as_str())
                    .map(|entities| {
                        entities
                            .iter()
                            .map(|e| owners.get(e).cloned().flatten())
                            .collect()
                    })
                    .unwrap_or_default();
                access::call_visible(
                    self.settings,
                    &self.viewer,
                    self.concerns(call),
                    &responsibles,
                )
            })
            .collect())
    }

    /// The call, if the caller may see it; 404 alike for hidden and missing ones.
    pub async fn see_call(&self, state: &AppState, id: &str) -> ApiResult<CallRecord> {
        let call = state.store.get_call(id).await?;
        match self.visible_calls(state, vec![call]).await?.pop() {
            Some(call) => Ok(call),
            None => Err(ApiError::not_found("call", id)),
        }
    }

    /// Whether the caller may read a stored e-mail. Content of a personal mailbox is its
    /// owner's (E1): others, admins included, read it only once it is on the CRM, and then
    /// like any activity (A2). Mail of a company mailbox not on the CRM is for admins and
    /// the members of the mailbox's queue; forwarded mail (E16) not on the CRM for admins.
    pub async fn may_read_email(
        &self,
        state: &AppState,
        email: &EmailRecord,
        mailboxes: &mut HashMap<String, Option<MailboxRecord>>,
    ) -> ApiResult<bool> {
        let mailbox = match &email.mailbox {
            Some(id) => {
                if !mailboxes.contains_key(id) {
                    let found = match state.store.get_mailbox(id).await {
                        Ok(m) => Some(m),
                        Err(StoreError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    };
                    mailboxes.insert(id.clone(), found);
                }
                mailboxes.get(id).cloned().flatten()
            }
            None => None,
        };
        if let Some(mailbox) = &mailbox
            && mailbox.kind == MailboxKind::Personal
            && mailbox.owner.as_ref() == self.me()
        {
            return Ok(true);
        }
        if email.activity.is_some() && !email.entities.is_empty() {
            return self.activity_visible(state, &email.entities).await;
        }
        // Not on the CRM.
        Ok(match &mailbox {
            Some(m) if m.kind == MailboxKind::Personal => false,
            Some(m) => {
                self.viewer.admin
                    || match (&m.queue, self.me()) {
                        (Some(queue), Some(me)) => state
                            .store
                            .queue_state(queue)
                            .await?
                            .is_some_and(|q| q.members.contains(me)),
                        _ => false,
                    }
            }
            None => self.viewer.admin,
        })
    }
}

/// 404 for an entity the caller may not see, worded as for one that does not exist.
pub fn hidden(entity: &EntityRef) -> ApiError {
    ApiError::not_found(entity.kind.as_str(), entity.id.as_str())
}

/// Fills a page from a source whose items are checked one by one after fetching (calls,
/// activities, e-mails): fetches further pages until `limit` visible items are found or
/// the source ends, so a page is short only at the end. The number of hidden items is
/// not told. Stops after `MAX_SCANNED` rows and then answers what it has with a cursor
/// to go on from, so one request never scans a whole table.
///
/// The closures take owned arguments: `AsyncFnMut` over borrowed ones makes the handler's
/// future not `Send` for axum.
pub async fn fill_page<T, Fetched, Kept>(
    page: &Page,
    id: impl Fn(&T) -> String,
    mut fetch: impl FnMut(Page) -> Fetched,
    mut keep: impl FnMut(Vec<T>) -> Kept,
) -> ApiResult<Paged<T>>
where
    Fetched: Future<Output = ApiResult<Paged<T>>>,
    Kept: Future<Output = ApiResult<Vec<T>>>,
{
    const MAX_SCANNED: usize = 5_000;
    let limit = page.limit.clamp(1, Page::MAX) as usize;
    let mut cursor = page.clone();
    let mut out: Vec<T> = Vec::new();
    let mut scanned = 0;
    loop {
        let fetched = fetch(cursor.clone()).await?;
        scanned += fetched.items.len();
        let last_fetched = fetched.items.last().map(&id);
        let mut kept = keep(fetched.items).await?;
        if out.len() + kept.len() > limit {
            kept.truncate(limit - out.len());
            out.extend(kept);
            let next = out.last().map(&id);
            return Ok(Paged { items: out, next });
        }
        out.extend(kept);
        match fetched.next {
            None => {
                return Ok(Paged {
                    items: out,
                    next: None,
                });
            }
            Some(next) if out.len() == limit || scanned >= MAX_SCANNED => {
                // More may follow: go on after the last row looked at.
                let next = if out.len() == limit {
                    out.last().map(&id).or(Some(next))
                } else {
                    last_fetched.or(Some(next))
                };
                return Ok(Paged { items: out, next });
            }
            Some(next) => cursor.after = Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of the numbers 1..=n as ids, in pages, with only the even ones kept.
    async fn evens(n: u32, limit: u32, after: Option<String>) -> Paged<u32> {
        let page = Page { limit, after };
        fill_page(
            &page,
            |x: &u32| format!("{x:05}"),
            |p: Page| async move {
                let start = p.after.as_deref().map_or(0, |a| a.parse::<u32>().unwrap());
                let rows: Vec<u32> = (start + 1..=n).take(p.limit as usize + 1).collect();
                Ok(p.finish(rows, |x| format!("{x:05}")))
            },
            |items: Vec<u32>| async move { Ok(items.into_iter().filter(|x| x % 2 == 0).collect()) },
        )
        .await
        .unwrap()
    }

    fn update(ringing: &[&str], answered_by: Option<&str>, entity_of: Option<&str>) -> CallUpdate {
        CallUpdate {
            event: "ringing".into(),
            call: None,
            call_id: "c1".into(),
            direction: "incoming".into(),
            customer: "+4917612345678".into(),
            number: "+4930901820".into(),
            entity: entity_of.map(|_| "lead:l1".to_owned()),
            name: None,
            responsible: entity_of.map(str::to_owned),
            ringing: ringing.iter().map(|s| (*s).to_owned()).collect(),
            answered_by: answered_by.map(str::to_owned),
            outcome: None,
            at: "2026-11-23T10:00:00Z".into(),
        }
    }

    fn agent(me: &str, mates: &[&str], view: Level) -> Access {
        Access {
            settings: AccessSettings {
                agent_view: view,
                agent_edit: Level::Own,
            },
            viewer: Viewer {
                user: Some(UserId(me.into())),
                admin: false,
                queue_mates: mates.iter().map(|m| UserId((*m).into())).collect(),
            },
        }
    }

    #[test]
    fn a1_the_call_window_shows_calls_ringing_me_answered_by_me_or_of_customers_i_see() {
        let anna = agent("anna", &["anna", "ben"], Level::Own);
        assert!(anna.sees_update(&update(&["anna", "ben"], None, Some("carl"))));
        assert!(anna.sees_update(&update(&[], Some("anna"), None)));
        assert!(anna.sees_update(&update(&[], None, Some("anna"))));
        assert!(!anna.sees_update(&update(&["ben"], Some("ben"), Some("ben"))));
        assert!(
            !anna.sees_update(&update(&["ben"], None, None)),
            "unknown caller"
        );
        let anna_queue = agent("anna", &["anna", "ben"], Level::Queue);
        assert!(anna_queue.sees_update(&update(&["ben"], None, Some("ben"))));
        assert!(!anna_queue.sees_update(&update(&["carl"], None, Some("carl"))));
        let anna_all = agent("anna", &["anna"], Level::All);
        assert!(anna_all.sees_update(&update(&["carl"], None, None)));
    }

    #[tokio::test]
    async fn pages_are_filled_across_source_pages_and_end_without_a_cursor() {
        let first = evens(20, 4, None).await;
        assert_eq!(first.items, [2, 4, 6, 8]);
        let second = evens(20, 4, first.next).await;
        assert_eq!(second.items, [10, 12, 14, 16]);
        let third = evens(20, 4, second.next).await;
        assert_eq!(third.items, [18, 20]);
        assert_eq!(third.next, None);
    }

    #[tokio::test]
    async fn walking_the_pages_yields_every_visible_item_once() {
        for limit in 1..7 {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = evens(23, limit, cursor).await;
                seen.extend(page.items);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                seen,
                (1..=11).map(|x| x * 2).collect::<Vec<_>>(),
                "limit {limit}"
            );
        }
    }
}
