//! ResNet / ResNeXt against torchvision's `QuantizableResNet` (`scripts/gen_resnet_fixtures.py`,
//! torch 2.5.1 / torchvision 0.20.1): float logits of a loaded float state dict, logits after
//! `fuse_model` (BN folded), int8 logits of PyTorch's converted models' state dicts on both
//! engines, and QAT steps followed by `convert`. Full-width models run the crate's own PTQ, int8
//! file and ONNX export. The fixture models are torchvision's classes at width 8 (one block per stage, 32
//! classes): `resnet_basic` (basic blocks) and `resnext_bottleneck` (bottlenecks, 4 groups of
//! 16 per 64 planes: grouped 3×3 convolutions of 2 to 16 channels per group).

use crate::common::int8_logits::{assert_int8_logits, assert_int8_logits_within_one};
use crate::common::{Fixture, assert_close, fixture_path, quanta_stats, to_vec};
use burn::tensor::{Device, Tensor};
use burn_qat::int8::Engine;
use burn_qat::models::{BlockKind, ResNetConfig, load_quantized_resnet, load_resnet};
use burn_qat::nn::ImageClassifier;
use burn_qat::onnx::ExportKind;

const MODELS: [&str; 2] = ["resnet_basic", "resnext_bottleneck"];

fn config(name: &str) -> ResNetConfig {
    let config = match name {
        "resnet_basic" => ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1]),
        "resnext_bottleneck" => ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1, 1])
            .with_groups(4)
            .with_width_per_group(16),
        other => panic!("no fixture model {other}"),
    };
    config.with_width(8).with_num_classes(32)
}

fn path(file: &str) -> std::path::PathBuf {
    fixture_path(&format!("resnet/{file}"))
}

/// The float fixture model `name` (`<name>.pth`).
fn float_model(name: &str, device: &Device) -> burn_qat::models::ResNet {
    load_resnet(&path(&format!("{name}.pth")), &config(name), device).unwrap()
}

fn fixture(name: &str) -> Fixture {
    Fixture::load(&format!("resnet/{name}.safetensors"))
}

#[test]
fn float_logits_match_torchvision() {
    let device = Device::flex();
    for name in MODELS {
        let fx = fixture(name);
        let model = load_resnet(&path(&format!("{name}.pth")), &config(name), &device).unwrap();
        let logits = to_vec(model.forward(fx.tensor("input", &device)));
        assert_close(&logits, &fx.f32("logits"), 1e-4, 1e-4, name);
    }
}

#[test]
fn fused_logits_match_torchvision() {
    let device = Device::flex();
    for name in MODELS {
        let fx = fixture(name);
        let mut model = load_resnet(&path(&format!("{name}.pth")), &config(name), &device).unwrap();
        model.fuse_model(Some(false)).unwrap();
        assert!(model.stem.bn.is_none(), "{name}: stem BN folded");
        let logits = to_vec(model.forward(fx.tensor("input", &device)));
        assert_close(&logits, &fx.f32("fused_logits"), 1e-4, 1e-4, name);
    }
}

#[test]
fn int8_state_dicts_match_pytorch_on_both_engines() {
    let device = Device::flex();
    for name in MODELS {
        let fx = fixture(name);
        for engine in ["fbgemm", "qnnpack"] {
            let what = format!("{name}_{engine}");
            let model = load_quantized_resnet(
                &path(&format!("{what}.pth")),
                &config(name),
                engine.parse::<Engine>().unwrap(),
                &device,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let y = to_vec(model.forward_int8(fx.tensor("input", &device)).unwrap());
            assert_int8_logits(&y, &fx, &format!("q_{engine}"), &what);
        }
    }
}

#[test]
fn a_checkpoint_of_another_block_type_names_the_key() {
    let device = Device::flex();
    let err = load_resnet(
        &path("resnet_basic.pth"),
        &config("resnext_bottleneck"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("resnet_basic.pth"), "{err}");
    assert!(err.contains("layer1.0."), "{err}");
    let err = load_quantized_resnet(
        &path("resnext_bottleneck_fbgemm.pth"),
        &config("resnet_basic"),
        Engine::X86,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("resnext_bottleneck_fbgemm.pth"), "{err}");
}

/// Parameters and buffers of torchvision's builders (without `num_batches_tracked`), as
/// `sum(v.numel() for v in model.state_dict().values())` gives them in torchvision 0.20.1.
#[test]
fn builders_have_torchvisions_sizes() {
    for (config, expected) in [
        (ResNetConfig::resnet18(), 11_699_112),
        (ResNetConfig::resnet50(), 25_610_152),
        (ResNetConfig::resnext101_32x8d(), 88_994_216),
        (ResNetConfig::resnext101_64x4d(), 83_658_152),
    ] {
        assert_eq!(config.parameter_count(), Some(expected), "{config:?}");
        config.validate().unwrap();
    }
    let device = Device::flex();
    let small = config("resnext_bottleneck");
    let model = small.init(&device).unwrap();
    // Burn counts BN's running mean and variance too, as the count above does.
    let built = burn::module::Module::num_params(&model) as u64;
    assert_eq!(Some(built), small.parameter_count());
}

#[test]
fn bad_configurations_are_errors() {
    let device = Device::flex();
    let basic_groups = ResNetConfig::resnet18().with_groups(2);
    assert!(basic_groups.init(&device).is_err());
    let empty_stage = ResNetConfig::new(BlockKind::Basic, [1, 0, 1, 1]);
    assert!(empty_stage.init(&device).is_err());
    let huge = ResNetConfig::resnet50().with_width(usize::MAX / 2);
    let err = huge.init(&device).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
    let model = config("resnet_basic").init(&device).unwrap();
    let small = Tensor::<4>::zeros([1, 3, 16, 16], &device);
    assert!(model.forward_int8(small).is_err());
}

#[test]
fn onnx_export_runs_float_and_int8() {
    let device = Device::flex();
    let name = "resnext_bottleneck";
    let model = load_resnet(&path(&format!("{name}.pth")), &config(name), &device).unwrap();
    let proto = model.to_onnx(ExportKind::Float).unwrap();
    assert!(!proto.graph.unwrap().node.is_empty());
    let model = load_quantized_resnet(
        &path(&format!("{name}_fbgemm.pth")),
        &config(name),
        Engine::X86,
        &device,
    )
    .unwrap();
    let graph = model.to_onnx(ExportKind::Int8).unwrap().graph.unwrap();
    let names: Vec<String> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("layer1.0.conv2.weight_q")),
        "{names:?}"
    );
}

/// QAT as PyTorch runs it (`gen_qat` in the script): `fuse_model(is_qat=True)`, the x86 QAT
/// qconfig, fake quantization off, three SGD steps with momentum (observers off and BN frozen
/// after the first), then `convert`: losses within 1e-4 and int8 logits within one quantum.
#[test]
fn qat_steps_and_convert_match_pytorch() {
    use crate::common::recipes::{prepared_qat_x86, pytorch_qat_steps};
    use burn_qat::convert::convert;

    let fx = Fixture::load("resnet/qat.safetensors");
    let device = Device::flex().autodiff();
    for name in MODELS {
        let model = prepared_qat_x86(float_model(name, &device), &device);
        let mut converted =
            pytorch_qat_steps(model, &fx, |step| format!("{name}.loss{step}"), &device);
        convert(&mut converted, Engine::X86).unwrap();
        let input = fixture(name).tensor("input", &Device::flex());
        let y = to_vec(converted.forward_int8(input).unwrap());
        let what = format!("{name} QAT converted");
        assert_int8_logits_within_one(&y, &fx, &format!("{name}.q"), &what);
    }
}

/// Full-width models through the crate's own pipeline, with no ResNet-specific code in it:
/// `fuse_model`, PTQ (`prepare`, calibration, `convert`) on ResNet-18 and on a ResNeXt of one
/// bottleneck per stage (32 groups of 4 per 64 planes); the int8 model saved in the crate's int8
/// format and loaded into a fresh model gives the same int8 logits bit for bit, and its int8
/// ONNX export runs.
#[test]
fn full_width_ptq_save_load_and_export() {
    use crate::common::recipes::ptq_save_reload_export;
    use burn_qat::quant::QuantBackend;

    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let resnext = ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1, 1])
        .with_groups(32)
        .with_width_per_group(4);
    for (name, config) in [("resnet18", ResNetConfig::resnet18()), ("resnext", resnext)] {
        let config = config.with_num_classes(10);
        let init = || config.init(&device).unwrap();
        ptq_save_reload_export(init, QuantBackend::X86, Engine::X86, 10, tmp.path(), name);
    }
}

/// One layer of a QAT-prepared ResNet run on PyTorch's recorded input: the output (after the
/// layer's output fake-quant) and that fake-quant's qparams after the forward. `layer` is
/// torchvision's module name (`quant`, `conv1`, `layerS.I.convK`, `layerS.I.downsample.0`,
/// `layerS.I.add_relu`, `fc`).
fn run_recorded_layer(
    model: &burn_qat::models::ResNet,
    layer: &str,
    input: impl Fn(&str) -> Tensor<4>,
    fc_input: impl Fn() -> Tensor<2>,
) -> (Vec<f32>, burn_qat::quant::QParams) {
    let fq = |post: &burn_qat::nn::ActivationPostProcess| {
        post.fake_quantize()
            .expect("a QAT output fake-quant")
            .current_qparams()
    };
    match layer {
        "quant" => {
            let y: Tensor<4> = model.quant.forward(input("in"));
            (to_vec(y), fq(&model.quant.activation_post_process))
        }
        "conv1" => (
            to_vec(model.stem.forward(input("in"))),
            fq(&model.stem.activation_post_process),
        ),
        "fc" => (
            to_vec(model.fc.forward(fc_input())),
            fq(&model.fc.activation_post_process),
        ),
        _ => {
            let parts: Vec<&str> = layer.split('.').collect();
            let stage = [&model.layer1, &model.layer2, &model.layer3, &model.layer4][parts[0]
                .trim_start_matches("layer")
                .parse::<usize>()
                .unwrap()
                - 1];
            let block = &stage[parts[1].parse::<usize>().unwrap()];
            let conv = match parts[2] {
                "conv1" => &block.conv1,
                "conv2" => &block.conv2,
                "conv3" => block.conv3.as_ref().unwrap(),
                "downsample" => block.downsample.as_ref().unwrap(),
                "add_relu" => {
                    let y = block
                        .add_relu
                        .add_relu(input("in_main"), input("in_identity"));
                    let post = &block.add_relu.activation_post_process;
                    return (to_vec(y), fq(post));
                }
                other => panic!("no layer {other} in {layer}"),
            };
            (
                to_vec(conv.forward(input("in"))),
                fq(&conv.activation_post_process),
            )
        }
    }
}

/// QAT with fake quantization ON, layer by layer (`gen_qat_layers` in the script): whole-network
/// fake-quant logits are chaotic (one rounding tie flipped by a last-bit difference cascades),
/// so every layer — quant stub, fused conv + BN (+ ReLU) in training mode, residual `add_relu`,
/// fc — runs once on PyTorch's recorded input of one forward of the prepared model (x86 QAT
/// qconfig, observers on). Its output must be ≥ 99% bit-identical to PyTorch's fake-quantized
/// output and everywhere within one quantum, and its output fake-quant's scale within 1e-5
/// (relative) with an equal zero-point.
#[test]
fn qat_layers_with_fake_quant_on_match_pytorch_on_recorded_inputs() {
    use crate::common::recipes::prepared_qat_x86;

    let fx = Fixture::load("resnet/qat_layers.safetensors");
    let device = Device::flex().autodiff();
    for name in MODELS {
        let mut layers: Vec<String> = fx
            .names()
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(&format!("{name}."))?
                    .strip_suffix(".out")
                    .map(str::to_string)
            })
            .collect();
        layers.sort();
        let expected_layers = if name == "resnet_basic" { 18 } else { 23 };
        assert_eq!(layers.len(), expected_layers, "{name}: {layers:?}");
        for layer in &layers {
            // A fresh model per layer: each observer sees exactly the batch PyTorch's saw.
            let model = prepared_qat_x86(float_model(name, &device), &device);
            let key = |what: &str| format!("{name}.{layer}.{what}");
            let (ours, qparams) = run_recorded_layer(
                &model,
                layer,
                |what| fx.tensor(&key(what), &device),
                || fx.tensor(&key("in"), &device),
            );
            let scale = fx.f32(&key("scale"))[0];
            let zero_point = fx.i64(&key("zero_point"))[0];
            let what = format!("{name} {layer}");
            assert_close(
                &qparams.scale,
                &[scale],
                0.0,
                1e-5,
                &format!("{what} scale"),
            );
            assert_eq!(qparams.zero_point, vec![zero_point], "{what} zero-point");
            let stats = quanta_stats(&ours, &fx.f32(&key("out")), scale);
            println!(
                "{what}: {:.4} exact, worst {} quanta",
                stats.exact, stats.worst
            );
            assert!(
                stats.exact >= 0.99 && stats.worst <= 1.0 + 1e-3,
                "{what}: {:.4} exact, {:.4} within one quantum, worst {} quanta",
                stats.exact,
                stats.within_one,
                stats.worst
            );
        }
    }
}
