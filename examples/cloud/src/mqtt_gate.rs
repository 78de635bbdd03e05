//! The embedded broker behind TLS: with `--mqtt-tls-cert` and
//! `--mqtt-tls-key` the service takes device connections on `--mqtt`
//! over TLS (rustls) and carries them to its broker, which then listens
//! on loopback only. With `--mqtt-client-ca` every device must show a
//! certificate that CA signed, whose common name is `telemark-{device}`:
//! the gate reads the MQTT packets the device sends and closes the
//! connection at the first PUBLISH to any topic but its own uplink,
//! `{prefix}/v1/{device}/up`. As the hub takes from a topic only frames of
//! the device the topic names, a frame reaches the store only from the
//! device its certificate names.
//!
//! ```
//! use telemark_cloud::mqtt_gate::device_of_name;
//! assert_eq!(device_of_name("telemark-405"), Some(405));
//! assert_eq!(device_of_name("someone"), None);
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Longest a device may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Largest MQTT packet the gate carries (the broker's own limit is 64 KiB).
const MAX_PACKET: usize = 64 * 1024 + 16;

/// The device a certificate's common name names: `telemark-{device}`.
pub fn device_of_name(common_name: &str) -> Option<u64> {
    common_name.strip_prefix("telemark-")?.parse().ok()
}

/// The device the first certificate of a chain names.
fn device_of_certificate(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    device_of_name(name.as_str().ok()?)
}

/// The gate's TLS config: its certificate chain and key (PEM files), and,
/// with `client_ca`, the CA whose certificates devices must show.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--mqtt-client-ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("--mqtt-client-ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--mqtt-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--mqtt-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let (chain, key) = crate::tls::pem_pair(cert, key, "--mqtt-tls-cert", "--mqtt-tls-key")?;
    builder
        .with_single_cert(chain, key)
        .map(Arc::new)
        .map_err(|e| format!("--mqtt-tls-cert and --mqtt-tls-key: {e}"))
}

/// What the next packet in a buffer is.
enum Next {
    /// Not all of it has arrived.
    Partial,
    /// A packet of this many bytes, PUBLISH to this topic if it is one.
    Packet(usize, Option<Vec<u8>>),
    /// Not MQTT, or larger than the gate carries.
    Bad,
}

/// The MQTT packet `buf` starts with.
fn next_packet(buf: &[u8]) -> Next {
    let Some(&first) = buf.first() else {
        return Next::Partial;
    };
    // The remaining length: up to four bytes of seven bits each.
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else {
            return Next::Partial;
        };
        len |= usize::from(b & 0x7f) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Next::Bad;
        }
    }
    let total = at + len;
    if total > MAX_PACKET {
        return Next::Bad;
    }
    let Some(packet) = buf.get(..total) else {
        return Next::Partial;
    };
    if first >> 4 != 3 {
        return Next::Packet(total, None);
    }
    // PUBLISH: the topic first, a two-byte length and its bytes.
    let topic = match packet.get(at..at + 2) {
        Some(&[hi, lo]) => packet.get(at + 2..at + 2 + usize::from(u16::from_be_bytes([hi, lo]))),
        _ => None,
    };
    match topic {
        Some(t) => Next::Packet(total, Some(t.to_vec())),
        None => Next::Bad,
    }
}

/// Takes device connections on `listener` until `stop`, each carried to
/// the broker at `broker`. With client certificates (`config` asks for
/// them), each device publishes only to `{prefix}/v1/{device}/up`.
pub async fn serve(
    listener: TcpListener,
    broker: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    prefix: String,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                eprintln!("mqtt tls: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, prefix) = (acceptor.clone(), prefix.clone());
        tokio::spawn(async move {
            if let Err(e) = carry(stream, broker, acceptor, &prefix).await {
                // A device that breaks the rules is told nothing more.
                eprintln!("mqtt tls: {e}");
            }
        });
    }
}

/// One device's connection.
async fn carry(
    stream: TcpStream,
    broker: SocketAddr,
    acceptor: TlsAcceptor,
    prefix: &str,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake too slow"))??;
    let device =
        match tls.get_ref().1.peer_certificates() {
            None => None,
            Some(chain) => Some(chain.first().and_then(device_of_certificate).ok_or_else(
                || {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "a client certificate that names no device (telemark-ID)",
                    )
                },
            )?),
        };
    let upstream = TcpStream::connect(broker).await?;
    let _ = upstream.set_nodelay(true);
    let (mut from_device, mut to_device) = tokio::io::split(tls);
    let (mut from_broker, mut to_broker) = upstream.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_broker, &mut to_device).await;
        let _ = to_device.shutdown().await;
    });
    let own = device.map(|d| format!("{prefix}/v1/{d}/up").into_bytes());
    let mut packets: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let result = loop {
        let n = match from_device.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        packets.extend_from_slice(chunk.get(..n).unwrap_or_default());
        // Whole packets only go on, each checked first.
        let mut whole = 0;
        let verdict = loop {
            match next_packet(packets.get(whole..).unwrap_or_default()) {
                Next::Partial => break Ok(()),
                Next::Bad => break Err("not MQTT, or a packet too large"),
                Next::Packet(len, topic) => {
                    if let (Some(own), Some(topic)) = (&own, topic) {
                        if topic != *own {
                            break Err("a PUBLISH to a topic not its own");
                        }
                    }
                    whole += len;
                }
            }
        };
        if let Some(ready) = packets.get(..whole) {
            if let Err(e) = to_broker.write_all(ready).await {
                break Err(e);
            }
        }
        packets.drain(..whole);
        if let Err(why) = verdict {
            break Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("device {device:?}: {why}; connection closed"),
            ));
        }
    };
    let _ = to_broker.shutdown().await;
    down.abort();
    result
}
