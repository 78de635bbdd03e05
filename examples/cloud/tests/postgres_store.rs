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
