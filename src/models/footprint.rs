//! How much memory a model configuration needs (MobileNetV2's here; the others beside their
//! configurations), counted with checked arithmetic before
//! anything is allocated: a width multiplier, class count, batch or input size given by a user
//! is refused with a message naming it when the count overflows or exceeds the machine's
//! memory ([`crate::limits`]), instead of aborting in the allocator.

use super::mobilenet_v2::MobileNetV2Config;
use crate::limits::check_fits;
use crate::{Error, Result};

/// Bytes of one f32 value.
pub(crate) const F32: u64 = 4;
/// Live activation tensors at the widest layer of a forward pass: its input, its output, the
/// residual branch and the batch-norm / fake-quant intermediates.
pub(crate) const LIVE_TENSORS: u64 = 4;

/// Elements of the activations a forward pass produces: the largest single activation and the
/// sum over all layers (what training keeps for the backward pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activations {
    /// The largest activation, in elements.
    pub largest: u64,
    /// All activations together, in elements.
    pub total: u64,
}

impl Activations {
    /// No activations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one activation of `batch · channels · h · w` elements; `None` on overflow.
    pub fn add(&mut self, batch: u64, channels: u64, h: u64, w: u64) -> Option<()> {
        self.add_times(batch, channels, h, w, 1)
    }

    /// Counts `times` activations of `batch · channels · h · w` elements each; `None` on
    /// overflow.
    pub fn add_times(
        &mut self,
        batch: u64,
        channels: u64,
        h: u64,
        w: u64,
        times: u64,
    ) -> Option<()> {
        let n = batch
            .checked_mul(channels)?
            .checked_mul(h)?
            .checked_mul(w)?;
        self.largest = self.largest.max(n);
        self.total = self.total.checked_add(n.checked_mul(times)?)?;
        Some(())
    }
}

impl MobileNetV2Config {
    /// Parameters and buffers of the float model (convolution weights, batch-norm affine
    /// parameters and running statistics, the classifier), `None` if the count overflows.
    pub fn parameter_count(&self) -> Option<u64> {
        let mut total = conv_bn(3, self.input_channels() as u64, 3, 1)?;
        for block in self.block_configs() {
            let (cin, cout) = (block.in_channels as u64, block.out_channels as u64);
            let hidden = cin.checked_mul(block.expand_ratio as u64)?;
            if block.expand_ratio != 1 {
                total = total.checked_add(conv_bn(cin, hidden, 1, 1)?)?;
            }
            total = total.checked_add(conv_bn(hidden, hidden, 3, hidden)?)?;
            total = total.checked_add(conv_bn(hidden, cout, 1, 1)?)?;
        }
        let last_in = self
            .block_configs()
            .last()
            .map_or(self.input_channels(), |b| b.out_channels) as u64;
        let last = self.last_channels() as u64;
        total = total.checked_add(conv_bn(last_in, last, 1, 1)?)?;
        let classes = self.num_classes as u64;
        total.checked_add(last.checked_mul(classes)?.checked_add(classes)?)
    }

    /// The activations of one forward pass on a `[batch, 3, height, width]` input, `None` if
    /// a count overflows.
    pub fn activations(&self, batch: u64, height: u64, width: u64) -> Option<Activations> {
        let mut acts = Activations::new();
        let mut add = |channels: u64, h: u64, w: u64| acts.add(batch, channels, h, w);
        add(3, height, width)?;
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        add(self.input_channels() as u64, h, w)?;
        for block in self.block_configs() {
            let hidden = (block.in_channels as u64).checked_mul(block.expand_ratio as u64)?;
            add(hidden, h, w)?;
            if block.stride == 2 {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            add(hidden, h, w)?;
            add(block.out_channels as u64, h, w)?;
        }
        add(self.last_channels() as u64, h, w)?;
        Some(acts)
    }

    /// Checks that the model's weights fit in memory; [`MobileNetV2Config::init`] calls it, so
    /// an absurd `width_mult` or `num_classes` is an error, not an allocation abort.
    pub fn check_model_size(&self) -> Result<()> {
        check_weights(self.parameter_count()).map_err(|why| {
            Error::Config(format!(
                "width_mult {} with {} classes is too large a MobileNetV2: {why}",
                self.width_mult, self.num_classes
            ))
        })
    }

    /// Checks that a forward pass on `[batch, 3, height, width]` fits in memory with the
    /// model's weights: `training` counts every activation (kept for the backward pass),
    /// inference the widest layer's. The error names the sizes.
    pub fn check_forward_size(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        training: bool,
    ) -> Result<()> {
        let acts = self.activations(batch as u64, height as u64, width as u64);
        let model = format!("MobileNetV2 (width_mult {})", self.width_mult);
        let size = (batch, height, width);
        check_forward(acts, self.parameter_count(), training, size, &model)
    }
}

/// Checks that `params` f32 weights (`None`: the count overflowed) fit in memory; the error is
/// [`check_fits`]'s reason, for the caller to name the configuration.
pub(crate) fn check_weights(params: Option<u64>) -> std::result::Result<(), String> {
    check_fits(params.and_then(|p| p.checked_mul(F32)))
}

/// Checks that a forward pass on `[batch, 3, height, width]` (`size`) with `acts` activations
/// fits in memory beside `params` f32 weights (`None`: a count overflowed): `training` counts
/// every activation (kept for the backward pass), inference the widest layer's, each times the
/// live tensors around it. The error names the sizes and `model` (`"MobileNetV2 (width_mult
/// 1)"`).
pub(crate) fn check_forward(
    acts: Option<Activations>,
    params: Option<u64>,
    training: bool,
    (batch, height, width): (usize, usize, usize),
    model: &str,
) -> Result<()> {
    let act_bytes = acts.and_then(|a| {
        let elems = if training { a.total } else { a.largest };
        elems.checked_mul(F32)?.checked_mul(LIVE_TENSORS)
    });
    let weights = params.and_then(|p| p.checked_mul(F32));
    check_fits(act_bytes.and_then(|a| a.checked_add(weights?))).map_err(|why| {
        Error::Config(format!(
            "a batch of {batch} images of {height}×{width} is too large for this {model}: {why}"
        ))
    })
}

/// Parameters of a convolution (no bias) followed by a batch norm (weight, bias, running mean
/// and variance).
pub(crate) fn conv_bn(cin: u64, cout: u64, kernel: u64, groups: u64) -> Option<u64> {
    (cin / groups.max(1))
        .checked_mul(cout)?
        .checked_mul(kernel * kernel)?
        .checked_add(cout.checked_mul(4)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's `mobilenet_v2()` has 3,504,872 parameters (its weights' documented
    /// `num_params`); its 17,056 batch-norm channels add a running mean and variance each.
    #[test]
    fn counts_torchvision_mobilenet_v2() {
        let config = MobileNetV2Config::new();
        assert_eq!(config.parameter_count(), Some(3_504_872 + 2 * 17_056));
    }

    #[test]
    fn absurd_sizes_are_refused_without_allocating() {
        let huge = MobileNetV2Config::new().with_width_mult(1e9);
        let msg = huge.check_model_size().unwrap_err().to_string();
        assert!(msg.contains("width_mult 1000000000"), "{msg}");
        let overflow = MobileNetV2Config::new().with_num_classes(usize::MAX);
        let msg = overflow.check_model_size().unwrap_err().to_string();
        assert!(msg.contains("overflows"), "{msg}");
        let config = MobileNetV2Config::new();
        assert!(config.check_forward_size(1, 224, 224, false).is_ok());
        let msg = config
            .check_forward_size(1 << 32, 1 << 32, 1 << 32, false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("4294967296 images"), "{msg}");
    }
}
