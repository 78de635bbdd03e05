//! The dashboard: a page at `/` that shows the fleet and each device,
//! served from files built into the binary, so running it needs neither
//! a build step nor a network.
//!
//! The page is plain HTML, CSS and JavaScript modules (`dashboard/` in this
//! crate), over the same HTTP API as any other client: it asks for a token,
//! reads `/v1/whoami` for its role, and follows `/v1/stream` for what is
//! stored while it is open. Its charts are uPlot's, vendored in
//! `dashboard/vendor/uplot` with their licence and checksum
//! ([`UPLOT_SHA256`], which a test holds the files to).
//!
//! ```
//! use telemark_cloud::dashboard;
//!
//! let index = dashboard::asset("/").unwrap();
//! assert_eq!(index.content_type, "text/html; charset=utf-8");
//! assert!(dashboard::asset("/dashboard/app.js").is_some());
//! assert!(dashboard::asset("/dashboard/missing.js").is_none());
//! ```

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One file of the page.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the page, by the path it is served at.
pub const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/dashboard/app.js", "app.js", JS),
    asset!("/dashboard/api.js", "api.js", JS),
    asset!("/dashboard/config.js", "config.js", JS),
    asset!("/dashboard/fleet.js", "fleet.js", JS),
    asset!("/dashboard/device.js", "device.js", JS),
    asset!("/dashboard/view.js", "view.js", JS),
    asset!("/dashboard/style.css", "style.css", CSS),
    asset!(
        "/dashboard/uPlot.iife.min.js",
        "vendor/uplot/uPlot.iife.min.js",
        JS
    ),
    asset!(
        "/dashboard/uPlot.min.css",
        "vendor/uplot/uPlot.min.css",
        CSS
    ),
];

/// The SHA-256 of the vendored uPlot files, as `dashboard/vendor/uplot/SHA256SUMS`
/// records them from the npm package `uplot@1.6.32`.
pub const UPLOT_SHA256: &str = include_str!("../dashboard/vendor/uplot/SHA256SUMS");

/// The file served at `path`, if the page has one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// What the page may load: its own files and its own API, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &'static Asset) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Built into the binary: a new binary may bring new files.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.bytes,
    )
        .into_response()
}

/// The routes of the page's files, to merge beside the API's.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sha2::{Digest, Sha256};

    /// The vendored files are the ones the checksums name, byte for byte.
    #[test]
    fn the_vendored_uplot_matches_its_checksums() {
        let mut checked = 0;
        for line in UPLOT_SHA256.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, file) = line.split_once("  ").expect("`SUM  FILE` lines");
            let asset = ASSETS
                .iter()
                .find(|a| a.path == format!("/dashboard/{file}"))
                .unwrap_or_else(|| panic!("{file} is not served"));
            let digest = Sha256::digest(asset.bytes);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, sum, "{file} differs from the vendored release");
            checked += 1;
        }
        assert_eq!(checked, 2, "both uPlot files are checked");
    }

    #[test]
    fn every_asset_is_served_once_and_names_its_type() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
            assert!(
                ASSETS.iter().skip(i + 1).all(|b| b.path != a.path),
                "{} twice",
                a.path
            );
        }
        let index = std::str::from_utf8(asset("/").unwrap().bytes).unwrap();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".css")) {
            assert!(
                index.contains(a.path),
                "index.html does not load {}",
                a.path
            );
        }
        assert!(index.contains("/dashboard/app.js"));
    }
}
