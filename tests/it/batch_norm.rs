//! PyTorch-parity batch norm (training statistics, gradients) and BN folding, against
//! `scripts/gen_fixtures.py` (torch.nn.BatchNorm2d, torch.nn.utils.fusion).

use crate::common::{Fixture, assert_close, to_vec};
use burn::module::{Module, Param};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use burn_qat::fuse::{fold_bn_into_conv, fold_bn_into_linear};
use burn_qat::nn::{BatchNorm2d, BatchNorm2dConfig};

fn bn_from(fx: &Fixture, prefix: &str, device: &Device) -> BatchNorm2d {
    let mut bn = BatchNorm2dConfig::new(fx.shape(&format!("{prefix}weight"))[0]).init(device);
    bn.weight = Param::from_tensor(fx.tensor(&format!("{prefix}weight"), device));
    bn.bias = Param::from_tensor(fx.tensor(&format!("{prefix}bias"), device));
    bn.running_mean =
        burn::module::RunningState::new(fx.tensor(&format!("{prefix}running_mean"), device));
    bn.running_var =
        burn::module::RunningState::new(fx.tensor(&format!("{prefix}running_var"), device));
    bn
}

#[test]
fn training_steps_match_pytorch_outputs_gradients_and_running_stats() {
    // flex runs the fused batch-norm op (`burn_qat::ops::BatchNormTrainBackend`), a GPU backend
    // (where there is one) the composition of Burn tensor ops.
    for device in crate::common::devices()
        .into_iter()
        .filter(Device::is_autodiff)
    {
        training_steps_match_pytorch_on(&device);
    }
}

fn training_steps_match_pytorch_on(device: &Device) {
    let fx = Fixture::load("batch_norm.safetensors");
    let device = device.clone();
    let bn = bn_from(&fx, "bn.init.", &device);
    for step in 0..3 {
        let key = |k: &str| format!("bn.step{step}.{k}");
        let x: Tensor<4> = fx.tensor(&key("x"), &device).require_grad();
        let g: Tensor<4> = fx.tensor(&key("g"), &device);
        let y = bn.forward(x.clone());
        let grads = (y.clone() * g).sum().backward();
        assert_close(&to_vec(y), &fx.f32(&key("y")), 1e-5, 1e-5, &key("y"));
        let x_grad = x.grad(&grads).unwrap();
        assert_close(
            &to_vec(x_grad),
            &fx.f32(&key("x_grad")),
            1e-5,
            1e-5,
            &key("x_grad"),
        );
        for (name, param) in [("weight_grad", &bn.weight), ("bias_grad", &bn.bias)] {
            let grad = param.val().grad(&grads).unwrap();
            assert_close(&to_vec(grad), &fx.f32(&key(name)), 1e-4, 1e-5, &key(name));
        }
        let rm = bn.running_mean();
        let rv = bn.running_var();
        assert_close(
            &to_vec(rm),
            &fx.f32(&key("running_mean")),
            1e-6,
            1e-6,
            &key("rm"),
        );
        assert_close(
            &to_vec(rv),
            &fx.f32(&key("running_var")),
            1e-6,
            1e-6,
            &key("rv"),
        );
    }
    // Eval mode (`valid`): running statistics, nothing updated.
    let eval = bn.valid();
    let x: Tensor<4> = fx.tensor("bn.step0.x", &device.clone().without_autodiff());
    let y = eval.forward(x.clone());
    assert_close(&to_vec(y), &fx.f32("bn.eval.y"), 1e-5, 1e-5, "eval");
    let before = to_vec(eval.running_var());
    let _ = eval.forward(x);
    assert_eq!(to_vec(eval.running_var()), before, "eval must not update");
}

#[test]
fn frozen_stats_use_running_statistics_and_are_not_updated() {
    let fx = Fixture::load("batch_norm.safetensors");
    let device = Device::flex().autodiff();
    let mut bn = bn_from(&fx, "bn.init.", &device);
    bn.freeze_stats();
    let y = bn.forward::<4>(fx.tensor("bn.step0.x", &device));
    assert_close(
        &to_vec(bn.running_mean()),
        &fx.f32("bn.init.running_mean"),
        0.0,
        0.0,
        "frozen running_mean",
    );
    // Same as eval with the initial statistics.
    let eval = bn_from(&fx, "bn.init.", &Device::flex()).valid();
    let expected = to_vec(eval.forward::<4>(fx.tensor("bn.step0.x", &Device::flex())));
    assert_close(&to_vec(y), &expected, 1e-6, 1e-6, "frozen forward");
}

#[test]
fn conv_bn_folding_matches_fuse_conv_bn_eval() {
    let fx = Fixture::load("batch_norm.safetensors");
    let device = Device::flex();
    let x: Tensor<4> = fx.tensor("bn.step0.x", &device);
    for tag in ["conv_bias1", "conv_bias0"] {
        let has_bias = tag.ends_with('1');
        let mut conv = Conv2dConfig::new([4, 6], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(has_bias)
            .init(&device);
        conv.weight = Param::from_tensor(fx.tensor(&format!("{tag}.weight"), &device));
        if has_bias {
            conv.bias = Some(Param::from_tensor(
                fx.tensor(&format!("{tag}.bias"), &device),
            ));
        }
        let bn = bn_from(&fx, &format!("{tag}.bn."), &device).valid();
        let fused = fold_bn_into_conv(&conv, &bn);
        let w = to_vec(fused.weight.val());
        assert_close(&w, &fx.f32(&format!("{tag}.fused_weight")), 1e-6, 1e-6, tag);
        let b = to_vec(fused.bias.as_ref().unwrap().val());
        assert_close(&b, &fx.f32(&format!("{tag}.fused_bias")), 1e-6, 1e-6, tag);
        let y = to_vec(fused.forward(x.clone()));
        assert_close(&y, &fx.f32(&format!("{tag}.y")), 1e-5, 1e-5, tag);
    }
}

#[test]
fn linear_bn_folding_matches_fuse_linear_bn_eval() {
    let fx = Fixture::load("batch_norm.safetensors");
    let device = Device::flex();
    let mut linear = LinearConfig::new(5, 3).init(&device);
    // PyTorch stores [out, in]; Burn [in, out].
    let w: Tensor<2> = fx.tensor("linear.weight", &device);
    linear.weight = Param::from_tensor(w.transpose());
    linear.bias = Some(Param::from_tensor(fx.tensor("linear.bias", &device)));
    let bn = bn_from(&fx, "linear.bn.", &device).valid();
    let fused = fold_bn_into_linear(&linear, &bn);
    let w = to_vec(fused.weight.val().transpose());
    assert_close(
        &w,
        &fx.f32("linear.fused_weight"),
        1e-6,
        1e-6,
        "linear weight",
    );
    let b = to_vec(fused.bias.unwrap().val());
    assert_close(&b, &fx.f32("linear.fused_bias"), 1e-6, 1e-6, "linear bias");
}
