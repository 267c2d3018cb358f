use super::*;

fn user(name: &str) -> UserId {
    UserId(name.to_owned())
}

fn queue(name: &str) -> QueueId {
    QueueId(name.to_owned())
}

fn rules(members: &[&str], strategy: QueueStrategy) -> QueueRules {
    QueueRules {
        members: members.iter().map(|m| user(m)).collect(),
        strategy,
    }
}

fn board(names: &[&str]) -> Board {
    Board::new(names.iter().map(|n| (user(n), Presence::Available)), 0)
}

fn anyone(_: &UserId) -> bool {
    true
}

fn offered(offers: &[Offer]) -> Vec<(u64, Vec<&str>)> {
    offers
        .iter()
        .map(|o| (o.ticket, o.users.iter().map(UserId::as_str).collect()))
        .collect()
}

#[test]
fn an_agent_in_a_call_or_in_wrap_up_is_not_free_and_is_after_both() {
    let mut b = board(&["anna"]);
    b.call_state("c1", vec![user("anna")], vec![], 30_000, 1_000);
    assert!(!b.is_free(&user("anna"), 2_000));
    assert!(b.agent_state(&user("anna"), 2_000).in_call);
    // The call ends at 5 s: wrap-up until 35 s.
    b.call_state("c1", vec![], vec![], 30_000, 5_000);
    assert!(!b.is_free(&user("anna"), 34_999));
    assert_eq!(
        b.agent_state(&user("anna"), 6_000).wrap_up_until,
        Some(35_000)
    );
    assert!(b.is_free(&user("anna"), 35_000));
    assert_eq!(b.agent_state(&user("anna"), 35_000).wrap_up_until, None);
}

#[test]
fn an_agent_in_two_calls_is_free_only_after_both() {
    let mut b = board(&["anna"]);
    b.call_state("c1", vec![user("anna")], vec![], 0, 0);
    b.call_state("c2", vec![user("anna")], vec![], 0, 0);
    b.call_state("c1", vec![], vec![], 0, 10);
    assert!(!b.is_free(&user("anna"), 20));
    b.call_state("c2", vec![], vec![], 0, 30);
    assert!(b.is_free(&user("anna"), 30));
}

#[test]
fn a_ringing_phone_is_not_offered_another_queue_call() {
    let mut b = board(&["anna"]);
    b.call_state("c1", vec![], vec![user("anna")], 0, 0);
    assert!(!b.is_free(&user("anna"), 1));
    b.call_state("c1", vec![], vec![], 0, 2);
    assert!(b.is_free(&user("anna"), 2));
}

#[test]
fn a_paused_or_offline_agent_is_never_free_and_a_queue_of_them_is_not_staffed() {
    let mut b = board(&["anna", "ben"]);
    b.set_presence(&user("anna"), Presence::Paused, 0);
    b.set_presence(&user("ben"), Presence::Offline, 0);
    let r = rules(&["anna", "ben"], QueueStrategy::InTurn);
    assert!(b.free_in_order(&r, 1, anyone).is_empty());
    assert!(!b.staffed(&r, anyone));
    b.set_presence(&user("anna"), Presence::Available, 2);
    assert_eq!(b.free_in_order(&r, 3, anyone), vec![user("anna")]);
    assert!(b.staffed(&r, anyone));
}

#[test]
fn an_agent_without_a_registered_phone_is_neither_free_nor_staffing() {
    let b = board(&["anna"]);
    let r = rules(&["anna"], QueueStrategy::InTurn);
    let nobody = |_: &UserId| false;
    assert!(b.free_in_order(&r, 0, nobody).is_empty());
    assert!(!b.staffed(&r, nobody));
}

#[test]
fn waiting_callers_are_served_first_come_first_served() {
    let mut b = board(&["anna"]);
    b.call_state("busy", vec![user("anna")], vec![], 0, 0);
    let first = b.enqueue(queue("q"), "c1".into(), None, "+491".into(), 10);
    let second = b.enqueue(queue("q"), "c2".into(), None, "+492".into(), 20);
    let third = b.enqueue(queue("q"), "c3".into(), None, "+493".into(), 30);
    let r = rules(&["anna"], QueueStrategy::InTurn);
    assert!(b.dispatch(40, |_| Some(r.clone()), anyone).is_empty());
    b.call_state("busy", vec![], vec![], 0, 50);
    let offers = b.dispatch(50, |_| Some(r.clone()), anyone);
    assert_eq!(offered(&offers), vec![(first, vec!["anna"])]);
    b.offer_over(first, Some(&user("anna")), 55);
    b.call_state("c1", vec![user("anna")], vec![], 0, 55);
    b.call_state("c1", vec![], vec![], 0, 60);
    let offers = b.dispatch(60, |_| Some(r.clone()), anyone);
    assert_eq!(offered(&offers), vec![(second, vec!["anna"])]);
    assert_eq!(b.positions().get(&third), Some(&2));
}

#[test]
fn the_longest_waiting_caller_across_queues_goes_first() {
    let mut b = board(&["anna"]);
    b.call_state("busy", vec![user("anna")], vec![], 0, 0);
    let sales = b.enqueue(queue("sales"), "c1".into(), None, "+491".into(), 10);
    let support = b.enqueue(queue("support"), "c2".into(), None, "+492".into(), 20);
    b.call_state("busy", vec![], vec![], 0, 30);
    let both = rules(&["anna"], QueueStrategy::InTurn);
    let offers = b.dispatch(30, |_| Some(both.clone()), anyone);
    assert_eq!(offered(&offers), vec![(sales, vec!["anna"])]);
    assert_eq!(b.positions().get(&support), Some(&1));
}

#[test]
fn a_caller_nobody_took_keeps_their_place_and_the_agent_rests() {
    let mut b = board(&["anna", "ben"]);
    let r = rules(&["anna", "ben"], QueueStrategy::InTurn);
    let ticket = b.enqueue(queue("q"), "c1".into(), None, "+491".into(), 0);
    let later = b.enqueue(queue("q"), "c2".into(), None, "+492".into(), 1);
    let offers = b.dispatch(2, |_| Some(r.clone()), anyone);
    assert_eq!(
        offered(&offers),
        vec![(ticket, vec!["anna"]), (later, vec!["ben"])]
    );
    b.offer_over(ticket, None, 1_000);
    assert_eq!(b.positions().get(&ticket), Some(&1));
    // Anna rests; Ben still rings for the second caller.
    assert!(b.dispatch(1_001, |_| Some(r.clone()), anyone).is_empty());
    assert_eq!(b.next_wake(1_001), Some(1_000 + REST_MS));
    let offers = b.dispatch(1_000 + REST_MS, |_| Some(r.clone()), anyone);
    assert_eq!(offered(&offers), vec![(ticket, vec!["anna"])]);
}

#[test]
fn ring_all_offers_every_free_member_at_once() {
    let mut b = board(&["anna", "ben", "cem"]);
    b.call_state("busy", vec![user("cem")], vec![], 0, 0);
    let r = rules(&["anna", "ben", "cem"], QueueStrategy::RingAll);
    let ticket = b.enqueue(queue("q"), "c1".into(), None, "+491".into(), 0);
    let offers = b.dispatch(1, |_| Some(r.clone()), anyone);
    assert_eq!(offered(&offers), vec![(ticket, vec!["anna", "ben"])]);
    // Ben answers: Anna is free again, and no longer offered.
    b.offer_over(ticket, Some(&user("ben")), 2);
    assert!(b.is_free(&user("anna"), 2));
    assert!(b.waiting_in(&queue("q")).is_empty());
}

#[test]
fn longest_idle_offers_the_agent_idle_longest() {
    let mut b = board(&["anna", "ben"]);
    b.call_state("a", vec![user("anna")], vec![], 0, 0);
    b.call_state("b", vec![user("ben")], vec![], 0, 0);
    b.call_state("b", vec![], vec![], 0, 100);
    b.call_state("a", vec![], vec![], 0, 200);
    let r = rules(&["anna", "ben"], QueueStrategy::LongestIdle);
    assert_eq!(
        b.free_in_order(&r, 300, anyone),
        vec![user("ben"), user("anna")]
    );
    let ticket = b.enqueue(queue("q"), "c1".into(), None, "+491".into(), 300);
    let offers = b.dispatch(300, |_| Some(r.clone()), anyone);
    assert_eq!(offered(&offers), vec![(ticket, vec!["ben"])]);
}

#[test]
fn t9_in_turn_offers_go_round_the_members() {
    let mut b = board(&["anna", "ben", "cem"]);
    let r = rules(&["anna", "ben", "cem"], QueueStrategy::InTurn);
    let mut picks = Vec::new();
    for i in 0..4 {
        let ticket = b.enqueue(queue("q"), format!("c{i}"), None, "+491".into(), i);
        let offers = b.dispatch(i, |_| Some(r.clone()), anyone);
        picks.push(offers[0].users[0].to_string());
        b.offer_over(ticket, Some(&offers[0].users[0]), i);
    }
    assert_eq!(picks, ["anna", "ben", "cem", "anna"]);
}

#[test]
fn a_caller_who_leaves_frees_the_agents_offered() {
    let mut b = board(&["anna"]);
    let r = rules(&["anna"], QueueStrategy::InTurn);
    let ticket = b.enqueue(queue("q"), "c1".into(), None, "+491".into(), 0);
    assert_eq!(b.dispatch(0, |_| Some(r.clone()), anyone).len(), 1);
    assert!(!b.is_free(&user("anna"), 1));
    b.leave(ticket);
    assert!(b.is_free(&user("anna"), 1));
    assert!(b.positions().is_empty());
    assert_eq!(b.next_wake(1), None);
}

#[test]
fn an_agent_with_room_for_more_calls_is_offered_while_in_one() {
    let mut b = board(&["desk"]);
    b.set_max_calls(&user("desk"), 2, 0);
    b.call_state("c1", vec![user("desk")], vec![], 0, 0);
    assert!(b.is_free(&user("desk"), 1));
    b.call_state("c2", vec![], vec![user("desk")], 0, 1);
    assert!(!b.is_free(&user("desk"), 2));
}
