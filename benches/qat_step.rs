//! One training step (forward, cross-entropy, backward, SGD with momentum) of MobileNetV2
//! (width 1.0, 10 classes, batch 32, 32×32) on the autodiff flex device: float against QAT
//! (`fuse_model(Some(true))` + `prepare_qat` with the qnnpack and x86 presets).
//!
//! `cargo bench --bench qat_step`

use std::time::Duration;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{prepare_qat, replace_relu};
use criterion::{Criterion, criterion_group, criterion_main};

fn model(qat: Option<QuantBackend>, device: &Device) -> MobileNetV2 {
    let mut model = MobileNetV2Config::new()
        .with_num_classes(10)
        .init(device)
        .expect("valid config");
    replace_relu(&mut model).expect("replace_relu");
    if let Some(backend) = qat {
        model.fuse_model(Some(true)).expect("fuse");
        prepare_qat(&mut model, QConfig::default_qat(backend), device).expect("prepare_qat");
    }
    model
}

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::random([32, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..32).map(|i| i % 10).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [32]), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);

    let mut group = c.benchmark_group("mobilenet_v2_train_step_b32_32x32");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    for (name, qat) in [
        ("float", None),
        ("qat_qnnpack", Some(QuantBackend::Qnnpack)),
        ("qat_x86", Some(QuantBackend::X86)),
    ] {
        let mut net = Some(model(qat, &device));
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .init();
        group.bench_function(name, |b| {
            b.iter(|| {
                let m = net.take().expect("model");
                let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                net = Some(optim.step(0.01, m, grads));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
