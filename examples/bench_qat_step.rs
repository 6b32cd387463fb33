//! Times one MobileNetV2 training step — float, and QAT (`fuse_model(true)` + `prepare_qat`) —
//! on any Burn device, and prints one JSON line per configuration. Used for the GPU table
//! (`cargo run --release --features cuda --example bench_qat_step -- --device cuda`); the CPU
//! numbers come from the criterion bench `qat_step`. PyTorch's side: `scripts/bench_qat_step.py`.
//! `qat_x86_lsq4` is QAT with LSQ and 4-bit weights (`QConfig::lsq_qat`), learning scale and
//! zero-point from the first warm-up step on.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use burn_qat::device::{check_device, parse_device};
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::{enable_param_learning, prepare_qat, replace_relu};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// `flex`, or `cuda` / `wgpu` when built with that feature.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Input side.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Only this configuration; all three by default. One per process gives each its own
    /// peak-RSS figure.
    #[arg(long, value_parser = ["float", "qat_qnnpack", "qat_x86", "qat_x86_lsq4"])]
    config: Option<String>,
}

/// The process's peak resident set (Linux `VmHWM`), in MiB; `None` elsewhere.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn model(qat: Option<QConfig>, device: &Device) -> burn_qat::Result<MobileNetV2> {
    let mut model = MobileNetV2Config::new().with_num_classes(10).init(device)?;
    replace_relu(&mut model)?;
    if let Some(qconfig) = qat {
        model.fuse_model(Some(true))?;
        prepare_qat(&mut model, qconfig, device)?;
    }
    Ok(model)
}

fn main() -> burn_qat::Result<()> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    check_device(&device)?;
    let device = device.autodiff();
    let (b, s) = (args.batch, args.size);
    let x = Tensor::<4>::random([b, 3, s, s], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 10).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for (name, qat) in [
        ("float", None),
        (
            "qat_qnnpack",
            Some(QConfig::default_qat(QuantBackend::Qnnpack)),
        ),
        ("qat_x86", Some(QConfig::default_qat(QuantBackend::X86))),
        (
            "qat_x86_lsq4",
            Some(QConfig::lsq_qat(QuantBackend::X86, 4)?),
        ),
    ] {
        if args.config.as_deref().is_some_and(|c| c != name) {
            continue;
        }
        let mut net = model(qat, &device)?;
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .init();
        let mut times = Vec::new();
        for i in 0..args.iters + 3 {
            let start = Instant::now();
            let loss = loss_fn.forward(net.forward(x.clone()), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(0.01, net, grads);
            if i == 0 {
                // LSQ: static estimates for the first step, learned from then on.
                enable_param_learning(&mut net);
            }
            // Wait for the device: read one updated weight back (streams run in order).
            let _ = net
                .classifier
                .linear
                .weight
                .val()
                .slice([0..1, 0..1])
                .into_data();
            if i >= 3 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let rss = peak_rss_mib().map_or("null".into(), |m| format!("{m:.0}"));
        println!(
            "{{\"device\": \"{}\", \"config\": \"{name}\", \"batch\": {b}, \"size\": {s}, \
             \"median_ms\": {:.2}, \"min_ms\": {:.2}, \"peak_rss_mib\": {rss}}}",
            args.device,
            times[times.len() / 2],
            times[0]
        );
    }
    Ok(())
}
