//! From verified claims to a ward identity.

use crate::error::{TokenError, clip};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;
use ward_core::config::{OidcIssuerConfig, WorkloadIssuerConfig};
use ward_core::identity::{Identity, IdentityTemplate};

/// How an issuer's claims become an identity.
pub(crate) enum Mapping {
    /// A person: `name_prefix` + the username claim, groups from a claim.
    Oidc {
        username_claim: String,
        groups_claim: String,
        name_prefix: String,
        groups_prefix: String,
        static_groups: Vec<String>,
    },
    /// A workload: the name from a template over claims, selected claims kept as attributes.
    Workload {
        /// An unparsable template (config that skipped validation) refuses every token.
        template: Result<IdentityTemplate, String>,
        attributes: Vec<String>,
        groups: Vec<String>,
        groups_claim: Option<String>,
    },
}

impl Mapping {
    pub fn oidc(c: &OidcIssuerConfig) -> Mapping {
        Mapping::Oidc {
            username_claim: c.username_claim.clone(),
            groups_claim: c.groups_claim.clone(),
            name_prefix: c.name_prefix.clone().unwrap_or_default(),
            groups_prefix: c.groups_prefix.clone().unwrap_or_default(),
            static_groups: c.static_groups.clone(),
        }
    }

    pub fn workload(c: &WorkloadIssuerConfig) -> Mapping {
        Mapping::Workload {
            template: IdentityTemplate::parse(&c.identity),
            attributes: c.attributes.clone(),
            groups: c.groups.clone(),
            groups_claim: c.groups_claim.clone(),
        }
    }

    /// The identity the (already verified) claims describe.
    pub fn identity(
        &self,
        claims: &Map<String, Value>,
        expires: DateTime<Utc>,
    ) -> Result<Identity, TokenError> {
        match self {
            Mapping::Oidc {
                username_claim,
                groups_claim,
                name_prefix,
                groups_prefix,
                static_groups,
            } => {
                let username = scalar(claims, username_claim)?;
                let mut groups: Vec<String> = group_claim(claims, groups_claim)?
                    .into_iter()
                    .map(|g| format!("{groups_prefix}{g}"))
                    .collect();
                groups.extend(static_groups.iter().cloned());
                Ok(Identity {
                    name: Arc::from(format!("{name_prefix}{username}")),
                    source: "oidc",
                    groups: dedup(groups),
                    expires: Some(expires),
                    attributes: Vec::new(),
                })
            }
            Mapping::Workload {
                template,
                attributes,
                groups,
                groups_claim,
            } => {
                let template = template.as_ref().map_err(|e| TokenError::BadClaim {
                    claim: "identity".into(),
                    why: format!(
                        "this issuer's identity template is invalid ({e}); fix the config"
                    ),
                })?;
                let name = template.render(|claim| scalar(claims, claim))?;
                let mut all_groups = groups.clone();
                if let Some(path) = groups_claim {
                    all_groups.extend(group_claim(claims, path)?);
                }
                let attributes = attributes
                    .iter()
                    .filter_map(|claim| {
                        let value = lookup(claims, claim)?;
                        let text = match value {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        Some((claim.clone(), printable(&text)))
                    })
                    .collect();
                Ok(Identity {
                    name: Arc::from(name),
                    source: "workload",
                    groups: dedup(all_groups),
                    expires: Some(expires),
                    attributes,
                })
            }
        }
    }
}

/// A claim by name or dotted path. The whole name is tried first, because some IdPs use
/// URLs with dots as claim names (`https://example.com/groups`); then `a.b.c` walks nested
/// objects. `null` counts as absent.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let found = match claims.get(path) {
        Some(v) => Some(v),
        None => {
            let mut parts = path.split('.');
            let mut current = claims.get(parts.next()?)?;
            for part in parts {
                current = current.as_object()?.get(part)?;
            }
            Some(current)
        }
    };
    found.filter(|v| !v.is_null())
}

/// A claim that names something (a user, a repository): a non-empty string or a number.
fn scalar(claims: &Map<String, Value>, path: &str) -> Result<String, TokenError> {
    let bad = |why: &str| TokenError::BadClaim {
        claim: path.to_string(),
        why: why.to_string(),
    };
    let text = match lookup(claims, path) {
        None => return Err(TokenError::MissingClaim(path.to_string())),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => return Err(bad("it is an object or array, not a string")),
    };
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("it contains control characters"));
    }
    Ok(text)
}

/// Groups from a claim: an array of strings, or one string. An absent claim means no groups
/// (IdPs often omit empty ones); any other shape refuses the token, because silently
/// dropping groups could drop one that a rule denies.
fn group_claim(claims: &Map<String, Value>, path: &str) -> Result<Vec<String>, TokenError> {
    let bad = |why: String| TokenError::BadClaim {
        claim: path.to_string(),
        why,
    };
    let groups = match lookup(claims, path) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(format!(
                    "groups must be strings, found {}",
                    clip(&other.to_string())
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("must be an array of strings or a string".into())),
    };
    if groups
        .iter()
        .any(|g| g.is_empty() || g.chars().any(char::is_control))
    {
        return Err(bad("a group is empty or contains control characters".into()));
    }
    Ok(groups)
}

fn dedup(groups: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(groups.len());
    for g in groups {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// An attribute value safe to print: control characters become `_`, length is bounded.
fn printable(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if s.len() > 512 {
        let mut end = 512;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn lookup_prefers_whole_names_then_walks_paths() {
        let c = claims(json!({
            "https://example.com/groups": ["a"],
            "realm_access": {"roles": ["dba"]},
            "gone": null
        }));
        assert_eq!(
            lookup(&c, "https://example.com/groups"),
            Some(&json!(["a"]))
        );
        assert_eq!(lookup(&c, "realm_access.roles"), Some(&json!(["dba"])));
        assert_eq!(lookup(&c, "realm_access.nope"), None);
        assert_eq!(lookup(&c, "gone"), None);
    }

    #[test]
    fn groups_take_strings_or_arrays_of_strings_only() {
        let c = claims(json!({"one": "dba", "many": ["a", "b"], "bad": [1], "obj": {}}));
        assert_eq!(group_claim(&c, "one").unwrap(), ["dba"]);
        assert_eq!(group_claim(&c, "many").unwrap(), ["a", "b"]);
        assert!(group_claim(&c, "absent").unwrap().is_empty());
        assert!(matches!(
            group_claim(&c, "bad"),
            Err(TokenError::BadClaim { .. })
        ));
        assert!(matches!(
            group_claim(&c, "obj"),
            Err(TokenError::BadClaim { .. })
        ));
    }

    #[test]
    fn names_refuse_control_characters_and_empties() {
        let c = claims(json!({"u": "ali\nce", "e": "", "n": 42}));
        assert!(matches!(scalar(&c, "u"), Err(TokenError::BadClaim { .. })));
        assert!(matches!(scalar(&c, "e"), Err(TokenError::BadClaim { .. })));
        assert_eq!(scalar(&c, "n").unwrap(), "42");
        assert_eq!(
            scalar(&c, "x").unwrap_err().to_string(),
            "token has no x claim"
        );
    }
}
