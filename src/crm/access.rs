//! Who may see and change which CRM entities and activities (A1–A3). Pure: the caller
//! supplies who is asking, whom they share a queue with, and who is responsible for each
//! entity; the HTTP layer enforces the answers.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::model::UserId;

/// How far an agent's rights reach, in the style of hosted CRMs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Entities the agent is responsible for.
    #[default]
    Own,
    /// Also those of employees who share a queue with the agent.
    Queue,
    /// Every entity.
    All,
}

/// The account's access settings for the agent role (admins see and edit all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessSettings {
    pub agent_view: Level,
    pub agent_edit: Level,
}

impl AccessSettings {
    /// Editing reaches no further than seeing: an edit right on what one cannot see would
    /// leak through the edit's answer.
    pub fn normalised(self) -> AccessSettings {
        AccessSettings {
            agent_view: self.agent_view,
            agent_edit: self.agent_edit.min(self.agent_view),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user: Option<UserId>,
    pub admin: bool,
    /// Employees who share at least one queue with the viewer (the viewer included).
    pub queue_mates: HashSet<UserId>,
}

fn reaches(level: Level, viewer: &Viewer, responsible: Option<&UserId>) -> bool {
    if viewer.admin || level == Level::All {
        return true;
    }
    // An entity nobody is responsible for is nobody's own: `all` only.
    let (Some(responsible), Some(me)) = (responsible, viewer.user.as_ref()) else {
        return false;
    };
    match level {
        Level::Own => responsible == me,
        Level::Queue => responsible == me || viewer.queue_mates.contains(responsible),
        Level::All => true,
    }
}

/// A1: whether the viewer may see an entity with this responsible person.
pub fn may_see(settings: AccessSettings, viewer: &Viewer, responsible: Option<&UserId>) -> bool {
    reaches(settings.normalised().agent_view, viewer, responsible)
}

/// Whether the viewer may change such an entity.
pub fn may_edit(settings: AccessSettings, viewer: &Viewer, responsible: Option<&UserId>) -> bool {
    reaches(settings.normalised().agent_edit, viewer, responsible)
}

/// A2: an activity is visible only if every entity it is shown on is. One on no entity
/// (kept only in the call log or mail store) is visible to whoever sees everything.
pub fn activity_visible(
    settings: AccessSettings,
    viewer: &Viewer,
    entity_responsibles: &[Option<UserId>],
) -> bool {
    if entity_responsibles.is_empty() {
        return viewer.admin || settings.agent_view == Level::All;
    }
    entity_responsibles
        .iter()
        .all(|r| may_see(settings, viewer, r.as_ref()))
}

/// A call shows to everyone it concerns (it rang them, they placed, answered or own it)
/// and, like any activity (A2), to whoever may see every entity it is on. This is also
/// the call window's rule: an agent at `own` is not told about a colleague's call.
pub fn call_visible(
    settings: AccessSettings,
    viewer: &Viewer,
    concerns_viewer: bool,
    entity_responsibles: &[Option<UserId>],
) -> bool {
    concerns_viewer || activity_visible(settings, viewer, entity_responsibles)
}

/// A3: moving an activity needs edit rights on every entity it leaves and joins.
pub fn may_move(
    settings: AccessSettings,
    viewer: &Viewer,
    from: &[Option<UserId>],
    to: &[Option<UserId>],
) -> bool {
    from.iter()
        .chain(to)
        .all(|r| may_edit(settings, viewer, r.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(n: u8) -> UserId {
        UserId(format!("u{n}"))
    }

    /// u1 shares a queue with u2; u3 is in another queue.
    fn agent(n: u8) -> Viewer {
        let mates: HashSet<UserId> = match n {
            1 | 2 => [user(1), user(2)].into(),
            _ => [user(n)].into(),
        };
        Viewer {
            user: Some(user(n)),
            admin: false,
            queue_mates: mates,
        }
    }

    fn settings(view: Level, edit: Level) -> AccessSettings {
        AccessSettings {
            agent_view: view,
            agent_edit: edit,
        }
    }

    #[test]
    fn a1_levels_reach_own_then_queue_then_all() {
        let own = settings(Level::Own, Level::Own);
        let queue = settings(Level::Queue, Level::Queue);
        let all = settings(Level::All, Level::All);
        let u2 = Some(&user(2));
        let u3 = Some(&user(3));
        assert!(may_see(own, &agent(2), u2));
        assert!(!may_see(own, &agent(1), u2));
        assert!(may_see(queue, &agent(1), u2));
        assert!(!may_see(queue, &agent(1), u3));
        assert!(may_see(all, &agent(1), u3));
        assert!(!may_see(queue, &agent(1), None), "unassigned: all only");
        let admin = Viewer {
            user: Some(user(9)),
            admin: true,
            queue_mates: HashSet::new(),
        };
        assert!(may_see(own, &admin, u3) && may_edit(own, &admin, None));
    }

    #[test]
    fn editing_never_reaches_further_than_seeing() {
        let odd = settings(Level::Own, Level::All);
        assert!(!may_edit(odd, &agent(1), Some(&user(2))));
        assert!(may_edit(odd, &agent(1), Some(&user(1))));
    }

    #[test]
    fn a2_an_email_on_a_deal_and_a_contact_hides_if_the_contact_is_hidden() {
        let own = settings(Level::Own, Level::Own);
        // The deal is u1's, the contact u3's.
        let entities = [Some(user(1)), Some(user(3))];
        assert!(!activity_visible(own, &agent(1), &entities));
        assert!(activity_visible(
            settings(Level::All, Level::Own),
            &agent(1),
            &entities
        ));
        assert!(!activity_visible(own, &agent(1), &[]));
    }

    #[test]
    fn a3_moving_needs_edit_rights_on_both_sides() {
        let queue_edit = settings(Level::All, Level::Queue);
        let mine = [Some(user(1))];
        let colleague = [Some(user(2))];
        let stranger = [Some(user(3))];
        assert!(may_move(queue_edit, &agent(1), &mine, &colleague));
        assert!(!may_move(queue_edit, &agent(1), &mine, &stranger));
        assert!(!may_move(queue_edit, &agent(1), &stranger, &mine));
    }

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Level::Own), Just(Level::Queue), Just(Level::All)]
    }

    proptest! {
        /// A2 for any ownership and any levels: a (non-empty) activity is visible exactly
        /// when each of its entities is.
        #[test]
        fn a2_an_activity_is_visible_iff_all_its_entities_are(
            view in level(),
            edit in level(),
            viewer in 1u8..=4,
            owners in proptest::collection::vec(proptest::option::of(1u8..=4), 1..6),
        ) {
            let settings = settings(view, edit);
            let viewer = agent(viewer);
            let entities: Vec<Option<UserId>> = owners.iter().map(|o| o.map(user)).collect();
            let each = entities.iter().all(|r| may_see(settings, &viewer, r.as_ref()));
            prop_assert_eq!(activity_visible(settings, &viewer, &entities), each);
            // And what one may edit, one may see.
            for r in &entities {
                prop_assert!(!may_edit(settings, &viewer, r.as_ref()) || may_see(settings, &viewer, r.as_ref()));
            }
        }
    }
}
