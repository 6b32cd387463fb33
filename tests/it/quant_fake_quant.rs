//! Fake-quant function against PyTorch (`scripts/gen_quant_fixtures.py`): forward bit-identical
//! (ties, huge/tiny scales, overflow, ±inf, NaN, constant and zero tensors), straight-through
//! gradient equal, on `Device::flex()` and `Device::flex().autodiff()`.

use crate::common::{Fixture, assert_close, assert_matches, devices, to_vec};
use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::quant::{fake_quantize_per_channel, fake_quantize_per_tensor};

fn tensor_dyn<const D: usize>(fx: &Fixture, key: &str, device: &Device) -> Tensor<D> {
    let shape = fx.shape(key);
    Tensor::from_data(TensorData::new(fx.f32(key), shape), device)
}

/// Runs `f` forward; on an autodiff device also backward with `dy` and returns `dx`.
fn run<const D: usize>(
    x: Tensor<D>,
    dy: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    if x.device().is_autodiff() {
        let x = x.require_grad();
        let y = f(x.clone());
        let out = to_vec(y.clone());
        let grads = (y * dy).sum().backward();
        let dx = x.grad(&grads).expect("gradient for x");
        (out, Some(to_vec(dx)))
    } else {
        (to_vec(f(x)), None)
    }
}

/// Runs fixture case `p` (`{p}_x`, `{p}_dy` in; `{p}_out`, `{p}_dx` expected) through `fq`:
/// bit-exact forward, straight-through gradient within 1e-6 on autodiff devices.
fn check_case<const D: usize>(
    fx: &Fixture,
    p: &str,
    device: &Device,
    fq: impl Fn(Tensor<D>) -> Tensor<D>,
) {
    let x: Tensor<D> = tensor_dyn(fx, &format!("{p}_x"), device);
    let dy: Tensor<D> = tensor_dyn(fx, &format!("{p}_dy"), device);
    let (out, dx) = run(x, dy, fq);
    let expected = fx.f32(&format!("{p}_out"));
    assert_matches(
        &out,
        &expected,
        device,
        &format!("{p} forward on {device:?}"),
    );
    if let Some(dx) = dx {
        assert_close(
            &dx,
            &fx.f32(&format!("{p}_dx")),
            1e-6,
            0.0,
            &format!("{p} dx"),
        );
    }
}

fn check_per_tensor<const D: usize>(fx: &Fixture, i: i64, device: &Device) {
    let p = format!("pt{i}");
    let scale = fx.f32(&format!("{p}_scale"))[0];
    let zp = fx.i64(&format!("{p}_zp"))[0];
    let r = fx.i64(&format!("{p}_qrange"));
    check_case::<D>(fx, &p, device, |x| {
        fake_quantize_per_tensor(x, scale, zp, r[0], r[1])
    });
}

#[test]
fn per_tensor_forward_and_ste_match_pytorch() {
    let fx = Fixture::load("quant_fake_quant.safetensors");
    let n = fx.i64("n_pt")[0];
    assert!(n >= 10);
    for device in devices() {
        for i in 0..n {
            match fx.shape(&format!("pt{i}_x")).len() {
                1 => check_per_tensor::<1>(&fx, i, &device),
                2 => check_per_tensor::<2>(&fx, i, &device),
                4 => check_per_tensor::<4>(&fx, i, &device),
                r => panic!("unexpected rank {r}"),
            }
        }
    }
}

fn check_per_channel<const D: usize>(fx: &Fixture, i: i64, device: &Device) {
    let p = format!("pc{i}");
    let scale = fx.f32(&format!("{p}_scale"));
    let zp = fx.i64(&format!("{p}_zp"));
    let r = fx.i64(&format!("{p}_axis_qrange"));
    check_case::<D>(fx, &p, device, |x| {
        fake_quantize_per_channel(x, &scale, &zp, r[0] as usize, r[1], r[2]).expect("fake-quant")
    });
}

#[test]
fn per_channel_forward_and_ste_match_pytorch() {
    let fx = Fixture::load("quant_fake_quant.safetensors");
    let n = fx.i64("n_pc")[0];
    assert!(n >= 4);
    for device in devices() {
        for i in 0..n {
            match fx.shape(&format!("pc{i}_x")).len() {
                2 => check_per_channel::<2>(&fx, i, &device),
                3 => check_per_channel::<3>(&fx, i, &device),
                4 => check_per_channel::<4>(&fx, i, &device),
                r => panic!("unexpected rank {r}"),
            }
        }
    }
}

#[test]
fn ties_round_half_to_even() {
    // x = (k + 0.5) * 0.5 with scale 0.5 lands exactly on .5 ties; PyTorch's output (fixture
    // case 0) must differ from round-half-away-from-zero somewhere, or the case proves nothing.
    let fx = Fixture::load("quant_fake_quant.safetensors");
    let x = fx.f32("pt0_x");
    let out = fx.f32("pt0_out");
    let away = x.iter().zip(&out).any(|(&x, &o)| {
        let q = ((x / 0.5).round() + 128.0).clamp(0.0, 255.0);
        (q - 128.0) * 0.5 != o
    });
    assert!(
        away,
        "fixture has no tie where half-even and half-away differ"
    );
    check_per_tensor::<1>(&fx, 0, &Device::flex());
}

#[test]
fn per_channel_rejects_bad_shapes() {
    let device = Device::flex();
    let x = Tensor::<2>::zeros([3, 4], &device);
    assert!(fake_quantize_per_channel(x.clone(), &[1.0; 3], &[0; 3], 1, 0, 255).is_err());
    assert!(fake_quantize_per_channel(x.clone(), &[1.0; 4], &[0; 3], 1, 0, 255).is_err());
    assert!(fake_quantize_per_channel(x, &[1.0; 4], &[0; 4], 2, 0, 255).is_err());
}
