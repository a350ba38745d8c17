//! `runs`: what the store recorded, for operators.

use super::*;

pub(super) async fn find_slug(store: &Store, slug: &str) -> Result<uuid::Uuid> {
    let defs = store.definitions().await?;
    defs.iter()
        .filter(|d| d.retired_at.is_none())
        .find(|d| d.definition.slug == slug)
        .map(|d| d.definition.id)
        .ok_or_else(|| {
            let known: Vec<&str> = defs
                .iter()
                .filter(|d| d.retired_at.is_none())
                .map(|d| d.definition.slug.as_str())
                .collect();
            Error::Usage(format!(
                "no activity with slug `{slug}` in the store (run `actcore sync` first?); known: {}",
                known.join(", ")
            ))
        })
}

pub(super) async fn runs(g: &Global, args: &RunsArgs) -> Result<()> {
    let store = Store::open(g.database_url.as_deref()).await?;
    let definition_id = match &args.slug {
        Some(s) => Some(find_slug(&store, s).await?),
        None => None,
    };
    let since = args
        .since_hours
        .map(|h| Timestamp::now() - jiff::SignedDuration::from_hours(h as i64));
    let rows = store
        .runs(&RunFilter {
            definition_id,
            since,
            limit: args.limit,
        })
        .await?;
    if g.json {
        print_json(&rows)?;
        return Ok(());
    }
    out!(
        "{:<36}  {:<24}  {:<24}  {:<9}  {:<10}  {:<20}  error",
        "run_id",
        "fired_at",
        "scheduled_for",
        "trigger",
        "state",
        "outcome"
    );
    for r in rows {
        out!(
            "{:<36}  {:<24}  {:<24}  {:<9}  {:<10}  {:<20}  {}",
            r.run_id,
            r.fired_at
                .round(jiff::Unit::Millisecond)
                .unwrap_or(r.fired_at)
                .to_string(),
            r.scheduled_for.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            r.trigger,
            r.state,
            r.outcome.unwrap_or_default(),
            r.error_code.unwrap_or_default()
        );
    }
    Ok(())
}
