//! Caller trust: whether a call is kept out of the CRM, and whether it is still put
//! through, from the carrier's verification of the caller (RFC 8224 / ATIS-1000074
//! `verstat`), how often this caller called the number in the last hour, and whether the
//! caller is withheld. Pure: the number's rules and the call's facts in, a verdict out. The
//! B2BUA acts on the verdict's handling; the intake keeps a flagged call in the call log
//! only (T6).

use serde::{Deserialize, Serialize};

/// A number's trust rules (`"trust"` on `/numbers`); the defaults trust every caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrustSettings {
    /// A call whose caller the carrier failed to verify is declined (SIP 603).
    pub reject_failed_verification: bool,
    /// Calls of one caller on this number in the last 60 minutes beyond this many are
    /// flagged `rate`; null: no limit.
    pub max_calls_per_caller_per_hour: Option<u32>,
    /// What happens to a caller who withholds their number.
    pub anonymous: AnonymousPolicy,
}

/// What happens to a withheld caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnonymousPolicy {
    /// Rung like any caller.
    #[default]
    Route,
    /// Sent straight to the number's voicemail.
    Voicemail,
    /// Refused (SIP 433 Anonymity Disallowed).
    Reject,
}

/// The carrier's verification of the caller's number (ATIS-1000074 `verstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verstat {
    Passed,
    Failed,
    NoValidation,
}

impl Verstat {
    pub fn as_str(self) -> &'static str {
        match self {
            Verstat::Passed => "TN-Validation-Passed",
            Verstat::Failed => "TN-Validation-Failed",
            Verstat::NoValidation => "No-TN-Validation",
        }
    }

    /// The value as carriers write it; the spelling's case varies between networks.
    pub fn parse(text: &str) -> Option<Verstat> {
        [Verstat::Passed, Verstat::Failed, Verstat::NoValidation]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// Why a call was kept out of the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrustFlag {
    /// The caller called this number more often than its hourly limit.
    Rate,
    /// The carrier failed to verify the caller's number.
    VerificationFailed,
    /// The caller withheld their number.
    Anonymous,
}

impl TrustFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustFlag::Rate => "rate",
            TrustFlag::VerificationFailed => "verification_failed",
            TrustFlag::Anonymous => "anonymous",
        }
    }

    pub fn parse(text: &str) -> Option<TrustFlag> {
        [
            TrustFlag::Rate,
            TrustFlag::VerificationFailed,
            TrustFlag::Anonymous,
        ]
        .into_iter()
        .find(|f| f.as_str() == text)
    }

    /// The words the call log keeps in `crm_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            TrustFlag::Rate => {
                "the caller exceeded the number's limit of calls per hour; nothing created (T6)"
            }
            TrustFlag::VerificationFailed => {
                "the carrier failed to verify the caller's number; nothing created (T6)"
            }
            TrustFlag::Anonymous => "the caller withheld their number; nothing created (T6)",
        }
    }
}

/// What the call tells about its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustFacts {
    pub verstat: Option<Verstat>,
    /// The caller gave no number (withheld, anonymous, or not a number).
    pub anonymous: bool,
    /// This caller's calls on this number in the last 60 minutes, this one not counted.
    pub calls_last_hour: u32,
}

/// How the call is put through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Rung like any call.
    Route,
    /// Straight to the number's voicemail.
    Voicemail,
    /// Refused with this SIP status.
    Reject(u16),
}

/// SIP 603 Decline: the carrier said the caller is not who they claim.
pub const REJECT_FAILED_VERIFICATION: u16 = 603;
/// SIP 433 Anonymity Disallowed (RFC 5079).
pub const REJECT_ANONYMOUS: u16 = 433;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub flag: Option<TrustFlag>,
    pub handling: Handling,
}

/// T6: the call's flag and handling. A failed verification is the strongest reason, then
/// a withheld number, then the hourly limit (a withheld caller cannot be counted).
pub fn evaluate(settings: &TrustSettings, facts: &TrustFacts) -> Verdict {
    if facts.verstat == Some(Verstat::Failed) {
        return Verdict {
            flag: Some(TrustFlag::VerificationFailed),
            handling: if settings.reject_failed_verification {
                Handling::Reject(REJECT_FAILED_VERIFICATION)
            } else {
                Handling::Route
            },
        };
    }
    if facts.anonymous {
        return Verdict {
            flag: Some(TrustFlag::Anonymous),
            handling: match settings.anonymous {
                AnonymousPolicy::Route => Handling::Route,
                AnonymousPolicy::Voicemail => Handling::Voicemail,
                AnonymousPolicy::Reject => Handling::Reject(REJECT_ANONYMOUS),
            },
        };
    }
    let over_limit = settings
        .max_calls_per_caller_per_hour
        .is_some_and(|limit| facts.calls_last_hour >= limit);
    Verdict {
        flag: over_limit.then_some(TrustFlag::Rate),
        handling: Handling::Route,
    }
}

/// The window the hourly limit counts calls in.
pub const RATE_WINDOW_MS: i64 = 60 * 60 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> TrustSettings {
        TrustSettings {
            max_calls_per_caller_per_hour: Some(n),
            ..TrustSettings::default()
        }
    }

    #[test]
    fn t6_the_defaults_trust_every_caller_but_flag_failed_verification() {
        let settings = TrustSettings::default();
        let plain = evaluate(&settings, &TrustFacts::default());
        assert_eq!(plain.flag, None);
        assert_eq!(plain.handling, Handling::Route);
        let failed = evaluate(
            &settings,
            &TrustFacts {
                verstat: Some(Verstat::Failed),
                ..TrustFacts::default()
            },
        );
        assert_eq!(failed.flag, Some(TrustFlag::VerificationFailed));
        assert_eq!(failed.handling, Handling::Route);
        let anonymous = evaluate(
            &settings,
            &TrustFacts {
                anonymous: true,
                ..TrustFacts::default()
            },
        );
        assert_eq!(anonymous.flag, Some(TrustFlag::Anonymous));
        assert_eq!(anonymous.handling, Handling::Route);
    }

    #[test]
    fn t6_failed_verification_is_declined_when_the_number_says_so() {
        let settings = TrustSettings {
            reject_failed_verification: true,
            ..TrustSettings::default()
        };
        let facts = |verstat| TrustFacts {
            verstat: Some(verstat),
            ..TrustFacts::default()
        };
        assert_eq!(
            evaluate(&settings, &facts(Verstat::Failed)),
            Verdict {
                flag: Some(TrustFlag::VerificationFailed),
                handling: Handling::Reject(603),
            }
        );
        for unflagged in [Verstat::Passed, Verstat::NoValidation] {
            assert_eq!(
                evaluate(&settings, &facts(unflagged)),
                Verdict {
                    flag: None,
                    handling: Handling::Route,
                }
            );
        }
    }

    #[test]
    fn t6_calls_beyond_the_hourly_limit_are_flagged_rate_and_still_routed() {
        let settings = limit(3);
        let flags: Vec<_> = (0..5)
            .map(|earlier| {
                evaluate(
                    &settings,
                    &TrustFacts {
                        calls_last_hour: earlier,
                        ..TrustFacts::default()
                    },
                )
            })
            .collect();
        assert!(flags[..3].iter().all(|v| v.flag.is_none()));
        assert!(
            flags[3..]
                .iter()
                .all(|v| v.flag == Some(TrustFlag::Rate) && v.handling == Handling::Route)
        );
        let unlimited = evaluate(
            &TrustSettings::default(),
            &TrustFacts {
                calls_last_hour: 1000,
                ..TrustFacts::default()
            },
        );
        assert_eq!(unlimited.flag, None);
    }

    #[test]
    fn t6_a_withheld_caller_is_routed_sent_to_voicemail_or_refused_per_the_policy() {
        let facts = TrustFacts {
            anonymous: true,
            ..TrustFacts::default()
        };
        for (policy, handling) in [
            (AnonymousPolicy::Route, Handling::Route),
            (AnonymousPolicy::Voicemail, Handling::Voicemail),
            (AnonymousPolicy::Reject, Handling::Reject(433)),
        ] {
            let settings = TrustSettings {
                anonymous: policy,
                ..limit(0)
            };
            assert_eq!(
                evaluate(&settings, &facts),
                Verdict {
                    flag: Some(TrustFlag::Anonymous),
                    handling,
                }
            );
        }
    }

    #[test]
    fn t6_failed_verification_outranks_the_other_flags() {
        let settings = TrustSettings {
            anonymous: AnonymousPolicy::Reject,
            ..limit(0)
        };
        let verdict = evaluate(
            &settings,
            &TrustFacts {
                verstat: Some(Verstat::Failed),
                anonymous: true,
                calls_last_hour: 9,
            },
        );
        assert_eq!(verdict.flag, Some(TrustFlag::VerificationFailed));
        assert_eq!(verdict.handling, Handling::Route);
    }

    #[test]
    fn trust_settings_read_with_defaults_and_refuse_unknown_fields() {
        let empty: TrustSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, TrustSettings::default());
        let set: TrustSettings = serde_json::from_str(
            r#"{"reject_failed_verification": true, "max_calls_per_caller_per_hour": 5,
                "anonymous": "voicemail"}"#,
        )
        .unwrap();
        assert_eq!(set.max_calls_per_caller_per_hour, Some(5));
        assert_eq!(set.anonymous, AnonymousPolicy::Voicemail);
        assert!(serde_json::from_str::<TrustSettings>(r#"{"anonymus": "route"}"#).is_err());
        assert_eq!(
            Verstat::parse("tn-validation-passed"),
            Some(Verstat::Passed)
        );
        assert_eq!(Verstat::parse("maybe"), None);
    }
}
