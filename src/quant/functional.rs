//! The fake-quantization function with its straight-through gradient.
//!
//! Forward, per element (PyTorch's CPU kernels `_fake_quantize_tensor_helper` and
//! `_fake_quant_per_channel_cachemask_cpu_helper` in
//! `aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp`, torch 2.5.1):
//!
//! ```text
//! inv_scale = 1.0f / scale                              // f32 reciprocal, then multiply
//! qval      = (int64)(zero_point + nearbyint(x * inv_scale))   // ties to even
//! out       = (clamp(qval, quant_min, quant_max) - zero_point) * scale
//! mask      = quant_min <= qval <= quant_max
//! ```
//!
//! The int64 conversion of a value outside the int64 range (|x·inv_scale| ≥ 2^63, ±inf, NaN)
//! gives `INT64_MIN` on x86, so such inputs come out as `(quant_min - zero_point) * scale` with a
//! zero gradient; this module reproduces that.
//!
//! Backward (`fake_quantize_per_tensor_affine_cachemask_backward`): `dX = dY * mask`, i.e. a
//! straight-through estimator that is zero where the *rounded* value falls outside the range.
//! On the flex CPU backend both directions are one fused op (`crate::ops::FakeQuantBackend`);
//! elsewhere they are composed from differentiable ops as
//! `out = fq(x.detach()) + (x·mask − (x·mask).detach())`, whose forward value is exactly `fq`.

use burn::tensor::activation::relu;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use crate::numerics::TWO_POW_63;
use crate::ops::{FakeQuantSpec, fake_quantize, has_cpu_kernels};

use crate::{Error, Result};

/// Per-tensor fake quantization (`torch.fake_quantize_per_tensor_affine`), with a
/// straight-through gradient when `x` is tracked by autodiff.
///
/// `scale` must be positive and finite (it comes from a qparams calculator).
pub fn fake_quantize_per_tensor<const D: usize>(
    x: Tensor<D>,
    scale: f32,
    zero_point: i64,
    quant_min: i64,
    quant_max: i64,
) -> Tensor<D> {
    let spec = FakeQuantSpec::per_tensor(scale, zero_point, quant_min, quant_max);
    fake_quantize_per_tensor_spec(x, spec)
}

/// [`fake_quantize_per_tensor`] from a per-tensor spec, which may ask for ReLU first
/// ([`FakeQuantSpec::after_relu`]).
pub(crate) fn fake_quantize_per_tensor_spec<const D: usize>(
    x: Tensor<D>,
    spec: FakeQuantSpec,
) -> Tensor<D> {
    if has_cpu_kernels(&x.device()) && x.dtype() == DType::F32 {
        return fake_quantize(x, spec);
    }
    let x = if spec.relu { relu(x) } else { x };
    let device = x.device();
    let value = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &device);
    let qparams = (value(spec.scale[0]), value(spec.zero_point[0] as f32));
    fake_quantize_on_device(x, qparams, None, spec.quant_min, spec.quant_max)
}

/// Fake quantization with scale and zero-point as device tensors (`[1]` per tensor, or one
/// value per index of `axis`), composed from Burn ops with the straight-through gradient: the
/// generic path, which reads nothing back to the host. `1/scale` is taken per element in f32 as
/// PyTorch does.
pub(crate) fn fake_quantize_on_device<const D: usize>(
    x: Tensor<D>,
    (scale, zero_point): (Tensor<1>, Tensor<1>),
    axis: Option<usize>,
    quant_min: i64,
    quant_max: i64,
) -> Tensor<D> {
    let mut shape = [1usize; D];
    if let Some(axis) = axis {
        shape[axis] = scale.dims()[0];
    }
    let sc: Tensor<D> = scale.reshape(shape);
    let zp: Tensor<D> = zero_point.reshape(shape);
    let inv = sc.clone().recip();
    // Untracked (`detach` alone keeps a leaf's `require_grad`): the gradient is the
    // straight-through term's, and autodiff need not record the rounding chain.
    let v = x
        .clone()
        .detach()
        .set_require_grad(false)
        .mul(inv)
        .round()
        .add(zp.clone());
    let (q, v) = clamp_q(v, quant_min, quant_max);
    let fq = q.clone().sub(zp).mul(sc);
    straight_through(x, fq, q, v)
}

/// Per-channel fake quantization along `axis` (`torch.fake_quantize_per_channel_affine`), with
/// a straight-through gradient when `x` is tracked by autodiff.
///
/// `scale` and `zero_point` must have one entry per index of `axis`.
pub fn fake_quantize_per_channel<const D: usize>(
    x: Tensor<D>,
    scale: &[f32],
    zero_point: &[i64],
    axis: usize,
    quant_min: i64,
    quant_max: i64,
) -> Result<Tensor<D>> {
    let dims = x.dims();
    if axis >= D {
        return Err(Error::Shape(format!(
            "per-channel fake-quant axis {axis} is out of range for a rank-{D} tensor"
        )));
    }
    let channels = dims[axis];
    if scale.len() != channels || zero_point.len() != channels {
        return Err(Error::Shape(format!(
            "per-channel fake-quant along axis {axis} of shape {dims:?} needs {channels} scales \
             and zero-points, got {} and {}",
            scale.len(),
            zero_point.len()
        )));
    }
    let device = x.device();
    if has_cpu_kernels(&device) && x.dtype() == DType::F32 {
        let spec = FakeQuantSpec {
            scale: scale.to_vec(),
            zero_point: zero_point.to_vec(),
            inner: dims[axis + 1..].iter().product(),
            quant_min,
            quant_max,
            relu: false,
        };
        return Ok(fake_quantize(x, spec));
    }
    let to_tensor = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [channels]), &device);
    let qparams = (
        to_tensor(scale.to_vec()),
        to_tensor(zero_point.iter().map(|&z| z as f32).collect()),
    );
    Ok(fake_quantize_on_device(
        x,
        qparams,
        Some(axis),
        quant_min,
        quant_max,
    ))
}

/// Applies the int64-overflow rule and clamps: returns `(clamped, unclamped)` quantized values.
fn clamp_q<const D: usize>(v: Tensor<D>, quant_min: i64, quant_max: i64) -> (Tensor<D>, Tensor<D>) {
    // Values that do not fit in int64 (and NaN) become INT64_MIN, i.e. below quant_min.
    let fits = v.clone().lower_elem(TWO_POW_63);
    let v = v.mask_fill(fits.bool_not(), f32::NEG_INFINITY);
    let q = v.clone().clamp(quant_min as f32, quant_max as f32);
    (q, v)
}

/// The in-range mask: the clamped value equals the unclamped one.
fn in_range_mask<const D: usize>(q: Tensor<D>, v: Tensor<D>) -> Tensor<D, Bool> {
    q.equal(v)
}

/// `fq` in the forward pass, `dY * mask` in the backward pass.
fn straight_through<const D: usize>(
    x: Tensor<D>,
    fq: Tensor<D>,
    q: Tensor<D>,
    v: Tensor<D>,
) -> Tensor<D> {
    if !x.is_tracked() {
        return fq;
    }
    let mask = in_range_mask(q, v);
    let xm = x.mask_fill(mask.bool_not(), 0.0);
    // xm - xm.detach() is exactly 0 (xm is finite where the mask is set, 0 elsewhere).
    fq + (xm.clone() - xm.detach())
}
