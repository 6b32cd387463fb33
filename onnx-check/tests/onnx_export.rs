//! ONNX export (issue 7), checked with a third-party reader and runtime: `tract-onnx` parses and
//! runs every exported graph. The int8 QDQ graphs of torchvision's converted MobileNetV2
//! checkpoints (qnnpack per-tensor and x86 per-channel, widths 0.25 and 0.5) agree with the
//! crate's own int8 output and with PyTorch's quantized output in output quanta; the float
//! export matches the float forward, the QDQ export of a QAT model its fake-quant forward. The
//! exported bytes are also read back with the crate's protobuf types to check the graph's
//! structure. (`scripts/check_onnx.py` runs `onnx.checker` and onnxruntime on the same files.)
//! ResNet / ResNeXt: `models/resnet.rs`; ShuffleNetV2: `models/shufflenet_v2.rs`; MobileNetV3:
//! `models/mobilenet_v3.rs`.

#[path = "layers/avg_pool.rs"]
mod avg_pool;
mod common;
#[path = "models/compare.rs"]
mod compare;
#[path = "models/mobilenet_v3.rs"]
mod mobilenet_v3;
#[path = "layers/pool_hardswish.rs"]
mod pool_hardswish;
#[path = "models/resnet.rs"]
mod resnet;
#[path = "layers/scaled_add.rs"]
mod scaled_add;
#[path = "models/shufflenet_v2.rs"]
mod shufflenet_v2;

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::export::ExportKind;
use burn_qat::export::proto::{DataType, DimensionValue, ModelProto, TensorProto};
use burn_qat::int8::Engine;
use burn_qat::models::{MobileNetV2, MobileNetV2Config, load_quantized_mobilenet_v2};
use burn_qat::nn::ImageClassifier;
use common::{Fixture, fixture_path, to_vec};
use compare::{check_float_export, compare_int8_export, compare_qdq_export};
use prost::Message;
use serde_json::Value;
use tract_onnx::prelude::{DatumExt, Framework, InferenceModelExt, IntoRunnable, tvec};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int8_models")
}

/// The converted torchvision MobileNetV2 checkpoints of the manifest.
fn int8_cases() -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["file"].as_str().unwrap().starts_with("mobilenet_v2"))
        .cloned()
        .collect()
}

fn int8_input() -> (Vec<f32>, Vec<usize>) {
    let x = burn_qat::io::npy::read_f32(&dir().join("input.npy")).unwrap();
    (x.data, x.shape)
}

fn load_case(case: &Value, device: &Device) -> MobileNetV2 {
    let config = MobileNetV2Config::new()
        .with_width_mult(case["width_mult"].as_f64().unwrap())
        .with_num_classes(10);
    let engine: Engine = case["output_engine"].as_str().unwrap().parse().unwrap();
    let file = dir().join(case["file"].as_str().unwrap());
    load_quantized_mobilenet_v2(&file, &config, engine, device).unwrap()
}

/// A deterministic `[n, 2, 12, 12]` input in [-2, 2] for the user-model tests: the tensor, its
/// values and its shape.
fn user_input(n: usize, device: &Device) -> (Tensor<4>, Vec<f32>, Vec<usize>) {
    let shape = vec![n, 2, 12, 12];
    let x: Vec<f32> = (0..n * 2 * 12 * 12)
        .map(|i| ((i * 7919) % 997) as f32 / 997.0 * 4.0 - 2.0)
        .collect();
    let t = Tensor::<4>::from_data(TensorData::new(x.clone(), shape.clone()), device);
    (t, x, shape)
}

/// Runs an ONNX model with tract on one float32 input.
fn tract_run(bytes: &[u8], data: &[f32], shape: &[usize]) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the model")
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .expect("tract optimizes the model")
        .into_runnable()
        .unwrap();
    let input =
        tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec()).unwrap();
    let out = model
        .run(tvec!(tract_onnx::prelude::Tensor::from(input).into()))
        .expect("tract runs the model");
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// `(equal, within one quantum, worst)` of two outputs, in quanta of `scale`.
fn quanta(a: &[f32], b: &[f32], scale: f64) -> (usize, usize, i64) {
    assert_eq!(a.len(), b.len());
    let d: Vec<i64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| ((x as f64 - y as f64) / scale).round().abs() as i64)
        .collect();
    let equal = d.iter().filter(|&&v| v == 0).count();
    let within1 = d.iter().filter(|&&v| v <= 1).count();
    (equal, within1, d.into_iter().max().unwrap())
}

/// With `BURN_QAT_ONNX_DUMP=DIR`, writes an exported model, its input and the crate's output
/// there, for `scripts/check_onnx.py` (onnx.checker and onnxruntime).
fn dump(name: &str, bytes: &[u8], x: &[f32], x_shape: &[usize], y: &[f32], y_shape: &[usize]) {
    if let Ok(dir) = std::env::var("BURN_QAT_ONNX_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.onnx")), bytes).unwrap();
        let npy = burn_qat::io::npy::write_f32;
        npy(&dir.join(format!("{name}.input.npy")), x, x_shape).unwrap();
        npy(&dir.join(format!("{name}.expected.npy")), y, y_shape).unwrap();
    }
}

/// The serialized ONNX of `model` in `kind`'s form.
fn to_onnx_bytes(model: &MobileNetV2, kind: ExportKind) -> burn_qat::Result<Vec<u8>> {
    Ok(model.to_onnx(kind)?.encode_to_vec())
}

fn model_of(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("the export decodes as a ModelProto")
}

#[test]
fn int8_export_runs_in_tract_like_the_crate_and_pytorch() {
    let device = Device::flex();
    let (x, shape) = int8_input();
    for case in int8_cases() {
        let file = case["file"].as_str().unwrap();
        let model = load_case(&case, &device);
        let bytes = to_onnx_bytes(&model, ExportKind::Int8).unwrap();
        let theirs = tract_run(&bytes, &x, &shape);

        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), shape.clone()), &device);
        let ours = to_vec(model.forward_int8(input).unwrap());
        let scale: f64 = case["output_scale"].as_str().unwrap().parse().unwrap();
        let zp = case["output_zero_point"].as_i64().unwrap();
        let npy = npyz::NpyFile::new(std::io::BufReader::new(
            std::fs::File::open(dir().join(case["output"].as_str().unwrap())).unwrap(),
        ))
        .unwrap();
        let pytorch: Vec<f32> = npy
            .into_vec::<u8>()
            .unwrap()
            .into_iter()
            .map(|q| ((q as i64 - zp) as f64 * scale) as f32)
            .collect();

        let n = ours.len();
        let (eq_c, w1_c, worst_c) = quanta(&theirs, &ours, scale);
        let (eq_p, w1_p, worst_p) = quanta(&theirs, &pytorch, scale);
        println!(
            "{file}: tract vs crate int8 {eq_c}/{n} equal, {w1_c}/{n} within 1 quantum, max \
             {worst_c}; tract vs PyTorch {eq_p}/{n} equal, {w1_p}/{n} within 1, max {worst_p}"
        );
        assert!(
            w1_c * 100 >= n * 99 && worst_c <= 2,
            "{file}: tract vs crate\n tract {theirs:?}\n crate {ours:?}"
        );
        assert!(
            worst_p <= 2,
            "{file}: tract vs PyTorch\n tract   {theirs:?}\n pytorch {pytorch:?}"
        );
    }
}

fn initializers(m: &ModelProto) -> BTreeMap<String, &TensorProto> {
    let g = m.graph.as_ref().unwrap();
    g.initializer
        .iter()
        .map(|t| (t.name.clone().unwrap(), t))
        .collect()
}

fn op_counts(m: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *counts.entry(n.op_type.clone().unwrap()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn int8_export_structure() {
    let device = Device::flex();
    for case in int8_cases() {
        let file = case["file"].as_str().unwrap();
        let per_channel = case["engine"] == "x86";
        let model = load_case(&case, &device);
        let m = model_of(&to_onnx_bytes(&model, ExportKind::Int8).unwrap());
        assert_eq!(m.ir_version, Some(7));
        assert_eq!(m.opset_import.len(), 1);
        assert_eq!(m.opset_import[0].domain.as_deref().unwrap_or(""), "");
        assert_eq!(m.opset_import[0].version, Some(13));
        let g = m.graph.as_ref().unwrap();

        // Input `input`: float32 [batch, 3, height, width]; output `logits`: float32 [batch, 10].
        let io = |v: &burn_qat::export::proto::ValueInfoProto| {
            let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
            let dims: Vec<DimensionValue> = t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| d.value.clone().unwrap())
                .collect();
            (v.name.clone().unwrap(), t.elem_type, dims)
        };
        let param = |s: &str| DimensionValue::DimParam(s.into());
        assert_eq!(g.input.len(), 1);
        assert_eq!(
            io(&g.input[0]),
            (
                "input".into(),
                Some(DataType::Float as i32),
                vec![
                    param("batch"),
                    DimensionValue::DimValue(3),
                    param("height"),
                    param("width")
                ]
            )
        );
        assert_eq!(
            io(&g.output[0]),
            (
                "logits".into(),
                Some(DataType::Float as i32),
                vec![param("batch"), DimensionValue::DimValue(10)]
            )
        );

        // One Conv per convolution (52), one Add per residual connection, the pooling, the
        // flatten, the classifier; every Conv/Gemm/Add/pool/flatten between DQ and Q.
        let ops = op_counts(&m);
        let adds = model.blocks.iter().filter(|b| b.use_res_connect).count();
        assert_eq!(ops["Conv"], 52, "{file}: {ops:?}");
        assert_eq!(ops["Gemm"], 1);
        assert_eq!(ops["Add"], adds);
        assert_eq!(ops["GlobalAveragePool"], 1);
        assert_eq!(ops["Flatten"], 1);
        assert!(
            !ops.contains_key("Relu"),
            "ReLU folded into the output range: {ops:?}"
        );
        let computing = 52 + 1 + adds + 2;
        // Q: input + every computing op; DQ: one per activation input (Add has two), one per
        // weight and per bias (53 layers), and the output.
        assert_eq!(ops["QuantizeLinear"], 1 + computing);
        assert_eq!(ops["DequantizeLinear"], computing + adds + 2 * 53 + 1);
        let producers: BTreeMap<&str, &str> = g
            .node
            .iter()
            .map(|n| (n.output[0].as_str(), n.op_type.as_deref().unwrap()))
            .collect();
        let inits = initializers(&m);
        for n in &g.node {
            let op = n.op_type.as_deref().unwrap();
            if matches!(
                op,
                "Conv" | "Gemm" | "Add" | "GlobalAveragePool" | "Flatten"
            ) {
                for i in &n.input {
                    assert_eq!(
                        producers.get(i.as_str()),
                        Some(&"DequantizeLinear"),
                        "{op} {i}"
                    );
                }
                let consumer = g.node.iter().find(|c| c.input.contains(&n.output[0]));
                assert_eq!(consumer.unwrap().op_type.as_deref(), Some("QuantizeLinear"));
            }
            if op == "Conv" || op == "Gemm" {
                // int8 weight, int32 bias, per-channel (axis 0) for x86, per-tensor for qnnpack.
                let w_dq = g.node.iter().find(|d| d.output[0] == n.input[1]).unwrap();
                let b_dq = g.node.iter().find(|d| d.output[0] == n.input[2]).unwrap();
                let w = inits[&w_dq.input[0]];
                let b = inits[&b_dq.input[0]];
                assert_eq!(w.dtype(), Some(DataType::Int8));
                assert_eq!(b.dtype(), Some(DataType::Int32));
                assert_eq!(b.shape(), [w.shape()[0]]);
                assert_eq!(
                    inits[&w_dq.input[2]].dtype(),
                    Some(DataType::Int8),
                    "weight zero-point type"
                );
                assert_eq!(inits[&b_dq.input[2]].dtype(), Some(DataType::Int32));
                for dq in [w_dq, b_dq] {
                    let scale = inits[&dq.input[1]];
                    let axis = dq
                        .attribute
                        .iter()
                        .find(|a| a.name.as_deref() == Some("axis"));
                    if per_channel {
                        assert_eq!(scale.shape(), [w.shape()[0]], "{file}: {}", dq.output[0]);
                        assert_eq!(axis.and_then(|a| a.i), Some(0));
                    } else {
                        assert!(scale.shape().is_empty());
                        assert!(axis.is_none());
                    }
                }
            }
            if op == "QuantizeLinear" {
                assert_eq!(
                    inits[&n.input[2]].dtype(),
                    Some(DataType::Uint8),
                    "uint8 activations"
                );
            }
        }
        if file == "mobilenet_v2_qnnpack_w025.pth" {
            // The stem's weight as in the checkpoint (manifest: first values, scale).
            let w = inits["stem.weight_quantized"];
            assert_eq!(w.shape(), [8, 3, 3, 3]);
            let raw = w.raw_data.as_ref().unwrap();
            assert_eq!(
                raw[..4].iter().map(|&b| b as i8).collect::<Vec<_>>(),
                [1, -37, 35, 3]
            );
            let s = inits["stem.weight_scale"].raw_data.as_ref().unwrap();
            assert_eq!(
                f32::from_le_bytes(s[..4].try_into().unwrap()),
                0.004_601_552_616_804_838_f64 as f32 // the manifest's f64 scale, as f32
            );
        }
    }
}

#[test]
fn exporting_an_unconverted_model_is_a_clear_error() {
    let device = Device::flex();
    let config = MobileNetV2Config::new()
        .with_width_mult(0.25)
        .with_num_classes(10);
    let model = config.init(&device).unwrap();
    let err = to_onnx_bytes(&model, ExportKind::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot export the int8 model to ONNX") && err.contains("`quant`"),
        "{err}"
    );
    assert!(err.contains("convert"), "{err}");
    // Nothing is written.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.onnx");
    assert!(model.export_onnx(ExportKind::Int8, &path).is_err());
    assert!(!path.exists());
    // A QDQ export needs a prepared (QAT) model.
    let err = to_onnx_bytes(&model, ExportKind::FakeQuant)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prepare_qat"), "{err}");
}

#[test]
fn int8_export_writes_a_file() {
    let device = Device::flex();
    let case = &int8_cases()[0];
    let model = load_case(case, &device);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.onnx");
    model.export_onnx(ExportKind::Int8, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, to_onnx_bytes(&model, ExportKind::Int8).unwrap());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

fn float_model(device: &Device) -> (MobileNetV2, Vec<f32>, Vec<usize>) {
    let fx = Fixture::load("mobilenet_v2_w050.safetensors");
    let config = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_num_classes(10);
    let model = burn_qat::models::load_mobilenet_v2(
        &fixture_path("mobilenet_v2_w050.pth"),
        &config,
        device,
    )
    .unwrap();
    (model, fx.f32("input"), fx.shape("input"))
}

#[test]
fn float_export_matches_the_float_forward() {
    let device = Device::flex();
    let (model, x, shape) = float_model(&device);
    let bytes = to_onnx_bytes(&model, ExportKind::Float).unwrap();
    let ops = op_counts(&model_of(&bytes));
    assert_eq!(ops["BatchNormalization"], 52, "{ops:?}");
    assert_eq!(ops["Clip"], 35, "ReLU6 as Clip(0, 6): {ops:?}");
    assert!(!ops.contains_key("QuantizeLinear"));
    let theirs = tract_run(&bytes, &x, &shape);
    let input = Tensor::<4>::from_data(TensorData::new(x.clone(), shape.clone()), &device);
    let ours = to_vec(model.forward(input));
    dump("float_w050", &bytes, &x, &shape, &ours, &[shape[0], 10]);
    let worst = theirs
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("float export: tract vs crate max abs difference {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}

/// A QAT model (fused for QAT, `prepare_qat`, a few observed batches, observers off) exported as
/// float ONNX with Q/DQ pairs runs in tract like its own fake-quant forward.
#[test]
fn qdq_export_of_a_qat_model_matches_its_fake_quant_forward() {
    use burn_qat::quant::{QConfig, QuantBackend};
    use burn_qat::quantize::{disable_observer, prepare_qat, replace_relu};

    let device = Device::flex();
    for backend in [QuantBackend::Qnnpack, QuantBackend::X86] {
        let (mut model, x, shape) = float_model(&device);
        replace_relu(&mut model).unwrap();
        model.fuse_model(Some(true)).unwrap();
        prepare_qat(&mut model, QConfig::default_qat(backend), &device).unwrap();
        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), shape.clone()), &device);
        for _ in 0..2 {
            let _ = model.forward(input.clone());
        }
        disable_observer(&mut model);
        let ours = to_vec(model.forward(input));

        let bytes = to_onnx_bytes(&model, ExportKind::FakeQuant).unwrap();
        let m = model_of(&bytes);
        let ops = op_counts(&m);
        assert_eq!(ops["Conv"], 52);
        assert!(
            !ops.contains_key("BatchNormalization"),
            "BN folded: {ops:?}"
        );
        let theirs = tract_run(&bytes, &x, &shape);
        let name = format!("qat_{backend:?}_w050").to_lowercase();
        dump(&name, &bytes, &x, &shape, &ours, &[shape[0], 10]);
        let out = model
            .classifier
            .activation_post_process
            .fake_quantize()
            .unwrap();
        let scale = out.current_qparams().scale[0] as f64;
        let n = ours.len();
        let (equal, within1, worst) = quanta(&theirs, &ours, scale);
        println!(
            "{backend:?} QAT QDQ export: tract vs fake-quant forward {equal}/{n} equal, \
             {within1}/{n} within 1 quantum, max {worst}"
        );
        assert!(
            within1 * 100 >= n * 99 && worst <= 2,
            "{theirs:?}\n{ours:?}"
        );
    }
}

/// A model written outside the crate, as a user writes one (quantizable layers, a residual
/// `add_relu`, the one forward over the batch types), exports in every form through its own
/// forward ([`trace_onnx`]) and runs in tract like the crate: float like its float forward,
/// int8 (after PTQ calibration and convert) like its int8 forward.
mod custom_model {
    use super::*;
    use burn::module::Module;
    use burn_qat::export::{OnnxBatch, trace_onnx};
    use burn_qat::nn::{
        Activation, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, FloatFunctional, ImageBatch,
        LinearBnAct, LinearBnActConfig, QBatch, QuantStub,
    };
    use burn_qat::quant::{QConfig, QuantBackend};

    #[derive(Module, Debug)]
    struct UserNet {
        quant: QuantStub,
        conv1: ConvBnAct,
        conv2: ConvBnAct,
        skip_add: FloatFunctional,
        fc: LinearBnAct,
        dequant: DeQuantStub,
    }

    burn_qat::impl_quantizable!(UserNet {
        quant,
        conv1,
        conv2,
        skip_add,
        fc,
        dequant
    });

    impl UserNet {
        fn new(device: &Device) -> Self {
            UserNet {
                quant: QuantStub::new(),
                conv1: ConvBnActConfig::new(2, 8)
                    .with_stride(2)
                    .with_activation(Activation::Relu)
                    .init(device),
                conv2: ConvBnActConfig::new(8, 8)
                    .with_activation(Activation::Identity)
                    .init(device),
                skip_add: FloatFunctional::new(),
                fc: LinearBnActConfig::new(8, 3).init(device),
                dequant: DeQuantStub::new(),
            }
        }

        fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
            let x: X = self.quant.forward(x);
            let x = self.conv1.forward(x);
            let x = self.skip_add.add_relu(x.clone(), self.conv2.forward(x));
            self.dequant
                .forward(self.fc.forward(x.global_avg_pool_flatten()))
        }

        fn onnx(&self, kind: ExportKind) -> Vec<u8> {
            trace_onnx(self, kind, "user_net", [1, 2, 12, 12], |m, x| {
                m.forward_as::<OnnxBatch<4>>(x)
            })
            .unwrap()
            .encode_to_vec()
        }
    }

    fn input(device: &Device) -> (Tensor<4>, Vec<f32>, Vec<usize>) {
        super::user_input(3, device)
    }

    #[test]
    fn a_user_model_exports_through_its_own_forward() {
        let device = Device::flex();
        device.seed(11);
        let mut model = UserNet::new(&device);
        let (t, x, shape) = input(&device);

        let float = model.onnx(ExportKind::Float);
        let ours = to_vec(model.forward_as::<Tensor<4>>(t.clone()));
        let theirs = tract_run(&float, &x, &shape);
        assert!(
            ours.iter().any(|&v| v != ours[0]),
            "a degenerate output: {ours:?}"
        );
        let worst = theirs
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "float: {worst}");
        let ops = op_counts(&model_of(&float));
        assert_eq!(ops["Conv"], 2, "{ops:?}");
        assert_eq!(ops["Add"], 1, "{ops:?}");
        assert_eq!(ops["Relu"], 2, "{ops:?}");
        assert_eq!(ops["Gemm"], 1, "{ops:?}");

        // PTQ: fuse, prepare, calibrate, convert; the int8 graph runs in tract like the
        // crate's int8 kernels.
        burn_qat::fuse::fuse_modules(&mut model).unwrap();
        burn_qat::quantize::prepare(&mut model, QConfig::default_ptq(QuantBackend::X86), &device)
            .unwrap();
        let _ = model.forward_as::<Tensor<4>>(t.clone());
        burn_qat::convert::convert(&mut model, Engine::X86).unwrap();
        let int8 = model.onnx(ExportKind::Int8);
        let g = model_of(&int8);
        let names: Vec<&str> = g
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter_map(|n| n.name.as_deref())
            .collect();
        assert!(
            names.contains(&"skip_add"),
            "nodes are named by module path: {names:?}"
        );
        let ours = to_vec(model.forward_as::<QBatch<4>>(t).unwrap());
        let theirs = tract_run(&int8, &x, &shape);
        assert!(
            ours.iter().any(|&v| v != ours[0]),
            "a degenerate output: {ours:?}"
        );
        let scale = model.fc.int8.as_ref().unwrap().output_qparams().scale as f64;
        let (_, within1, worst) = quanta(&theirs, &ours, scale);
        assert!(
            within1 == ours.len() && worst <= 1,
            "int8: tract {theirs:?}\n crate {ours:?}"
        );
    }

    /// A layer the forward runs but the walk does not list is an error that says so.
    #[test]
    fn a_layer_missing_from_the_walk_is_a_clear_error() {
        #[derive(Module, Debug)]
        struct Unlisted {
            quant: QuantStub,
            conv: ConvBnAct,
        }
        burn_qat::impl_quantizable!(Unlisted { quant });
        let device = Device::flex();
        let model = Unlisted {
            quant: QuantStub::new(),
            conv: ConvBnActConfig::new(2, 4).init(&device),
        };
        let err = trace_onnx(
            &model,
            ExportKind::Float,
            "unlisted",
            [1, 2, 8, 8],
            |m, x| {
                let x: OnnxBatch<4> = m.quant.forward(x);
                m.conv.forward(x)
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ConvBnAct") && err.contains("impl_quantizable"),
            "{err}"
        );
    }
}
