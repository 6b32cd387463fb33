#![no_main]
//! `.pth` files: the quantized state-dict reader, then the float loader (the crate's bounded
//! checks, then burn-store's PyTorch reader) into a small linear layer.

#[path = "common.rs"]
mod common;

use burn::nn::LinearConfig;
use burn::tensor::Device;
use burn_qat::io::{KeyMap, load_state_dict, read_quantized_state_dict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("model.pth", data);
    let _ = read_quantized_state_dict(&path);
    let linear = LinearConfig::new(2, 2).init(&Device::flex());
    let _ = load_state_dict(linear, &path, &KeyMap::new());
});
