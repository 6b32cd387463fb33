//! Per-layer qconfigs (`QConfigMapping`): layers left in float (`qconfig = None`) run their float
//! forward inside the int8 model between a `DeQuantStub` and a `QuantStub`, as in PyTorch's
//! eager mode. MobileNetV2 with its stem and classifier in float, PTQ x86, against PyTorch
//! (`scripts/gen_qconfig_mapping_fixtures.py`); convert refuses misplaced stubs by path.

use crate::common::{Fixture, fixture_path, quanta_stats, to_vec};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use burn_qat::convert::convert;
use burn_qat::export::{ExportKind, OnnxBatch, trace_onnx};
use burn_qat::int8::Engine;
use burn_qat::io::{StateValue, load_int8_model, read_int8_file, save_int8_model};
use burn_qat::models::{InvertedResidual, MobileNetV2, MobileNetV2Config, load_mobilenet_v2};
use burn_qat::nn::ImageClassifier;
use burn_qat::nn::{
    Batch, ConvBnAct, DeQuantStub, ImageBatch, LinearBnAct, QBatch, QuantLayer, QuantStub,
    Quantizable,
};
use burn_qat::quant::{QConfig, QConfigMapping, QuantBackend};
use burn_qat::quantize::{prepare, prepare_qat, replace_relu};

/// MobileNetV2 with the stubs moved inside: the stem and the classifier are meant to stay
/// float (the walk lists the layers in forward order, stubs included).
#[derive(Module, Debug)]
struct FloatEnds {
    stem: ConvBnAct,
    quant: QuantStub,
    blocks: Vec<InvertedResidual>,
    head: ConvBnAct,
    dequant: DeQuantStub,
    classifier: LinearBnAct,
}

burn_qat::impl_quantizable!(FloatEnds {
    stem,
    quant,
    blocks,
    head,
    dequant,
    classifier
});

impl FloatEnds {
    fn from(net: MobileNetV2) -> Self {
        FloatEnds {
            stem: net.stem,
            quant: net.quant,
            blocks: net.blocks,
            head: net.head,
            dequant: net.dequant,
            classifier: net.classifier,
        }
    }

    /// The int8 part's output, back in float (the classifier's input before pooling).
    fn features<X: ImageBatch>(&self, x: Tensor<4>) -> X {
        let x = self.stem.forward(X::from_float(x));
        let x = self.quant.forward_batch(x);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.dequant.forward_batch(self.head.forward(x))
    }

    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let pooled = self.features::<X>(x).global_avg_pool_flatten();
        self.classifier.forward(pooled).dequantize()
    }
}

fn float_model(device: &Device) -> MobileNetV2 {
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10)
        .with_dropout(0.0);
    let path = fixture_path("qat_mobilenet_v2_float.pth");
    let mut model = load_mobilenet_v2(&path, &config, device).unwrap();
    replace_relu(&mut model).unwrap();
    model.fuse_model(Some(false)).unwrap();
    model
}

fn float_ends_mapping() -> QConfigMapping {
    QConfigMapping::new()
        .with_global(Some(QConfig::default_ptq(QuantBackend::X86)))
        .with_path("stem", None)
        .with_path("classifier", None)
}

#[test]
fn mobilenet_v2_with_float_stem_and_classifier_matches_pytorch() {
    let fx = Fixture::load("ptq_mobilenet_v2_float_ends.safetensors");
    let device = Device::flex();
    let mut model = FloatEnds::from(float_model(&device));
    prepare(&mut model, float_ends_mapping(), &device).unwrap();
    assert!(
        model.stem.output_observer().is_none(),
        "the stem stays float"
    );
    assert!(model.classifier.output_observer().is_none());
    assert!(model.head.output_observer().is_some());
    for i in 0..2 {
        let _ = model.forward_as::<Tensor<4>>(fx.tensor(&format!("batch{i}"), &device));
    }
    convert(&mut model, Engine::X86).unwrap();
    assert!(model.stem.int8.is_none() && model.classifier.int8.is_none());

    // The int8 part's output (dequantized, before pooling) against PyTorch's, in quanta of the
    // head's output scale; then the float classifier's logits.
    let head = fx.f32("head_qparams");
    let ours_head = model.head.int8.as_ref().unwrap().output_qparams();
    // The histogram observer's range search sums in another order than PyTorch's (see ptq.rs):
    // the scale may differ in its last bits.
    let rel = (ours_head.scale - head[0]).abs() / head[0];
    assert!(
        rel <= 1e-5,
        "the head's output scale: {} vs {}",
        ours_head.scale,
        head[0]
    );
    assert_eq!(ours_head.zero_point as f32, head[1]);
    let x: Tensor<4> = fx.tensor("x", &device);
    let features = model.features::<QBatch<4>>(x.clone()).dequantize().unwrap();
    let stats = quanta_stats(&to_vec(features), &fx.f32("features"), head[0]);
    println!("int8 features vs PyTorch: {stats:?}");
    assert!(stats.exact >= 0.99 && stats.worst <= 1.0, "{stats:?}");
    let logits = to_vec(model.forward_as::<QBatch<4>>(x).unwrap());
    let expected = fx.f32("y");
    let worst = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("float classifier logits vs PyTorch: worst {worst:e}");
    // Equal features give logits equal to float rounding; a feature one quantum off moves a
    // logit by |w|·scale at most (|w| < 0.05 here, the classifier's Normal(0, 0.01) init).
    let bound = if stats.exact == 1.0 {
        1e-5
    } else {
        0.05 * head[0]
    };
    assert!(worst <= bound, "{logits:?}\n{expected:?}");

    // Saved and loaded into a fresh model: int8 layers get their int8 form back, the float
    // ones their float weights (the stem's batch norm folded, as it was saved).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float_ends.int8.safetensors");
    save_int8_model(&model, &path, &Default::default()).unwrap();
    let (state, _) = read_int8_file(&path).unwrap();
    assert!(matches!(state["stem.weight"], StateValue::Float { .. }));
    assert!(matches!(
        state["classifier.weight"],
        StateValue::Float { .. }
    ));
    assert!(matches!(state["head.weight"], StateValue::QInt8 { .. }));
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let mut fresh = config.init(&device).unwrap();
    replace_relu(&mut fresh).unwrap();
    let mut loaded = FloatEnds::from(fresh);
    load_int8_model(&mut loaded, &path).unwrap();
    let again = to_vec(
        loaded
            .forward_as::<QBatch<4>>(fx.tensor("x", &device))
            .unwrap(),
    );
    assert_eq!(again, logits, "the reloaded model runs as the saved one");

    // The int8 ONNX writes the float-kept layers in float.
    let proto = trace_onnx(
        &model,
        ExportKind::Int8,
        "float_ends",
        [1, 3, 32, 32],
        |m, x| m.forward_as::<OnnxBatch<4>>(x),
    )
    .unwrap();
    let names: Vec<String> = proto
        .graph
        .unwrap()
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    assert!(
        names.contains(&"stem.weight".to_string()),
        "float stem weight"
    );
    assert!(names.contains(&"classifier.weight".to_string()));
    assert!(names.contains(&"head.weight_quantized".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("stem.weight_q")));
}

#[test]
fn convert_refuses_a_float_layer_fed_int8_and_names_it() {
    let device = Device::flex();
    let x = Tensor::<4>::ones([1, 3, 32, 32], &device);

    // MobileNetV2's own forward has no DeQuantStub before its classifier.
    let mut model = float_model(&device);
    let mapping = QConfigMapping::from(QConfig::default_ptq(QuantBackend::Qnnpack))
        .with_kind("LinearBnAct", None);
    prepare(&mut model, &mapping, &device).unwrap();
    let _ = model.forward(x.clone());
    let err = convert(&mut model, Engine::Qnnpack)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`classifier`") && err.contains("put a DeQuantStub before it"),
        "{err}"
    );
    assert!(model.head.int8.is_none(), "the model is unchanged");

    // A quantized layer before the QuantStub is refused the other way round.
    let mut model = FloatEnds::from(float_model(&device));
    let mapping =
        float_ends_mapping().with_path("stem", Some(QConfig::default_ptq(QuantBackend::X86)));
    prepare(&mut model, &mapping, &device).unwrap();
    let _ = model.forward_as::<Tensor<4>>(x);
    let err = convert(&mut model, Engine::X86).unwrap_err().to_string();
    assert!(
        err.contains("`stem`") && err.contains("put a QuantStub before it"),
        "{err}"
    );
}

#[test]
fn prepare_qat_follows_the_mapping() {
    let device = Device::flex();
    let qat = QConfig::default_qat(QuantBackend::Qnnpack);
    let mapping = QConfigMapping::from(&qat)
        .with_path("stem", None)
        .with_path("classifier", None)
        .with_path_regex(r"blocks\.1[0-6]\.", None)
        .unwrap();
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let mut net = config.init(&device).unwrap();
    replace_relu(&mut net).unwrap();
    net.fuse_model(Some(true)).unwrap();
    let mut model = FloatEnds::from(net);
    prepare_qat(&mut model, &mapping, &device).unwrap();
    let mut prepared = Vec::new();
    model
        .visit_layers_ref(&mut |path, layer| {
            if layer.output_observer().is_some() {
                prepared.push(path.to_string());
            }
            Ok(())
        })
        .unwrap();
    let float_kept = |p: &str| {
        p == "stem"
            || p == "classifier"
            || (10..=16).any(|i| p.starts_with(&format!("blocks.{i}.")))
    };
    assert!(
        prepared.iter().any(|p| p.starts_with("blocks.9.")),
        "{prepared:?}"
    );
    assert!(prepared.iter().all(|p| !float_kept(p)), "{prepared:?}");
    let y = model.forward_as::<Tensor<4>>(Tensor::ones([2, 3, 32, 32], &device));
    assert_eq!(y.dims(), [2, 10]);
}
