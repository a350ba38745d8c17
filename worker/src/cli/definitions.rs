//! `definitions check` and `schedule preview`: the commands that read files, not the store.

use super::*;

/// The `${VAR}`s of a definition the worker could not resolve here (its defaults count as set).
pub(super) fn unset_vars(definition: &definition::Definition) -> Vec<String> {
    definition
        .template_vars()
        .into_iter()
        .filter(|v| template::worker_lookup(v).is_none())
        .collect()
}

pub(super) fn check(dir: &Path, env: bool, json: bool) -> Result<()> {
    let loaded = definition::load_dir(dir)?;
    let mut problems = Vec::new();
    if env {
        for l in &loaded {
            let unset = unset_vars(&l.definition);
            for var in &unset {
                problems.push(Problem {
                    file: l.file.clone(),
                    key: "action".into(),
                    message: format!("${{{var}}} is not set in this environment"),
                    fix: format!("export {var}=… before running the worker (it is resolved at each execution)"),
                });
            }
            // With every variable set, the action resolves as the worker will resolve it.
            if unset.is_empty()
                && let Err(e) = action::prepare(&l.definition.action, template::worker_lookup)
            {
                let (key, message) = e.split_once(": ").unwrap_or(("action", &e));
                problems.push(Problem {
                    file: l.file.clone(),
                    key: key.into(),
                    message: format!("with this environment: {message}"),
                    fix: "set the variables to values that make a full http(s) URL, e.g. STATE_HUB_URL=http://state-hub:8080"
                        .into(),
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Definitions(Problems(problems)));
    }
    if json {
        let list: Vec<_> = loaded
            .iter()
            .map(|l| serde_json::json!({"file": l.file, "id": l.definition.id, "slug": l.definition.slug, "spec_hash": l.definition.spec_hash()}))
            .collect();
        print_json(&serde_json::json!({"ok": true, "definitions": list}))?;
    } else {
        out!("{}: {} definitions, all valid", dir.display(), loaded.len());
        for l in &loaded {
            out!(
                "  {:<40} {}  {}",
                l.definition.slug,
                l.definition.schedule.cron,
                l.file.display()
            );
        }
    }
    Ok(())
}

/// A migration on the way to another command is logged, not printed: stdout is that command's.
pub(super) fn find_loaded<'a>(loaded: &'a [Loaded], slug: &str) -> Result<&'a Loaded> {
    loaded.iter().find(|l| l.definition.slug == slug).ok_or_else(|| {
        let known: Vec<&str> = loaded.iter().map(|l| l.definition.slug.as_str()).collect();
        Error::Usage(format!("no definition with slug `{slug}`; known: {}", known.join(", ")))
    })
}

pub(super) fn preview(dir: &Path, slug: &str, from: Option<Timestamp>, count: usize, json: bool) -> Result<()> {
    let loaded = definition::load_dir(dir)?;
    let l = find_loaded(&loaded, slug)?;
    let sched = l.definition.parsed_schedule().map_err(|e| Error::Config(e.message))?;
    let entries = schedule::preview(&sched, from.unwrap_or_else(Timestamp::now), count);
    if json {
        print_json(&entries)?;
    } else {
        out!(
            "{slug}: `{}` in {}",
            l.definition.schedule.cron,
            l.definition.schedule.timezone
        );
        for e in &entries {
            out!(
                "  {:<22} {:<27}{}",
                e.utc,
                e.local,
                if e.dst_transition_day {
                    "  DST transition day"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
