//! TLS for every connection the daemon opens (SIP over TLS, XMPP): rustls on the ring
//! provider (crates.md 5.3: mixing providers panics), verified against the system's roots
//! plus `[tls] extra_ca`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tracing::debug;

/// Verified TLS: the system's roots, plus the PEM certificates of `extra_ca` (a private CA).
pub async fn client_config(extra_ca: Option<PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let built = tokio::task::spawn_blocking(move || {
        let mut roots = RootCertStore::empty();
        let (_, unreadable) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if unreadable > 0 {
            debug!(unreadable, "system root certificates skipped");
        }
        if let Some(path) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in the CA file {}", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    built.await.map_err(|e| e.to_string())?
}
