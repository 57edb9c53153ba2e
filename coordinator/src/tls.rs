//! TLS for the HTTP API (rustls with the ring provider): server certificate and key
//! from PEM files, and optional client-certificate authentication against a CA.

use std::{path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};

use crate::error::CoordinatorError;

fn tls_err(msg: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Config(msg.into())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CoordinatorError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

/// Builds the server's TLS configuration (TLS 1.2 and 1.3, HTTP/1.1 over ALPN) from
/// PEM bytes: the certificate chain (leaf first), its private key (PKCS#8, SEC1 or
/// PKCS#1) and, when given, the CA bundle that client certificates must chain to
/// (then a client without a valid certificate is refused in the handshake).
///
/// # Security
/// `key_pem` is the server's TLS private key (not key material of the signing
/// network); the caller should drop its copy once the configuration is built.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, CoordinatorError> {
    let chain = certs("tls.cert", cert_pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls_err(format!("tls.key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(format!("tls: {e}")))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs("tls.client_ca", pem)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("tls.client_ca: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| tls_err(format!("tls.client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("tls.cert/tls.key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the PEM files and builds the server configuration (see [`server_config`]).
///
/// # Security
/// Reads the server's TLS private key file; keep it readable by the coordinator only.
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, CoordinatorError> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| tls_err(format!("{what} {}: {e}", p.display())))
    };
    let cert_pem = read("tls.cert", cert)?;
    let key_pem = zeroize::Zeroizing::new(read("tls.key", key)?);
    let ca_pem = client_ca.map(|p| read("tls.client_ca", p)).transpose()?;
    server_config(&cert_pem, &key_pem, ca_pem.as_deref())
}
