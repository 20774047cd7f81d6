//! Which certificate authorities the TLS sinks (`mqtts://`, `https://` webhooks) trust.
//!
//! By default a server's certificate must chain to one of Mozilla's root CAs (the
//! `webpki-roots` list, built into the binary, so a device without a CA bundle still
//! verifies) and name the host the spec names. `ca=FILE` in the spec's query replaces those
//! roots with the PEM certificates in `FILE`: the way to reach a broker or receiver whose
//! certificate comes from a private CA (or is self-signed). Verification cannot be turned
//! off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{percent_decode, SinkError};

/// The query parameter that names a private CA file.
pub const CA_PARAM: &str = "ca";

/// The roots a TLS sink verifies its server's certificate against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// Mozilla's root CAs (`webpki-roots`).
    #[default]
    PublicRoots,
    /// Only the certificates in this PEM file (`ca=FILE`).
    CaFile(PathBuf),
}

/// A spec's query split into its `ca=FILE` (percent-decoded) and the other parameters, in
/// their order. `Err` says what is wrong with a `ca` parameter (empty, twice, bad escape).
pub(crate) fn take_ca(query: &str) -> Result<(Option<PathBuf>, Vec<&str>), String> {
    let mut ca = None;
    let mut rest = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let Some(value) = param
            .strip_prefix(CA_PARAM)
            .and_then(|v| v.strip_prefix('='))
        else {
            rest.push(param);
            continue;
        };
        if ca.is_some() {
            return Err(format!("{CA_PARAM}= given twice"));
        }
        let value =
            percent_decode(value).ok_or_else(|| format!("bad %-escape in {CA_PARAM}={value}"))?;
        if value.is_empty() {
            return Err(format!("{CA_PARAM}= names no file"));
        }
        ca = Some(PathBuf::from(value));
    }
    Ok((ca, rest))
}

impl Trust {
    /// Trust for a spec's `ca=` parameter, if any.
    pub(crate) fn from_ca(ca: Option<PathBuf>) -> Trust {
        ca.map_or(Trust::PublicRoots, Trust::CaFile)
    }

    /// The rustls client configuration (ring, TLS 1.2 and 1.3) that verifies against these
    /// roots; reads the CA file. Errors name `sink` and the file.
    pub(crate) fn rustls_config(&self, sink: &str) -> Result<rustls::ClientConfig, SinkError> {
        let mut roots = rustls::RootCertStore::empty();
        match self {
            Trust::PublicRoots => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Trust::CaFile(path) => {
                for cert in read_ca_file(path, sink)? {
                    roots
                        .add(cert)
                        .map_err(|e| ca_error(sink, path, &format!("unusable certificate: {e}")))?;
                }
            }
        }
        let failed = |e: rustls::Error| SinkError::Failed {
            sink: sink.to_string(),
            reason: format!("TLS set-up: {e}"),
        };
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(failed)?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }

    /// ureq's TLS configuration for these roots (its rustls, verifying); reads the CA file.
    pub(crate) fn ureq_config(&self, sink: &str) -> Result<ureq::tls::TlsConfig, SinkError> {
        let roots = match self {
            // ureq's own default: the same webpki roots.
            Trust::PublicRoots => ureq::tls::RootCerts::WebPki,
            Trust::CaFile(path) => {
                let certs: Vec<ureq::tls::Certificate<'static>> = read_ca_file(path, sink)?
                    .iter()
                    .map(|c| ureq::tls::Certificate::from_der(c).to_owned())
                    .collect();
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        Ok(ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build())
    }
}

/// A connection or delivery error as text. When it is a TLS failure (`tls_error`, found in
/// it by the caller), the TLS error itself, with a hint when the server's certificate was
/// not accepted (the usual cause: a private CA not named with `ca=FILE`).
pub(crate) fn describe(
    error: &impl std::fmt::Display,
    tls_error: Option<&rustls::Error>,
) -> String {
    match tls_error {
        Some(e @ rustls::Error::InvalidCertificate(_)) => format!(
            "TLS: {e}: the server's certificate is not trusted (a private CA's certificate is \
             named with ?{CA_PARAM}=FILE in the sink)"
        ),
        Some(e) => format!("TLS: {e}"),
        None => error.to_string(),
    }
}

/// The rustls error inside an I/O error: how tokio-rustls (MQTT) and ureq (webhooks) hand up
/// a failed handshake.
pub(crate) fn rustls_error_in(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The PEM certificates in `path`; an error naming the file when it cannot be read or
/// holds none.
fn read_ca_file(path: &Path, sink: &str) -> Result<Vec<CertificateDer<'static>>, SinkError> {
    let pem = std::fs::read(path).map_err(|source| SinkError::Io {
        sink: sink.to_string(),
        path: format!("CA file {}", path.display()),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(sink, path, &format!("not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(ca_error(sink, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn ca_error(sink: &str, path: &Path, why: &str) -> SinkError {
    SinkError::Failed {
        sink: sink.to_string(),
        reason: format!("CA file {}: {why}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_taken_out_of_the_query() {
        assert_eq!(take_ca("").unwrap(), (None, vec![]));
        assert_eq!(
            take_ca("token=x&ca=/etc/ca%20dir/ca.pem&b").unwrap(),
            (
                Some(PathBuf::from("/etc/ca dir/ca.pem")),
                vec!["token=x", "b"]
            )
        );
        // Only the parameter named exactly `ca`.
        assert_eq!(take_ca("cab=1").unwrap(), (None, vec!["cab=1"]));
        for bad in ["ca=", "ca=a&ca=b", "ca=%zz"] {
            assert!(take_ca(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Trust::CaFile(dir.path().join("none.pem"));
        let err = missing.rustls_config("s").unwrap_err().to_string();
        assert!(err.contains("CA file") && err.contains("none.pem"), "{err}");
        assert!(missing.ureq_config("s").is_err());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Trust::CaFile(empty).rustls_config("s").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        let config = Trust::PublicRoots.rustls_config("s").unwrap();
        assert!(config.alpn_protocols.is_empty());
        assert!(matches!(
            Trust::PublicRoots.ureq_config("s").unwrap().root_certs(),
            ureq::tls::RootCerts::WebPki
        ));
    }

    #[test]
    fn tls_failures_are_described_with_a_hint() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let text = describe(&"outer", Some(&e));
        assert!(
            text.starts_with("TLS: ") && text.contains("?ca=FILE"),
            "{text}"
        );
        let other = describe(&"outer", Some(&rustls::Error::DecryptError));
        assert!(
            other.starts_with("TLS: ") && !other.contains("ca="),
            "{other}"
        );
        assert_eq!(describe(&"outer", None), "outer");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e.clone());
        assert_eq!(rustls_error_in(&io), Some(&e));
        assert_eq!(rustls_error_in(&std::io::Error::other("plain")), None);
    }
}
