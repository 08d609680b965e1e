//! The SSH parts of `ward.yaml`: client keys mapped to identities (`identity.ssh_keys`) and
//! SSH targets (`targets.NAME.ssh`, `host_key`, `credential.private_key` or
//! `credential.password`).
//!
//! They live here rather than in `config.rs` so the SSH adapter's settings can grow without
//! touching the shared file; `config.rs` only carries the fields and calls
//! [`validate`]. Keys are checked for shape here (algorithm and base64); the SSH adapter
//! parses them fully when the gateway starts, so a key that is not a key stops `ward serve`
//! with the field named, before any client connects.

use crate::config::{Config, TargetConfig};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Public key algorithms ward accepts in config (client keys and pinned host keys).
pub const KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// One client key (`identity.ssh_keys[]`): whoever proves they hold it is `identity`.
///
/// A key belongs to exactly one identity (a second entry with the same key is refused),
/// so the key alone decides who connects; the SSH user name only picks the target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshKeyConfig {
    /// The identity the key proves.
    pub identity: String,
    /// The public key as in `authorized_keys` / `id_ed25519.pub`: `ssh-ed25519 AAAA… comment`
    /// (the comment is ignored).
    pub key: String,
    /// Groups of the identity (for policy rules), like a service token's.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Targets the key may reach; every SSH target when absent.
    pub targets: Option<Vec<String>>,
}

/// A trusted SSH user CA (`identity.ssh_cas[]`): a valid OpenSSH user certificate it signed
/// proves the identity named by the certificate's key id (`ssh-keygen -I alice`), which
/// must also be one of its principals (`-n alice`), so a CA that issues certificates for
/// other systems cannot be mistaken for one issuing ward identities.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshCaConfig {
    /// The CA's public key line (`ssh-ed25519 AAAA… ca`, as in `ca.pub`).
    pub key: String,
    /// Groups every identity proven by this CA gets.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Targets its certificates may reach; every SSH target when absent.
    pub targets: Option<Vec<String>>,
}

/// A resolved SSH target, ready for the adapter.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub name: String,
    /// `host:port` of the sshd.
    pub address: String,
    /// The user ward logs in as.
    pub user: String,
    /// What ward logs in with, read at start.
    pub credential: SshCredential,
    /// Where the credential came from (`env:…`/`file:…`), for error messages (never the
    /// secret itself).
    pub credential_ref: String,
    /// The target's pinned host key, as written in the config.
    pub host_key: String,
    pub labels: BTreeMap<String, String>,
}

/// The secret ward proves itself with to an SSH target: exactly one per target.
///
/// Keys are preferred; passwords exist for hosts where installing ward's key is not
/// possible (appliances, vendor boxes). Both are held as [`Secret`], never logged.
#[derive(Debug, Clone)]
pub enum SshCredential {
    /// A private key (OpenSSH or PKCS#8 PEM text), used for public-key auth.
    PrivateKey(Secret),
    /// A password, used for password auth (or keyboard-interactive if that is all the
    /// target offers).
    Password(Secret),
}

impl SshCredential {
    /// The config field it came from, for messages.
    pub fn field(&self) -> &'static str {
        match self {
            SshCredential::PrivateKey(_) => "private_key",
            SshCredential::Password(_) => "password",
        }
    }
}

impl Config {
    /// Where ward keeps its own SSH host key (generated on first start).
    pub fn ssh_host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }

    /// Resolves every SSH target, reading its private key now.
    pub fn ssh_targets(&self) -> Result<BTreeMap<String, SshTarget>, String> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.targets {
            let Some(address) = &t.ssh else { continue };
            let (credential, credential_ref) =
                match (&t.credential.private_key, &t.credential.password) {
                    (Some(key_ref), None) => {
                        (
                            SshCredential::PrivateKey(key_ref.resolve().map_err(|e| {
                                format!("targets.{name}.credential.private_key: {e}")
                            })?),
                            key_ref.to_string(),
                        )
                    }
                    (None, Some(pw_ref)) => (
                        SshCredential::Password(
                            pw_ref
                                .resolve()
                                .map_err(|e| format!("targets.{name}.credential.password: {e}"))?,
                        ),
                        pw_ref.to_string(),
                    ),
                    _ => return Err(credential_choice(name)),
                };
            out.insert(
                name.clone(),
                SshTarget {
                    name: name.clone(),
                    address: with_default_port(address),
                    user: t.credential.user.clone(),
                    credential,
                    credential_ref,
                    host_key: t.host_key.clone().unwrap_or_default(),
                    labels: t.labels.clone(),
                },
            );
        }
        Ok(out)
    }
}

/// The refusal for a target with neither or both of `private_key` and `password`.
fn credential_choice(name: &str) -> String {
    format!(
        "targets.{name}.credential: an SSH target needs exactly one of private_key: (preferred, e.g. file:/etc/ward/keys/{name}) \
         or password: (env:VARIABLE or file:PATH) for ward to log in with"
    )
}

/// `host` → `host:22`; `host:port` and `[v6]:port` unchanged.
fn with_default_port(address: &str) -> String {
    let has_port = match address.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        address.to_string()
    } else {
        format!("{address}:22")
    }
}

/// Checks the shape of an OpenSSH public key line: a known algorithm and base64 data.
pub fn check_public_key_line(text: &str) -> Result<(), String> {
    let mut parts = text.split_whitespace();
    let (Some(algorithm), Some(data)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{text:?} is not an OpenSSH public key; paste the line of the .pub file, e.g. \"ssh-ed25519 AAAAC3Nz… user@host\""
        ));
    };
    if !KEY_ALGORITHMS.contains(&algorithm) {
        return Err(format!(
            "key type {algorithm:?} is not supported; use one of {}",
            KEY_ALGORITHMS.join(", ")
        ));
    }
    if data.len() < 16
        || !data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(format!(
            "the key data after {algorithm:?} is not base64; paste the whole line of the .pub file"
        ));
    }
    Ok(())
}

/// Checks one SSH target (called for targets with an `ssh:` address).
pub(crate) fn validate_target(name: &str, t: &TargetConfig) -> Result<(), String> {
    if t.postgres.is_some() {
        return Err(format!(
            "targets.{name}: a target speaks one protocol; give either postgres: or ssh:, not both"
        ));
    }
    let address = t.ssh.as_deref().unwrap_or_default();
    if address.trim().is_empty() {
        return Err(format!(
            "targets.{name}.ssh: must be host:port, e.g. 10.0.0.7:22"
        ));
    }
    if t.database.is_some() {
        return Err(format!(
            "targets.{name}.database: only PostgreSQL targets have a database"
        ));
    }
    if t.credential.password.is_some() == t.credential.private_key.is_some() {
        return Err(credential_choice(name));
    }
    let Some(host_key) = &t.host_key else {
        return Err(format!(
            "targets.{name}.host_key: required for SSH targets, so ward can tell the real host from an impostor; \
             get it with `ssh-keyscan -t ed25519 HOST` (the part after the host name) or from the host's /etc/ssh/ssh_host_ed25519_key.pub"
        ));
    };
    check_public_key_line(host_key).map_err(|e| format!("targets.{name}.host_key: {e}"))?;
    Ok(())
}

/// Checks `identity.ssh_keys` against the targets (called from [`Config`] validation).
pub(crate) fn validate(config: &Config) -> Result<(), String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, k) in config.identity.ssh_keys.iter().enumerate() {
        let at = format!("identity.ssh_keys[{i}]");
        if k.identity.trim().is_empty() {
            return Err(format!(
                "{at}.identity: must name the identity the key proves"
            ));
        }
        if k.identity.contains('+') {
            return Err(format!(
                "{at}.identity: {:?} must not contain '+': clients write identity+target as the SSH user name",
                k.identity
            ));
        }
        check_public_key_line(&k.key).map_err(|e| format!("{at}.key: {e}"))?;
        let data: String = k
            .key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(first) = seen.insert(data, i) {
            return Err(format!(
                "{at}.key: the same key is already listed at identity.ssh_keys[{first}]; a key proves exactly one identity"
            ));
        }
        check_targets(config, &at, k.targets.as_deref())?;
    }
    for (i, ca) in config.identity.ssh_cas.iter().enumerate() {
        let at = format!("identity.ssh_cas[{i}]");
        check_public_key_line(&ca.key).map_err(|e| format!("{at}.key: {e}"))?;
        check_targets(config, &at, ca.targets.as_deref())?;
    }
    Ok(())
}

fn check_targets(config: &Config, at: &str, targets: Option<&[String]>) -> Result<(), String> {
    {
        for t in targets.into_iter().flatten() {
            match config.targets.get(t) {
                Some(target) if target.ssh.is_some() => {}
                Some(_) => {
                    return Err(format!(
                        "{at}.targets: {t:?} is not an SSH target (it has no ssh: address)"
                    ));
                }
                None => return Err(format!("{at}.targets: unknown target {t:?}")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ alice@laptop";
    const HOST: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwKjmGmT0Wf5KMWcLg0wQ7DA3nfzrfqE6l3yzvMMGvL";

    fn yaml(target_extra: &str, keys_extra: &str) -> String {
        format!(
            r#"
listen: {{ ssh: "127.0.0.1:2222" }}
identity:
  ssh_keys:
    - {{ identity: alice, key: "{KEY}", groups: [ops]{keys_extra} }}
targets:
  web-1:
    ssh: 10.0.0.7
    host_key: "{HOST}"
    credential: {{ user: deploy, private_key: file:keys/web-1 }}
{target_extra}"#
        )
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = Config::from_yaml(&yaml("", ", targets: [web-1]"), Path::new("/etc/ward")).unwrap();
        assert_eq!(c.listen.ssh.unwrap().port(), 2222);
        let k = &c.identity.ssh_keys[0];
        assert_eq!(k.identity, "alice");
        assert_eq!(k.groups, ["ops"]);
        let t = &c.targets["web-1"];
        assert_eq!(
            t.credential.private_key.as_ref().unwrap().to_string(),
            "file:/etc/ward/keys/web-1"
        );
        assert!(c.postgres_targets().unwrap().is_empty());
        assert_eq!(with_default_port("10.0.0.7"), "10.0.0.7:22");
        assert_eq!(with_default_port("h:2200"), "h:2200");
        assert_eq!(with_default_port("[::1]:2200"), "[::1]:2200");
    }

    #[test]
    fn ssh_is_off_when_not_listed() {
        let c = Config::from_yaml("", Path::new(".")).unwrap();
        assert!(c.listen.ssh.is_none());
        assert!(c.identity.ssh_keys.is_empty());
    }

    fn invalid(text: &str) -> String {
        Config::from_yaml(text, Path::new("."))
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn refusals_name_the_field() {
        let err = invalid(&yaml("", "").replace(&format!("    host_key: \"{HOST}\"\n"), ""));
        assert!(
            err.contains("targets.web-1.host_key: required") && err.contains("ssh-keyscan"),
            "{err}"
        );
        let err = invalid(&yaml("", "").replace(HOST, "ssh-ed25519 nope!"));
        assert!(err.contains("targets.web-1.host_key"), "{err}");
        let err = invalid(&yaml("", "").replace(
            "private_key: file:keys/web-1",
            "private_key: file:keys/web-1, password: env:X",
        ));
        assert!(err.contains("exactly one of private_key"), "{err}");
        let err = invalid(&yaml("", "").replace("private_key: file:keys/web-1", ""));
        assert!(
            err.contains("targets.web-1.credential: an SSH target"),
            "{err}"
        );
        let c = Config::from_yaml(
            &yaml("", "").replace("private_key: file:keys/web-1", "password: env:WEB1_PW"),
            Path::new("."),
        )
        .unwrap();
        let err = c.ssh_targets().unwrap_err();
        assert!(
            err.contains("targets.web-1.credential.password") && err.contains("WEB1_PW"),
            "{err}"
        );
        let err = invalid(&yaml("", ", targets: [nope]"));
        assert!(
            err.contains("identity.ssh_keys[0].targets: unknown target \"nope\""),
            "{err}"
        );
        let err = invalid(&yaml("", "").replace(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ",
            "ssh-dss AAAAC3NzaC1lZDI1NTE5AAAAIJ",
        ));
        assert!(
            err.contains("identity.ssh_keys[0].key: key type \"ssh-dss\""),
            "{err}"
        );
        let dup = yaml("", "").replace(
            "targets:\n",
            &format!("    - {{ identity: bob, key: \"{KEY}\" }}\ntargets:\n"),
        );
        let err = invalid(&dup);
        assert!(
            err.contains("already listed at identity.ssh_keys[0]"),
            "{err}"
        );
        let err = invalid(&yaml("", "").replace("identity: alice", "identity: a+b"));
        assert!(err.contains("must not contain '+'"), "{err}");
        let both = yaml("", "").replace(
            "    ssh: 10.0.0.7\n",
            "    ssh: 10.0.0.7\n    postgres: 10.0.0.5:5432\n",
        );
        let err = invalid(&both);
        assert!(err.contains("not both"), "{err}");
    }
}
