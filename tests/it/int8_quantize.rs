//! `QTensor` / `QWeight` quantize and dequantize against `torch.quantize_per_tensor`,
//! `torch.quantize_per_channel` and `dequantize()` (fixtures: `scripts/gen_int8_fixtures.py`).

use crate::common::{Fixture, assert_bits};
use burn_qat::Error;
use burn_qat::int8::{QParamsPt, QTensor, QWeight, dequantize, quantize_per_tensor};
use burn_qat::quant::QuantDtype;

#[test]
fn quantize_per_tensor_matches_pytorch() {
    let fx = Fixture::load("int8_quantize.safetensors");
    let mut checked = 0;
    for c in fx.case_names().iter().filter(|c| !c.starts_with("pc_")) {
        let x = fx.f32(&format!("{c}.x"));
        let scale = fx.scalar(&format!("{c}.scale"));
        let zp = fx.i64(&format!("{c}.zp"))[0];
        let dtype = match fx.i64(&format!("{c}.dtype"))[0] {
            0 => QuantDtype::QUInt8,
            1 => QuantDtype::QInt8,
            _ => QuantDtype::QInt32,
        };
        let expected = fx.i64(&format!("{c}.q"));
        let q = quantize_per_tensor(&x, scale, zp, dtype).unwrap();
        assert_eq!(q, expected, "{c}: quantize_per_tensor");
        assert_bits(
            &dequantize(&q, scale, zp),
            &fx.f32(&format!("{c}.deq")),
            &format!("{c}: dequantize"),
        );
        if dtype == QuantDtype::QUInt8 {
            let shape = fx.shape(&format!("{c}.x"));
            let t =
                QTensor::quantize(&x, &shape, QParamsPt::new(scale, zp as i32).unwrap()).unwrap();
            let got: Vec<i64> = t.data().iter().map(|&v| v as i64).collect();
            assert_eq!(got, expected, "{c}: QTensor::quantize");
            assert_bits(
                &t.dequantize(),
                &fx.f32(&format!("{c}.deq")),
                &format!("{c}: QTensor::dequantize"),
            );
        }
        checked += expected.len();
    }
    assert!(checked > 1500, "{checked}");
}

#[test]
fn quantize_per_channel_matches_pytorch() {
    let fx = Fixture::load("int8_quantize.safetensors");
    let x = fx.f32("pc_i8.x");
    let shape = fx.shape("pc_i8.x");
    let scales = fx.f32("pc_i8.scales");
    let zps: Vec<i32> = fx.i64("pc_i8.zps").iter().map(|&z| z as i32).collect();
    let w = QWeight::quantize_per_channel(&x, &shape, &scales, &zps).unwrap();
    let got: Vec<i64> = w.data().iter().map(|&v| v as i64).collect();
    assert_eq!(got, fx.i64("pc_i8.q"));
    assert_bits(
        &w.dequantize(),
        &fx.f32("pc_i8.deq"),
        "per-channel dequantize",
    );
}

#[test]
fn bad_quantization_inputs_are_errors() {
    assert!(matches!(QParamsPt::new(0.0, 0), Err(Error::Quant(_))));
    assert!(matches!(QParamsPt::new(0.1, 256), Err(Error::Quant(_))));
    assert!(matches!(
        quantize_per_tensor(&[1.0], 0.1, 300, QuantDtype::QUInt8),
        Err(Error::Quant(_))
    ));
    let qp = QParamsPt::new(0.1, 0).unwrap();
    assert!(matches!(
        QTensor::quantize(&[1.0; 5], &[2, 3], qp),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        QWeight::quantize_per_channel(&[1.0; 6], &[2, 3], &[0.1], &[0]),
        Err(Error::Quant(_))
    ));
    assert!(matches!(
        QWeight::quantize_per_channel(&[1.0; 6], &[2, 3], &[0.1, 0.2], &[0, 200]),
        Err(Error::Quant(_))
    ));
}

/// `QTensor::quantize` (quint8 activations) gives `quantize_per_tensor`'s values (held to
/// PyTorch above) on exact ties, both saturations, infinities and NaN.
#[test]
fn qtensor_quantize_matches_quantize_per_tensor() {
    let scale = 0.05f32;
    let mut x: Vec<f32> = (0..100_000)
        .map(|i| (i as f32 - 50_000.0) * scale * 0.25 + if i % 3 == 0 { 0.0 } else { 1e-3 })
        .collect();
    x.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        2.5 * scale,
        -0.0,
    ]);
    for zp in [0, 3, 128, 255] {
        let q = QTensor::quantize(&x, &[x.len()], QParamsPt::new(scale, zp).unwrap()).unwrap();
        let want = quantize_per_tensor(&x, scale, zp as i64, QuantDtype::QUInt8).unwrap();
        let got: Vec<i64> = q.data().iter().map(|&v| v as i64).collect();
        assert_eq!(got, want, "zero_point {zp}");
    }
}

/// The dispatched quantize kernel (AVX2 on such CPUs) writes the portable path's bytes,
/// full 32-value blocks and the scalar tail alike, from every offset.
#[test]
fn quantize_kernel_matches_its_reference() {
    use burn_qat::int8::kernels::quantize::{quantize, reference};
    let x: Vec<f32> = (0..1000)
        .map(|i| match i % 97 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            _ => (i as f32 - 400.0) * 0.0625,
        })
        .collect();
    for (inv, zp) in [(4.0f32, 0), (8.0, 128), (2.0, 255), (0.3, 7)] {
        for start in [0, 1, 31, 33] {
            let x = &x[start..];
            let (mut got, mut want) = (vec![0u8; x.len()], vec![1u8; x.len()]);
            quantize(x, inv, zp, &mut got);
            reference(x, inv, zp, &mut want);
            assert_eq!(got, want, "inv {inv}, zero_point {zp}, start {start}");
        }
    }
}
