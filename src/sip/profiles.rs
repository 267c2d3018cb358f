//! SIP profiles: how one family of carriers or PBXs signals a call (`sip-profiles/*.toml`).
//!
//! A profile says which headers carry the caller and in which order, how numbers are
//! written in user parts, and the timers Leadline keeps towards that peer (REGISTER expiry,
//! NAT keep-alives). This module owns reading and validating those files. It does not read
//! SIP messages (`sip::identity` does, given a profile) and runs no timers (the trunk does).
//!
//! The built-in profiles are compiled in, so the binary works from any directory. A
//! directory of further files (`--sip-profiles DIR`) adds profiles, or replaces built-in
//! ones of the same name. Every problem in every file is reported at once, naming the file
//! and the key, so an operator fixes them in one go. The format is documented in
//! `docs/sip-profiles.md`; it has no version number: keys are only ever added.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::{Table, Value};

use crate::matcher::Country;

/// One validated profile, named after its file (`telekom.toml` → `telekom`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// Where the caller is looked for, in order. [`CallerHeader::Diversion`] is not a
    /// caller source: listing it makes the called number the *original* one (see
    /// [`CallerHeader::Diversion`]).
    pub caller_headers: Vec<CallerHeader>,
    pub number_format: NumberFormat,
    /// The country a national spelling belongs to. Required for `national`; for the other
    /// formats it is used when a number turns out to be national anyway.
    pub country: Option<Country>,
    /// The expiry Leadline asks for in an outbound REGISTER; `0`: this peer is not
    /// registered to (it sends calls to a configured address).
    pub registration_interval_s: u32,
    pub keepalive: Keepalive,
    /// Whether `Privacy: id` (RFC 3325 §9.3) withholds the caller even when an identity
    /// header still names them.
    pub honour_privacy: bool,
    /// Digest algorithms offered to a PBX of this family registering to us, most
    /// preferred first (`sip_digest`); `None`: the gateway's `--sip-digest`.
    pub digest: Option<Vec<crate::sip::digest::Algorithm>>,
    /// The headers whose URI carries the carrier's `verstat` (ATIS-1000074), in order;
    /// empty: this peer's verification is not read.
    pub verstat_headers: Vec<CallerHeader>,
}

impl Profile {
    /// The REGISTER expiry to ask for, `None` when this peer is not registered to.
    pub fn registration_interval(&self) -> Option<Duration> {
        seconds(self.registration_interval_s)
    }

    /// Whether the profile lists `header` in `caller_headers`.
    pub fn lists(&self, header: CallerHeader) -> bool {
        self.caller_headers.contains(&header)
    }

    /// Reads one profile from TOML text; `file` names it in problems.
    fn parse(name: &str, file: &str, text: &str) -> Result<Profile, Vec<ProfileProblem>> {
        let mut check = Check {
            file: file.to_owned(),
            problems: Vec::new(),
        };
        if !is_profile_name(name) {
            check.fail(
                None,
                format!(
                    "'{name}' is not a usable profile name: name the file with lower-case \
                     letters, digits and '-' (like 'my-carrier.toml')"
                ),
            );
        }
        let table = match text.parse::<Table>() {
            Ok(table) => table,
            Err(error) => {
                check.fail(
                    None,
                    format!("not valid TOML: {}", error.to_string().trim()),
                );
                return Err(check.problems);
            }
        };
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                check.fail(
                    Some(key),
                    format!("unknown key; the keys are {}", KEYS.join(", ")),
                );
            }
        }

        let caller_headers = check
            .required(&table, "caller_headers")
            .and_then(|value| check.caller_headers(value));
        let number_format = check
            .required(&table, "number_format")
            .and_then(|value| check.choice::<NumberFormat>("number_format", value));
        let country = table
            .get("country")
            .and_then(|value| check.choice::<Country>("country", value));
        if number_format == Some(NumberFormat::National) && !table.contains_key("country") {
            check.fail(
                Some("country"),
                "missing: number_format = \"national\" needs the country the numbers \
                 belong to, like country = \"DE\""
                    .to_owned(),
            );
        }
        let registration_interval_s =
            check
                .required(&table, "registration_interval_s")
                .and_then(|value| {
                    check.seconds("registration_interval_s", value, MIN_REGISTRATION_S, 86_400)
                });
        let keepalive = check
            .required(&table, "keepalive")
            .and_then(|value| check.keepalive(value));
        let digest = table
            .get("sip_digest")
            .and_then(|value| check.digest_order(value));
        let verstat_headers = match table.get("verstat_headers") {
            Some(value) => check.verstat_headers(value),
            None => Some(DEFAULT_VERSTAT_HEADERS.to_vec()),
        };
        let honour_privacy = check
            .required(&table, "privacy")
            .and_then(|value| check.choice::<Privacy>("privacy", value))
            .map(|privacy| privacy == Privacy::Honour);

        match (
            caller_headers,
            number_format,
            registration_interval_s,
            keepalive,
            honour_privacy,
        ) {
            (
                Some(caller_headers),
                Some(number_format),
                Some(registration),
                Some(keepalive),
                Some(honour_privacy),
            ) if check.problems.is_empty() => Ok(Profile {
                name: name.to_owned(),
                caller_headers,
                number_format,
                country,
                registration_interval_s: registration,
                keepalive,
                honour_privacy,
                digest,
                verstat_headers: verstat_headers.unwrap_or_default(),
            }),
            _ => Err(check.problems),
        }
    }
}

/// NAT keep-alive intervals towards the peer, in seconds; `0` sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Double-CRLF ping on TCP/TLS connections (RFC 5626 §4.4.1).
    pub tcp_crlf_s: u32,
    /// OPTIONS request over UDP, keeping the NAT binding open.
    pub udp_options_s: u32,
}

impl Keepalive {
    pub fn tcp_crlf(&self) -> Option<Duration> {
        seconds(self.tcp_crlf_s)
    }

    pub fn udp_options(&self) -> Option<Duration> {
        seconds(self.udp_options_s)
    }
}

/// Declares a closed set of names with one spelling in profile files and docs.
macro_rules! spelled_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The spelling in profile files.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!(
                        "'{s}' is not one of {}",
                        [$($text),*].map(|t| format!("\"{t}\"")).join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum!(
    /// A header that may say who is calling.
    CallerHeader {
        /// RFC 3325: the identity a trusted network asserts.
        PAssertedIdentity => "p-asserted-identity",
        /// RFC 3325: the identity the sender would like asserted; not checked by anyone.
        PPreferredIdentity => "p-preferred-identity",
        /// draft-ietf-sip-privacy-04, still sent by Asterisk, 3CX and many gateways.
        RemotePartyId => "remote-party-id",
        From => "from",
        /// RFC 5806 Diversion (or RFC 7044 History-Info): not the caller but the number
        /// the caller originally dialled before a forward. Listed in a profile, the called
        /// number becomes that original number, for peers (PBXs) whose forwards start at
        /// one of the customer's own numbers.
        Diversion => "diversion",
    }
);

impl CallerHeader {
    /// The header's name in a SIP message.
    pub fn header_name(self) -> &'static str {
        match self {
            CallerHeader::PAssertedIdentity => "P-Asserted-Identity",
            CallerHeader::PPreferredIdentity => "P-Preferred-Identity",
            CallerHeader::RemotePartyId => "Remote-Party-ID",
            CallerHeader::From => "From",
            CallerHeader::Diversion => "Diversion",
        }
    }
}

spelled_enum!(
    /// How a peer writes a number in a user part (a written `+` always means E.164).
    NumberFormat {
        /// `+4930901820`.
        E164 => "e164",
        /// `4930901820`: country code, no `+`.
        E164NoPlus => "e164-no-plus",
        /// `030901820`: the national spelling of `country`; `00…` for abroad.
        National => "national",
        /// `004930901820`; national numbers as `0…`.
        International00 => "international-00",
        /// Any of the above, guessed per number (see `sip::identity`).
        Auto => "auto",
    }
);

spelled_enum!(
    /// `privacy = "honour" | "ignore"` in profile files.
    Privacy {
        Honour => "honour",
        Ignore => "ignore",
    }
);

/// The profiles Leadline knows, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The repository's `sip-profiles/*.toml`, compiled into the binary.
    pub fn builtin() -> Profiles {
        let by_name = BUILTIN
            .iter()
            .map(|(name, text)| {
                let file = format!("sip-profiles/{name}.toml (built in)");
                let profile = Profile::parse(name, &file, text).unwrap_or_else(|problems| {
                    panic!("built-in SIP profile {name} is invalid: {problems:?}")
                });
                (name.to_string(), profile)
            })
            .collect();
        Profiles { by_name }
    }

    /// The built-in profiles plus every `*.toml` file in `dir`; a file named like a
    /// built-in profile replaces it. Other files are ignored. Fails with every problem of
    /// every file when any file is invalid.
    pub fn load_dir(dir: &Path) -> Result<Profiles, ProfileError> {
        let directory_error = |source| ProfileError::Directory {
            dir: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(directory_error)? {
            let path = entry.map_err(directory_error)?.path();
            if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();

        let mut profiles = Profiles::builtin();
        let mut problems = Vec::new();
        for path in paths {
            let file = path.display().to_string();
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|error| {
                    vec![ProfileProblem {
                        file: file.clone(),
                        key: None,
                        message: format!("cannot read: {error}"),
                    }]
                })
                .and_then(|text| Profile::parse(&name, &file, &text));
            match parsed {
                Ok(profile) => {
                    profiles.by_name.insert(name, profile);
                }
                Err(found) => problems.extend(found),
            }
        }
        if problems.is_empty() {
            Ok(profiles)
        } else {
            Err(ProfileError::Invalid(problems))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// Every profile name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// Why profiles could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the SIP profile directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, one per line.
    #[error(
        "invalid SIP profiles ({} problems):\n{}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    )]
    Invalid(Vec<ProfileProblem>),
}

/// One problem in one profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileProblem {
    pub file: String,
    /// The key at fault (`keepalive.tcp_crlf_s`), `None` for the whole file.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ProfileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("3cx", include_str!("../../sip-profiles/3cx.toml")),
    ("asterisk", include_str!("../../sip-profiles/asterisk.toml")),
    ("freepbx", include_str!("../../sip-profiles/freepbx.toml")),
    ("fritzbox", include_str!("../../sip-profiles/fritzbox.toml")),
    ("generic", include_str!("../../sip-profiles/generic.toml")),
    ("sipgate", include_str!("../../sip-profiles/sipgate.toml")),
    ("telekom", include_str!("../../sip-profiles/telekom.toml")),
    (
        "twilio-elastic",
        include_str!("../../sip-profiles/twilio-elastic.toml"),
    ),
];

const KEYS: [&str; 8] = [
    "caller_headers",
    "number_format",
    "country",
    "registration_interval_s",
    "keepalive",
    "privacy",
    "sip_digest",
    "verstat_headers",
];

/// Where carriers put `verstat` (ATIS-1000074 §5.3.1: the asserted identity, and From
/// for networks that send no P-Asserted-Identity).
const DEFAULT_VERSTAT_HEADERS: [CallerHeader; 2] =
    [CallerHeader::PAssertedIdentity, CallerHeader::From];
const KEEPALIVE_KEYS: [&str; 2] = ["tcp_crlf_s", "udp_options_s"];

/// Registrars answer shorter expiries with 423 Interval Too Brief (RFC 3261 §10.3 step 7);
/// 60 s is the smallest common minimum.
const MIN_REGISTRATION_S: u32 = 60;
/// A keep-alive more often than this only loads the peer.
const MIN_KEEPALIVE_S: u32 = 5;

fn seconds(value: u32) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value.into()))
}

fn is_profile_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Collects the problems of one file while its keys are read.
struct Check {
    file: String,
    problems: Vec<ProfileProblem>,
}

impl Check {
    fn fail(&mut self, key: Option<&str>, message: String) {
        self.problems.push(ProfileProblem {
            file: self.file.clone(),
            key: key.map(str::to_owned),
            message,
        });
    }

    fn required<'t>(&mut self, table: &'t Table, key: &str) -> Option<&'t Value> {
        let value = table.get(key);
        if value.is_none() {
            self.fail(Some(key), "missing".to_owned());
        }
        value
    }

    fn text<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        let text = value.as_str();
        if text.is_none() {
            self.fail(
                Some(key),
                format!("expected a string, found {}", value.type_str()),
            );
        }
        text
    }

    fn choice<T: FromStr>(&mut self, key: &str, value: &Value) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let text = self.text(key, value)?;
        text.parse()
            .map_err(|error: T::Err| self.fail(Some(key), error.to_string()))
            .ok()
    }

    /// `0` (off) or a whole number of seconds in `min..=max`.
    fn seconds(&mut self, key: &str, value: &Value, min: u32, max: u32) -> Option<u32> {
        let Some(number) = value.as_integer() else {
            self.fail(
                Some(key),
                format!(
                    "expected a whole number of seconds, found {}",
                    value.type_str()
                ),
            );
            return None;
        };
        match u32::try_from(number) {
            Ok(seconds) if seconds == 0 || (min..=max).contains(&seconds) => Some(seconds),
            _ => {
                self.fail(
                    Some(key),
                    format!("{number} is out of range: write 0 (off) or {min} to {max} seconds"),
                );
                None
            }
        }
    }

    fn caller_headers(&mut self, value: &Value) -> Option<Vec<CallerHeader>> {
        const KEY: &str = "caller_headers";
        let Some(items) = value.as_array() else {
            self.fail(
                Some(KEY),
                format!(
                    "expected a list like [\"p-asserted-identity\", \"from\"], found {}",
                    value.type_str()
                ),
            );
            return None;
        };
        let before = self.problems.len();
        let mut headers = Vec::new();
        for item in items {
            let Some(header) = self.choice::<CallerHeader>(KEY, item) else {
                continue;
            };
            if headers.contains(&header) {
                self.fail(Some(KEY), format!("\"{header}\" is listed twice"));
            } else {
                headers.push(header);
            }
        }
        if self.problems.len() > before {
            return None;
        }
        if !headers.iter().any(|&h| h != CallerHeader::Diversion) {
            self.fail(
                Some(KEY),
                "names no header that carries the caller: list at least one of \
                 \"p-asserted-identity\", \"p-preferred-identity\", \"remote-party-id\", \"from\""
                    .to_owned(),
            );
            return None;
        }
        Some(headers)
    }

    fn verstat_headers(&mut self, value: &Value) -> Option<Vec<CallerHeader>> {
        const KEY: &str = "verstat_headers";
        let Some(items) = value.as_array() else {
            self.fail(
                Some(KEY),
                format!(
                    "expected a list like [\"p-asserted-identity\", \"from\"] (or [] to read \
                     no verstat), found {}",
                    value.type_str()
                ),
            );
            return None;
        };
        let mut headers = Vec::new();
        for item in items {
            match self.choice::<CallerHeader>(KEY, item) {
                Some(CallerHeader::Diversion) => self.fail(
                    Some(KEY),
                    "\"diversion\" names a forwarding number, not the caller".to_owned(),
                ),
                Some(header) if !headers.contains(&header) => headers.push(header),
                Some(header) => self.fail(Some(KEY), format!("\"{header}\" is listed twice")),
                None => {}
            }
        }
        Some(headers)
    }

    fn digest_order(&mut self, value: &Value) -> Option<Vec<crate::sip::digest::Algorithm>> {
        const KEY: &str = "sip_digest";
        let names: Option<Vec<&str>> = value
            .as_array()
            .and_then(|items| items.iter().map(Value::as_str).collect());
        let Some(names) = names else {
            self.fail(
                Some(KEY),
                format!(
                    "expected a list like [\"md5\", \"sha256\"], found {}",
                    value.type_str()
                ),
            );
            return None;
        };
        crate::sip::digest::parse_order(names)
            .map_err(|error| self.fail(Some(KEY), error.to_string()))
            .ok()
    }

    fn keepalive(&mut self, value: &Value) -> Option<Keepalive> {
        let Some(table) = value.as_table() else {
            self.fail(
                Some("keepalive"),
                format!(
                    "expected a table [keepalive] with tcp_crlf_s and udp_options_s, found {}",
                    value.type_str()
                ),
            );
            return None;
        };
        for key in table.keys() {
            if !KEEPALIVE_KEYS.contains(&key.as_str()) {
                self.fail(
                    Some(&format!("keepalive.{key}")),
                    format!("unknown key; the keys are {}", KEEPALIVE_KEYS.join(", ")),
                );
            }
        }
        let interval = |check: &mut Check, key: &str| {
            let full = format!("keepalive.{key}");
            match table.get(key) {
                None => {
                    check.fail(Some(&full), "missing".to_owned());
                    None
                }
                Some(value) => check.seconds(&full, value, MIN_KEEPALIVE_S, 3_600),
            }
        };
        let tcp_crlf_s = interval(self, "tcp_crlf_s");
        let udp_options_s = interval(self, "udp_options_s");
        Some(Keepalive {
            tcp_crlf_s: tcp_crlf_s?,
            udp_options_s: udp_options_s?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        caller_headers = ["p-asserted-identity", "from", "diversion"]
        number_format = "national"
        country = "de"
        registration_interval_s = 300
        privacy = "ignore"

        [keepalive]
        tcp_crlf_s = 0
        udp_options_s = 25
    "#;

    fn parse(text: &str) -> Result<Profile, Vec<ProfileProblem>> {
        Profile::parse("test", "test.toml", text)
    }

    #[test]
    fn every_builtin_profile_loads() {
        let profiles = Profiles::builtin();
        assert_eq!(
            profiles.names(),
            [
                "3cx",
                "asterisk",
                "freepbx",
                "fritzbox",
                "generic",
                "sipgate",
                "telekom",
                "twilio-elastic"
            ]
        );
        for name in profiles.names() {
            let profile = profiles.get(name).unwrap();
            assert_eq!(profile.name, name);
            assert!(
                profile.honour_privacy,
                "{name} withholds nothing by default"
            );
        }
        // Each file in sip-profiles/ is compiled in.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles");
        let on_disk = std::fs::read_dir(dir).unwrap().count();
        assert_eq!(on_disk, BUILTIN.len());
    }

    #[test]
    fn builtin_choices_follow_the_carriers() {
        let profiles = Profiles::builtin();
        let de = Some("DE".parse::<Country>().unwrap());
        let sipgate = profiles.get("sipgate").unwrap();
        assert_eq!(sipgate.number_format, NumberFormat::E164NoPlus);
        assert_eq!(sipgate.country, de);
        let telekom = profiles.get("telekom").unwrap();
        assert_eq!(telekom.caller_headers[0], CallerHeader::PAssertedIdentity);
        assert_eq!(telekom.number_format, NumberFormat::E164);
        let fritzbox = profiles.get("fritzbox").unwrap();
        assert_eq!(fritzbox.number_format, NumberFormat::National);
        assert_eq!(fritzbox.country, de);
        let twilio = profiles.get("twilio-elastic").unwrap();
        assert_eq!(twilio.registration_interval(), None);
        assert_eq!(twilio.keepalive.udp_options(), None);
        let asterisk = profiles.get("asterisk").unwrap();
        assert!(asterisk.lists(CallerHeader::RemotePartyId));
        assert!(asterisk.lists(CallerHeader::Diversion));
        assert_eq!(
            asterisk.registration_interval(),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn a_good_file_reads_every_key() {
        let profile = parse(GOOD).unwrap();
        assert_eq!(
            profile,
            Profile {
                name: "test".into(),
                caller_headers: vec![
                    CallerHeader::PAssertedIdentity,
                    CallerHeader::From,
                    CallerHeader::Diversion
                ],
                number_format: NumberFormat::National,
                country: Some("DE".parse().unwrap()),
                registration_interval_s: 300,
                keepalive: Keepalive {
                    tcp_crlf_s: 0,
                    udp_options_s: 25
                },
                honour_privacy: false,
                digest: None,
                verstat_headers: vec![CallerHeader::PAssertedIdentity, CallerHeader::From],
            }
        );
        assert_eq!(profile.keepalive.tcp_crlf(), None);
        assert_eq!(
            profile.keepalive.udp_options(),
            Some(Duration::from_secs(25))
        );
    }

    /// A PBX family that reads only the first challenge gets its own order; a bad list is
    /// reported with the key.
    #[test]
    fn a_profile_may_choose_the_digest_order() {
        use crate::sip::digest::Algorithm;
        let md5_first = format!("{GOOD}\n");
        let md5_first = md5_first.replacen(
            "privacy = \"ignore\"",
            "privacy = \"ignore\"\nsip_digest = [\"md5\", \"sha256\"]",
            1,
        );
        assert_eq!(
            parse(&md5_first).unwrap().digest,
            Some(vec![Algorithm::Md5, Algorithm::Sha256])
        );
        for bad in [
            "sip_digest = []",
            "sip_digest = [\"sha1\"]",
            "sip_digest = \"md5\"",
        ] {
            let text = GOOD.replacen(
                "privacy = \"ignore\"",
                &format!("privacy = \"ignore\"\n{bad}"),
                1,
            );
            let problems = parse(&text).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].key.as_deref(), Some("sip_digest"), "{bad}");
        }
    }

    #[test]
    fn a_bad_profile_file_reports_every_problem() {
        let bad = r#"
            caller_headers = ["p-asserted-identity", "contact", "from", "from"]
            number_format = "national"
            registration_interval_s = 30
            privacy = true
            colour = "blue"

            [keepalive]
            tcp_crlf_s = -1
            udp_option_s = 30
        "#;
        let problems = parse(bad).unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "test.toml: colour: unknown key; the keys are caller_headers, number_format, \
                 country, registration_interval_s, keepalive, privacy, sip_digest, \
                 verstat_headers",
                "test.toml: caller_headers: 'contact' is not one of \"p-asserted-identity\", \
                 \"p-preferred-identity\", \"remote-party-id\", \"from\", \"diversion\"",
                "test.toml: caller_headers: \"from\" is listed twice",
                "test.toml: country: missing: number_format = \"national\" needs the country \
                 the numbers belong to, like country = \"DE\"",
                "test.toml: registration_interval_s: 30 is out of range: write 0 (off) or 60 \
                 to 86400 seconds",
                "test.toml: keepalive.udp_option_s: unknown key; the keys are tcp_crlf_s, \
                 udp_options_s",
                "test.toml: keepalive.tcp_crlf_s: -1 is out of range: write 0 (off) or 5 to \
                 3600 seconds",
                "test.toml: keepalive.udp_options_s: missing",
                "test.toml: privacy: expected a string, found boolean",
            ]
        );
    }

    #[test]
    fn missing_keys_and_wrong_types_are_named() {
        let problems = parse("number_format = 7\ncountry = \"XX\"\nkeepalive = 3").unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                Some("caller_headers"),
                Some("number_format"),
                Some("country"),
                Some("registration_interval_s"),
                Some("keepalive"),
                Some("privacy"),
            ]
        );
        assert_eq!(
            problems[2].message,
            "'XX' is not a known country; write a two-letter ISO 3166 code such as DE, ES or US"
        );
    }

    #[test]
    fn verstat_headers_default_to_the_asserted_identity_and_from() {
        let none = parse(&format!("verstat_headers = []\n{GOOD}")).unwrap();
        assert!(none.verstat_headers.is_empty());
        let pai = parse(&format!(
            "verstat_headers = [\"p-asserted-identity\"]\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(pai.verstat_headers, [CallerHeader::PAssertedIdentity]);
        let problems = parse(&format!("verstat_headers = [\"diversion\"]\n{GOOD}")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key.as_deref(), Some("verstat_headers"));
    }

    #[test]
    fn caller_headers_must_name_a_caller() {
        let only_diversion = GOOD.replace(
            r#"["p-asserted-identity", "from", "diversion"]"#,
            r#"["diversion"]"#,
        );
        let problems = parse(&only_diversion).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.starts_with("names no header"));
    }

    #[test]
    fn invalid_toml_names_the_file() {
        let problems = parse("caller_headers = [").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("test.toml: not valid TOML")
        );
    }

    #[test]
    fn directory_files_extend_and_override_builtins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("my-carrier.toml"), GOOD).unwrap();
        let twilio = GOOD.replace("national", "e164");
        std::fs::write(dir.path().join("twilio-elastic.toml"), twilio).unwrap();
        std::fs::write(dir.path().join("README.md"), "not a profile").unwrap();

        let profiles = Profiles::load_dir(dir.path()).unwrap();
        assert!(profiles.names().contains(&"my-carrier"));
        assert_eq!(profiles.names().len(), BUILTIN.len() + 1);
        let replaced = profiles.get("twilio-elastic").unwrap();
        assert_eq!(replaced.registration_interval_s, 300);
        assert_eq!(profiles.get("telekom"), Profiles::builtin().get("telekom"));
    }

    #[test]
    fn directory_errors_name_every_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), GOOD.replace("300", "10")).unwrap();
        std::fs::write(dir.path().join("b.toml"), GOOD.replace("ignore", "maybe")).unwrap();
        std::fs::write(dir.path().join("Bad Name.toml"), GOOD).unwrap();

        let error = Profiles::load_dir(dir.path()).unwrap_err();
        let ProfileError::Invalid(problems) = &error else {
            panic!("expected problems, got {error}");
        };
        let found: Vec<(String, Option<&str>)> = problems
            .iter()
            .map(|p| {
                let file = Path::new(&p.file).file_name().unwrap();
                (file.to_string_lossy().into_owned(), p.key.as_deref())
            })
            .collect();
        assert_eq!(
            found,
            [
                ("Bad Name.toml".to_owned(), None),
                ("a.toml".to_owned(), Some("registration_interval_s")),
                ("b.toml".to_owned(), Some("privacy")),
            ]
        );
        let text = error.to_string();
        assert!(
            text.starts_with("invalid SIP profiles (3 problems):\n"),
            "{text}"
        );
        assert!(
            text.contains("'maybe' is not one of \"honour\", \"ignore\""),
            "{text}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let error = Profiles::load_dir(Path::new("/nonexistent/sip-profiles")).unwrap_err();
        assert!(matches!(error, ProfileError::Directory { .. }));
        assert!(
            error
                .to_string()
                .starts_with("cannot read the SIP profile directory /nonexistent/sip-profiles")
        );
    }
}
