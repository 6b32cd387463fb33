//! Average pooling in ONNX: `QuantStub → AvgPool2d → DeQuantStub` for each configuration of
//! `avg_pool.safetensors` without a divisor override, exported float (tract against PyTorch's
//! `F.avg_pool2d`) and int8 per engine (tract against the crate's int8 forward: within one
//! output quantum, but where qnnpack divides padded windows by the whole window, which the
//! node's `count_include_pad = 0` does not say).

use super::*;
use burn::module::Module;
use burn_qat::export::{OnnxBatch, trace_onnx};
use burn_qat::nn::{AvgPool2d, AvgPool2dConfig, Batch, DeQuantStub, QBatch, QuantStub};
use burn_qat::quant::{QConfig, QuantBackend};

#[derive(Module, Debug)]
struct Pool {
    quant: QuantStub,
    pool: AvgPool2d,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Pool {
    quant,
    pool,
    dequant
});

impl Pool {
    fn forward_as<X: Batch<4>>(&self, x: Tensor<4>) -> X::Float {
        let x: X = self.quant.forward(x);
        self.dequant.forward(self.pool.forward(x))
    }
}

/// The fixture's configurations (`meta`: kernel, stride, padding, ceil, count_include_pad,
/// divisor) without a divisor, by case name.
fn configs(fx: &Fixture) -> Vec<(String, AvgPool2dConfig)> {
    let cases = fx.case_names().into_iter().filter(|c| c != "float");
    cases
        .filter_map(|c| {
            let m: Vec<usize> = fx
                .i64(&format!("{c}.meta"))
                .iter()
                .map(|&v| v as usize)
                .collect();
            let config = AvgPool2dConfig::new([m[0], m[1]])
                .with_stride([m[2], m[3]])
                .with_padding([m[4], m[5]])
                .with_ceil_mode(m[6] == 1)
                .with_count_include_pad(m[7] == 1);
            (m[8] == 0).then_some((c, config))
        })
        .collect()
}

fn onnx(model: &Pool, kind: ExportKind, shape: &[usize]) -> Vec<u8> {
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    trace_onnx(model, kind, "pool", dims, |m, x| {
        m.forward_as::<OnnxBatch<4>>(x)
    })
    .unwrap()
    .encode_to_vec()
}

#[test]
fn avg_pool_exports_and_runs_in_tract_like_pytorch() {
    let (fx, device) = (Fixture::load("avg_pool.safetensors"), Device::flex());
    let (x_host, shape) = (fx.f32("float.x"), fx.shape("float.x"));
    let x: Tensor<4> = fx.tensor("float.x", &device);
    let mut checked = 0;
    for (c, config) in configs(&fx) {
        let pool = || Pool {
            quant: QuantStub::new(),
            pool: config.init().unwrap(),
            dequant: DeQuantStub::new(),
        };
        let theirs = tract_run(&onnx(&pool(), ExportKind::Float, &shape), &x_host, &shape);
        let want = fx.f32(&format!("float.y_{c}"));
        assert_eq!(theirs.len(), want.len(), "{c}");
        let worst = theirs.iter().zip(&want).map(|(a, b)| (a - b).abs());
        assert!(
            worst.fold(0.0, f32::max) < 1e-5,
            "{c}: {theirs:?} vs {want:?}"
        );

        for (backend, engine) in [
            (QuantBackend::Qnnpack, Engine::Qnnpack),
            (QuantBackend::X86, Engine::X86),
        ] {
            let mut model = pool();
            burn_qat::quantize::prepare(&mut model, QConfig::default_ptq(backend), &device)
                .unwrap();
            let _ = model.forward_as::<Tensor<4>>(x.clone());
            burn_qat::convert::convert(&mut model, engine).unwrap();
            let int8 = to_vec(model.forward_as::<QBatch<4>>(x.clone()).unwrap());
            let scale = model.quant.int8.unwrap().qparams.scale as f64;
            let bytes = onnx(&model, ExportKind::Int8, &shape);
            let theirs = tract_run(&bytes, &x_host, &shape);
            let (_, within1, worst) = quanta(&theirs, &int8, scale);
            // qnnpack's own kernel (no ceil_mode) divides the padded windows by the whole
            // window; the node says what the layer says (count_include_pad off), as x86 does.
            let qnnpack_divisor = engine == Engine::Qnnpack
                && !config.ceil_mode
                && !config.count_include_pad
                && config.padding != [0, 0];
            assert_eq!(
                within1 == int8.len() && worst <= 1,
                !qnnpack_divisor,
                "{c} int8 ONNX ({engine}): {theirs:?} vs {int8:?}"
            );
            println!("{c} int8 ONNX ({engine}): worst {worst} quanta");
        }
        checked += 1;
    }
    assert_eq!(checked, 38);
}
