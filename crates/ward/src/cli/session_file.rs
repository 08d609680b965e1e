//! The session `ward login` stores: the ward session token and what it is for, in
//! `$WARD_CONFIG_DIR/session.json`, else `$XDG_CONFIG_HOME/ward/session.json`, else
//! `~/.config/ward/session.json`. The file is readable by its owner only (0600, directory
//! 0700) and written atomically, so a half-written file never replaces a good one.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

const FILE: &str = "session.json";

/// What `ward login` stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The admin API the token was issued by (`http://…`).
    pub api: String,
    pub token: String,
    pub token_id: String,
    pub identity: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// RFC 3339.
    pub expires_at: String,
}

impl Session {
    /// When the token expires (`None` if the file holds something unreadable).
    pub fn expires(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.expires_at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// Whether the token is still valid now.
    pub fn is_current(&self) -> bool {
        self.expires().is_some_and(|e| e > chrono::Utc::now())
    }
}

/// The directory ward's client settings live in.
pub fn dir() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("WARD_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("ward"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("ward")),
        None => bail!(
            "cannot tell where to keep the ward session: set WARD_CONFIG_DIR (or HOME or \
             XDG_CONFIG_HOME)"
        ),
    }
}

/// `<dir>/session.json`.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(dir()?.join(FILE))
}

/// Writes `session` (mode 0600, directory 0700); returns the file's path.
pub fn save(session: &Session) -> anyhow::Result<PathBuf> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {} for the ward session", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let text = serde_json::to_string_pretty(session).map_err(std::io::Error::other)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write the ward session {}", path.display()));
    }
    Ok(path)
}

/// The stored session, if there is one (expired or not).
pub fn load() -> anyhow::Result<Option<Session>> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the ward session {}", path.display()));
        }
    };
    let session = serde_json::from_str(&text).with_context(|| {
        format!(
            "the ward session {} is damaged; run `ward login` to replace it",
            path.display()
        )
    })?;
    Ok(Some(session))
}

/// The stored session if its token is still valid, else an error that says to log in.
pub fn load_current() -> anyhow::Result<Session> {
    let path = path()?;
    let Some(session) = load()? else {
        bail!(
            "not logged in: there is no ward session in {}; run `ward login` (or `ward login \
             --api URL` for another gateway)",
            path.display()
        );
    };
    if !session.is_current() {
        bail!(
            "your ward session for {} expired at {}; run `ward login` again",
            session.identity,
            session.expires_at
        );
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_private_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("cfg");
        // SAFETY: this is the only test of the binary that reads or sets WARD_CONFIG_DIR.
        unsafe { std::env::set_var("WARD_CONFIG_DIR", &home) };
        assert!(load().unwrap().is_none());
        let err = load_current().unwrap_err().to_string();
        assert!(err.contains("run `ward login`"), "{err}");
        let mut session = Session {
            api: "http://127.0.0.1:8080".into(),
            token: "ward_st_x".into(),
            token_id: "wt_1".into(),
            identity: "oidc:alice".into(),
            groups: vec!["dba".into()],
            expires_at: (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        };
        let path = save(&session).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home), 0o700);
        assert_eq!(load_current().unwrap().identity, "oidc:alice");
        session.expires_at = "2020-01-01T00:00:00Z".into();
        save(&session).unwrap();
        let err = load_current().unwrap_err().to_string();
        assert!(
            err.contains("expired") && err.contains("ward login"),
            "{err}"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(load().unwrap_err().to_string().contains("damaged"));
        unsafe { std::env::remove_var("WARD_CONFIG_DIR") };
    }
}
