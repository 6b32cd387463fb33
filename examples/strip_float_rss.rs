//! What `strip_float` frees: the resident memory of a converted MobileNetV2 before and after.
//! `cargo run --release --example strip_float_rss` prints one JSON object.
//!
//! A float MobileNetV2 (width 1.0, 1000 classes, random weights) is fused, prepared with the
//! x86 PTQ qconfig, calibrated on two random batches and converted for the x86 engine; its int8
//! forward runs once (the kernels pack their weights on first use). Then the process's resident
//! set (`VmRSS` in `/proc/self/status`) and the bytes of float tensors the model holds are read,
//! `strip_float` runs, and both are read again. The stripped model's int8 logits must equal the
//! unstripped one's bit for bit. The allocator may keep some freed pages, so the resident drop
//! can be smaller than the float bytes freed.

use burn::module::Module;
use burn::tensor::{DType, Device, Distribution, Tensor};
use burn_qat::models::MobileNetV2Config;
use burn_qat::prelude::*;
use burn_store::ModuleSnapshot;

/// The process's resident set in bytes (`VmRSS`), where `/proc` has it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU's model name, where `/proc/cpuinfo` has it.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Bytes of the float tensors (weights, batch norm, observers) the model holds.
fn float_bytes<M: Module>(model: &M) -> u64 {
    model
        .collect(None, None, false)
        .iter()
        .filter(|t| t.dtype == DType::F32)
        .map(|t| 4 * t.shape.num_elements() as u64)
        .sum()
}

fn main() -> burn_qat::Result<()> {
    let device = Device::flex();
    let mut model = MobileNetV2Config::new().init(&device)?;
    replace_relu(&mut model)?;
    model.fuse_model(Some(false))?;
    prepare(&mut model, QConfig::default_ptq(QuantBackend::X86), &device)?;
    for _ in 0..2 {
        let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let _ = model.forward(x);
    }
    convert(&mut model, Engine::X86)?;
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let before_logits = model.forward_int8(x.clone())?.into_data();

    let (rss_before, float_before) = (resident_bytes(), float_bytes(&model));
    strip_float(&mut model)?;
    let (rss_after, float_after) = (resident_bytes(), float_bytes(&model));
    let after_logits = model.forward_int8(x)?.into_data();
    let rss_after_forward = resident_bytes();

    let mb = |b: Option<u64>| b.map_or("null".into(), |b| format!("{:.2}", b as f64 / 1e6));
    println!(
        "{{\"model\": \"mobilenet_v2 width 1.0, 1000 classes, PTQ x86\", \"cpu\": \"{}\", \
         \"rss_before_mb\": {}, \"rss_after_mb\": {}, \"rss_after_int8_forward_mb\": {}, \
         \"float_tensors_before_mb\": {}, \"float_tensors_after_mb\": {}, \
         \"int8_logits_bit_equal\": {}}}",
        cpu_name(),
        mb(rss_before),
        mb(rss_after),
        mb(rss_after_forward),
        mb(Some(float_before)),
        mb(Some(float_after)),
        before_logits == after_logits
    );
    Ok(())
}
