//! The pure core's cost per call: normalising a caller's number (M2) and deciding the
//! intake (T1–T13). These run once per call event; the database dominates, but a
//! regression here would show on every call.

use criterion::{Criterion, criterion_group, criterion_main};
use leadline::crm::intake::{
    CallFacts, CustomerContext, IntakeInput, NumberSettings, PipelineEntry, decide,
};
use leadline::crm::model::{
    CrmSettings, Direction, Directions, LeadCreation, NumberId, PipelineId, QueueId, StageId,
    UserId,
};
use leadline::crm::queue::QueueState;
use leadline::matcher::{Exclusions, Identifier, normalise_phone, resolve};

fn normalise(c: &mut Criterion) {
    let de = "DE".parse().ok();
    c.bench_function("normalise_phone national DE", |b| {
        b.iter(|| normalise_phone(std::hint::black_box("(030) 123-4567"), de))
    });
    c.bench_function("normalise_phone international", |b| {
        b.iter(|| normalise_phone(std::hint::black_box("+39 02 1234 5678"), de))
    });
}

fn intake(c: &mut Criterion) {
    let number = NumberSettings {
        id: NumberId("n".into()),
        number: "+4930901820".into(),
        default_country: "DE".parse().expect("DE"),
        queue: Some(QueueId("q".into())),
        lead_creation: LeadCreation::Automatic,
        directions: Directions::Incoming,
        route_to_responsible: true,
        ring_timeout_s: 20,
        source: "CALL".into(),
        change_responsible_on_transfer: false,
        trust: Default::default(),
    };
    let queue = QueueState {
        id: QueueId("q".into()),
        members: (0..10).map(|i| UserId(format!("agent-{i}"))).collect(),
        rotation: 7,
    };
    let pipelines = vec![PipelineEntry {
        id: PipelineId("default".into()),
        first_stage: StageId("new".into()),
        is_default: true,
    }];
    let facts = CallFacts {
        direction: Direction::Incoming,
        customer_raw: "030 1234567".into(),
        user: None,
        trust_flag: None,
    };
    let key = normalise_phone("030 1234567", Some(number.default_country)).expect("phone");
    let matched = resolve(Identifier::Phone(key), &Exclusions::default(), Vec::new());
    let crm = CrmSettings::default();
    let customer = CustomerContext::default();
    c.bench_function("intake decide (new caller, 10-member queue)", |b| {
        b.iter(|| {
            decide(IntakeInput {
                facts: &facts,
                number: Some(&number),
                matched: &matched,
                customer: &customer,
                crm: &crm,
                queue: Some(&queue),
                pipelines: &pipelines,
            })
        })
    });
}

criterion_group!(benches, normalise, intake);
criterion_main!(benches);
