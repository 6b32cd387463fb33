#![no_main]
//! The crate's int8 model format (`io::read_int8_file`).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("model.int8.safetensors", data);
    let _ = burn_qat::io::read_int8_file(&path);
});
