//! A test fleet's PKI (feature `tls`): a CA, a server certificate and a
//! device's client certificate, from rcgen, with the rustls configs a
//! device makes of them.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The fleet's certificates.
pub struct Pki {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate, PEM, and its key.
    pub server_pem: String,
    /// The server's key, PEM.
    pub server_key_pem: String,
    ca: CertificateDer<'static>,
    server: CertificateDer<'static>,
    server_key: Vec<u8>,
    device: CertificateDer<'static>,
    device_key: Vec<u8>,
}

impl Pki {
    /// A CA, a certificate for `server_name` (a DNS name or an IP
    /// address), and one for the device `telemark-{device}`.
    pub fn new(server_name: &str, device: u64) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "telemark test fleet CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec![server_name.to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let mut device_params = CertificateParams::new(Vec::new()).unwrap();
        device_params
            .distinguished_name
            .push(DnType::CommonName, format!("telemark-{device}"));
        let device_key = KeyPair::generate().unwrap();
        let device = device_params.signed_by(&device_key, &issuer).unwrap();
        Pki {
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            ca: ca.der().clone(),
            server: server.der().clone(),
            server_key: server_key.serialize_der(),
            device: device.der().clone(),
            device_key: device_key.serialize_der(),
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    fn client(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        rustls::ClientConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
    }

    /// A device that trusts the CA and shows its certificate.
    pub fn device_config(&self) -> rustls::ClientConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.device_key.clone()));
        self.client()
            .with_client_auth_cert(vec![self.device.clone()], key)
            .unwrap()
    }

    /// A device that trusts the CA and has no certificate.
    pub fn stranger_config(&self) -> rustls::ClientConfig {
        self.client().with_no_client_auth()
    }

    /// A server that shows its certificate and asks every client for one
    /// the CA signed.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots(),
            Pki::provider(),
        )
        .build()
        .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.clone()], key)
            .unwrap();
        Arc::new(config)
    }
}
