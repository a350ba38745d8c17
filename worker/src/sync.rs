//! Files → store, as a diff keyed by identity (the definition's `id`).
//!
//! [`plan`] is pure: given what the store holds and what the files say, it
//! decides what to add, change, retire or leave. The store applies a plan in
//! one transaction, so a sync is all or nothing; an empty plan writes nothing.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

use crate::definition::{Definition, Loaded};

/// What the store holds for one activity, as far as sync cares.
#[derive(Clone, Debug)]
pub struct Existing {
    pub id: Uuid,
    pub slug: String,
    pub spec_hash: String,
    pub retired: bool,
}

/// One definition to write, with what sync knows about it.
#[derive(Clone, Debug)]
pub struct Upsert {
    pub definition: Definition,
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub source_file: String,
    /// The hash it replaces (None for an added activity).
    pub previous_hash: Option<String>,
    /// It was retired and its file came back.
    pub revived: bool,
}

/// The diff between the store and the files.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub added: Vec<Upsert>,
    pub changed: Vec<Upsert>,
    pub unchanged: Vec<Uuid>,
    pub retired: Vec<Existing>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.retired.is_empty()
    }

    /// What a sync did (or would do), for printing.
    pub fn report(&self, dry_run: bool) -> SyncReport {
        let slugs = |v: &[Upsert]| v.iter().map(|u| u.definition.slug.clone()).collect();
        SyncReport {
            dry_run,
            added: slugs(&self.added),
            changed: slugs(&self.changed),
            unchanged: self.unchanged.len(),
            retired: self.retired.iter().map(|e| e.slug.clone()).collect(),
        }
    }
}

/// The summary `actcore sync` prints (and `--json` emits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    pub retired: Vec<String>,
}

/// Decides what a sync writes. Identity is the `id`: a renamed file or a
/// renamed activity with the same id is a change, not a retire-and-add.
pub fn plan(existing: &[Existing], files: &[Loaded]) -> Plan {
    let by_id: HashMap<Uuid, &Existing> = existing.iter().map(|e| (e.id, e)).collect();
    let mut seen = HashSet::with_capacity(files.len());
    let mut plan = Plan::default();
    for loaded in files {
        let def = &loaded.definition;
        seen.insert(def.id);
        let spec = def.canonical_json();
        let spec_hash = def.spec_hash();
        let make = |previous_hash: Option<String>, revived: bool| Upsert {
            definition: def.clone(),
            spec: spec.clone(),
            spec_hash: spec_hash.clone(),
            source_file: loaded.file.display().to_string(),
            previous_hash,
            revived,
        };
        match by_id.get(&def.id) {
            None => plan.added.push(make(None, false)),
            Some(e) if e.spec_hash != spec_hash || e.retired => {
                plan.changed.push(make(Some(e.spec_hash.clone()), e.retired))
            }
            Some(_) => plan.unchanged.push(def.id),
        }
    }
    plan.retired = existing
        .iter()
        .filter(|e| !e.retired && !seen.contains(&e.id))
        .cloned()
        .collect();
    plan
}
