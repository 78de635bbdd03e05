//! Tells the crate whether its target has the fault status register.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_cfsr)");
    let target = std::env::var("TARGET").unwrap_or_default();
    // ARMv7-M and ARMv8-M Mainline have CFSR; ARMv6-M and ARMv8-M
    // Baseline (thumbv6m, thumbv8m.base) do not.
    if target.starts_with("thumbv7") || target.starts_with("thumbv8m.main") {
        println!("cargo::rustc-cfg=has_cfsr");
    }
}
