//! How much memory a ShuffleNetV2 configuration needs, counted with checked arithmetic before
//! anything is allocated (as [`super::footprint`] does for MobileNetV2): a class count, stage
//! width, batch or input size given by a user is refused with a message naming it when the
//! count overflows or exceeds the machine's memory ([`crate::limits`]).

use super::footprint::{Activations, check_forward, check_weights, conv_bn};
use super::shufflenet_v2::ShuffleNetV2Config;
use crate::limits::product;
use crate::{Error, Result};

impl ShuffleNetV2Config {
    /// Parameters and buffers of the float model (convolution weights, batch norms' four
    /// vectors, the classifier), as torchvision's `state_dict()` counts them without
    /// `num_batches_tracked`; `None` if the count overflows.
    pub fn parameter_count(&self) -> Option<u64> {
        let [c1, s2, s3, s4, c5] = self.stages_out_channels.map(|c| c as u64);
        let mut total = conv_bn(3, c1, 3, 1)?;
        let mut inp = c1;
        for (&repeats, out) in self.stages_repeats.iter().zip([s2, s3, s4]) {
            let f = out / 2;
            let branch1 = conv_bn(inp, inp, 3, inp)?.checked_add(conv_bn(inp, f, 1, 1)?)?;
            let branch2 = |i| {
                conv_bn(i, f, 1, 1)?
                    .checked_add(conv_bn(f, f, 3, f)?)?
                    .checked_add(conv_bn(f, f, 1, 1)?)
            };
            let rest = branch2(f)?.checked_mul((repeats as u64).checked_sub(1)?)?;
            total = total
                .checked_add(branch1)?
                .checked_add(branch2(inp)?)?
                .checked_add(rest)?;
            inp = out;
        }
        total = total.checked_add(conv_bn(inp, c5, 1, 1)?)?;
        total.checked_add(product([c5.checked_add(1)?, self.num_classes as u64])?)
    }

    /// The activations of one forward pass on a `[batch, 3, height, width]` input (every
    /// conv, split, cat and shuffle output), `None` if a count overflows.
    pub fn activations(&self, batch: u64, height: u64, width: u64) -> Option<Activations> {
        let mut acts = Activations::new();
        let mut add = |channels, h, w, times| acts.add_times(batch, channels, h, w, times);
        add(3, height, width, 1)?;
        let [c1, .., c5] = self.stages_out_channels.map(|c| c as u64);
        // conv1 and the max pooling each halve the plane (3×3, stride 2, padding 1).
        let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
        add(c1, h, w, 1)?;
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
        add(c1, h, w, 1)?;
        for stage in self.block_configs() {
            for block in stage {
                let (inp, f) = (block.in_channels as u64, block.branch_features() as u64);
                if block.stride > 1 {
                    add(f, h, w, 1)?; // branch2's first 1×1, before the stride
                    (h, w) = (h.div_ceil(2), w.div_ceil(2));
                    add(inp, h, w, 1)?; // branch1's depthwise
                    add(f, h, w, 3)?; // branch1's 1×1, branch2's depthwise and 1×1
                } else {
                    add(f, h, w, 5)?; // the two halves, branch2's three convs
                }
                add(2 * f, h, w, 2)?; // cat, shuffle
            }
        }
        add(c5, h, w, 1)?;
        Some(acts)
    }

    /// Checks that the model's weights fit in memory; [`validate`](Self::validate) calls it, so
    /// an absurd class count or stage width is an error, not an allocation abort.
    pub fn check_model_size(&self) -> Result<()> {
        check_weights(self.parameter_count()).map_err(|why| {
            Error::Config(format!(
                "ShuffleNetV2 with stages_repeats {:?}, stages_out_channels {:?} and {} classes \
                 is too large: {why}",
                self.stages_repeats, self.stages_out_channels, self.num_classes
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
        let size = (batch, height, width);
        check_forward(acts, self.parameter_count(), training, size, "ShuffleNetV2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_without_allocating() {
        let overflow = ShuffleNetV2Config::x1_0().with_num_classes(usize::MAX);
        let msg = overflow.check_model_size().unwrap_err().to_string();
        assert!(msg.contains("overflows"), "{msg}");
        let config = ShuffleNetV2Config::x1_0();
        assert!(config.check_forward_size(1, 224, 224, true).is_ok());
        let msg = config
            .check_forward_size(1 << 32, 1 << 32, 1 << 32, false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("4294967296 images"), "{msg}");
    }

    /// x1.0 at 224×224: conv1's output `[24, 112, 112]` is the widest activation.
    #[test]
    fn the_widest_activation_is_conv1s() {
        let acts = ShuffleNetV2Config::x1_0().activations(1, 224, 224).unwrap();
        assert_eq!(acts.largest, 24 * 112 * 112);
        assert!(acts.total > acts.largest);
    }
}
