//! Fake-quant forward + backward throughput on the autodiff flex device (elements/s), per-tensor
//! and per-channel, on a 1×32×56×56 activation-sized tensor.
//!
//! `cargo bench --bench fake_quant`

use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::quant::{fake_quantize_per_channel, fake_quantize_per_tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let shape = [1, 32, 56, 56];
    let numel: usize = shape.iter().product();
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let scales: Vec<f32> = (0..32).map(|i| 0.01 + 0.001 * i as f32).collect();
    let zps: Vec<i64> = (0..32).map(|i| 100 + i).collect();

    let mut group = c.benchmark_group("fake_quant_fwd_bwd");
    group.throughput(Throughput::Elements(numel as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("per_tensor_1x32x56x56", |b| {
        b.iter(|| {
            let xg = x.clone().detach().require_grad();
            let y = fake_quantize_per_tensor(xg.clone(), 0.02, 128, 0, 255);
            let grads = y.sum().backward();
            xg.grad(&grads).expect("gradient")
        })
    });
    group.bench_function("per_channel_axis1_1x32x56x56", |b| {
        b.iter(|| {
            let xg = x.clone().detach().require_grad();
            let y = fake_quantize_per_channel(xg.clone(), &scales, &zps, 1, 0, 255).expect("fq");
            let grads = y.sum().backward();
            xg.grad(&grads).expect("gradient")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
