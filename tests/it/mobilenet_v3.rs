//! MobileNetV3 against torchvision's `QuantizableMobileNetV3`
//! (`scripts/gen_mobilenet_v3_fixtures.py`, torch 2.5.1 / torchvision 0.20.1): float logits of
//! a loaded float state dict, logits after `fuse_model` (BN folded), int8 logits of PyTorch's
//! converted models' state dicts on both engines, QAT with fake quantization on (layer by
//! layer on PyTorch's recorded inputs) and off (three SGD steps, then `convert`). The fixture
//! model is torchvision's `mobilenet_v3_small` at width 0.25 with the reduced tail, 16
//! classes. Full-size builders are checked against torchvision's sizes, and a large model
//! goes through the crate's own PTQ, int8 file and ONNX export.

use crate::common::int8_logits::assert_int8_logits;
use crate::common::{Fixture, assert_close, fixture_path, to_vec};
use burn::tensor::{Device, Tensor};
use burn_qat::int8::Engine;
use burn_qat::models::{
    MobileNetV3, MobileNetV3Config, load_mobilenet_v3, load_quantized_mobilenet_v3,
};
use burn_qat::nn::ImageClassifier;
use burn_qat::onnx::ExportKind;
use burn_qat::quant::{QConfig, QuantBackend};

fn config() -> MobileNetV3Config {
    MobileNetV3Config::small()
        .with_width_mult(0.25)
        .with_reduced_tail(true)
        .with_num_classes(16)
        .with_dropout(0.0)
}

fn path(file: &str) -> std::path::PathBuf {
    fixture_path(&format!("mobilenet_v3/{file}"))
}

fn fixture() -> Fixture {
    Fixture::load("mobilenet_v3/small.safetensors")
}

fn float_model(device: &Device) -> MobileNetV3 {
    load_mobilenet_v3(&path("small.pth"), &config(), device).unwrap()
}

#[test]
fn float_logits_match_torchvision() {
    let device = Device::flex();
    let fx = fixture();
    let logits = to_vec(float_model(&device).forward(fx.tensor("input", &device)));
    assert_close(&logits, &fx.f32("logits"), 1e-4, 1e-4, "float logits");
}

#[test]
fn fused_logits_match_torchvision() {
    let device = Device::flex();
    let fx = fixture();
    let mut model = float_model(&device);
    model.fuse_model(Some(false)).unwrap();
    assert!(model.stem.conv.bn.is_none(), "stem BN folded");
    let logits = to_vec(model.forward(fx.tensor("input", &device)));
    assert_close(&logits, &fx.f32("fused_logits"), 1e-4, 1e-4, "fused logits");
}

#[test]
fn int8_state_dicts_match_pytorch_on_both_engines() {
    let device = Device::flex();
    let fx = fixture();
    for engine in ["fbgemm", "qnnpack"] {
        let what = format!("small_{engine}");
        let model = load_quantized_mobilenet_v3(
            &path(&format!("{what}.pth")),
            &config(),
            engine.parse::<Engine>().unwrap(),
            &device,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let y = to_vec(model.forward_int8(fx.tensor("input", &device)).unwrap());
        assert_int8_logits(&y, &fx, &format!("q_{engine}"), &what);
    }
}

#[test]
fn a_checkpoint_of_another_configuration_names_the_key() {
    let device = Device::flex();
    let mut large = config();
    large.arch = burn_qat::models::MobileNetV3Arch::Large;
    let err = load_mobilenet_v3(&path("small.pth"), &large, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("small.pth"), "{err}");
    assert!(err.contains("features."), "{err}");
    let err = load_quantized_mobilenet_v3(
        &path("small_qnnpack.pth"),
        &config().with_reduced_tail(false),
        Engine::Qnnpack,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("small_qnnpack.pth"), "{err}");
}

/// `sum(v.numel() for k, v in model.state_dict().items() if "num_batches" not in k)` of
/// torchvision 0.20.1's builders (parameters and BN running statistics).
#[test]
fn builders_have_torchvisions_sizes() {
    for (config, expected) in [
        (MobileNetV3Config::large(), 5_507_432),
        (
            MobileNetV3Config::large().with_reduced_tail(true),
            2_588_472,
        ),
        (MobileNetV3Config::small(), 2_554_968),
        (
            MobileNetV3Config::small().with_reduced_tail(true),
            1_108_616,
        ),
        (
            MobileNetV3Config::large()
                .with_width_mult(0.75)
                .with_num_classes(10),
            2_444_602,
        ),
        (
            MobileNetV3Config::small()
                .with_width_mult(0.5)
                .with_reduced_tail(true)
                .with_num_classes(10),
            176_210,
        ),
    ] {
        assert_eq!(config.parameter_count(), Some(expected), "{config:?}");
        config.validate().unwrap();
    }
    let device = Device::flex();
    let model = config().init(&device).unwrap();
    let built = burn::module::Module::num_params(&model) as u64;
    assert_eq!(Some(built), config().parameter_count());
}

#[test]
fn bad_configurations_are_errors() {
    let device = Device::flex();
    for bad in [
        MobileNetV3Config::large().with_width_mult(0.0),
        MobileNetV3Config::large().with_width_mult(f64::NAN),
        MobileNetV3Config::small().with_num_classes(0),
        MobileNetV3Config::small().with_dropout(1.0),
        MobileNetV3Config::small().with_dilated(true),
    ] {
        assert!(bad.init(&device).is_err(), "{bad:?}");
    }
    let huge = MobileNetV3Config::large().with_width_mult(1e12);
    let err = huge.init(&device).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
    let huge = MobileNetV3Config::large().with_num_classes(usize::MAX / 2);
    let err = huge.validate().unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
    let large = MobileNetV3Config::large();
    large.check_forward_size(1, 224, 224, true).unwrap();
    let err = large
        .check_forward_size(1 << 32, 1 << 32, 1 << 32, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4294967296 images"), "{err}");
    let model = config().init(&device).unwrap();
    assert_eq!(model.num_classes(), 16);
    let small = Tensor::<4>::zeros([1, 3, 16, 16], &device);
    assert!(model.forward_int8(small).is_err());
}

#[test]
fn onnx_export_runs_float_and_int8() {
    let device = Device::flex();
    let proto = float_model(&device).to_onnx(ExportKind::Float).unwrap();
    assert!(!proto.graph.unwrap().node.is_empty());
    let model = load_quantized_mobilenet_v3(
        &path("small_qnnpack.pth"),
        &config(),
        Engine::Qnnpack,
        &device,
    )
    .unwrap();
    let graph = model.to_onnx(ExportKind::Int8).unwrap().graph.unwrap();
    let ops: Vec<&str> = graph
        .node
        .iter()
        .filter_map(|n| n.op_type.as_deref())
        .collect();
    for op in ["GlobalAveragePool", "HardSigmoid", "Mul", "Add"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
}

/// The QAT model as PyTorch's script prepares it: train mode, `fuse_model(is_qat=True)`, the
/// x86 QAT qconfig.
fn qat_model(device: &Device) -> MobileNetV3 {
    crate::common::recipes::prepared_qat_x86(float_model(device), device)
}

/// Fake quantization on, as PyTorch's first training forward: each recorded layer, fresh from
/// `prepare_qat` as PyTorch's was, run on PyTorch's recorded input, gives PyTorch's output
/// (the QAT ConvBn stem and its hardswish, a squeeze-excitation block and its hardsigmoid's
/// fixed-qparams fake-quant, a block with its residual add, the classifier's first linear
/// layer); and the whole forward's loss.
#[test]
fn qat_layers_with_fake_quant_on_match_pytorch_on_its_inputs() {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Int, TensorData};

    let fx = Fixture::load("mobilenet_v3/qat.safetensors");
    let device = Device::flex().autodiff();
    let model = qat_model(&device);
    let se = model.blocks[3].se.as_ref().unwrap();
    let gate = &se.scale_activation;
    assert!(
        gate.activation_post_process.is_some(),
        "prepare_qat's fixed fake-quant"
    );
    let x4 = |name: &str| -> Tensor<4> { fx.tensor(&format!("layer.{name}.x"), &device) };
    let cases: Vec<(&str, Vec<f32>)> = vec![
        (
            "features.0.0",
            to_vec(model.stem.conv.forward(x4("features.0.0"))),
        ),
        (
            "features.0.2",
            to_vec(
                model
                    .stem
                    .hardswish
                    .as_ref()
                    .unwrap()
                    .forward(x4("features.0.2")),
            ),
        ),
        (
            "features.4.block.2",
            to_vec(se.forward(x4("features.4.block.2"))),
        ),
        (
            "features.4.block.2.scale_activation",
            to_vec(gate.forward(x4("features.4.block.2.scale_activation"))),
        ),
        (
            "features.5",
            to_vec(model.blocks[4].forward(x4("features.5"))),
        ),
        (
            "classifier.0",
            to_vec(
                model
                    .hidden
                    .forward(fx.tensor::<2>("layer.classifier.0.x", &device)),
            ),
        ),
    ];
    for (name, ours) in cases {
        let expected = fx.f32(&format!("layer.{name}.y"));
        let equal = ours
            .iter()
            .zip(&expected)
            .filter(|(a, b)| (*a - *b).abs() <= 1e-6 + 1e-5 * b.abs())
            .count();
        println!("{name}: {equal}/{} outputs equal", expected.len());
        assert_close(&ours, &expected, 1e-5, 1e-5, name);
    }
    // The hardsigmoid's outputs lie on the fixed grid of 1/256.
    let gated = fx.f32("layer.features.4.block.2.scale_activation.y");
    assert!(
        gated
            .iter()
            .all(|v| (v * 256.0).fract() == 0.0 && (0.0..=1.0).contains(v))
    );

    let fresh = qat_model(&device);
    let x: Tensor<4> = fx.tensor("batch0.x", &device);
    let x = x.narrow(0, 0, 2);
    let labels = fx.i64("batch0.y")[..2].to_vec();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [2]), &device);
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(fresh.forward(x), y);
    let loss = to_vec(loss)[0];
    println!(
        "fake-quant-on loss {loss} (PyTorch {})",
        fx.scalar("fq_loss")
    );
    assert_close(
        &[loss],
        &[fx.scalar("fq_loss")],
        0.0,
        1e-4,
        "fake-quant-on loss",
    );
}

/// QAT as PyTorch runs it (`gen_qat` in the script): fake quantization off (the hardsigmoid's
/// fixed fake-quant too), three SGD steps with momentum (observers off and BN frozen after the
/// first), then `convert`: losses within 1e-4 and int8 logits as PyTorch's.
#[test]
fn qat_steps_and_convert_match_pytorch() {
    use crate::common::recipes::pytorch_qat_steps;
    use burn_qat::convert::convert;
    use burn_qat::quantize::disable_fake_quant;

    let fx = Fixture::load("mobilenet_v3/qat.safetensors");
    let device = Device::flex().autodiff();
    let mut model = qat_model(&device);
    disable_fake_quant(&mut model);
    let gate = &model.blocks[3].se.as_ref().unwrap().scale_activation;
    assert!(
        !gate
            .activation_post_process
            .as_ref()
            .unwrap()
            .fake_quant_enabled()
    );
    let mut converted = pytorch_qat_steps(model, &fx, |step| format!("loss{step}"), &device);
    convert(&mut converted, Engine::X86).unwrap();
    let input = fixture().tensor("input", &Device::flex());
    let y = to_vec(converted.forward_int8(input).unwrap());
    assert_int8_logits(&y, &fx, "q", "QAT converted");
}

/// A large model through the crate's own pipeline, with no MobileNetV3-specific code in it:
/// `fuse_model`, PTQ (`prepare`, calibration, `convert`), the int8 model saved in the crate's
/// int8 format and loaded into a fresh model gives the same int8 logits bit for bit, and its
/// int8 ONNX export runs.
#[test]
fn large_ptq_save_load_and_export() {
    use crate::common::recipes::ptq_save_reload_export;

    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let config = MobileNetV3Config::large()
        .with_width_mult(0.5)
        .with_num_classes(10);
    let init = || config.init(&device).unwrap();
    let (backend, engine) = (QuantBackend::Qnnpack, Engine::Qnnpack);
    ptq_save_reload_export(init, backend, engine, 10, tmp.path(), "mnv3");
}

/// torchvision's own route to its quantized MobileNetV3 (the official checkpoint is a QAT
/// state dict): PyTorch's QAT model of `qat_steps_and_convert_match_pytorch`, saved before
/// `convert`, loads into a model fused for QAT and prepared with the same qconfig, and its
/// `convert` gives PyTorch's int8 logits.
#[test]
fn a_qat_state_dict_loads_and_converts_as_torchvision_does() {
    use burn_qat::convert::convert;
    use burn_qat::models::load_qat_mobilenet_v3;

    let device = Device::flex();
    let qconfig = QConfig::default_qat(QuantBackend::X86);
    let mut model =
        load_qat_mobilenet_v3(&path("small_qat_x86.pth"), &config(), qconfig, &device).unwrap();
    let gate = model.blocks[3]
        .se
        .as_ref()
        .unwrap()
        .scale_activation
        .activation_post_process
        .as_ref();
    assert!(!gate.unwrap().fake_quant_enabled(), "the saved switch");
    convert(&mut model, Engine::X86).unwrap();
    burn_qat::convert::strip_float(&mut model).unwrap();
    let gate = &model.blocks[3].se.as_ref().unwrap().scale_activation;
    assert!(
        gate.activation_post_process.is_none(),
        "stripped as PyTorch's convert does"
    );
    let fx = Fixture::load("mobilenet_v3/qat.safetensors");
    let y = to_vec(
        model
            .forward_int8(fixture().tensor("input", &device))
            .unwrap(),
    );
    assert_int8_logits(&y, &fx, "q", "QAT state dict converted");

    let qnnpack = QConfig::default_qat(QuantBackend::Qnnpack);
    let err = load_qat_mobilenet_v3(&path("small_qat_x86.pth"), &config(), qnnpack, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("small_qat_x86.pth"), "{err}");
    println!("per-tensor qconfig on a per-channel checkpoint: {err}");
}

/// `TorchvisionModel::load_torchvision_int8` (what `burn-qat --arch mobilenet_v3_large
/// --quantized` and the builders call) takes either int8 form torchvision has: a converted
/// model's state dict, and a QAT state dict saved before `convert` (the official
/// `mobilenet_v3_large_qnnpack-5bcacf28.pth`'s form), told apart by its keys; both come back
/// converted with PyTorch's int8 logits.
#[test]
fn the_int8_loader_takes_converted_and_qat_state_dicts() {
    use burn_qat::models::{TorchvisionModel, is_qat_state_dict};

    let device = Device::flex();
    let input = || fixture().tensor("input", &device);
    let cases = [
        (
            "small_qnnpack.pth",
            Engine::Qnnpack,
            fixture(),
            "q_qnnpack",
            false,
        ),
        (
            "small_fbgemm.pth",
            Engine::X86,
            fixture(),
            "q_fbgemm",
            false,
        ),
        (
            "small_qat_x86.pth",
            Engine::X86,
            Fixture::load("mobilenet_v3/qat.safetensors"),
            "q",
            true,
        ),
    ];
    for (file, engine, fx, key, qat) in cases {
        let state = burn_qat::io::read_quantized_state_dict(&path(file)).unwrap();
        assert_eq!(
            is_qat_state_dict(state.keys().map(String::as_str)),
            qat,
            "{file}"
        );
        let model = <MobileNetV3 as TorchvisionModel>::load_torchvision_int8(
            &path(file),
            &config(),
            engine,
            &device,
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let y = to_vec(model.forward_int8(input()).unwrap());
        assert_int8_logits(&y, &fx, key, file);
    }
    // The converted QAT model saved in the crate's int8 format loads back as `burn-qat infer
    // --quantized` loads it (a fresh model), with the same logits bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qat.int8");
    let qat = path("small_qat_x86.pth");
    let model = <MobileNetV3 as TorchvisionModel>::load_torchvision_int8(
        &qat,
        &config(),
        Engine::X86,
        &device,
    )
    .unwrap();
    burn_qat::io::save_int8_model(&model, &file, &Default::default()).unwrap();
    let kind = burn_qat::infer::WeightsKind::Int8(Engine::Qnnpack);
    let (loaded, engine) =
        burn_qat::infer::load_weights_with_engine(&file, &config(), kind, &device).unwrap();
    assert_eq!(engine, Some(Engine::X86), "the engine saved in the file");
    let want = to_vec(model.forward_int8(input()).unwrap());
    let got = to_vec(loaded.forward_int8(input()).unwrap());
    crate::common::assert_bits(&got, &want, "QAT-converted model through the crate's file");

    // The per-channel QAT file on qnnpack (per-tensor qconfig) names the file.
    let err = <MobileNetV3 as TorchvisionModel>::load_torchvision_int8(
        &path("small_qat_x86.pth"),
        &config(),
        Engine::Qnnpack,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("small_qat_x86.pth"), "{err}");
}
