//! A layer kind written outside the crate, as a user writes one: `ScaledAdd`, `y = a + α·b`
//! with its own output quantization. It implements burn-qat's two layer traits (`QuantLayer`
//! for the stages, `QuantOp` for the forward on every batch type) and nothing in `src/` knows
//! it. The test takes a model using it through fuse → prepare_qat → QAT steps → convert → the
//! int8 forward → save/load → ONNX (float, QDQ and int8, each run in tract).

use super::*;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Int;
use burn_qat::export::{OnnxBatch, trace_onnx};
use burn_qat::int8::{PoolInputLayout, QParamsPt, QTensor};
use burn_qat::io::{StateValue, load_int8_model, read_int8_file, save_int8_model};
use burn_qat::nn::{
    Activation, ActivationPostProcess, Batch, ConvBnAct, ConvBnActConfig, DeQuantStub, ImageBatch,
    LinearBnAct, LinearBnActConfig, PostProcess, PrepareMode, QBatch, QuantLayer, QuantOp,
    QuantStub, QuantizedOutput, layer::address_of,
};
use burn_qat::onnx::{Act, Builder};
use burn_qat::quant::{Observer, QConfig, QuantBackend};
use burn_qat::state::{Entries, StateDict, put_output};

/// `y = a + α·b`, then its output post-process (an observer after `prepare`, a fake-quant
/// after `prepare_qat`); converted, it runs on quint8 tensors with its own output qparams.
#[derive(Module, Debug)]
struct ScaledAdd {
    activation_post_process: ActivationPostProcess,
    #[module(skip)]
    alpha: f32,
    #[module(skip)]
    int8: Option<QuantizedOutput>,
}

impl ScaledAdd {
    fn new(alpha: f32) -> Self {
        ScaledAdd {
            activation_post_process: ActivationPostProcess::default(),
            alpha,
            int8: None,
        }
    }

    fn forward<X: Batch<4>>(&self, a: X, b: X) -> X {
        X::apply(self, vec![a, b])
    }
}

impl QuantLayer for ScaledAdd {
    fn kind(&self) -> &'static str {
        "ScaledAdd"
    }

    fn prepare(
        &mut self,
        qconfig: &QConfig,
        mode: PrepareMode,
        device: &Device,
    ) -> burn_qat::Result<()> {
        self.activation_post_process.ensure_unprepared()?;
        self.activation_post_process = ActivationPostProcess::prepared(qconfig, mode, device)?;
        Ok(())
    }

    fn for_each_fake_quant(&mut self, f: &mut dyn FnMut(&mut burn_qat::quant::FakeQuantize)) {
        if let Some(fq) = self.activation_post_process.fake_quantize_mut() {
            f(fq);
        }
    }

    fn output_observer(&self) -> Option<&Observer> {
        self.activation_post_process.observer()
    }

    fn convert(&mut self, _: QParamsPt, engine: Engine) -> burn_qat::Result<()> {
        let observer = self
            .activation_post_process
            .calibrated_observer("ScaledAdd")?;
        let qp = observer.calculate_qparams()?;
        let qparams = QParamsPt::new(qp.scale[0], qp.zero_point[0] as i32)?;
        self.int8 = Some(QuantizedOutput { qparams, engine });
        Ok(())
    }

    fn int8_output(&self) -> Option<QuantizedOutput> {
        self.int8
    }

    fn int8_state_keys(&self) -> &'static [&'static str] {
        &["scale", "zero_point", "alpha"]
    }

    fn int8_state(&self, path: &str, state: &mut StateDict) -> burn_qat::Result<()> {
        if let Some(out) = self.int8 {
            put_output(state, path, out.qparams);
            let alpha = StateValue::Float {
                shape: vec![],
                data: vec![self.alpha],
            };
            state.insert(format!("{path}.alpha"), alpha);
        }
        Ok(())
    }

    fn load_int8_state(
        &mut self,
        path: &str,
        entries: &Entries<'_>,
        _: QParamsPt,
        engine: Engine,
    ) -> burn_qat::Result<()> {
        let qparams = entries.output(path)?;
        self.alpha = match entries.require(&format!("{path}.alpha"))? {
            StateValue::Float { data, .. } if data.len() == 1 => data[0],
            _ => {
                return Err(burn_qat::Error::Quant(format!(
                    "`{path}.alpha` is not a scalar"
                )));
            }
        };
        self.int8 = Some(QuantizedOutput { qparams, engine });
        Ok(())
    }
}

impl QuantOp<4> for ScaledAdd {
    fn layer_address(&self) -> usize {
        address_of(self)
    }

    fn op_kind(&self) -> &'static str {
        "ScaledAdd"
    }

    fn forward_float(&self, inputs: Vec<Tensor<4>>) -> Tensor<4> {
        let [a, b]: [Tensor<4>; 2] = inputs.try_into().unwrap();
        self.activation_post_process
            .post_process(a + b.mul_scalar(self.alpha))
    }

    /// Through float, as a reference op would: dequantize, compute, quantize.
    fn forward_int8(&self, inputs: &[&QTensor]) -> burn_qat::Result<QTensor> {
        let out = self.int8.expect("converted");
        let (a, b) = (inputs[0].dequantize(), inputs[1].dequantize());
        let y: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + self.alpha * b).collect();
        QTensor::quantize(&y, inputs[0].shape(), out.qparams)
    }

    fn int8_layout(&self, input: PoolInputLayout) -> PoolInputLayout {
        input
    }

    /// `DQ(a), DQ(b) → Mul(α) → Add → [Q]`.
    fn onnx(&self, graph: &mut Builder, path: &str, inputs: &[Act]) -> burn_qat::Result<Act> {
        let a = graph.float_input(&inputs[0], path)?;
        let b = graph.float_input(&inputs[1], path)?;
        let output = match (graph.kind, self.int8) {
            (ExportKind::Int8, Some(out)) => Some(graph.int8_output(path, out.qparams)?),
            _ => self.activation_post_process.onnx_output(graph, path)?,
        };
        let alpha = graph.init_f32(format!("{path}.alpha"), &[], &[self.alpha])?;
        let scaled = graph.node("Mul", &[&b, &alpha], &format!("{path}.scaled"), vec![])?;
        let y = graph.node("Add", &[&a, &scaled], &format!("{path}.float"), vec![])?;
        graph.finish(y, output, path)
    }
}

#[derive(Module, Debug)]
struct Net {
    quant: QuantStub,
    conv1: ConvBnAct,
    conv2: ConvBnAct,
    scaled: ScaledAdd,
    fc: LinearBnAct,
    dequant: DeQuantStub,
}

burn_qat::impl_quantizable!(Net {
    quant,
    conv1,
    conv2,
    scaled,
    fc,
    dequant
});

impl Net {
    fn new(device: &Device) -> Self {
        Net {
            quant: QuantStub::new(),
            conv1: ConvBnActConfig::new(2, 8)
                .with_stride(2)
                .with_activation(Activation::Relu)
                .init(device),
            conv2: ConvBnActConfig::new(8, 8)
                .with_activation(Activation::Identity)
                .init(device),
            scaled: ScaledAdd::new(0.5),
            fc: LinearBnActConfig::new(8, 3).init(device),
            dequant: DeQuantStub::new(),
        }
    }

    /// The one forward, over every batch type.
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let x = self.conv1.forward(x);
        let x = self.scaled.forward(x.clone(), self.conv2.forward(x));
        self.dequant
            .forward(self.fc.forward(x.global_avg_pool_flatten()))
    }

    fn onnx(&self, kind: ExportKind) -> Vec<u8> {
        trace_onnx(self, kind, "net", [1, 2, 12, 12], |m, x| {
            m.forward_as::<OnnxBatch<4>>(x)
        })
        .unwrap()
        .encode_to_vec()
    }
}

fn worst_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_layer_kind_of_the_users_goes_through_every_stage() {
    let device = Device::flex();
    let train = device.clone().autodiff();
    train.seed(5);
    let (x, x_host, shape) = user_input(4, &device);
    let mut model = Net::new(&train);

    // Float: the eval forward and its ONNX.
    let eval = model.valid().to_device(&device);
    let float = to_vec(eval.forward_as::<Tensor<4>>(x.clone()));
    assert!(float.iter().any(|&v| v != float[0]), "{float:?}");
    let theirs = tract_run(&eval.onnx(ExportKind::Float), &x_host, &shape);
    assert!(
        worst_abs(&theirs, &float) < 1e-4,
        "float ONNX: {theirs:?} vs {float:?}"
    );

    // QAT: fuse, prepare_qat (the ScaledAdd gets a fake-quant), three SGD steps. qnnpack: x86's
    // reduce_range fake-quant clamps outputs at 127 where the int8 model does not (as in
    // PyTorch), which would blur the int8-vs-fake-quant comparison below.
    burn_qat::fuse::fuse_modules_qat(&mut model).unwrap();
    let qconfig = QConfig::default_qat(QuantBackend::Qnnpack);
    burn_qat::quantize::prepare_qat(&mut model, &qconfig, &train).unwrap();
    assert!(
        model
            .scaled
            .activation_post_process
            .fake_quantize()
            .is_some(),
        "prepare_qat reached the user's layer"
    );
    let mut trained = model;
    let mut optim = SgdConfig::new().init();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &train);
    let xt = x.clone().to_device(&train);
    let mut losses = Vec::new();
    for _ in 0..3 {
        let logits = trained.forward_as::<Tensor<4>>(xt.clone());
        let loss = CrossEntropyLossConfig::new()
            .init(&train)
            .forward(logits, labels.clone());
        losses.push(to_vec(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &trained);
        trained = optim.step(0.01, trained, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let mut model = trained.valid().to_device(&device);
    burn_qat::quantize::disable_observer(&mut model);
    let range = model.scaled.output_observer().unwrap().min_max();
    assert!(
        range.0[0].is_finite() && range.0[0] < range.1[0],
        "{range:?}"
    );

    // The QDQ export runs like the fake-quant forward.
    let fake_quant = to_vec(model.forward_as::<Tensor<4>>(x.clone()));
    let out_scale = model
        .fc
        .activation_post_process
        .fake_quantize()
        .unwrap()
        .current_qparams()
        .scale[0] as f64;
    let theirs = tract_run(&model.onnx(ExportKind::FakeQuant), &x_host, &shape);
    let (_, within1, _) = quanta(&theirs, &fake_quant, out_scale);
    assert_eq!(
        within1,
        fake_quant.len(),
        "QDQ: {theirs:?} vs {fake_quant:?}"
    );

    // Convert: the user's layer reads its qparams from its own observer; the int8 forward
    // runs it on quint8 tensors.
    burn_qat::convert::convert(&mut model, Engine::Qnnpack).unwrap();
    let alpha_qparams = model.scaled.int8.unwrap().qparams;
    assert!(alpha_qparams.scale > 0.0);
    let int8 = to_vec(model.forward_as::<QBatch<4>>(x.clone()).unwrap());
    assert!(int8.iter().any(|&v| v != int8[0]), "{int8:?}");
    let int8_scale = model.fc.int8.as_ref().unwrap().output_qparams().scale as f64;
    let (_, _, worst) = quanta(&int8, &fake_quant, int8_scale);
    assert!(
        worst <= 3,
        "int8 vs fake-quant (scale {int8_scale}): {int8:?} vs {fake_quant:?}"
    );

    // Save and load: the layer's own entries (`scaled.alpha`) go into the file and come back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.int8.safetensors");
    save_int8_model(&model, &path, &Default::default()).unwrap();
    let (state, _) = read_int8_file(&path).unwrap();
    assert!(state.contains_key("scaled.alpha"), "{:?}", state.keys());
    let mut loaded = Net::new(&device);
    loaded.scaled.alpha = 2.0;
    load_int8_model(&mut loaded, &path).unwrap();
    assert_eq!(loaded.scaled.alpha, 0.5);
    let reloaded = to_vec(loaded.forward_as::<QBatch<4>>(x.clone()).unwrap());
    assert_eq!(
        reloaded, int8,
        "the loaded model runs bit for bit as the saved one"
    );

    // The int8 ONNX runs in tract like the crate, up to the pooling's rounding: ONNX pools in
    // float between DQ and Q, the crate in qnnpack's integer arithmetic, and the two may round a
    // pooled value one input quantum apart. The fc carries that quantum into its outputs, which
    // here have a far smaller scale: its largest row of |W| times the input scale, in output
    // quanta, plus one for the output's own rounding.
    let bytes = loaded.onnx(ExportKind::Int8);
    let ops = op_counts(&model_of(&bytes));
    assert_eq!(ops["Mul"], 1, "the user's layer wrote its nodes: {ops:?}");
    let theirs = tract_run(&bytes, &x_host, &shape);
    let fc = loaded.fc.int8.as_ref().unwrap();
    let fc_input_scale = loaded.scaled.int8.unwrap().qparams.scale as f64;
    let weight = fc.weight().dequantize();
    let widest_row = weight
        .chunks(fc.in_features())
        .map(|row| row.iter().map(|w| w.abs() as f64).sum::<f64>())
        .fold(0.0, f64::max);
    let bound = 1 + (widest_row * fc_input_scale / int8_scale).ceil() as i64;
    let (equal, _, worst) = quanta(&theirs, &reloaded, int8_scale);
    assert!(
        worst <= bound && equal * 4 >= reloaded.len() * 3,
        "int8 ONNX ({equal} equal, worst {worst} quanta, bound {bound}): {theirs:?} vs {reloaded:?}"
    );
}
