//! Takes the identity the firmware is built with from `TELEMARK_DEVICE`:
//! what `telemark-cloud device add` (or `device rotate`) printed, the JSON
//! line as it is, or a line of a keys file (`DEVICE KEY-ID KEY`). Without
//! it each board keeps its demo id and demo key.
//!
//! ```text
//! TELEMARK_DEVICE="$(telemark-cloud device add --name boiler-1)" cargo build --release
//! ```
//!
//! It writes `provisioned.rs` into `OUT_DIR`, which the library includes.
//! A value it cannot read stops the build with the reason.

use std::env;
use std::fs;
use std::path::PathBuf;

/// A device's id, its key's id and its key.
type Identity = (u64, u8, [u8; 32]);

fn key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(format!("the key has {} hex digits, not 64", hex.len()));
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(hex.chunks(2)) {
        let digits = std::str::from_utf8(pair).map_err(|_| "the key is not hex".to_string())?;
        *byte = u8::from_str_radix(digits, 16).map_err(|_| format!("{digits:?} is not hex"))?;
    }
    Ok(key)
}

fn key_id(v: u64) -> Result<u8, String> {
    match u8::try_from(v) {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!("key id {v} is not 1 to 255")),
    }
}

/// The JSON `device add` and `device rotate` print.
fn from_json(text: &str) -> Result<Identity, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("no \"{name}\" field"));
    let id = field("id")?.as_u64().ok_or("\"id\" is not a device id")?;
    let kid = field("key_id")?
        .as_u64()
        .ok_or("\"key_id\" is not a number")?;
    let hex = field("key")?.as_str().ok_or("\"key\" is not a string")?;
    Ok((id, key_id(kid)?, key(hex)?))
}

/// A keys file's line: `DEVICE KEY-ID KEY`.
fn from_line(text: &str) -> Result<Identity, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [id, kid, hex] = words.as_slice() else {
        return Err("not `DEVICE KEY-ID KEY` (three words)".into());
    };
    let id = id
        .parse()
        .map_err(|_| format!("device {id:?} is not a number"))?;
    let kid = kid
        .parse()
        .map_err(|_| format!("key id {kid:?} is not a number"))?;
    Ok((id, key_id(kid)?, key(hex)?))
}

fn identity(text: &str) -> Result<Identity, String> {
    let text = text.trim();
    if text.starts_with('{') {
        from_json(text)
    } else {
        from_line(text)
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=TELEMARK_DEVICE");
    let code = match env::var("TELEMARK_DEVICE") {
        Err(env::VarError::NotPresent) => "None".to_string(),
        Err(env::VarError::NotUnicode(_)) => panic!("TELEMARK_DEVICE is not UTF-8"),
        Ok(text) => match identity(&text) {
            Ok((id, kid, key)) => format!("Some(({id}, {kid}, {key:?}))"),
            Err(e) => panic!(
                "TELEMARK_DEVICE: {e}; give it what `telemark-cloud device add` printed, \
                 or a keys line `DEVICE KEY-ID KEY`"
            ),
        },
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("provisioned.rs"),
        format!(
            "/// The identity given at build time in `TELEMARK_DEVICE`: (device, key id, key).\n\
             pub const PROVISIONED: Option<(u64, u8, [u8; 32])> = {code};\n"
        ),
    )
    .expect("write provisioned.rs");
}
