//! The integration tests: one test binary, so that Burn, wgpu and cubecl are linked once (one
//! binary per file linked them 25 times). Each module is what used to be a `tests/*.rs` file;
//! `cargo test --features wgpu --test it MODULE::` runs one of them.
//!
//! The tests share one process. A test that touches process-wide state other tests touch too
//! (the backend's random generator) runs its body alone in a child process of this binary
//! ([`run_alone`]); tests that size rayon's global pool (`burn-qat bench --threads`) run the CLI
//! as a child process.

mod common;
mod torch_save;

mod arch_wiring;
mod avg_pool;
mod batch_norm;
mod builders;
mod checkpoint_kill;
mod cli_arch;
mod cli_bench;
mod data;
mod data_parallel;
mod finetune;
mod float_functional;
mod float_inference;
mod functional_int8;
mod int8_kernels;
mod int8_models;
mod int8_ops;
mod int8_quantize;
mod malformed_inputs;
mod mobilenet_v2;
mod mobilenet_v3;
mod pool_hardswish;
mod ptq;
mod qat_conv_bn;
mod qat_kernels;
mod qat_lsq;
mod qat_no_sync;
mod qat_parity;
mod qconfig_mapping;
mod quant_fake_quant;
mod quant_lsq;
mod quant_observers;
mod quant_qparams;
mod quant_robustness;
mod quantize_model;
mod quantized_pth;
mod reproducibility;
mod resnet;
mod shufflenet_v2;
mod state_round_trip;
mod strip_float;
mod weight_bits;
mod workflow;

use std::process::Command;

/// The name the test harness gives the test `name` declared in `module` (that module's
/// `module_path!()`, which starts with this crate's name; the harness leaves that out): the
/// filter that selects it with `--exact`.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// Runs the test `name` of `module` (its `module_path!()`) alone in a child process of this test
/// binary, with the environment variable `env` set (the test's cue that it is the child, which
/// runs the body), and asserts that the child ran exactly that test and it passed.
pub fn run_alone(module: &str, name: &str, env: &str) {
    let filter = test_name(module, name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([filter.as_str(), "--exact"])
        .env(env, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{filter}, alone in a child process: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
