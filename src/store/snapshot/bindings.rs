//! The registrar's bindings in memory, for the call path: whose devices ring, whether an
//! INVITE comes from a registered phone, and where a PBX trunk registered from.
//!
//! REGISTERs are frequent, so a change touches one address of record in place instead
//! of rebuilding anything. Expired bindings stay until purged; every read filters by the
//! `now` it is given. A re-read from the database (another process changed an address of
//! record, or the periodic full read) may race with a change made here meanwhile: the
//! index counts its own changes (`epoch`), and a re-read that started before a local
//! change of an address of record is not applied to it but asked for again, so the
//! index never goes back to what the database held before that change.

use std::collections::{BTreeSet, HashMap};

use crate::crm::model::Millis;
use crate::store::RegistrationRecord;

/// (aor, contact): a binding's key, as in the table.
type Key = (String, String);

#[derive(Debug, Default)]
pub(crate) struct BindingIndex {
    bindings: HashMap<Key, RegistrationRecord>,
    /// Keys by (`owner_kind`, `owner_id`).
    owners: HashMap<(String, String), BTreeSet<Key>>,
    /// Keys by the `ip:port` the REGISTER came from.
    sources: HashMap<String, BTreeSet<Key>>,
    /// Contacts by address of record.
    aors: HashMap<String, BTreeSet<String>>,
    /// Changes made through this process so far.
    epoch: u64,
    /// The epoch of each address of record's last local change.
    touched: HashMap<String, u64>,
}

impl BindingIndex {
    /// An index of `rows` (the whole table).
    #[cfg(test)]
    pub fn from_rows(rows: Vec<RegistrationRecord>) -> Self {
        let mut index = Self::default();
        for row in rows {
            index.insert(row);
        }
        index
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Where a re-read from the database starts; give it back to `replace_*`.
    pub fn read_started(&self) -> u64 {
        self.epoch
    }

    /// A REGISTER handled here: `upsert` written, `remove` (contacts) deleted.
    pub fn apply_local(&mut self, aor: &str, upsert: &[RegistrationRecord], remove: &[String]) {
        self.touch(aor);
        for contact in remove {
            self.remove_key(&(aor.to_owned(), contact.clone()));
        }
        for record in upsert {
            self.insert(record.clone());
        }
    }

    /// One binding deleted here (a phone that stopped answering keep-alives).
    pub fn drop_local(&mut self, aor: &str, contact: &str) {
        self.touch(aor);
        self.remove_key(&(aor.to_owned(), contact.to_owned()));
    }

    /// Forgets bindings that expired at `now`: reads skip them anyway, this frees them.
    pub fn purge(&mut self, now: Millis) {
        let expired: Vec<Key> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove_key(&key);
        }
    }

    /// The bindings of one address of record as the database holds them, read from
    /// `started` on. `false`: it changed here meanwhile; read it again.
    pub fn replace_aor(&mut self, aor: &str, rows: Vec<RegistrationRecord>, started: u64) -> bool {
        if self.touched.get(aor).is_some_and(|at| *at > started) {
            return false;
        }
        let contacts: Vec<String> = self
            .aors
            .get(aor)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        for contact in contacts {
            self.remove_key(&(aor.to_owned(), contact));
        }
        for row in rows.into_iter().filter(|r| r.aor == aor) {
            self.insert(row);
        }
        true
    }

    /// Every binding as the database holds them, read from `started` on. Returns the
    /// addresses of record that changed here meanwhile (kept as they are): read them again.
    pub fn replace_all(&mut self, rows: Vec<RegistrationRecord>, started: u64) -> Vec<String> {
        let changed: Vec<String> = self
            .touched
            .iter()
            .filter(|(_, at)| **at > started)
            .map(|(aor, _)| aor.clone())
            .collect();
        let mut fresh = Self::default();
        for row in rows {
            if !changed.contains(&row.aor) {
                fresh.insert(row);
            }
        }
        for aor in &changed {
            for contact in self.aors.get(aor).into_iter().flatten() {
                if let Some(b) = self.bindings.get(&(aor.clone(), contact.clone())) {
                    fresh.insert(b.clone());
                }
            }
        }
        fresh.epoch = self.epoch;
        // What a read from `started` on saw needs no guard any more.
        fresh.touched = std::mem::take(&mut self.touched);
        fresh.touched.retain(|_, at| *at > started);
        *self = fresh;
        changed
    }

    /// An employee's live bindings, by contact.
    pub fn user_bindings(&self, user: &str, now: Millis) -> Vec<RegistrationRecord> {
        let mut found: Vec<RegistrationRecord> =
            self.owned(("user", user), now).cloned().collect::<Vec<_>>();
        found.sort_by(|a, b| a.contact.cmp(&b.contact));
        found
    }

    /// Whether an employee's phone is registered from exactly this `ip:port`.
    pub fn is_phone_source(&self, source: &str, now: Millis) -> bool {
        self.sources.get(source).is_some_and(|keys| {
            keys.iter()
                .filter_map(|k| self.bindings.get(k))
                .any(|b| b.owner_kind == "user" && b.expires_at > now)
        })
    }

    /// The `ip:port` sources of a trunk's live registrations.
    pub fn trunk_sources(&self, trunk: &str, now: Millis) -> Vec<String> {
        self.owned(("trunk", trunk), now)
            .map(|b| b.source.clone())
            .collect()
    }

    fn owned<'a>(
        &'a self,
        (kind, id): (&str, &str),
        now: Millis,
    ) -> impl Iterator<Item = &'a RegistrationRecord> {
        self.owners
            .get(&(kind.to_owned(), id.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|k| self.bindings.get(k))
            .filter(move |b| b.expires_at > now)
    }

    fn touch(&mut self, aor: &str) {
        self.epoch += 1;
        self.touched.insert(aor.to_owned(), self.epoch);
    }

    fn insert(&mut self, record: RegistrationRecord) {
        let key = (record.aor.clone(), record.contact.clone());
        self.remove_key(&key);
        self.owners
            .entry((record.owner_kind.clone(), record.owner_id.clone()))
            .or_default()
            .insert(key.clone());
        self.sources
            .entry(record.source.clone())
            .or_default()
            .insert(key.clone());
        self.aors
            .entry(record.aor.clone())
            .or_default()
            .insert(record.contact.clone());
        self.bindings.insert(key, record);
    }

    fn remove_key(&mut self, key: &Key) -> Option<RegistrationRecord> {
        let old = self.bindings.remove(key)?;
        let owner = (old.owner_kind.clone(), old.owner_id.clone());
        if let Some(keys) = self.owners.get_mut(&owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.owners.remove(&owner);
            }
        }
        if let Some(keys) = self.sources.get_mut(&old.source) {
            keys.remove(key);
            if keys.is_empty() {
                self.sources.remove(&old.source);
            }
        }
        if let Some(contacts) = self.aors.get_mut(&old.aor) {
            contacts.remove(&old.contact);
            if contacts.is_empty() {
                self.aors.remove(&old.aor);
            }
        }
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        aor: &str,
        owner: (&str, &str),
        contact: &str,
        source: &str,
        expires_at: Millis,
    ) -> RegistrationRecord {
        RegistrationRecord {
            aor: aor.to_owned(),
            owner_kind: owner.0.to_owned(),
            owner_id: owner.1.to_owned(),
            contact: contact.to_owned(),
            expires_at,
            call_id: format!("reg-{contact}"),
            cseq: 1,
            q: None,
            instance: None,
            user_agent: None,
            transport: "udp".to_owned(),
            source: source.to_owned(),
            path: None,
        }
    }

    const ANNA: (&str, &str) = ("user", "anna");
    const PBX: (&str, &str) = ("trunk", "pbx");

    #[test]
    fn t5_bindings_are_filtered_by_their_expiry_on_read() {
        let index = BindingIndex::from_rows(vec![
            binding("101", ANNA, "sip:101@10.0.0.2", "10.0.0.2:5060", 2_000),
            binding("101", ANNA, "sip:101@10.0.0.1", "10.0.0.1:5060", 1_000),
        ]);
        // (now, contacts that ring, whether 10.0.0.1:5060 is a phone)
        let cases: [(Millis, &[&str], bool); 4] = [
            (0, &["sip:101@10.0.0.1", "sip:101@10.0.0.2"], true),
            (999, &["sip:101@10.0.0.1", "sip:101@10.0.0.2"], true),
            (1_000, &["sip:101@10.0.0.2"], false),
            (2_000, &[], false),
        ];
        for (now, contacts, phone) in cases {
            let found: Vec<String> = index
                .user_bindings("anna", now)
                .into_iter()
                .map(|b| b.contact)
                .collect();
            assert_eq!(found, contacts, "at {now}");
            assert_eq!(
                index.is_phone_source("10.0.0.1:5060", now),
                phone,
                "at {now}"
            );
        }
    }

    #[test]
    fn t5_a_register_updates_one_address_of_record_in_place() {
        let mut index = BindingIndex::from_rows(vec![
            binding("101", ANNA, "sip:101@10.0.0.1", "10.0.0.1:5060", 10_000),
            binding(
                "102",
                ("user", "ben"),
                "sip:102@10.0.0.9",
                "10.0.0.9:5060",
                10_000,
            ),
        ]);
        // Anna's phone moved: the new source replaces the old one under the same contact.
        let moved = binding("101", ANNA, "sip:101@10.0.0.1", "192.0.2.7:4000", 20_000);
        index.apply_local("101", &[moved], &[]);
        assert!(!index.is_phone_source("10.0.0.1:5060", 0));
        assert!(index.is_phone_source("192.0.2.7:4000", 0));
        assert_eq!(index.user_bindings("anna", 15_000).len(), 1);
        // Un-registered: gone, and Ben's binding untouched.
        index.apply_local("101", &[], &["sip:101@10.0.0.1".to_owned()]);
        assert!(index.user_bindings("anna", 0).is_empty());
        assert!(!index.is_phone_source("192.0.2.7:4000", 0));
        assert_eq!(index.user_bindings("ben", 0).len(), 1);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn t2_a_trunks_registration_is_not_a_phone() {
        let index = BindingIndex::from_rows(vec![binding(
            "pbx-user",
            PBX,
            "sip:pbx@192.0.2.1",
            "192.0.2.1:5060",
            5_000,
        )]);
        assert!(!index.is_phone_source("192.0.2.1:5060", 0));
        assert_eq!(index.trunk_sources("pbx", 0), vec!["192.0.2.1:5060"]);
        assert!(index.trunk_sources("pbx", 5_000).is_empty(), "expired");
    }

    #[test]
    fn a_re_read_that_started_before_a_local_change_is_read_again() {
        let mut index = BindingIndex::default();
        let started = index.read_started();
        // A REGISTER handled here while the database was being read.
        let fresh = binding("101", ANNA, "sip:101@10.0.0.1", "10.0.0.1:5060", 10_000);
        index.apply_local("101", std::slice::from_ref(&fresh), &[]);
        // The read saw the table before that REGISTER: nothing for 101.
        assert!(!index.replace_aor("101", Vec::new(), started));
        assert_eq!(index.user_bindings("anna", 0), vec![fresh.clone()]);
        // Read again from now on, it applies.
        let again = index.read_started();
        assert!(index.replace_aor("101", vec![fresh.clone()], again));
        assert_eq!(index.user_bindings("anna", 0), vec![fresh]);
    }

    #[test]
    fn a_full_re_read_keeps_local_changes_made_meanwhile_and_names_them() {
        let mut index = BindingIndex::from_rows(vec![binding(
            "102",
            ("user", "ben"),
            "sip:102@10.0.0.9",
            "10.0.0.9:5060",
            10_000,
        )]);
        let started = index.read_started();
        let anna = binding("101", ANNA, "sip:101@10.0.0.1", "10.0.0.1:5060", 10_000);
        index.apply_local("101", std::slice::from_ref(&anna), &[]);
        // The table as read: Ben gone (another process), Anna not yet there.
        let again = index.replace_all(Vec::new(), started);
        assert_eq!(again, vec!["101".to_owned()]);
        assert!(index.user_bindings("ben", 0).is_empty());
        assert_eq!(index.user_bindings("anna", 0), vec![anna.clone()]);
        // A later full read applies everywhere and forgets the guard.
        let started = index.read_started();
        assert!(index.replace_all(vec![anna], started).is_empty());
    }

    #[test]
    fn purge_forgets_expired_bindings() {
        let mut index = BindingIndex::from_rows(vec![
            binding("101", ANNA, "sip:101@a", "10.0.0.1:1", 1_000),
            binding("101", ANNA, "sip:101@b", "10.0.0.1:2", 3_000),
        ]);
        index.purge(2_000);
        assert_eq!(index.len(), 1);
        assert!(!index.is_phone_source("10.0.0.1:1", 0));
    }
}
