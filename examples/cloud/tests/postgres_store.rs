//! The PostgreSQL backend on the machine's PostgreSQL (127.0.0.1:5432, or
//! `TELEMARK_TEST_POSTGRES`): the conformance suites, each check in a
//! database of its own that the test creates and drops.
#![allow(clippy::unwrap_used)]

use postgres::{Client, NoTls};
use telemark_cloud::{conformance, PgStore};

/// The server to test against, without a database name.
fn server() -> String {
    std::env::var("TELEMARK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Databases made for one test, dropped when it ends.
struct Databases {
    admin: Client,
    prefix: String,
    made: Vec<String>,
}

impl Databases {
    fn new(test: &str) -> Databases {
        let admin = Client::connect(&format!("{}/postgres", server()), NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (scripts/check.sh starts it)");
        Databases {
            admin,
            prefix: format!("telemark_{test}_{}", std::process::id()),
            made: Vec::new(),
        }
    }

    /// A new empty database; its URL.
    fn fresh(&mut self) -> String {
        let name = format!("{}_{}", self.prefix, self.made.len());
        // Each its own statement: neither runs inside a transaction.
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        self.admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        self.made.push(name.clone());
        format!("{}/{name}", server())
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in &self.made {
            let _ = self
                .admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

#[test]
fn the_postgres_store_conforms() {
    let mut dbs = Databases::new("conform");
    conformance::run(|| Box::new(PgStore::connect(&dbs.fresh()).unwrap()));
}

#[test]
fn the_postgres_store_conforms_with_a_row_per_reading() {
    let mut dbs = Databases::new("rows");
    conformance::run(|| {
        let mut store = PgStore::connect(&dbs.fresh()).unwrap();
        store.keep_reading_rows(true);
        Box::new(store)
    });
}

#[test]
fn the_schema_is_made_once_and_its_version_kept() {
    let mut dbs = Databases::new("schema");
    let url = dbs.fresh();
    let mut first = PgStore::connect(&url).unwrap();
    assert_eq!(
        first.schema_version().unwrap(),
        telemark_cloud::SCHEMA_VERSION
    );
    // A second service on the same database finds the schema made.
    let mut second = PgStore::connect(&url).unwrap();
    assert_eq!(
        second.schema_version().unwrap(),
        telemark_cloud::SCHEMA_VERSION
    );
    // A database from a newer build is refused, with the reason.
    let mut c = Client::connect(&url, NoTls).unwrap();
    c.batch_execute("UPDATE telemark_schema SET version = 99")
        .unwrap();
    let Err(e) = PgStore::connect(&url) else {
        panic!("a newer schema was taken");
    };
    assert!(e.to_string().contains("schema version 99"), "{e}");
}

/// A TCP proxy to PostgreSQL that the test cuts and mends: what the
/// service sees when the database goes away (its connections dropped,
/// new ones refused) and comes back.
struct Proxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn to(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            up: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            open: std::sync::Arc::default(),
        };
        let (up, open) = (proxy.up.clone(), proxy.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                // Refused while down: closed at once.
                if !up.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = open.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// The database goes away.
    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// It comes back.
    fn mend(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// PostgreSQL goes away and comes back: a frame that arrives meanwhile
/// is acknowledged to no one, the service keeps going, and the same frame
/// sent again once the database is back is stored, once.
#[test]
fn postgresql_going_away_and_coming_back_loses_nothing() {
    use std::net::ToSocketAddrs;
    use telemark_cloud::{Hub, NotAcknowledged};
    use telemark_core::store::RecordStore;
    use telemark_core::time::Instant;
    use telemark_core::wire::seal::Key;
    use telemark_transport_testkit::{engine, next_frame, DEVICE};

    let mut dbs = Databases::new("away");
    let url = dbs.fresh();
    let (authority, name) = url
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .unwrap();
    let target = authority.to_socket_addrs().unwrap().next().unwrap();
    let proxy = Proxy::to(target);
    let user = url.split_once('@').unwrap().0;
    let proxied = format!("{user}@{}/{name}", proxy.addr);
    let mut hub = Hub::new(Box::new(PgStore::connect(&proxied).unwrap())).unwrap();
    let key = Key::from_bytes(telemark_qemu_app::DEMO_KEYS[0].1);
    hub.import_key(DEVICE, 1, key, 0).unwrap();
    let mut device = engine();
    let received = 1_700_000_000_000;

    let now = Instant::from_millis(1_000);
    let mut response = hub
        .ingest(None, &next_frame(&mut device, now), received)
        .unwrap();
    assert!(device.on_frame(now, &mut response).is_ok());
    let before = hub.store().reading_count(DEVICE).unwrap();
    assert!(before > 0);

    proxy.cut();
    let frame = next_frame(&mut device, Instant::from_millis(2_000));
    match hub.ingest(None, &frame, received + 1_000) {
        Err(NotAcknowledged::Unstored(e)) => assert!(e.is_transient(), "{e}"),
        other => panic!("acknowledged with the database away: {other:?}"),
    }
    assert!(hub.store().devices().is_err(), "the database is away");

    proxy.mend();
    let mut response = hub.ingest(None, &frame, received + 2_000).unwrap();
    assert!(device
        .on_frame(Instant::from_millis(2_000), &mut response)
        .is_ok());
    // Every reading the device took, stored once: none lost to the cut,
    // none twice for the frame sent twice.
    assert_eq!(
        hub.store().reading_count(DEVICE).unwrap(),
        u64::from(device.counters().sampled)
    );
    assert!(
        device.store().is_empty(),
        "the device holds nothing unacknowledged"
    );
}
