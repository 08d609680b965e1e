//! Secrets given by reference (`env:NAME`, `file:PATH`) and held so they cannot leak by accident.
//!
//! Target credentials never appear inline in ward.yaml: the config names where the secret
//! lives and ward reads it at start. The resolved value is wrapped in [`Secret`], whose
//! `Debug` prints a placeholder, so a stray `{:?}` in a log line cannot expose it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A resolved secret value. Its `Debug` and `Display` never show the content.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (the upstream login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`: an environment variable of the ward process.
    Env(String),
    /// `file:PATH`: a file whose content (trailing newline removed) is the secret.
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. Inline secrets are refused on purpose: a config file
    /// is copied, committed and pasted into tickets far more often than a secret should be.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err("`env:` needs a variable name, e.g. env:ORDERS_DB_PASSWORD".into());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. file:/run/secrets/orders-db".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err(
                "secrets are given by reference: write env:VARIABLE or file:/path/to/secret \
                 (inline secret values are not accepted)"
                    .into(),
            )
        }
    }

    /// Makes a relative `file:` path relative to `base` (the config file's directory).
    pub fn rebase(&mut self, base: &Path) {
        if let SecretRef::File(path) = self
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }

    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name).map(Secret).map_err(|_| {
                format!("environment variable {name} is not set (referenced as env:{name})")
            }),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SecretRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_inline_values_and_never_prints_secrets() {
        assert!(SecretRef::parse("hunter2").unwrap_err().contains("env:"));
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn reads_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let mut r = SecretRef::parse("file:pw").unwrap();
        r.rebase(dir.path());
        assert_eq!(r.resolve().unwrap().expose(), "s3cret");
    }

    #[test]
    fn missing_env_names_the_variable() {
        let r = SecretRef::parse("env:WARD_TEST_SURELY_UNSET").unwrap();
        assert!(r.resolve().unwrap_err().contains("WARD_TEST_SURELY_UNSET"));
    }
}
