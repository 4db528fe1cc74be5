//! TLS server settings from a web config's `tls_server_config` (its
//! section of the file is declared here, [`TlsFile`]), with
//! rustls on the aws-lc-rs provider (the one the AWS SDK already links).
//!
//! exporter-toolkit's semantics, mapped to rustls:
//! - `client_auth_type`: `NoClientCert` (default), `RequestClientCert`
//!   (asked for, not required, not verified), `RequireAnyClientCert`
//!   (required, not verified), `VerifyClientCertIfGiven` (verified against
//!   `client_ca_file` when sent), `RequireAndVerifyClientCert` (required and
//!   verified). The verifying modes need `client_ca_file`; a
//!   `client_ca_file` with `NoClientCert` is an error, as in the toolkit.
//! - `min_version`/`max_version`: `TLS12` and `TLS13` (rustls has no older
//!   versions, so `TLS10`/`TLS11` as a minimum mean TLS 1.2; as a maximum
//!   they are an error). Defaults: TLS 1.2 to 1.3.
//! - `cipher_suites`, `curve_preferences`, `prefer_server_cipher_suites`
//!   are accepted for compatibility; rustls' own safe defaults apply.
//! - `client_allowed_sans`: a client certificate the `client_auth_type`
//!   verifies must also name one of these among its subject alternative
//!   names (DNS names, email addresses, IP addresses, URIs, compared as
//!   text), and a client without a certificate is refused, as the toolkit
//!   does. It needs `client_auth_type` `RequireAndVerifyClientCert` or
//!   `VerifyClientCertIfGiven`: a certificate nobody verified proves no
//!   name, so with any other type the file is refused.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::web_config::Problem;

/// `tls_server_config`, as exporter-toolkit names its keys (read from the file by
/// `web_config`).
#[derive(Debug, Default)]
pub(crate) struct TlsFile {
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    /// Inline PEM instead of `cert_file`.
    pub(crate) cert: Option<String>,
    /// Inline PEM instead of `key_file`.
    pub(crate) key: Option<String>,
    pub(crate) client_auth_type: Option<String>,
    pub(crate) client_ca_file: Option<String>,
    pub(crate) client_allowed_sans: Option<Vec<String>>,
    pub(crate) min_version: Option<String>,
    pub(crate) max_version: Option<String>,
    pub(crate) cipher_suites: Option<Vec<String>>,
    pub(crate) prefer_server_cipher_suites: Option<bool>,
    pub(crate) curve_preferences: Option<Vec<String>>,
}

/// The crypto provider for the server side: aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server settings, and what they demand of clients.
pub(crate) struct Built {
    pub(crate) config: ServerConfig,
    /// Every client must present a certificate the CA verifies.
    pub(crate) verified_client_certs: bool,
    pub(crate) allowed_sans: bool,
}

/// The `client_auth_type`s that verify a certificate against the CA.
const VERIFYING: [&str; 2] = ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"];

/// Build the server settings. `read` reads a file the config names (as
/// given in the file), or says why it cannot. Problems name the field,
/// without the `tls_server_config.` prefix.
pub(crate) fn server_config(
    file: &TlsFile,
    read_file: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Built, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut read = |problems: &mut Vec<Problem>, field: &str, name: &str| -> Option<Vec<u8>> {
        read_file(name)
            .map_err(|e| problems.push(Problem::new(field, e)))
            .ok()
    };
    let cert_pem = match (&file.cert_file, &file.cert) {
        (Some(name), None) => read(&mut problems, "cert_file", name),
        (None, Some(inline)) => Some(inline.as_bytes().to_vec()),
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                "cert_file",
                "give cert_file or cert, not both",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::new("cert_file", "required (or cert, inline PEM)"));
            None
        }
    };
    let key_pem = match (&file.key_file, &file.key) {
        (Some(name), None) => read(&mut problems, "key_file", name),
        (None, Some(inline)) => Some(inline.as_bytes().to_vec()),
        (Some(_), Some(_)) => {
            problems.push(Problem::new("key_file", "give key_file or key, not both"));
            None
        }
        (None, None) => {
            problems.push(Problem::new("key_file", "required (or key, inline PEM)"));
            None
        }
    };
    let ca_pem = file
        .client_ca_file
        .as_ref()
        .and_then(|name| read(&mut problems, "client_ca_file", name));

    let certs: Vec<CertificateDer<'static>> = match &cert_pem {
        Some(pem) => match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                problems.push(Problem::new("cert_file", "no certificate in it"));
                Vec::new()
            }
            Err(e) => {
                problems.push(Problem::new(
                    "cert_file",
                    format!("not PEM certificates: {e}"),
                ));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let key = key_pem
        .as_ref()
        .and_then(|pem| match PrivateKeyDer::from_pem_slice(pem) {
            Ok(key) => Some(key),
            Err(e) => {
                problems.push(Problem::new(
                    "key_file",
                    format!("not a PEM private key: {e}"),
                ));
                None
            }
        });

    let versions = versions(file.min_version.as_deref(), file.max_version.as_deref())
        .map_err(|e| problems.push(e))
        .ok();
    for (field, set) in [
        ("cipher_suites", file.cipher_suites.is_some()),
        ("curve_preferences", file.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            file.prefer_server_cipher_suites.is_some(),
        ),
    ] {
        if set {
            tracing::warn!(
                "tls_server_config.{field} is ignored: rustls uses its own safe defaults"
            );
        }
    }

    let provider = provider();
    let roots = match &ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                match cert
                    .map_err(|e| e.to_string())
                    .and_then(|c| roots.add(c).map_err(|e| e.to_string()))
                {
                    Ok(()) => any = true,
                    Err(e) => problems.push(Problem::new("client_ca_file", e)),
                }
            }
            if !any {
                problems.push(Problem::new("client_ca_file", "no certificate in it"));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let kind = file.client_auth_type.as_deref().unwrap_or("NoClientCert");
    if file.client_allowed_sans.is_some() && !VERIFYING.contains(&kind) {
        problems.push(Problem::new(
            "client_allowed_sans",
            format!(
                "needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven, not {kind}: a certificate nobody verified proves no name"
            ),
        ));
    }
    let verifier = client_verifier(kind, roots, &provider)
        .map_err(|e| problems.push(e))
        .ok()
        .map(|verifier| with_allowed_sans(verifier, file.client_allowed_sans.as_deref()));

    let (Some(key), Some(versions), Some(verifier), true) = (
        key,
        versions,
        verifier,
        problems.is_empty() && !certs.is_empty(),
    ) else {
        return Err(problems);
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| vec![Problem::new("min_version", e.to_string())])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        vec![Problem::new(
            "key_file",
            format!("does not fit cert_file: {e}"),
        )]
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Built {
        config,
        // With client_allowed_sans, a certificate is required.
        verified_client_certs: kind == "RequireAndVerifyClientCert"
            || (kind == "VerifyClientCertIfGiven" && file.client_allowed_sans.is_some()),
        allowed_sans: file.client_allowed_sans.is_some(),
    })
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, Problem> {
    let rank = |field: &str, v: &str| -> Result<u8, Problem> {
        match v {
            "TLS10" => Ok(10),
            "TLS11" => Ok(11),
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            other => Err(Problem::new(
                field,
                format!("{other:?} is not one of TLS10, TLS11, TLS12, TLS13"),
            )),
        }
    };
    let min = rank("min_version", min.unwrap_or("TLS12"))?;
    let max = rank("max_version", max.unwrap_or("TLS13"))?;
    if max < 12 {
        return Err(Problem::new(
            "max_version",
            "TLS 1.0 and 1.1 are not offered (rustls has TLS 1.2 and 1.3)",
        ));
    }
    if min > max {
        return Err(Problem::new("min_version", "above max_version"));
    }
    let mut out = Vec::new();
    if min <= 12 {
        out.push(&rustls::version::TLS12);
    }
    out.push(&rustls::version::TLS13);
    if max == 12 {
        out.retain(|v| v.version != rustls::ProtocolVersion::TLSv1_3);
    }
    Ok(out)
}

/// `None`: no client certificates.
fn client_verifier(
    kind: &str,
    roots: Option<Arc<RootCertStore>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Problem> {
    let verifying = |roots: Option<Arc<RootCertStore>>, optional: bool| {
        let roots = roots.ok_or_else(|| {
            Problem::new(
                "client_ca_file",
                format!("required with client_auth_type {kind}"),
            )
        })?;
        let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map(Some)
            .map_err(|e| Problem::new("client_ca_file", e.to_string()))
    };
    match kind {
        "" | "NoClientCert" => {
            if roots.is_some() {
                Err(Problem::new(
                    "client_ca_file",
                    "set without a client_auth_type that uses it",
                ))
            } else {
                Ok(None)
            }
        }
        "RequestClientCert" => Ok(Some(Arc::new(AnyClientCert {
            mandatory: false,
            provider: Arc::clone(provider),
        }))),
        // "RequireClientCert" is the toolkit's older spelling.
        "RequireAnyClientCert" | "RequireClientCert" => Ok(Some(Arc::new(AnyClientCert {
            mandatory: true,
            provider: Arc::clone(provider),
        }))),
        "VerifyClientCertIfGiven" => verifying(roots, true),
        "RequireAndVerifyClientCert" => verifying(roots, false),
        other => Err(Problem::new(
            "client_auth_type",
            format!("{other:?} is not one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
        )),
    }
}

/// Asks for a client certificate and accepts any (Go's
/// `RequestClientCert` and `RequireAnyClientCert`): the handshake
/// signature is still checked, the chain is not.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verifier` (`None`: no client certificates) restricted to `allowed`
/// subject alternative names when the file lists them.
fn with_allowed_sans(
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    allowed: Option<&[String]>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    let Some(allowed) = allowed else {
        return verifier;
    };
    // Refused before this, without a verifier (NoClientCert).
    let inner = verifier?;
    if allowed.is_empty() {
        tracing::warn!(
            "tls_server_config.client_allowed_sans is empty: every client certificate is refused"
        );
    }
    Some(Arc::new(AllowedSans {
        inner,
        allowed: allowed.to_vec(),
    }))
}

/// exporter-toolkit's `client_allowed_sans` on top of a `client_auth_type`:
/// a certificate `inner` accepts must also carry one of `allowed` among its
/// subject alternative names, and a certificate is required (the toolkit
/// refuses a client that sends none).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity).map_err(|e| {
            rustls::Error::General(format!("cannot read the client certificate's names: {e}"))
        })?;
        if names.iter().any(|name| self.allowed.contains(name)) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "the client certificate names none of client_allowed_sans (it names {names:?})"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A certificate's subject alternative names as text, the way Go's
/// `crypto/x509` prints them (what exporter-toolkit compares): DNS names,
/// email addresses, IP addresses (an IPv4-mapped IPv6 address as IPv4) and
/// URIs. Other kinds are skipped.
fn subject_alt_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    let Some(extension) = cert.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    Ok(extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
                Some((*text).to_string())
            }
            GeneralName::IPAddress(bytes) => ip_text(bytes),
            _ => None,
        })
        .collect())
}

/// An IP address SAN's octets as Go's `net.IP.String` writes them.
fn ip_text(octets: &[u8]) -> Option<String> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match octets.len() {
        4 => Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]).to_string()),
        16 => {
            let mut bytes = [0; 16];
            bytes.copy_from_slice(octets);
            let v6 = Ipv6Addr::from(bytes);
            Some(
                v6.to_ipv4_mapped()
                    .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_alt_names_read_as_go_prints_them() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["scraper.example".to_string()]).unwrap();
        params.subject_alt_names.extend([
            SanType::Rfc822Name("prometheus@example.com".try_into().unwrap()),
            SanType::IpAddress("10.0.0.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::7".parse().unwrap()),
            SanType::IpAddress("::ffff:192.0.2.1".parse().unwrap()),
            SanType::URI("spiffe://example.org/prometheus".try_into().unwrap()),
        ]);
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()).unwrap(),
            [
                "scraper.example",
                "prometheus@example.com",
                "10.0.0.7",
                "2001:db8::7",
                "192.0.2.1",
                "spiffe://example.org/prometheus"
            ]
        );
        let bare = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap();
        assert!(subject_alt_names(bare.der()).unwrap().is_empty());
        assert!(subject_alt_names(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
        assert_eq!(ip_text(&[1, 2, 3]), None);
    }

    #[test]
    fn versions_follow_the_toolkit_names() {
        let names = |min, max| {
            versions(min, max).map(|v| {
                v.iter()
                    .map(|v| format!("{:?}", v.version))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names(None, None).unwrap(), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(names(Some("TLS13"), None).unwrap(), ["TLSv1_3"]);
        assert_eq!(names(None, Some("TLS12")).unwrap(), ["TLSv1_2"]);
        assert_eq!(names(Some("TLS10"), None).unwrap(), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(names(None, Some("TLS11")).unwrap_err().field, "max_version");
        assert_eq!(
            names(Some("TLS13"), Some("TLS12")).unwrap_err(),
            Problem::new("min_version", "above max_version")
        );
        assert!(names(Some("SSL3"), None)
            .unwrap_err()
            .message
            .contains("\"SSL3\""));
    }

    #[test]
    fn client_auth_types() {
        let provider = provider();
        for kind in ["", "NoClientCert"] {
            assert!(client_verifier(kind, None, &provider).unwrap().is_none());
        }
        for (kind, mandatory) in [("RequestClientCert", false), ("RequireAnyClientCert", true)] {
            let verifier = client_verifier(kind, None, &provider).unwrap().unwrap();
            assert_eq!(verifier.client_auth_mandatory(), mandatory, "{kind}");
        }
        for kind in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
            let err = client_verifier(kind, None, &provider).err().unwrap();
            assert_eq!(err.field, "client_ca_file");
            assert!(err.message.starts_with("required"), "{err:?}");
        }
        let roots = Arc::new(RootCertStore::empty());
        assert!(client_verifier("NoClientCert", Some(roots), &provider)
            .err()
            .unwrap()
            .message
            .contains("without a client_auth_type"));
        assert!(client_verifier("Sometimes", None, &provider)
            .err()
            .unwrap()
            .message
            .contains("\"Sometimes\""));
    }
}
