//! The embedded broker behind TLS: with `--mqtt-tls-cert` and
//! `--mqtt-tls-key` the service takes device connections on `--mqtt`
//! over TLS (rustls) and carries them to its broker, which then listens
//! on loopback only. With `--mqtt-client-ca` every device must show a
//! certificate that CA signed, whose common name is `telemark-{device}`:
//! the gate reads the MQTT packets the device sends and closes the
//! connection at the first PUBLISH to any topic but its own uplink,
//! `{prefix}/v1/{device}/up`, or SUBSCRIBE to any but its own downlink,
//! `{prefix}/v1/{device}/down`. As the hub takes from a topic only frames of
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

use crate::tls::HANDSHAKE;

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

/// What a packet asks, as far as the gate cares.
#[derive(Debug, PartialEq, Eq)]
enum Asks {
    /// CONNECT, of this protocol level (4: MQTT 3.1.1, 5: MQTT 5).
    Connect(u8),
    /// PUBLISH to this topic.
    Publish(Vec<u8>),
    /// SUBSCRIBE to these topic filters.
    Subscribe(Vec<Vec<u8>>),
    /// Anything else.
    Other,
}

/// What the next packet in a buffer is.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Not all of it has arrived.
    Partial,
    /// A packet of this many bytes, and what it asks.
    Packet(usize, Asks),
    /// Not MQTT, or larger than the gate carries.
    Bad,
}

/// A variable byte integer at `at` of `b`, and where it ends.
fn varint(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for k in 0..4 {
        let byte = *b.get(at + k)?;
        v |= usize::from(byte & 0x7f) << (7 * k);
        if byte & 0x80 == 0 {
            return Some((v, at + k + 1));
        }
    }
    None
}

/// A string (two-byte length, then its bytes) at `at` of `b`, and where
/// it ends.
fn string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let &[hi, lo] = b.get(at..at + 2)? else {
        return None;
    };
    let end = at + 2 + usize::from(u16::from_be_bytes([hi, lo]));
    Some((b.get(at + 2..end)?, end))
}

/// What the body of a packet of type `kind` asks; `None` if it does not
/// parse. `v5`: the connection speaks MQTT 5 (SUBSCRIBE has properties).
fn asks(kind: u8, body: &[u8], v5: bool) -> Option<Asks> {
    Some(match kind {
        1 => {
            let (_, at) = string(body, 0)?;
            Asks::Connect(*body.get(at)?)
        }
        3 => Asks::Publish(string(body, 0)?.0.to_vec()),
        8 => {
            // The packet id, then (MQTT 5) properties, then the filters,
            // each with its options byte.
            let mut at = 2;
            if v5 {
                let (len, end) = varint(body, at)?;
                at = end + len;
            }
            let mut filters = Vec::new();
            while at < body.len() {
                let (filter, end) = string(body, at)?;
                filters.push(filter.to_vec());
                at = end + 1;
            }
            if filters.is_empty() || at != body.len() {
                return None;
            }
            Asks::Subscribe(filters)
        }
        _ => Asks::Other,
    })
}

/// The MQTT packet `buf` starts with.
fn next_packet(buf: &[u8], v5: bool) -> Next {
    let Some(&first) = buf.first() else {
        return Next::Partial;
    };
    let Some((len, at)) = varint(buf, 1) else {
        // Four bytes of length and more to come is no MQTT.
        return if buf.len() >= 5 {
            Next::Bad
        } else {
            Next::Partial
        };
    };
    let total = at + len;
    if total > MAX_PACKET {
        return Next::Bad;
    }
    let Some(body) = buf.get(at..total) else {
        return Next::Partial;
    };
    match asks(first >> 4, body, v5) {
        Some(a) => Next::Packet(total, a),
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
                tracing::warn!(error = %e, "mqtt tls: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, prefix) = (acceptor.clone(), prefix.clone());
        tokio::spawn(async move {
            if let Err(e) = carry(stream, broker, acceptor, &prefix).await {
                // A device that breaks the rules is told nothing more.
                tracing::info!(error = %e, "mqtt tls: connection closed");
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
    let own = device.map(|d| {
        (
            format!("{prefix}/v1/{d}/up").into_bytes(),
            format!("{prefix}/v1/{d}/down").into_bytes(),
        )
    });
    let mut v5 = true;
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
            match next_packet(packets.get(whole..).unwrap_or_default(), v5) {
                Next::Partial => break Ok(()),
                Next::Bad => break Err("not MQTT, or a packet too large"),
                Next::Packet(len, asks) => {
                    match (&own, asks) {
                        (_, Asks::Connect(level)) => v5 = level == 5,
                        (Some((up, _)), Asks::Publish(topic)) if topic != *up => {
                            break Err("a PUBLISH to a topic not its own");
                        }
                        (Some((_, down)), Asks::Subscribe(filters))
                            if filters.iter().any(|f| f != down) =>
                        {
                            break Err("a SUBSCRIBE to a topic not its own");
                        }
                        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read_whole_and_named() {
        // SUBSCRIBE, MQTT 5: id 1, no properties, one filter "a/b", QoS 1.
        let sub = [
            0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x01,
        ];
        assert_eq!(
            next_packet(&sub, true),
            Next::Packet(11, Asks::Subscribe(vec![b"a/b".to_vec()]))
        );
        assert_eq!(next_packet(&sub[..6], true), Next::Partial);
        // PUBLISH QoS 0 to "t" with payload "x".
        let publish = [0x30, 0x04, 0x00, 0x01, b't', b'x'];
        assert_eq!(
            next_packet(&publish, true),
            Next::Packet(6, Asks::Publish(b"t".to_vec()))
        );
        // CONNECT of MQTT 3.1.1.
        let connect = [0x10, 0x07, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
        assert_eq!(
            next_packet(&connect, true),
            Next::Packet(9, Asks::Connect(4))
        );
        assert_eq!(
            next_packet(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], true),
            Next::Bad
        );
        assert_eq!(
            next_packet(&[0x82, 0x02, 0x00, 0x01], true),
            Next::Bad,
            "no filter"
        );
    }
}
