//! The fused QAT convolution (`ConvBnAct` after `fuse_modules_qat` + `prepare_qat`, i.e.
//! `torch.ao.nn.intrinsic.qat.ConvBnReLU2d`) against
//! PyTorch: three training steps with the default qnnpack and x86 QAT qconfigs
//! (`scripts/gen_fixtures.py`, `qat_conv_bn`).

mod common;

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor};
use burn_qat::fuse::fuse_modules_qat;
use burn_qat::nn::{Activation, ActivationPostProcess, ConvBnActConfig};
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare_qat;
use common::{Fixture, assert_close, to_vec};

fn run(backend: QuantBackend, tag: &str) {
    let fx = Fixture::load("qat_conv_bn.safetensors");
    let device = Device::flex().autodiff();
    let qconfig = QConfig::default_qat(backend);
    let mut layer = ConvBnActConfig::new(4, 6)
        .with_activation(Activation::Relu)
        .init(&device);
    let bn = layer.bn.as_mut().unwrap();
    bn.running_mean = RunningState::new(fx.tensor(&format!("{tag}.init.bn.running_mean"), &device));
    bn.running_var = RunningState::new(fx.tensor(&format!("{tag}.init.bn.running_var"), &device));
    fuse_modules_qat(&mut layer).unwrap();
    prepare_qat(&mut layer, &qconfig, &device).unwrap();
    // The PyTorch module alone has no output fake-quant (prepare attaches it as a hook).
    layer.activation_post_process = ActivationPostProcess::default();
    for step in 0..3 {
        let key = |k: &str| format!("{tag}.step{step}.{k}");
        // Parameters as PyTorch had them at this step; stateful parts (BN running statistics,
        // weight fake-quant observer) carry over from our own previous steps.
        layer.conv.weight = Param::from_tensor(fx.tensor(&key("weight"), &device));
        let bn = layer.bn.as_mut().unwrap();
        bn.weight = Param::from_tensor(fx.tensor(&key("bn.weight"), &device));
        bn.bias = Param::from_tensor(fx.tensor(&key("bn.bias"), &device));

        let x: Tensor<4> = fx.tensor(&key("x"), &device).require_grad();
        let y = layer.forward(x.clone());
        let grads = (y.clone() * fx.tensor::<4>(&key("g"), &device))
            .sum()
            .backward();
        assert_close(&to_vec(y), &fx.f32(&key("y")), 1e-5, 1e-5, &key("y"));
        let bn = layer.bn.as_ref().unwrap();
        let checks = [
            ("x_grad", x.grad(&grads).map(to_vec)),
            (
                "weight_grad",
                layer.conv.weight.val().grad(&grads).map(to_vec),
            ),
            ("bn.weight_grad", bn.weight.val().grad(&grads).map(to_vec)),
            ("bn.bias_grad", bn.bias.val().grad(&grads).map(to_vec)),
        ];
        for (name, grad) in checks {
            let grad = grad.unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_close(&grad, &fx.f32(&key(name)), 1e-4, 1e-4, &key(name));
        }
        assert_close(
            &to_vec(bn.running_mean()),
            &fx.f32(&key("bn.running_mean")),
            1e-6,
            1e-5,
            &key("rm"),
        );
        assert_close(
            &to_vec(bn.running_var()),
            &fx.f32(&key("bn.running_var")),
            1e-6,
            1e-5,
            &key("rv"),
        );
        let qp = layer.weight_fake_quant.as_ref().unwrap().current_qparams();
        assert_close(
            &qp.scale,
            &fx.f32(&key("wfq.scale")),
            0.0,
            1e-6,
            &key("scale"),
        );
        assert_eq!(
            qp.zero_point,
            fx.i64(&key("wfq.zero_point")),
            "{}",
            key("zero_point")
        );
    }
}

#[test]
fn conv_bn_relu_qnnpack_matches_pytorch_for_three_steps() {
    run(QuantBackend::Qnnpack, "qnnpack");
}

#[test]
fn conv_bn_relu_x86_per_channel_matches_pytorch_for_three_steps() {
    run(QuantBackend::X86, "x86");
}
