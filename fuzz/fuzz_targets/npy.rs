#![no_main]
//! `.npy` arrays (`io::npy::read_f32`).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("x.npy", data);
    let _ = burn_qat::io::npy::read_f32(&path);
});
