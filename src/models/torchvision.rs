//! torchvision checkpoints for [`MobileNetV2`]: the state-dict key layout of
//! `torchvision.models.mobilenet_v2()` and loading a `.pth` file into the Burn model.

use std::path::Path;

use burn::tensor::Device;

use super::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use crate::Result;
use crate::io::{KeyMap, load_state_dict};

/// The map from torchvision's MobileNetV2 state-dict keys to this crate's module paths.
///
/// torchvision nests everything in `features` (a Sequential) and each block in `conv` (a
/// Sequential whose indices shift when the block has no expansion layer), so the map is built
/// from the configuration, block by block.
pub fn mobilenet_v2_key_map(config: &MobileNetV2Config) -> KeyMap {
    let blocks = config.block_configs();
    let mut map = KeyMap::new()
        .prefix("features.0.0.", "stem.conv.")
        .prefix("features.0.1.", "stem.bn.")
        .ignore_suffix("num_batches_tracked");
    for (i, block) in blocks.iter().enumerate() {
        let torch = format!("features.{}.conv.", i + 1);
        let burn = format!("blocks.{i}.");
        let mut index = 0;
        if block.expand_ratio != 1 {
            map = map
                .prefix(format!("{torch}0.0."), format!("{burn}expand.conv."))
                .prefix(format!("{torch}0.1."), format!("{burn}expand.bn."));
            index = 1;
        }
        map = map
            .prefix(
                format!("{torch}{index}.0."),
                format!("{burn}depthwise.conv."),
            )
            .prefix(format!("{torch}{index}.1."), format!("{burn}depthwise.bn."))
            .prefix(
                format!("{torch}{}.", index + 1),
                format!("{burn}project.conv."),
            )
            .prefix(
                format!("{torch}{}.", index + 2),
                format!("{burn}project.bn."),
            );
    }
    let head = blocks.len() + 1;
    map.prefix(format!("features.{head}.0."), "head.conv.")
        .prefix(format!("features.{head}.1."), "head.bn.")
        .prefix("classifier.1.", "classifier.linear.")
}

/// Builds a [`MobileNetV2`] from `config` and loads the torchvision float state dict at `path`
/// (`torch.save(torchvision.models.mobilenet_v2(...).state_dict(), path)`, zip or legacy
/// format). Missing, unexpected and mis-shaped keys are errors that name the key.
pub fn load_mobilenet_v2(
    path: &Path,
    config: &MobileNetV2Config,
    device: &Device,
) -> Result<MobileNetV2> {
    let model = config.init(device)?;
    load_state_dict(model, path, &mobilenet_v2_key_map(config))
}
