//! `convert::strip_float`: a converted model without its float weights runs the same int8
//! forward (bit for bit), writes the same int8 state dict (which loads back) and int8 ONNX,
//! keeps the float weights of layers left in float, and refuses the float stages with a typed
//! error naming the layer.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_qat::convert::{convert, strip_float};
use burn_qat::error::{Error, StageProblem};
use burn_qat::export::{ExportKind, OnnxBatch, trace_onnx};
use burn_qat::fuse::fuse_modules;
use burn_qat::impl_quantizable;
use burn_qat::int8::Engine;
use burn_qat::io::{load_int8_model, save_int8_model};
use burn_qat::models::{MobileNetV2, MobileNetV2Config};
use burn_qat::nn::{
    Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, ImageBatch, ImageClassifier, LinearBnAct,
    LinearBnActConfig, QuantStub,
};
use burn_qat::quant::{QConfig, QConfigMapping, QuantBackend};
use burn_qat::quantize::{prepare, replace_relu};

use crate::common::classifier::TinyClassifier;
use crate::common::to_vec;

fn images(seed_shift: f64, device: &Device) -> Tensor<4> {
    Tensor::<4>::random(
        [4, 3, 32, 32],
        Distribution::Normal(seed_shift, 1.0),
        device,
    )
}

/// PTQ of `model` with the x86 qconfig (layers mapped to `None` stay float), calibrated on two
/// random batches, converted for x86.
fn ptq<M: ImageClassifier>(mut model: M, qconfig: QConfigMapping, device: &Device) -> M {
    replace_relu(&mut model).unwrap();
    fuse_modules(&mut model).unwrap();
    prepare(&mut model, qconfig, device).unwrap();
    for shift in [0.0, 0.5] {
        let _ = model.forward(images(shift, device));
    }
    convert(&mut model, Engine::X86).unwrap();
    model
}

fn onnx_int8<M: ImageClassifier>(
    model: &M,
) -> burn_qat::Result<burn_qat::export::proto::ModelProto> {
    trace_onnx(model, ExportKind::Int8, "m", [1, 3, 32, 32], |m, x| {
        m.forward_as::<OnnxBatch<4>>(x)
    })
}

fn assert_stripped_error(result: burn_qat::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(Error::Stage {
            path,
            problem: StageProblem::FloatStripped,
        }) => assert!(!path.is_empty(), "{what}: the error names no layer"),
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_stripped_mobilenet_v2_runs_saves_and_exports_int8_as_before() {
    let device = Device::flex();
    // Seeded: the float-vs-int8 bound below holds for these weights; unseeded it failed once in
    // several runs.
    device.seed(17);
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let model = config.init(&device).unwrap();
    let mut model = ptq(
        model,
        QConfig::default_ptq(QuantBackend::X86).into(),
        &device,
    );
    let x = images(0.2, &device);
    let logits = to_vec(model.forward_int8(x.clone()).unwrap());
    let onnx = onnx_int8(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (dir.path().join("a.int8"), dir.path().join("b.int8"));
    save_int8_model(&model, &before, &BTreeMap::new()).unwrap();
    let float_forward = to_vec(model.forward(x.clone()));

    strip_float(&mut model).unwrap();
    assert!(model.stem.is_stripped() && model.classifier.is_stripped());
    assert!(model.stem.bn.is_none() && model.stem.weight_fake_quant.is_none());
    assert_eq!(model.stem.conv.weight.dims().iter().product::<usize>(), 0);
    let stripped = to_vec(model.forward_int8(x.clone()).unwrap());
    assert_eq!(
        stripped.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "int8 logits changed"
    );
    assert!(onnx_int8(&model).unwrap() == onnx, "the int8 ONNX changed");
    save_int8_model(&model, &after, &BTreeMap::new()).unwrap();
    assert!(
        std::fs::read(&before).unwrap() == std::fs::read(&after).unwrap(),
        "the int8 state dict changed"
    );
    // It loads into a fresh model, and into the stripped one, with the same int8 logits.
    let mut fresh: MobileNetV2 = config.init(&device).unwrap();
    replace_relu(&mut fresh).unwrap();
    load_int8_model(&mut fresh, &after).unwrap();
    load_int8_model(&mut model, &after).unwrap();
    for (what, m) in [("fresh", &fresh), ("stripped", &model)] {
        let y = to_vec(m.forward_int8(x.clone()).unwrap());
        assert!(y == logits, "{what} model reloaded: other logits");
    }

    // The float stages are typed errors naming the layer.
    assert_stripped_error(model.to_onnx(ExportKind::Float), "float ONNX");
    assert_stripped_error(convert(&mut model, Engine::X86), "convert again");
    // The float forward is the reference quantized model (int8 weights dequantized, float
    // activations): close to the float forward with the float weights, not equal.
    let reference = to_vec(model.forward(x));
    let scale = float_forward.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = reference
        .iter()
        .zip(&float_forward)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst > 0.0 && worst <= 0.1 * scale,
        "reference forward off by {worst} (logits up to {scale})"
    );
}

/// `examples/custom_cnn_qat.rs`'s layout: the classifier after the DeQuantStub, kept in float.
#[derive(Module, Debug)]
struct FloatHead {
    quant: QuantStub,
    conv: ConvBnAct,
    dequant: DeQuantStub,
    fc: LinearBnAct,
}

impl_quantizable!(FloatHead {
    quant,
    conv,
    dequant,
    fc
});

impl FloatHead {
    fn new(device: &Device) -> Self {
        FloatHead {
            quant: QuantStub::new(),
            conv: ConvBnActConfig::new(3, 8).with_stride(2).init(device),
            dequant: DeQuantStub::new(),
            fc: LinearBnActConfig::new(8, 10).init(device),
        }
    }
}

impl ImageClassifier for FloatHead {
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let x = self.dequant.forward_batch(self.conv.forward(x));
        self.fc.forward(x.global_avg_pool_flatten()).dequantize()
    }
}

#[test]
fn layers_kept_in_float_keep_their_weights() {
    let device = Device::flex();
    let qconfig =
        QConfigMapping::from(QConfig::default_ptq(QuantBackend::X86)).with_path("fc", None);
    let mut model = ptq(FloatHead::new(&device), qconfig, &device);
    let x = images(0.0, &device);
    let logits = to_vec(model.forward_int8(x.clone()).unwrap());
    let fc_weight = to_vec(model.fc.linear.weight.val());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float_head.int8");

    strip_float(&mut model).unwrap();
    assert!(model.conv.is_stripped());
    assert!(!model.fc.is_stripped());
    assert!(to_vec(model.fc.linear.weight.val()) == fc_weight);
    assert!(to_vec(model.forward_int8(x.clone()).unwrap()) == logits);
    save_int8_model(&model, &path, &BTreeMap::new()).unwrap();
    let mut fresh = FloatHead::new(&device);
    replace_relu(&mut fresh).unwrap();
    load_int8_model(&mut fresh, &path).unwrap();
    assert!(to_vec(fresh.forward_int8(x).unwrap()) == logits);
}

#[test]
fn an_unconverted_model_is_not_stripped() {
    let device = Device::flex();
    let mut model = TinyClassifier::new(&device);
    let err = strip_float(&mut model).unwrap_err().to_string();
    assert!(err.contains("no int8 form"), "{err}");
    assert!(!model.conv.is_stripped());
}

/// A QAT-converted model exports its QDQ form before `strip_float` and not after.
#[test]
fn the_qdq_form_needs_the_float_weights() {
    use burn_qat::finetune::{FinetuneConfig, prepare_model_qat};
    let device = Device::flex();
    let mut model = TinyClassifier::new(&device);
    prepare_model_qat(&mut model, &FinetuneConfig::new(), &device).unwrap();
    let _ = model.forward(images(0.0, &device));
    convert(&mut model, Engine::X86).unwrap();
    let qdq = |m: &TinyClassifier| {
        trace_onnx(m, ExportKind::FakeQuant, "m", [1, 3, 32, 32], |m, x| {
            m.forward_as::<OnnxBatch<4>>(x)
        })
    };
    qdq(&model).unwrap();
    strip_float(&mut model).unwrap();
    assert_stripped_error(qdq(&model), "QDQ ONNX");
    onnx_int8(&model).unwrap();
}
