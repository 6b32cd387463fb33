//! [`Arch`]: the torchvision architectures the command line (`--arch`) and the generic
//! checkpoint tools know by name, the family each belongs to, and the one place where a name
//! becomes a model type ([`Arch::with_config`]). Also the family a checkpoint's keys belong to
//! ([`identify_keys`]), so that a file of another architecture is refused naming both.

use std::fmt;
use std::str::FromStr;

use super::torchvision_model::{TorchvisionConfig, TorchvisionModel};
use crate::{Error, Result};

/// A torchvision architecture, named as torchvision's builder
/// (`torchvision.models.quantization.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    /// `mobilenet_v2` (the default).
    #[default]
    MobileNetV2,
    /// `resnet18`.
    ResNet18,
    /// `resnet50`.
    ResNet50,
    /// `resnext101_32x8d`.
    ResNeXt101_32x8d,
    /// `resnext101_64x4d`.
    ResNeXt101_64x4d,
    /// `mobilenet_v3_large`.
    MobileNetV3Large,
    /// `mobilenet_v3_small`.
    MobileNetV3Small,
    /// `shufflenet_v2_x0_5`.
    ShuffleNetV2x0_5,
    /// `shufflenet_v2_x1_0`.
    ShuffleNetV2x1_0,
    /// `shufflenet_v2_x1_5`.
    ShuffleNetV2x1_5,
    /// `shufflenet_v2_x2_0`.
    ShuffleNetV2x2_0,
}

/// A model family: one model type in this crate, several [`Arch`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// [`MobileNetV2`](super::MobileNetV2).
    MobileNetV2,
    /// [`ResNet`](super::ResNet) (ResNet and ResNeXt).
    ResNet,
    /// [`MobileNetV3`](super::MobileNetV3) (large and small).
    MobileNetV3,
    /// [`ShuffleNetV2`](super::ShuffleNetV2) (four widths).
    ShuffleNetV2,
}

impl Family {
    /// The family's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::MobileNetV2 => "MobileNetV2",
            Family::ResNet => "ResNet/ResNeXt",
            Family::MobileNetV3 => "MobileNetV3",
            Family::ShuffleNetV2 => "ShuffleNetV2",
        }
    }
}

impl Arch {
    /// Every architecture, in the order of `--help`.
    pub const ALL: [Arch; 11] = [
        Arch::MobileNetV2,
        Arch::ResNet18,
        Arch::ResNet50,
        Arch::ResNeXt101_32x8d,
        Arch::ResNeXt101_64x4d,
        Arch::MobileNetV3Large,
        Arch::MobileNetV3Small,
        Arch::ShuffleNetV2x0_5,
        Arch::ShuffleNetV2x1_0,
        Arch::ShuffleNetV2x1_5,
        Arch::ShuffleNetV2x2_0,
    ];

    /// torchvision's name of the builder (`resnet18`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::MobileNetV2 => "mobilenet_v2",
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
            Arch::ResNeXt101_32x8d => "resnext101_32x8d",
            Arch::ResNeXt101_64x4d => "resnext101_64x4d",
            Arch::MobileNetV3Large => "mobilenet_v3_large",
            Arch::MobileNetV3Small => "mobilenet_v3_small",
            Arch::ShuffleNetV2x0_5 => "shufflenet_v2_x0_5",
            Arch::ShuffleNetV2x1_0 => "shufflenet_v2_x1_0",
            Arch::ShuffleNetV2x1_5 => "shufflenet_v2_x1_5",
            Arch::ShuffleNetV2x2_0 => "shufflenet_v2_x2_0",
        }
    }

    /// The family (model type) of this architecture.
    pub fn family(self) -> Family {
        match self {
            Arch::MobileNetV2 => Family::MobileNetV2,
            Arch::ResNet18 | Arch::ResNet50 | Arch::ResNeXt101_32x8d | Arch::ResNeXt101_64x4d => {
                Family::ResNet
            }
            Arch::MobileNetV3Large | Arch::MobileNetV3Small => Family::MobileNetV3,
            Arch::ShuffleNetV2x0_5
            | Arch::ShuffleNetV2x1_0
            | Arch::ShuffleNetV2x1_5
            | Arch::ShuffleNetV2x2_0 => Family::ShuffleNetV2,
        }
    }

    /// Builds the checked configuration of this architecture from `options` and hands it to
    /// `visitor` with its model type: the one place where a name becomes a type, so that the
    /// command line and other callers stay generic. Configuration errors name the flags.
    pub fn with_config<V: ArchVisitor>(
        self,
        options: &ArchOptions,
        visitor: V,
    ) -> Result<V::Output> {
        match self.family() {
            Family::MobileNetV2 => visit::<super::MobileNetV2, V>(self, options, visitor),
            Family::ResNet => visit::<super::ResNet, V>(self, options, visitor),
            Family::MobileNetV3 => visit::<super::MobileNetV3, V>(self, options, visitor),
            Family::ShuffleNetV2 => visit::<super::ShuffleNetV2, V>(self, options, visitor),
        }
    }
}

/// Checks `options` for `arch` as `M` and calls the visitor (see [`Arch::with_config`]).
fn visit<M: TorchvisionModel, V: ArchVisitor>(
    arch: Arch,
    options: &ArchOptions,
    visitor: V,
) -> Result<V::Output> {
    let config = M::arch_config(arch, options)
        .and_then(|config| M::check_config(&config).map(|()| config))
        .map_err(|e| e.for_flags(options.flags(arch)))?;
    visitor.visit::<M::Config>(arch, config)
}

/// What [`Arch::with_config`] calls with the model type and its configuration.
pub trait ArchVisitor {
    /// What the visit returns.
    type Output;
    /// Runs with `config`, the checked configuration of `arch`.
    fn visit<C: TorchvisionConfig>(self, arch: Arch, config: C) -> Result<Self::Output>;
}

/// The options every architecture takes (the command line's model flags).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ArchOptions {
    /// Classes of the classifier (`--num-classes`; torchvision's default 1000).
    pub num_classes: Option<usize>,
    /// MobileNetV2's width multiplier (`--width-mult`); other families refuse it.
    pub width_mult: Option<f64>,
}

impl ArchOptions {
    /// The number of classes, torchvision's 1000 by default.
    pub fn num_classes(&self) -> usize {
        self.num_classes.unwrap_or(1000)
    }

    /// An error unless no width multiplier was given (for families without one).
    pub fn refuse_width_mult(&self, arch: Arch) -> Result<()> {
        match self.width_mult {
            Some(w) => Err(Error::Config(format!(
                "--width-mult {w} applies to mobilenet_v2 only, not --arch {arch}"
            ))),
            None => Ok(()),
        }
    }

    /// The flags a configuration error names, as the user wrote them (MobileNetV2's as before
    /// `--arch` existed).
    pub fn flags(&self, arch: Arch) -> String {
        let classes = format!("--num-classes {}", self.num_classes());
        match (arch, self.width_mult) {
            (Arch::MobileNetV2, w) => format!("--width-mult {} {classes}", w.unwrap_or(1.0)),
            (_, Some(w)) => format!("--arch {arch} --width-mult {w} {classes}"),
            (_, None) => format!("--arch {arch} {classes}"),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Error::Config(format!(
                    "unknown architecture '{s}'; use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// What a checkpoint's keys say about its architecture: its family, and the architectures of
/// that family whose layout the keys have (empty when none of the named builders matches, such
/// as a ResNet-34 or a small test model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// The family.
    pub family: Family,
    /// The named architectures the keys fit.
    pub archs: Vec<Arch>,
}

/// Identifies a checkpoint from its keys: torchvision's float or int8 state-dict keys, or this
/// crate's module paths (its int8 files). `None` when the keys are no known family's.
///
/// The signatures: MobileNetV2 `features.1.conv.` (torchvision) / `blocks.0.` (this crate),
/// MobileNetV3 `features.1.block.` (torchvision, float, int8 and QAT) / `blocks.0.` with
/// `hidden.` (this crate), ShuffleNetV2 `stage2.`, ResNet `layer1.0.` (both); ResNet's block
/// kind (`conv3`) and the blocks of `layer3` (2, 6 or 23) name the builder, the number of
/// `features.N` (17 or 13) or `blocks.N` (15 or 11) MobileNetV3's size.
pub fn identify_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Identified> {
    let keys: Vec<&str> = keys.into_iter().collect();
    let any = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    // Distinct indices N of `<prefix>N.` keys.
    let count = |prefix: &str| {
        let mut seen: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(prefix)?.split('.').next())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    if any("layer1.0.") {
        let bottleneck = keys.iter().any(|k| k.contains(".conv3."));
        let archs = match (bottleneck, count("layer3.")) {
            (false, 2) => vec![Arch::ResNet18],
            (true, 6) => vec![Arch::ResNet50],
            (true, 23) => vec![Arch::ResNeXt101_32x8d, Arch::ResNeXt101_64x4d],
            _ => vec![],
        };
        return Some(Identified {
            family: Family::ResNet,
            archs,
        });
    }
    // This crate's MobileNetV3 shares MobileNetV2's `blocks.0.`; its classifier's `hidden`
    // layer (torchvision's `classifier.0`) tells them apart.
    let own_v3 = any("blocks.0.") && any("hidden.");
    if any("features.1.block.") || own_v3 {
        let (blocks, large, small) = match own_v3 {
            true => (count("blocks."), 15, 11),
            false => (count("features."), 17, 13),
        };
        let archs = match blocks {
            n if n == large => vec![Arch::MobileNetV3Large],
            n if n == small => vec![Arch::MobileNetV3Small],
            _ => vec![],
        };
        return Some(Identified {
            family: Family::MobileNetV3,
            archs,
        });
    }
    if any("features.1.conv.") || any("blocks.0.") {
        return Some(Identified {
            family: Family::MobileNetV2,
            archs: vec![Arch::MobileNetV2],
        });
    }
    if any("stage2.") {
        let archs = Arch::ALL
            .into_iter()
            .filter(|a| a.family() == Family::ShuffleNetV2)
            .collect();
        return Some(Identified {
            family: Family::ShuffleNetV2,
            archs,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.to_string(), arch.name());
        }
        assert_eq!(Arch::default(), Arch::MobileNetV2);
        let msg = "resnet34".parse::<Arch>().unwrap_err().to_string();
        assert!(
            msg.contains("'resnet34'") && msg.contains("shufflenet_v2_x2_0"),
            "{msg}"
        );
    }

    #[test]
    fn keys_name_the_family_and_builder() {
        let resnet18: Vec<String> = (1..=4)
            .flat_map(|s| (0..2).map(move |i| format!("layer{s}.{i}.conv1.weight")))
            .chain(["conv1.weight".to_string(), "fc.weight".to_string()])
            .collect();
        let found = identify_keys(resnet18.iter().map(String::as_str)).unwrap();
        assert_eq!(found.family, Family::ResNet);
        assert_eq!(found.archs, [Arch::ResNet18]);
        let mnv2 = ["features.0.0.weight", "features.1.conv.0.0.weight"];
        assert_eq!(identify_keys(mnv2).unwrap().archs, [Arch::MobileNetV2]);
        let own = ["stem.weight", "blocks.0.depthwise.weight"];
        assert_eq!(identify_keys(own).unwrap().family, Family::MobileNetV2);
        assert_eq!(
            identify_keys(["stage2.0.branch1.0.weight"])
                .unwrap()
                .archs
                .len(),
            4
        );
        assert_eq!(identify_keys(["fc.weight"]), None);
    }
}
