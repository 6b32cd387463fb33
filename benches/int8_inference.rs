//! Inference latency of MobileNetV2 (width 1.0, 1000 classes, 1×3×224×224): the float model on
//! Burn's flex backend against the converted int8 model on the crate's int8 kernels (qnnpack and
//! x86 arithmetic), on the default kernel set (`int8::Auto`: AVX2 where the CPU has it, else the
//! portable `Direct` kernels).
//!
//! `cargo bench --bench int8_inference`

use std::time::Duration;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::convert::convert;
use burn_qat::int8::Engine;
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare, replace_relu};
use criterion::{Criterion, criterion_group, criterion_main};

fn float_model(device: &Device) -> MobileNetV2 {
    let mut model = MobileNetV2Config::new()
        .init(device)
        .expect("valid config")
        .valid();
    replace_relu(&mut model).expect("replace_relu");
    model
}

/// A PTQ-converted model: fused, calibrated on two random batches, converted.
fn int8_model(backend: QuantBackend, device: &Device) -> MobileNetV2 {
    let mut model = float_model(device);
    model.fuse_model(Some(false)).expect("fuse");
    prepare(&mut model, QConfig::default_ptq(backend), device).expect("prepare");
    for _ in 0..2 {
        let x = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
        let _ = model.forward(x);
    }
    let engine = Engine::from_backend(backend).expect("engine");
    convert(&mut model, engine).expect("convert");
    model
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let x = Tensor::<4>::random([1, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let mut group = c.benchmark_group("mobilenet_v2_w1_b1_224");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));

    let float = float_model(&device);
    group.bench_function("float_flex", |b| {
        b.iter(|| float.forward(x.clone()).into_data())
    });
    for (name, backend) in [
        ("int8_qnnpack", QuantBackend::Qnnpack),
        ("int8_x86", QuantBackend::X86),
    ] {
        let model = int8_model(backend, &device);
        group.bench_function(name, |b| {
            b.iter(|| {
                model
                    .forward_int8(x.clone())
                    .expect("int8 forward")
                    .into_data()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
