//! The families behind `models::Arch`: every architecture name builds its configuration (and
//! the families without a width multiplier refuse one), and the crate's own int8 files of each
//! family are told apart by their keys (`identify_keys`), MobileNetV3's from MobileNetV2's
//! though both hold `blocks.N.`.

use burn::tensor::Device;
use burn_qat::io::int8_state_dict;
use burn_qat::models::{
    Arch, ArchOptions, ArchVisitor, Family, MobileNetV2Config, MobileNetV3Config,
    ShuffleNetV2Config, TorchvisionConfig, TorchvisionModel, identify_keys, quantize_model,
};
use burn_qat::quant::QuantBackend;

/// Reports the family and builder of the configuration each `--arch` gives.
struct Describe;

impl ArchVisitor for Describe {
    type Output = (Family, Option<Arch>, usize);
    fn visit<C: TorchvisionConfig>(self, _: Arch, config: C) -> burn_qat::Result<Self::Output> {
        Ok((
            <C::Model as TorchvisionModel>::FAMILY,
            C::Model::config_arch(&config),
            C::Model::config_num_classes(&config),
        ))
    }
}

#[test]
fn every_arch_builds_its_builders_configuration() {
    let options = ArchOptions {
        num_classes: Some(7),
        width_mult: None,
    };
    for arch in Arch::ALL {
        let (family, named, classes) = arch.with_config(&options, Describe).unwrap();
        assert_eq!((family, named, classes), (arch.family(), Some(arch), 7));
    }
    let width = ArchOptions {
        num_classes: None,
        width_mult: Some(0.5),
    };
    for arch in [Arch::MobileNetV3Small, Arch::ShuffleNetV2x2_0] {
        let msg = arch.with_config(&width, Describe).unwrap_err().to_string();
        assert!(
            msg.contains("--width-mult 0.5 applies to mobilenet_v2 only")
                && msg.contains(arch.name()),
            "{msg}"
        );
    }
}

/// The keys of the crate's int8 state dict of `model` after torchvision's builder flow
/// (`_replace_relu`, `quantize_model`).
fn own_int8_keys<M: TorchvisionModel>(mut model: M, backend: QuantBackend) -> Vec<String> {
    burn_qat::quantize::replace_relu(&mut model).unwrap();
    quantize_model(&mut model, backend, &Device::flex()).unwrap();
    int8_state_dict(&model).unwrap().into_keys().collect()
}

#[test]
fn own_int8_files_of_each_family_are_identified() {
    let device = Device::flex();
    let shufflenets: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| a.family() == Family::ShuffleNetV2)
        .collect();
    let cases = [
        (
            own_int8_keys(
                MobileNetV3Config::large().init(&device).unwrap(),
                QuantBackend::Qnnpack,
            ),
            Family::MobileNetV3,
            vec![Arch::MobileNetV3Large],
        ),
        (
            own_int8_keys(
                MobileNetV3Config::small().init(&device).unwrap(),
                QuantBackend::Qnnpack,
            ),
            Family::MobileNetV3,
            vec![Arch::MobileNetV3Small],
        ),
        (
            own_int8_keys(
                ShuffleNetV2Config::x0_5().init(&device).unwrap(),
                QuantBackend::Fbgemm,
            ),
            Family::ShuffleNetV2,
            shufflenets,
        ),
        (
            own_int8_keys(
                MobileNetV2Config::new()
                    .with_width_mult(0.25)
                    .init(&device)
                    .unwrap(),
                QuantBackend::Qnnpack,
            ),
            Family::MobileNetV2,
            vec![Arch::MobileNetV2],
        ),
    ];
    for (keys, family, archs) in cases {
        let found = identify_keys(keys.iter().map(String::as_str))
            .unwrap_or_else(|| panic!("{family:?}: not identified from {keys:?}"));
        assert_eq!((found.family, found.archs), (family, archs), "{keys:?}");
    }
}
