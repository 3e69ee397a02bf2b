//! TLS for https upstreams: the one rustls `ClientConfig` of a run (the
//! system's trusted roots, from `rustls-native-certs`, plus the PEM
//! certificates of `--upstream-ca FILE`; ALPN `http/1.1`; rustls' in-memory
//! session cache, so connections to a host after the first resume their TLS
//! session), and the server name a URL's host gives (SNI, and the name the
//! certificate must carry). Built once at start-up and shared by every https
//! upstream; a CA file that cannot be read is a start-up error. The sessions
//! themselves are driven from the loop (`reactor/http_upstream/stream.rs`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The ALPN protocol offered: mcphop speaks HTTP/1.1 to upstreams.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The client configuration shared by every https upstream: the system's
/// roots and `ca_file`'s certificates, if given.
pub(crate) fn client_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        log::debug!("system trusted roots: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    log::debug!("{added} system trusted roots loaded");
    if let Some(path) = ca_file {
        let certs = read_ca_file(path)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|error| format!("--upstream-ca {path}: {error}"))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "https upstream: no trusted root certificates (none found on the system; give --upstream-ca FILE)"
                .into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; at least one.
fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|error| format!("--upstream-ca {path}: {error}"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("--upstream-ca {path}: not PEM certificates: {error}"))?;
    if certs.is_empty() {
        return Err(format!(
            "--upstream-ca {path}: no CERTIFICATE block in the file"
        ));
    }
    Ok(certs)
}

/// The name a host is checked against (and sent as SNI when it is a DNS
/// name; an IP address is checked against the certificate's IP names).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|error| format!("{host} is not a valid TLS server name: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("mcphop-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let error = client_config(empty.to_str()).unwrap_err();
        assert!(error.contains("no CERTIFICATE"), "{error}");
        let missing = dir.join("missing.pem");
        let error = client_config(missing.to_str()).unwrap_err();
        assert!(error.contains("missing.pem"), "{error}");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(client_config(broken.to_str()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_from_hosts() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("bad host").is_err());
    }
}
