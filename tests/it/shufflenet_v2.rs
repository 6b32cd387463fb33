//! ShuffleNetV2 against torchvision's `QuantizableShuffleNetV2`
//! (`scripts/gen_shufflenet_v2_fixtures.py`, torch 2.5.1 / torchvision 0.20.1): float logits of
//! a loaded float state dict, logits after `fuse_model` (BN folded), int8 logits of PyTorch's
//! converted models' state dicts on both engines, the quantized `x.mean([2, 3])` on its own,
//! QAT steps followed by `convert`, and single layers of a QAT model with fake quantization on,
//! held to PyTorch on PyTorch's recorded inputs. The fixture model is torchvision's class with
//! stages_repeats [2, 1, 2], stages_out_channels [8, 16, 32, 64, 128] and 32 classes: stride-1
//! blocks (channel split, quantized cat on its general path) in stages 2 and 4.

use crate::common::int8_logits::{assert_int8_logits_equal, assert_int8_logits_within_one};
use crate::common::{Fixture, assert_close, fixture_path, to_vec, u8s};
use burn::tensor::{Device, Tensor};
use burn_qat::int8::{Engine, PoolInputLayout, QParamsPt, QTensor, spatial_mean};
use burn_qat::models::{
    ShuffleNetV2, ShuffleNetV2Config, load_quantized_shufflenet_v2, load_shufflenet_v2,
};
use burn_qat::nn::ActivationPostProcess;
use burn_qat::nn::ImageClassifier;
use burn_qat::onnx::ExportKind;

fn config() -> ShuffleNetV2Config {
    ShuffleNetV2Config::new([2, 1, 2], [8, 16, 32, 64, 128]).with_num_classes(32)
}

fn path(file: &str) -> std::path::PathBuf {
    fixture_path(&format!("shufflenet_v2/{file}"))
}

fn fixture(name: &str) -> Fixture {
    Fixture::load(&format!("shufflenet_v2/{name}.safetensors"))
}

fn float_model(device: &Device) -> ShuffleNetV2 {
    load_shufflenet_v2(&path("model.pth"), &config(), device).unwrap()
}

#[test]
fn float_logits_match_torchvision() {
    let device = Device::flex();
    let fx = fixture("model");
    let logits = to_vec(float_model(&device).forward(fx.tensor("input", &device)));
    assert_close(&logits, &fx.f32("logits"), 1e-4, 1e-4, "float logits");
}

#[test]
fn fused_logits_match_torchvision() {
    let device = Device::flex();
    let fx = fixture("model");
    let mut model = float_model(&device);
    model.fuse_model(Some(false)).unwrap();
    assert!(model.conv1.bn.is_none(), "conv1's BN folded");
    assert!(
        model.stage2[0].branch1[0].bn.is_none() && model.stage4[1].branch2[1].bn.is_none(),
        "the blocks' BNs folded"
    );
    let logits = to_vec(model.forward(fx.tensor("input", &device)));
    assert_close(&logits, &fx.f32("fused_logits"), 1e-4, 1e-4, "fused logits");
}

/// Every logit equal to PyTorch's, on both engines. `small` (1×32×32) puts stage 4 at 1×1,
/// where PyTorch's channel slice is channels-last contiguous and cat takes its fast path; only
/// qnnpack runs it (PyTorch 2.5.1's x86 quantized mean raises on a 1×1 conv output).
#[test]
fn int8_state_dicts_match_pytorch_on_both_engines() {
    let device = Device::flex();
    let fx = fixture("model");
    for (engine, inputs) in [
        ("fbgemm", &["input"][..]),
        ("qnnpack", &["input", "small"][..]),
    ] {
        let model = load_quantized_shufflenet_v2(
            &path(&format!("model_{engine}.pth")),
            &config(),
            engine.parse::<Engine>().unwrap(),
            &device,
        )
        .unwrap_or_else(|e| panic!("{engine}: {e}"));
        for input in inputs {
            let key = format!("q_{engine}_{input}");
            let y = to_vec(model.forward_int8(fx.tensor(input, &device)).unwrap());
            assert_int8_logits_equal(&y, &fx, &key, &key);
        }
    }
}

/// `x.mean([2, 3])` on quint8 tensors: qnnpack's global average pooling, x86's NCHW fast path
/// and its dequantize → f32 mean → quantize path (channels-last), 2×2 (ties), 7×7 and 9×9
/// (PyTorch's cascade sum) and odd planes.
#[test]
fn int8_spatial_mean_matches_pytorch() {
    let fx = fixture("mean");
    for case in fx.case_names() {
        let shape = fx.shape(&format!("{case}.x"));
        let qparams = QParamsPt::new(
            fx.f32(&format!("{case}.scale"))[0],
            fx.i64(&format!("{case}.zero_point"))[0] as i32,
        )
        .unwrap();
        let x = QTensor::from_raw(u8s(&fx, &format!("{case}.x")), &shape, qparams).unwrap();
        for (engine, torch_engine) in [(Engine::X86, "fbgemm"), (Engine::Qnnpack, "qnnpack")] {
            for (layout, name) in [
                (PoolInputLayout::Contiguous, "nchw"),
                (PoolInputLayout::ChannelsLast, "nhwc"),
            ] {
                let what = format!("{case} {shape:?} {torch_engine} {name}");
                let y = spatial_mean(&x, engine, layout).unwrap();
                assert_eq!(y.shape(), &shape[..2], "{what}");
                assert_eq!(y.qparams(), qparams, "{what}");
                let expected = u8s(&fx, &format!("{case}.y_{torch_engine}_{name}"));
                assert_eq!(y.data(), &expected[..], "{what}");
            }
        }
    }
}

#[test]
fn checkpoints_of_another_configuration_name_the_key() {
    let device = Device::flex();
    let other = ShuffleNetV2Config::new([2, 2, 2], [8, 16, 32, 64, 128]).with_num_classes(32);
    let err = load_shufflenet_v2(&path("model.pth"), &other, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.pth"), "{err}");
    assert!(err.contains("stage3.1."), "{err}");
    let err = load_quantized_shufflenet_v2(&path("model_fbgemm.pth"), &other, Engine::X86, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_fbgemm.pth"), "{err}");
    assert!(err.contains("stage3.1."), "{err}");
}

/// Parameters and buffers of torchvision's builders (without `num_batches_tracked`), as
/// `sum(v.numel() for v in model.state_dict().values())` gives them in torchvision 0.20.1.
#[test]
fn builders_have_torchvisions_sizes() {
    for (config, expected) in [
        (ShuffleNetV2Config::x0_5(), 1_374_744),
        (ShuffleNetV2Config::x1_0(), 2_294_784),
        (ShuffleNetV2Config::x1_5(), 3_527_064),
        (ShuffleNetV2Config::x2_0(), 7_427_712),
    ] {
        assert_eq!(config.parameter_count(), Some(expected), "{config:?}");
        config.validate().unwrap();
    }
    let device = Device::flex();
    let model = ShuffleNetV2Config::x0_5()
        .with_num_classes(10)
        .init(&device)
        .unwrap();
    let built = burn::module::Module::num_params(&model) as u64;
    let counted = ShuffleNetV2Config::x0_5()
        .with_num_classes(10)
        .parameter_count();
    assert_eq!(Some(built), counted);
    assert_eq!(model.num_classes(), 10);
}

#[test]
fn bad_configurations_and_inputs_are_errors() {
    let device = Device::flex();
    let odd = ShuffleNetV2Config::new([1, 1, 1], [8, 15, 32, 64, 128]);
    let err = odd.init(&device).unwrap_err().to_string();
    assert!(err.contains("even"), "{err}");
    let empty = ShuffleNetV2Config::new([1, 0, 1], [8, 16, 32, 64, 128]);
    assert!(empty.init(&device).is_err());
    let no_classes = ShuffleNetV2Config::x1_0().with_num_classes(0);
    assert!(no_classes.validate().is_err());
    let huge = ShuffleNetV2Config::new([1, 1, 1], [8, 16, 32, 64, usize::MAX / 4]);
    let err = huge.init(&device).unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
    let wide = ShuffleNetV2Config::x1_0().with_num_classes(usize::MAX / 8);
    let err = wide.check_model_size().unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");

    assert!(ShuffleNetV2::check_input_shape(&[1, 3, 1, 1]).is_ok());
    assert!(ShuffleNetV2::check_input_shape(&[0, 3, 8, 8]).is_err());
    assert!(ShuffleNetV2::check_input_shape(&[1, 4, 8, 8]).is_err());
    assert!(ShuffleNetV2::check_input_shape(&[3, 8, 8]).is_err());
    // An unconverted model has no int8 forward: an error, not a panic.
    let model = config().init(&device).unwrap();
    let x = Tensor::<4>::zeros([1, 3, 32, 32], &device);
    assert!(model.forward_int8(x).is_err());
}

#[test]
fn onnx_export_runs_float_and_int8() {
    let device = Device::flex();
    let graph = float_model(&device)
        .to_onnx(ExportKind::Float)
        .unwrap()
        .graph
        .unwrap();
    let ops: Vec<&str> = graph
        .node
        .iter()
        .filter_map(|n| n.op_type.as_deref())
        .collect();
    // Two stride-1 blocks split their input: two Slices each.
    assert_eq!(ops.iter().filter(|&&o| o == "Slice").count(), 4, "{ops:?}");
    assert_eq!(ops.iter().filter(|&&o| o == "Concat").count(), 5, "{ops:?}");
    let model =
        load_quantized_shufflenet_v2(&path("model_fbgemm.pth"), &config(), Engine::X86, &device)
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
            .any(|n| n.starts_with("stage2.1.branch2.1.weight_q")),
        "{names:?}"
    );
}

/// The QAT model of the script: float weights, `fuse_model(is_qat=True)`, `prepare_qat` with
/// the x86 QAT qconfig, training mode.
fn prepared_qat(device: &Device) -> ShuffleNetV2 {
    crate::common::recipes::prepared_qat_x86(float_model(device), device)
}

/// Single layers of a QAT model with fake quantization and observers on, each given the input
/// PyTorch recorded for it in one training forward (`record_layers` in the script): conv1 (a
/// fused ConvBnReLU2d), a stride-2 and a stride-1 block, the stride-1 block's cat on its own,
/// conv5 and fc. Each layer runs once on a fresh model, so its observers see what PyTorch's
/// saw; its output (fake-quantized) and its output fake-quant's scale and zero-point must
/// match. Outputs are multiples of the scale, so a float ulp in the convolution can move a
/// value across a rounding boundary: at most 1% of the values may be one quantum off.
#[test]
fn qat_layers_with_fake_quant_on_match_pytorch_on_its_inputs() {
    let fx = fixture("qat");
    let device = Device::flex().autodiff();
    type Run = fn(&ShuffleNetV2, &Fixture, &str, &Device) -> (Vec<f32>, ActivationPostProcess);
    let layers: [(&str, Run); 6] = [
        ("conv1", |m, fx, k, d| {
            let y = m.conv1.forward(fx.tensor::<4>(k, d));
            (to_vec(y), m.conv1.activation_post_process.clone())
        }),
        ("stage2.0", |m, fx, k, d| {
            let y = m.stage2[0].forward(fx.tensor::<4>(k, d));
            (to_vec(y), m.stage2[0].cat.activation_post_process.clone())
        }),
        ("stage2.1", |m, fx, k, d| {
            let y = m.stage2[1].forward(fx.tensor::<4>(k, d));
            (to_vec(y), m.stage2[1].cat.activation_post_process.clone())
        }),
        ("stage2.1.cat", |m, fx, k, d| {
            let inputs = vec![
                fx.tensor::<4>(&format!("{k}0"), d),
                fx.tensor::<4>(&format!("{k}1"), d),
            ];
            let y = m.stage2[1].cat.cat(inputs, 1);
            (to_vec(y), m.stage2[1].cat.activation_post_process.clone())
        }),
        ("conv5", |m, fx, k, d| {
            let y = m.conv5.forward(fx.tensor::<4>(k, d));
            (to_vec(y), m.conv5.activation_post_process.clone())
        }),
        ("fc", |m, fx, k, d| {
            let y = m.fc.forward(fx.tensor::<2>(k, d));
            (to_vec(y), m.fc.activation_post_process.clone())
        }),
    ];
    for (name, run) in layers {
        let model = prepared_qat(&device);
        let (ours, post) = run(&model, &fx, &format!("layer.{name}.in"), &device);
        let ActivationPostProcess::FakeQuantize(fq) = post else {
            panic!("{name}: no output fake-quant after prepare_qat");
        };
        let qparams = fq.current_qparams();
        let scale = fx.f32(&format!("layer.{name}.scale"))[0];
        let zp = fx.i64(&format!("layer.{name}.zero_point"))[0];
        assert_close(
            &qparams.scale,
            &[scale],
            0.0,
            1e-5,
            &format!("{name} scale"),
        );
        assert_eq!(qparams.zero_point, vec![zp], "{name} zero-point");
        let expected = fx.f32(&format!("layer.{name}.out"));
        assert_eq!(ours.len(), expected.len(), "{name}");
        let off: Vec<f32> = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let equal = off.iter().filter(|&&d| d <= 1e-5).count();
        let worst = off.iter().fold(0.0f32, |a, &b| a.max(b));
        println!(
            "{name}: {equal}/{} fake-quantized outputs equal, worst {:.2} quanta",
            off.len(),
            worst / scale
        );
        assert!(
            equal * 100 >= off.len() * 99 && worst <= scale * 1.001 + 1e-5,
            "{name}: {equal}/{} equal, worst {worst} (scale {scale})",
            off.len()
        );
    }
}

/// QAT as PyTorch runs it (`gen_qat` in the script): `fuse_model(is_qat=True)`, the x86 QAT
/// qconfig, fake quantization off, three SGD steps with momentum (observers off and BN frozen
/// after the first), then `convert`: losses within 1e-4 and int8 logits within one quantum.
#[test]
fn qat_steps_and_convert_match_pytorch() {
    use crate::common::recipes::pytorch_qat_steps;
    use burn_qat::convert::convert;

    let fx = fixture("qat");
    let device = Device::flex().autodiff();
    let model = prepared_qat(&device);
    let mut converted = pytorch_qat_steps(model, &fx, |step| format!("loss{step}"), &device);
    convert(&mut converted, Engine::X86).unwrap();
    let input = fixture("model").tensor("input", &Device::flex());
    let y = to_vec(converted.forward_int8(input).unwrap());
    assert_int8_logits_within_one(&y, &fx, "q", "QAT converted");
}

/// A full-width ShuffleNetV2 x1.0 through the crate's own pipeline, with no ShuffleNetV2 code
/// in it: `fuse_model`, PTQ (`prepare`, calibration, `convert`); the int8 model saved in the
/// crate's int8 format and loaded into a fresh model gives the same int8 logits bit for bit,
/// and its int8 ONNX export runs.
#[test]
fn full_width_ptq_save_load_and_export() {
    use crate::common::recipes::ptq_save_reload_export;
    use burn_qat::quant::QuantBackend;

    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let config = ShuffleNetV2Config::x1_0().with_num_classes(10);
    let init = || config.init(&device).unwrap();
    ptq_save_reload_export(
        init,
        QuantBackend::X86,
        Engine::X86,
        10,
        tmp.path(),
        "shufflenet_v2",
    );
}

/// The stride-1 block's join on PyTorch's int8 tensors: `cat([x1, b], 1)` with `x1` the first
/// half of an NCHW input (a slice keeping the input's qparams) and `b` a channels-last tensor
/// of other qparams, through the crate's batch narrow and `FloatFunctional` cat. PyTorch takes
/// its general path (dequantize, cat, quantize) unless the slice is channels-last contiguous
/// (`[1, C, 1, 1]`); the fixture's qparams make the two paths differ, which the test checks
/// first, so that taking the wrong path fails.
#[test]
fn int8_split_cat_takes_pytorchs_path() {
    use burn_qat::int8::{Int8Cat, MemoryFormat};
    use burn_qat::nn::{FloatFunctional, ImageBatch, QBatch, QuantizedOutput};

    let fx = fixture("split_cat");
    let device = Device::flex();
    for case in fx.case_names() {
        let [x_shape, b_shape] = [".x", ".b"].map(|k| fx.shape(&format!("{case}{k}")));
        let scales = fx.f32(&format!("{case}.qparams"));
        let zps = fx.i64(&format!("{case}.zero_points"));
        let q = |i: usize| QParamsPt::new(scales[i], zps[i] as i32).unwrap();
        let x = QTensor::from_raw(u8s(&fx, &format!("{case}.x")), &x_shape, q(0)).unwrap();
        let b = QTensor::from_raw(u8s(&fx, &format!("{case}.b")), &b_shape, q(1)).unwrap();
        let b = b.to_format(MemoryFormat::ChannelsLast).into_owned();
        let expected = u8s(&fx, &format!("{case}.y"));
        let fast = u8s(&fx, &format!("{case}.y_fast_path"));
        let half = x_shape[1] / 2;
        // The fixture tells the paths apart (except where PyTorch takes the fast path).
        let x1 = burn_qat::int8::narrow::narrow_channels(&x, 0, half).unwrap();
        let on_fast = Int8Cat::new(q(2)).forward(&[&x1, &b], 1, true).unwrap();
        assert_eq!(
            on_fast.to_contiguous().data(),
            &fast[..],
            "{case} fast path"
        );
        let one_by_one = x_shape[0] * x_shape[2] * x_shape[3] == 1;
        assert_eq!(fast == expected, one_by_one, "{case}: do the paths differ?");
        for engine in [Engine::X86, Engine::Qnnpack] {
            let cat = FloatFunctional {
                int8: Some(QuantizedOutput {
                    qparams: q(2),
                    engine,
                }),
                ..FloatFunctional::new()
            };
            let input =
                QBatch::<4>::from_qtensor(x.clone(), engine, PoolInputLayout::Contiguous, &device);
            let b = QBatch::from_qtensor(b.clone(), engine, PoolInputLayout::ChannelsLast, &device);
            let y = cat.cat(vec![input.narrow_channels(0, half), b], 1);
            let y = y.tensor().unwrap();
            assert_eq!(y.qparams(), q(2), "{case} {engine:?}");
            let ours = y.to_contiguous();
            let differ = ours.data().iter().zip(&expected).filter(|(a, b)| a != b);
            assert_eq!(differ.count(), 0, "{case} {engine:?}: bytes off PyTorch's");
            assert_eq!(ours.data().len(), expected.len(), "{case} {engine:?}");
        }
    }
}

/// Full-size ShuffleNetV2 x1.0 at 224×224 (a 7×7 final plane: the quantized mean's cascade
/// sum), from `scripts/gen_shufflenet_v2_fixtures.py --full DIR` (10 MB, not committed): float
/// logits within 1e-4 and int8 logits of both engines equal to PyTorch's. Run with
/// `BURN_QAT_SHUFFLENET_FULL=DIR cargo test --test it full_size -- --ignored`.
#[test]
#[ignore = "needs BURN_QAT_SHUFFLENET_FULL (generated, not committed)"]
fn full_size_x1_0_matches_pytorch() {
    let dir = std::path::PathBuf::from(
        std::env::var("BURN_QAT_SHUFFLENET_FULL").expect("BURN_QAT_SHUFFLENET_FULL=DIR"),
    );
    let device = Device::flex();
    let config = ShuffleNetV2Config::x1_0();
    // An absolute path replaces the fixtures folder.
    let fx = Fixture::load(dir.join("model.safetensors").to_str().unwrap());
    let input = || fx.tensor::<4>("input", &device);
    let model = load_shufflenet_v2(&dir.join("model.pth"), &config, &device).unwrap();
    assert_close(
        &to_vec(model.forward(input())),
        &fx.f32("logits"),
        1e-4,
        1e-4,
        "x1.0 float logits",
    );
    for engine in ["fbgemm", "qnnpack"] {
        let model = load_quantized_shufflenet_v2(
            &dir.join(format!("model_{engine}.pth")),
            &config,
            engine.parse().unwrap(),
            &device,
        )
        .unwrap();
        let y = to_vec(model.forward_int8(input()).unwrap());
        let what = format!("x1.0 {engine}");
        assert_int8_logits_equal(&y, &fx, &format!("q_{engine}"), &what);
    }
}
