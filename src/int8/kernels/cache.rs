//! What a kernel set derives from a layer on first use and keeps with it: per-lane
//! requantization tables and weight vectors in the kernel's own register layout. They depend
//! on the input's quantization (scale and zero-point), which a loaded int8 checkpoint does
//! not fix ahead of the first call, so they cannot all be built at load; building them per
//! call costs a few percent of a MobileNetV2 forward.

use std::any::Any;
use std::borrow::Cow;
use std::sync::OnceLock;

use crate::int8::tensor::QParamsPt;

/// One layer's cached kernel data, for the first input quantization it ran with (other
/// inputs get fresh data for their call, as [`crate::int8::Requant`]s do). Cloning a layer
/// starts its copy with an empty cache.
#[derive(Default)]
pub struct KernelCache(OnceLock<(Key, Box<dyn Any + Send + Sync>)>);

/// The input quantization cached data was built for, the scale by its bits.
type Key = (u32, i32);

impl KernelCache {
    /// The data `build` makes for inputs quantized with `input`: the cached one when it was
    /// built for the same scale and zero-point (and is a `T`), else `build`'s (kept when the
    /// cache is still empty).
    pub(crate) fn get_or_build<T: Any + Send + Sync + Clone>(
        &self,
        input: QParamsPt,
        build: impl Fn() -> T,
    ) -> Cow<'_, T> {
        let key = (input.scale.to_bits(), input.zero_point);
        let (cached_key, data) = self.0.get_or_init(|| (key, Box::new(build())));
        match data.downcast_ref::<T>() {
            Some(data) if *cached_key == key => Cow::Borrowed(data),
            _ => Cow::Owned(build()),
        }
    }
}

impl Clone for KernelCache {
    fn clone(&self) -> Self {
        KernelCache::default()
    }
}

impl std::fmt::Debug for KernelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.get().is_some() {
            "built"
        } else {
            "empty"
        };
        write!(f, "KernelCache({state})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(scale: f32, zero_point: i32) -> QParamsPt {
        QParamsPt { scale, zero_point }
    }

    #[test]
    fn builds_once_per_input_quantization() {
        let cache = KernelCache::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let build = |v: u8| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            vec![v]
        };
        assert!(matches!(
            cache.get_or_build(qp(0.5, 3), || build(1)),
            Cow::Borrowed(_)
        ));
        assert_eq!(*cache.get_or_build(qp(0.5, 3), || build(2)), vec![1]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Another scale, zero-point or type: fresh data, the cached one untouched.
        assert_eq!(*cache.get_or_build(qp(0.25, 3), || build(3)), vec![3]);
        assert_eq!(*cache.get_or_build(qp(0.5, 4), || build(4)), vec![4]);
        assert_eq!(*cache.get_or_build(qp(0.5, 3), || 7u32), 7);
        assert_eq!(*cache.get_or_build(qp(0.5, 3), || build(5)), vec![1]);
        assert_eq!(format!("{:?}", cache.clone()), "KernelCache(empty)");
    }
}
