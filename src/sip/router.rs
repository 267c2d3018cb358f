//! Where an incoming call rings and in what order (T5, T9): the route plan, pure.
//!
//! The intake gives the employees in ring order (the responsible first when T5 applies,
//! then the queue in turn order). Each employee is one step: all their registered
//! devices ring in parallel for the number's ring timeout; an employee with no device is
//! skipped. How a call moves through the plan is [`crate::sip::call::ringing`].

use std::collections::HashMap;

use crate::crm::model::UserId;

/// The most devices rung for one employee, so a misconfigured account cannot fan one
/// call out into hundreds of legs.
pub const MAX_DEVICES_PER_USER: usize = 10;

/// A registered device of an employee.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// The Contact URI it registered.
    pub contact: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// `ip:port` its REGISTER came from: where requests go (it may be behind NAT).
    pub source: String,
    /// The Path it registered through (RFC 3327): the Route of requests to it.
    pub path: Option<String>,
    /// Contact preference (RFC 3261 §20.10); higher rings first among equals.
    pub q: Option<f32>,
    /// The employee it belongs to, when a step rings several employees at once (a
    /// queue's `ring_all`); `None`: the step's employee.
    pub owner: Option<UserId>,
    /// A carrier trunk's leg: its host, the name the carrier's TLS certificate must
    /// carry when the gateway opens the connection itself. `None` for phones, which
    /// are reached over the connection they registered over only.
    pub carrier_host: Option<String>,
}

/// One employee's turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub user: UserId,
    pub devices: Vec<Device>,
}

/// The whole order for one call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutePlan {
    pub steps: Vec<Step>,
    /// Employees in the order who had no registered device.
    pub unreachable: Vec<UserId>,
    pub ring_timeout_ms: u64,
}

/// Builds the plan from the ring order and the devices registered per employee.
pub fn plan(
    order: &[UserId],
    devices: &HashMap<UserId, Vec<Device>>,
    ring_timeout_s: u32,
) -> RoutePlan {
    let mut plan = RoutePlan {
        ring_timeout_ms: u64::from(ring_timeout_s.max(1)) * 1000,
        ..RoutePlan::default()
    };
    for user in order {
        if plan.steps.iter().any(|s| &s.user == user) {
            continue;
        }
        let mut found = devices.get(user).cloned().unwrap_or_default();
        if found.is_empty() {
            plan.unreachable.push(user.clone());
            continue;
        }
        found.sort_by(|a, b| {
            b.q.unwrap_or(1.0)
                .partial_cmp(&a.q.unwrap_or(1.0))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        found.truncate(MAX_DEVICES_PER_USER);
        plan.steps.push(Step {
            user: user.clone(),
            devices: found,
        });
    }
    plan
}

#[cfg(test)]
mod tests;
