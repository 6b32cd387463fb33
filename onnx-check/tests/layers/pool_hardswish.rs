//! Max pooling and hardswish in ONNX: PyTorch's tiny model `QuantStub → Conv → Hardswish →
//! MaxPool2d(3, 2, 1) → DeQuantStub` (its float weights from `pool_hardswish.safetensors`)
//! exported float, QDQ (after `prepare_qat` and a calibrating pass) and int8 (after PTQ and
//! convert), each run in tract against the crate's own forward of that stage.

use super::*;
use burn_qat::export::{OnnxBatch, trace_onnx};
use burn_qat::nn::{MaxPool2dConfig, QBatch};
use burn_qat::quant::{QConfig, QuantBackend};

#[path = "../../../tests/it/pool_hardswish/tiny.rs"]
mod tiny;
use tiny::Tiny;

fn onnx(model: &Tiny, kind: ExportKind) -> Vec<u8> {
    trace_onnx(model, kind, "tiny", [1, 3, 9, 9], |m, x| {
        m.forward_as::<OnnxBatch<4>>(x)
    })
    .unwrap()
    .encode_to_vec()
}

/// The fixture's test input: as a tensor, its values and its shape.
fn input(fx: &Fixture, device: &Device) -> (Tensor<4>, Vec<f32>, Vec<usize>) {
    let x = fx.tensor("model.x", device);
    (x, fx.f32("model.x"), fx.shape("model.x"))
}

#[test]
fn max_pool_and_hardswish_export_and_run_in_tract() {
    let (fx, device) = (Fixture::load("pool_hardswish.safetensors"), Device::flex());
    let (x, x_host, shape) = input(&fx, &device);

    // Float: HardSigmoid · x for hardswish rounds a little differently.
    let model = Tiny::new(&fx, &device);
    let float = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
    let bytes = onnx(&model, ExportKind::Float);
    let ops = op_counts(&model_of(&bytes));
    assert_eq!(
        (ops["MaxPool"], ops["HardSigmoid"], ops["Mul"]),
        (1, 1, 1),
        "{ops:?}"
    );
    let theirs = tract_run(&bytes, &x_host, &shape);
    let worst = theirs.iter().zip(&float).map(|(a, b)| (a - b).abs());
    assert!(
        worst.fold(0.0, f32::max) < 1e-5,
        "float: {theirs:?} vs {float:?}"
    );

    // QDQ: the fake-quants of a QAT-prepared model, after one pass that sets their ranges.
    let mut qat = Tiny::new(&fx, &device);
    let qconfig = QConfig::default_qat(QuantBackend::Qnnpack);
    burn_qat::quantize::prepare_qat(&mut qat, &qconfig, &device).unwrap();
    let _ = qat.forward_as::<Tensor<4>>(fx.tensor("model.cal", &device));
    burn_qat::quantize::disable_observer(&mut qat);
    let fake_quant = to_vec(qat.forward_as::<Tensor<4>>(x.clone()));
    let fq = qat.hs.activation_post_process.fake_quantize().unwrap();
    let scale = fq.current_qparams().scale[0] as f64;
    let theirs = tract_run(&onnx(&qat, ExportKind::FakeQuant), &x_host, &shape);
    let (_, within1, _) = quanta(&theirs, &fake_quant, scale);
    assert_eq!(
        within1,
        fake_quant.len(),
        "QDQ: {theirs:?} vs {fake_quant:?}"
    );

    // int8, per engine: within one output quantum of the crate's int8 forward.
    for (backend, engine) in [
        (QuantBackend::Qnnpack, Engine::Qnnpack),
        (QuantBackend::X86, Engine::X86),
    ] {
        let mut model = Tiny::new(&fx, &device);
        burn_qat::quantize::prepare(&mut model, QConfig::default_ptq(backend), &device).unwrap();
        let _ = model.forward_as::<Tensor<4>>(fx.tensor("model.cal", &device));
        burn_qat::convert::convert(&mut model, engine).unwrap();
        let int8 = to_vec(model.forward_as::<QBatch<4>>(x.clone()).unwrap());
        let scale = model.hs.int8.unwrap().qparams.scale as f64;
        let bytes = onnx(&model, ExportKind::Int8);
        dump(
            &format!("tiny_{engine}"),
            &bytes,
            &x_host,
            &shape,
            &int8,
            &[2, 8, 5, 5],
        );
        let theirs = tract_run(&bytes, &x_host, &shape);
        let (equal, within1, worst) = quanta(&theirs, &int8, scale);
        println!(
            "int8 ONNX ({engine}): {equal} of {} equal, worst {worst}",
            int8.len()
        );
        assert!(
            within1 == int8.len() && worst <= 1,
            "int8 ONNX ({engine}): {theirs:?} vs {int8:?}"
        );
    }
}

/// `ceil_mode` is written as ONNX's attribute; a window that would start in the right padding
/// is dropped by PyTorch (9 rows, kernel 2, stride 2, padding 1: 5 rows, not 6).
#[test]
fn max_pool_ceil_mode_runs_in_tract_like_pytorch() {
    let (fx, device) = (Fixture::load("pool_hardswish.safetensors"), Device::flex());
    let (x, x_host, shape) = input(&fx, &device);
    for pool in [
        MaxPool2dConfig::new([2, 2]).with_ceil_mode(true),
        MaxPool2dConfig::new([3, 3])
            .with_stride([3, 3])
            .with_padding([1, 1])
            .with_ceil_mode(true),
        MaxPool2dConfig::new([2, 2])
            .with_padding([1, 1])
            .with_ceil_mode(true),
    ] {
        let model = Tiny::with_pool(&fx, pool.clone(), &device);
        let float = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
        let theirs = tract_run(&onnx(&model, ExportKind::Float), &x_host, &shape);
        assert_eq!(theirs.len(), float.len(), "{pool:?}");
        let worst = theirs.iter().zip(&float).map(|(a, b)| (a - b).abs());
        assert!(worst.fold(0.0, f32::max) < 1e-5, "{pool:?}");
    }
}
