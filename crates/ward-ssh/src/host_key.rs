//! ward's own SSH host key: what clients pin in their `known_hosts`.
//!
//! Generated on first start (Ed25519) into the data directory with mode 0600 and reused
//! afterwards, so clients see the same key across restarts. `ward keys show` prints its
//! fingerprint for people to compare with what `ssh` shows on first connect.

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads the host key at `path`, or generates and writes one there if none exists yet.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            format!(
                "cannot read ward's SSH host key {}: {e}; move the file away to have ward generate a new one (clients will then see a changed host key)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| format!("cannot encode the new SSH host key: {e}"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot write ward's SSH host key {}: {e}", path.display()))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write ward's SSH host key {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), fingerprint = %crate::fingerprint(key.public_key()), "generated ward's SSH host key");
            Ok(key)
        }
        Err(e) => Err(format!(
            "cannot read ward's SSH host key {}: {e}",
            path.display()
        )),
    }
}

/// The public half of the host key at `path` as an OpenSSH line, and its fingerprint.
pub fn describe(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = PrivateKey::from_openssh(text.as_bytes())
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok((public, crate::fingerprint(key.public_key())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("ward-ssh-hostkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ssh_host_ed25519_key");
        let first = load_or_generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate(&path).unwrap();
        assert_eq!(first.public_key().key_data(), again.public_key().key_data());
        let (line, fp) = describe(&path).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(fp.starts_with("SHA256:"), "{fp}");
        std::fs::write(&path, "garbage").unwrap();
        let err = load_or_generate(&path).unwrap_err();
        assert!(err.contains("move the file away"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
