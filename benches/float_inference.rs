//! The float (and fake-quant evaluation) forward pass on the flex CPU backend, where nothing
//! trains: MobileNetV2 (width 1.0) and ResNet-18, 1000 classes, 224×224, batch 1 and 32,
//! torchvision's initialisation in eval mode (`valid()`). This is the path of PTQ calibration,
//! QAT evaluation and `burn-qat infer` / `bench` of a float checkpoint
//! (`scripts/bench_peers.py` sets it beside PyTorch's float forward).
//!
//! `cargo bench --bench float_inference`

use std::time::Duration;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::models::{MobileNetV2Config, ResNetConfig};
use burn_qat::nn::ImageClassifier;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mobilenet_v2 = MobileNetV2Config::new()
        .init(&device)
        .expect("config")
        .valid();
    let resnet18 = ResNetConfig::resnet18()
        .init(&device)
        .expect("config")
        .valid();
    type Forward<'a> = &'a dyn Fn(Tensor<4>) -> Tensor<2>;
    let models: [(&str, Forward); 2] = [
        ("mobilenet_v2", &|x| mobilenet_v2.forward(x)),
        ("resnet18", &|x| resnet18.forward(x)),
    ];
    for batch in [1, 32] {
        let x = Tensor::<4>::random(
            [batch, 3, 224, 224],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let mut group = c.benchmark_group(format!("float_forward_b{batch}_224"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(2));
        group.measurement_time(Duration::from_secs(if batch == 1 { 5 } else { 15 }));
        for (name, model) in &models {
            group.bench_function(*name, |b| b.iter(|| model(x.clone()).into_data()));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
