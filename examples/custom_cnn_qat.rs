//! Make your own model quantizable and train it with QAT:
//! `cargo run --release --example custom_cnn_qat`.
//!
//! A small CNN with a residual add, written once: the same `forward` runs in float, after
//! fusion, with fake quantization and — after `convert` — on the int8 kernels. The steps mirror
//! PyTorch's eager mode: build from quantizable layers, fuse for QAT, `prepare_qat` with a
//! `QConfigMapping` that keeps the classifier in float (`qconfig = None`), train, freeze
//! observers and BN, `convert`, run int8, save and reload the int8 model and export it to ONNX.
//! (The data is synthetic; see `qat_finetune` for real data.)

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_qat::nn::ActivationPostProcess;
use burn_qat::prelude::*;

/// Two convolutions with a residual connection and a linear classifier, which stays float.
#[derive(Module, Debug)]
struct SmallNet {
    quant: QuantStub,
    conv1: ConvBnAct,
    conv2: ConvBnAct,
    skip_add: FloatFunctional,
    dequant: DeQuantStub,
    fc: LinearBnAct,
}

// The layers `prepare_qat` and friends visit, in forward order (stubs included: `convert`
// checks that the float classifier comes after the DeQuantStub).
impl_quantizable!(SmallNet {
    quant,
    conv1,
    conv2,
    skip_add,
    dequant,
    fc
});

impl SmallNet {
    fn new(device: &Device) -> Self {
        Self {
            quant: QuantStub::new(),
            conv1: ConvBnActConfig::new(1, 16)
                .with_stride(2)
                .with_activation(Activation::Relu)
                .init(device),
            conv2: ConvBnActConfig::new(16, 16)
                .with_activation(Activation::Relu)
                .init(device),
            skip_add: FloatFunctional::new(),
            dequant: DeQuantStub::new(),
            fc: LinearBnActConfig::new(16, 2).init(device),
        }
    }
}

/// An image classifier with one forward for every stage, generic over what flows between the
/// layers: float tensors (float, fused, fake-quantized) or int8 batches (converted), back to
/// float before the classifier. `forward` and `forward_int8` come with the trait, and so does
/// the rest of the crate's tooling: `finetune::run_with` (the fine-tuning loop with its
/// checkpoints and resume) and `finetune::data_parallel::fit_data_parallel`
/// take any `ImageClassifier`.
impl ImageClassifier for SmallNet {
    fn forward_as<X: ImageBatch>(&self, x: Tensor<4>) -> <X::Flat as Batch<2>>::Float {
        let x: X = self.quant.forward(x);
        let x = self.conv1.forward(x);
        let x = self.skip_add.add(x.clone(), self.conv2.forward(x));
        let x = self.dequant.forward_batch(x);
        self.fc.forward(x.global_avg_pool_flatten()).dequantize()
    }
}

/// A toy task: is the image's mean brightness positive?
fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let x = Tensor::<4>::random([32, 1, 16, 16], Distribution::Normal(0.0, 1.0), device);
    let labels = x
        .clone()
        .mean_dim(3)
        .mean_dim(2)
        .flatten::<1>(0, 3)
        .greater_elem(0.0)
        .int();
    (x, labels)
}

fn train(model: SmallNet, steps: usize, device: &Device) -> SmallNet {
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut model = model;
    for step in 0..steps {
        let (x, y) = batch(device);
        let loss = loss_fn.forward(model.forward(x), y);
        if step % 10 == 0 {
            println!(
                "  step {step:3}: loss {:.4}",
                loss.clone().into_scalar::<f32>()
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    model
}

fn main() -> burn_qat::Result<()> {
    let device = Device::flex().autodiff();
    println!("float training");
    let mut model = train(SmallNet::new(&device), 30, &device);

    // Fuse conv + BN + ReLU for QAT (BN keeps learning), then attach fake-quants everywhere
    // but on the classifier, which stays float (PyTorch: `model.fc.qconfig = None`).
    fuse_modules_qat(&mut model)?;
    let qconfig =
        QConfigMapping::from(QConfig::default_qat(QuantBackend::X86)).with_path("fc", None);
    prepare_qat(&mut model, &qconfig, &device)?;
    println!("QAT");
    let mut model = train(model, 20, &device);
    // The usual schedule: freeze ranges and BN statistics for the last steps.
    disable_observer(&mut model);
    freeze_bn_stats(&mut model);
    println!("QAT, observers and BN statistics frozen");
    let model = train(model, 10, &device);

    if let ActivationPostProcess::FakeQuantize(fq) = &model.skip_add.activation_post_process {
        let qp = fq.current_qparams();
        println!(
            "residual add output: scale {:.5}, zero-point {}",
            qp.scale[0], qp.zero_point[0]
        );
    }

    // Convert to int8 (eval mode, on the plain CPU device) and compare with fake-quant QAT.
    let mut int8 = model.valid();
    convert(&mut int8, Engine::X86)?;
    let (x, labels) = batch(&Device::flex());
    let agree = |logits: Tensor<2>| {
        let pred = logits.argmax(1).flatten::<1>(0, 1);
        pred.equal(labels.clone()).int().sum().into_scalar::<i64>()
    };
    let fake = agree(int8.forward(x.clone()));
    let real = agree(int8.forward_int8(x)?);
    println!("accuracy on a fresh batch of 32: QAT fake-quant {fake}/32, int8 {real}/32");
    let path = std::env::temp_dir().join("small_net.int8.safetensors");
    save_int8_model(&int8, &path, &Default::default())?;
    println!("saved the int8 model to {}", path.display());
    // Loading it into a fresh model: int8 layers get their int8 form, the float classifier its
    // float weights.
    let mut loaded = SmallNet::new(&Device::flex());
    load_int8_model(&mut loaded, &path)?;
    let (x, _) = batch(&Device::flex());
    let same = int8
        .forward_int8(x.clone())?
        .equal(loaded.forward_int8(x)?)
        .all();
    println!(
        "the reloaded model gives the same logits: {}",
        same.into_scalar::<bool>()
    );
    // ONNX of the int8 model, laid out by its own forward run on symbolic batches.
    let onnx = trace_onnx(
        &int8,
        ExportKind::Int8,
        "small_net",
        [1, 1, 16, 16],
        |m, x| m.forward_as::<OnnxBatch<4>>(x),
    )?;
    let path = std::env::temp_dir().join("small_net.int8.onnx");
    save_onnx(&onnx, &path)?;
    println!("exported the int8 model to {}", path.display());
    Ok(())
}
