//! The `+sip.instance` URN, which must stay the same across restarts (RFC 5626 section 4.1)
//! so that the registrar replaces our old binding instead of adding one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

const INSTANCE_FILE: &str = "instance-id";

/// The instance URN kept in `dir`, created on first use. A file that does not hold a URN we
/// wrote is replaced.
pub fn instance_id(dir: &Path, create: impl FnOnce() -> String) -> std::io::Result<String> {
    let path = dir.join(INSTANCE_FILE);
    if let Ok(text) = fs::read_to_string(&path) {
        let text = text.trim();
        if is_instance_urn(text) {
            return Ok(text.to_owned());
        }
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let urn = create();
    // Written aside and renamed, so a crash never leaves half a file.
    let partial = dir.join(format!("{INSTANCE_FILE}.partial"));
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    file.write_all(urn.as_bytes())?;
    file.sync_all()?;
    fs::rename(&partial, &path)?;
    Ok(urn)
}

fn is_instance_urn(text: &str) -> bool {
    text.strip_prefix("urn:uuid:").is_some_and(|uuid| {
        uuid.len() == 36
            && uuid
                .char_indices()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URN: &str = "urn:uuid:f81d4fae-7dec-41d0-a765-00a0c91e6bf6";

    #[test]
    fn the_instance_survives_restarts_and_bad_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("cusax");
        assert_eq!(instance_id(&data, || URN.into()).unwrap(), URN);
        assert_eq!(instance_id(&data, || unreachable!("kept")).unwrap(), URN);
        fs::write(data.join(INSTANCE_FILE), "garbage").unwrap();
        let other = "urn:uuid:00000000-0000-4000-8000-000000000000";
        assert_eq!(instance_id(&data, || other.into()).unwrap(), other);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(data.join(INSTANCE_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
