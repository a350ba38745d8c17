//! `${VAR}` templates in action URLs, headers and bodies, resolved from the
//! environment at execution (never at sync, so one definition serves every
//! environment).

/// Checks that every `${` is closed and names a variable (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn check_syntax(text: &str) -> Result<(), String> {
    render_with(text, |_| Some(String::new())).map(|_| ())
}

/// The variable names used in `text`, appended to `out`.
pub fn collect_vars(text: &str, out: &mut Vec<String>) {
    let _ = render_with(text, |name| {
        out.push(name.to_string());
        Some(String::new())
    });
}

/// The variable names used in any string inside a JSON value.
pub fn collect_vars_json(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => collect_vars(s, out),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_vars_json(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_vars_json(v, out)),
        _ => {}
    }
}

/// Replaces each `${NAME}` with `lookup(NAME)`. A malformed template or a
/// name the lookup does not know is an error naming it.
pub fn render_with(text: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`${{{name}}}` in `{text}` is not a variable name"));
        }
        let value = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every string inside a JSON value.
pub fn render_json(
    value: &serde_json::Value,
    lookup: &mut impl FnMut(&str) -> Option<String>,
) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(render_with(s, &mut *lookup)?),
        Value::Array(a) => Value::Array(a.iter().map(|v| render_json(v, lookup)).collect::<Result<_, _>>()?),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, lookup)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The process environment as a lookup.
pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What the worker resolves a variable to: the environment, else the
/// worker's own default (`ACTCORE_SOURCE` names who fires the run:
/// `activity-core`). `definitions check --env` and `dev` judge with it.
pub fn worker_lookup(name: &str) -> Option<String> {
    env_lookup(name)
        .or_else(|| (name == "ACTCORE_SOURCE").then(|| crate::run::Source::ActivityCore.as_str().to_string()))
}

/// The lookup for a run fired by `source` (a manual trigger, the fallback):
/// `${ACTCORE_SOURCE}` is that source, whatever the environment says, so the
/// body says who fired it; other variables come from the environment.
pub fn source_lookup(source: crate::run::Source) -> impl Fn(&str) -> Option<String> {
    move |name| {
        if name == "ACTCORE_SOURCE" {
            Some(source.as_str().to_string())
        } else {
            env_lookup(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_missing() {
        let env = |n: &str| (n == "HUB").then(|| "http://127.0.0.1:9".to_string());
        assert_eq!(render_with("${HUB}/x", env).unwrap(), "http://127.0.0.1:9/x");
        let err = render_with("${NOPE}/x", env).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(check_syntax("${HUB/x").is_err());
        assert!(check_syntax("${9X}").is_err());
        let mut vars = Vec::new();
        collect_vars_json(&serde_json::json!({"a": ["${A}", {"b": "x${B}y"}], "n": 1}), &mut vars);
        assert_eq!(vars, ["A", "B"]);
    }
}
