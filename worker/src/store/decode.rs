//! Stored specs read back by this binary, tolerantly: a spec a newer
//! `sync` wrote (keys this version does not know) still loads, and one that
//! cannot be read at all stops only its own activity, with an error naming it.

/// A stored spec as this binary reads it (unknown keys tolerated); None,
/// with an error naming the activity, when even that fails: the other
/// activities still load and fire.
pub(crate) fn decode_stored(slug: String, spec: serde_json::Value) -> Option<crate::definition::Definition> {
    match crate::definition::Definition::from_stored(spec) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(activity = %slug, error = %e, "stored spec cannot be read by this version; not firing it (upgrade this worker)");
            None
        }
    }
}

/// An activity's `[retention]` from its stored spec's `retention` value
/// (absent or null: the defaults, as the canonical spec leaves them out).
/// Tolerant as [`decode_stored`]: keys this binary does not know are
/// ignored. None (logged) when a duration cannot be read: the pass then
/// leaves that activity to the default group, as it did when its whole
/// spec could not be read.
pub(crate) fn decode_retention(
    slug: &str,
    value: Option<serde_json::Value>,
) -> Option<crate::definition::RetentionSpec> {
    #[derive(serde::Deserialize)]
    struct Stored {
        succeeded: Option<crate::duration::Dur>,
        failed: Option<crate::duration::Dur>,
    }
    let default = crate::definition::RetentionSpec::default();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Some(default);
    };
    match serde_json::from_value::<Stored>(value) {
        Ok(s) => Some(crate::definition::RetentionSpec {
            succeeded: s.succeeded.unwrap_or(default.succeeded),
            failed: s.failed.unwrap_or(default.failed),
        }),
        Err(e) => {
            tracing::error!(activity = %slug, error = %e, "stored [retention] cannot be read by this version; pruning this activity's runs with the defaults");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_retention;
    use crate::definition::RetentionSpec;
    use crate::duration::Dur;
    use serde_json::json;

    #[test]
    fn a_stored_retention_is_read_tolerantly() {
        let default = RetentionSpec::default();
        // Left out of the canonical spec at the defaults.
        assert_eq!(decode_retention("a", None), Some(default));
        assert_eq!(decode_retention("a", Some(json!(null))), Some(default));
        assert_eq!(
            decode_retention("a", Some(json!({"succeeded": "3d", "failed": "90d"}))),
            Some(RetentionSpec {
                succeeded: Dur::from_days(3),
                failed: Dur::from_days(90),
            })
        );
        // A key a newer sync wrote is ignored, as the whole spec's are.
        assert_eq!(
            decode_retention("a", Some(json!({"succeeded": "3d", "failed": "5d", "events": "1y"}))),
            Some(RetentionSpec {
                succeeded: Dur::from_days(3),
                failed: Dur::from_days(5),
            })
        );
        // A duration this version cannot read: left to the default group.
        assert_eq!(decode_retention("a", Some(json!({"succeeded": "soon"}))), None);
    }
}
