use super::*;

fn user(id: &str) -> UserId {
    UserId(id.to_owned())
}

fn device(name: &str, q: Option<f32>) -> Device {
    Device {
        contact: format!("sip:{name}@192.0.2.1"),
        transport: "udp".into(),
        source: "192.0.2.1:5060".into(),
        path: None,
        q,
        owner: None,
        carrier_host: None,
    }
}

fn devices(entries: &[(&str, &[&str])]) -> HashMap<UserId, Vec<Device>> {
    entries
        .iter()
        .map(|(u, ds)| (user(u), ds.iter().map(|d| device(d, None)).collect()))
        .collect()
}

#[test]
fn t5_the_responsible_rings_first_then_the_queue_and_unregistered_are_skipped() {
    // Order from the intake: responsible (bob) first, then the queue (ann, bob, cid).
    let order = [user("bob"), user("ann"), user("bob"), user("cid")];
    let plan = plan(
        &order,
        &devices(&[("bob", &["desk", "mobile"]), ("cid", &["softphone"])]),
        20,
    );
    let users: Vec<&str> = plan.steps.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(users, ["bob", "cid"], "each employee once, in order");
    assert_eq!(
        plan.steps[0].devices.len(),
        2,
        "all of bob's devices at once"
    );
    assert_eq!(plan.unreachable, [user("ann")]);
    assert_eq!(plan.ring_timeout_ms, 20_000);
}

#[test]
fn devices_ring_by_q_value_and_are_capped() {
    let mut map = HashMap::new();
    let mut list: Vec<Device> = (0..15)
        .map(|i| device(&format!("d{i}"), Some(0.5)))
        .collect();
    list.push(device("preferred", Some(0.9)));
    map.insert(user("ann"), list);
    let plan = plan(&[user("ann")], &map, 0);
    assert_eq!(plan.steps[0].devices.len(), MAX_DEVICES_PER_USER);
    assert_eq!(plan.steps[0].devices[0].contact, "sip:preferred@192.0.2.1");
    assert_eq!(plan.ring_timeout_ms, 1_000, "a zero timeout still rings");
}
