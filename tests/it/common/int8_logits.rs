//! Int8 logits against PyTorch's quint8 ones (the model fixtures' `q…` arrays), in output
//! quanta.

use super::Fixture;

/// Our dequantized int8 logits `y` and PyTorch's quint8 logits of `fx` under `key`, both in
/// PyTorch's output quanta: ours are `round(y / scale) + zero_point` with `{key}_scale` and
/// `{key}_zero_point`. Asserts the lengths match (so that a zip over them sees every logit).
pub fn int8_logit_quanta(y: &[f32], fx: &Fixture, key: &str, what: &str) -> (Vec<i64>, Vec<i64>) {
    let scale = fx.f32(&format!("{key}_scale"))[0] as f64;
    let zp = fx.i64(&format!("{key}_zero_point"))[0];
    let ours: Vec<i64> = y
        .iter()
        .map(|&v| (v as f64 / scale).round() as i64 + zp)
        .collect();
    let expected = fx.i64(key);
    assert_eq!(ours.len(), expected.len(), "{what}: logit count");
    (ours, expected)
}

/// How many logits are equal, and the largest distance in quanta.
pub fn equal_and_worst(ours: &[i64], expected: &[i64]) -> (usize, Option<i64>) {
    let equal = ours.iter().zip(expected).filter(|(a, b)| a == b).count();
    let worst = ours.iter().zip(expected).map(|(a, b)| (a - b).abs()).max();
    (equal, worst)
}

/// Asserts the int8 logits `y` (dequantized) against PyTorch's quint8 ones under `key`: at
/// least 99% equal and all within one quantum; returns the count of equal ones.
pub fn assert_int8_logits(y: &[f32], fx: &Fixture, key: &str, what: &str) -> usize {
    assert_int8_logits_percent(y, fx, key, 99, what)
}

/// [`assert_int8_logits`] with at least `min_equal_percent`% equal.
pub fn assert_int8_logits_percent(
    y: &[f32],
    fx: &Fixture,
    key: &str,
    min_equal_percent: usize,
    what: &str,
) -> usize {
    let (ours, expected) = int8_logit_quanta(y, fx, key, what);
    let (equal, worst) = equal_and_worst(&ours, &expected);
    println!("{what}: {equal}/{} logits bit-identical", ours.len());
    assert!(
        equal * 100 >= ours.len() * min_equal_percent && worst <= Some(1),
        "{what}: {equal}/{} equal, worst {worst:?} quanta\nours     {ours:?}\nexpected {expected:?}",
        ours.len()
    );
    equal
}

/// Asserts the int8 logits `y` within one quantum of PyTorch's under `key` (the check after
/// QAT steps, whose float rounding may move a logit by one quantum).
pub fn assert_int8_logits_within_one(y: &[f32], fx: &Fixture, key: &str, what: &str) {
    let (ours, expected) = int8_logit_quanta(y, fx, key, what);
    let (equal, worst) = equal_and_worst(&ours, &expected);
    println!(
        "{what}: {equal}/{} equal, worst {worst:?} quanta",
        ours.len()
    );
    assert!(worst <= Some(1), "{what}: worst {worst:?} quanta");
}

/// Asserts every int8 logit `y` equal to PyTorch's under `key`.
pub fn assert_int8_logits_equal(y: &[f32], fx: &Fixture, key: &str, what: &str) {
    let (ours, expected) = int8_logit_quanta(y, fx, key, what);
    let (equal, _) = equal_and_worst(&ours, &expected);
    println!("{what}: {equal}/{} logits bit-identical", expected.len());
    assert_eq!(ours, expected, "{what}");
}
