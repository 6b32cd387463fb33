//! torchvision 0.20.1's pretrained weights, one enum per architecture holding both of
//! torchvision's enums for it (`ResNet18_Weights` float, `ResNet18_QuantizedWeights` int8): the
//! URL, and for int8 checkpoints the backend they were quantized for. A new architecture is one
//! `torchvision_weights!` block here and one builder in [`super::builders`].

use super::arch::Arch;
use super::mobilenet_v2::MobileNetV2;
use super::mobilenet_v3::MobileNetV3;
use super::resnet::ResNet;
use super::shufflenet_v2::ShuffleNetV2;
use super::torchvision_model::TorchvisionModel;
use crate::quant::QuantBackend;

/// One entry of torchvision's weights enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsInfo {
    /// torchvision's name, `ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1`.
    pub name: &'static str,
    /// Download address, as torchvision lists it.
    pub url: &'static str,
    /// The backend an int8 checkpoint was quantized for (its `meta["backend"]`); `None` for
    /// float weights.
    pub backend: Option<QuantBackend>,
}

impl WeightsInfo {
    /// File name in the cache directory (the URL's last part, as torch.hub names it).
    pub fn file_name(&self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    /// Classes of the classifier: every torchvision weights set here is ImageNet-1k's.
    pub fn num_classes(&self) -> usize {
        1000
    }
}

/// An enum of pretrained weights of one architecture.
pub trait Weights: Copy + std::fmt::Debug {
    /// The model type they load into.
    type Model: TorchvisionModel;
    /// The architecture (torchvision's builder).
    const ARCH: Arch;
    /// What the legacy `pretrained=True` means without `quantize` (torchvision's
    /// `handle_legacy_interface`): the first float weights.
    const LEGACY_FLOAT: Self;
    /// What `pretrained=True, quantize=True` means: the first int8 weights.
    const LEGACY_INT8: Self;
    /// The table entry.
    fn info(self) -> WeightsInfo;
}

/// One weights enum: `pub enum Name: arch, Model, legacy(Float, Int8) { Variant = "torchvision
/// name", "url", backend; ... }`.
macro_rules! torchvision_weights {
    (
        $(#[$doc:meta])*
        pub enum $name:ident: $arch:expr, $model:ty, legacy($float:ident, $int8:ident) {
            $($(#[$vdoc:meta])* $variant:ident = $tv:literal, $url:literal, $backend:expr;)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl Weights for $name {
            type Model = $model;
            const ARCH: Arch = $arch;
            const LEGACY_FLOAT: Self = Self::$float;
            const LEGACY_INT8: Self = Self::$int8;

            fn info(self) -> WeightsInfo {
                match self {
                    $(Self::$variant => WeightsInfo { name: $tv, url: $url, backend: $backend },)*
                }
            }
        }
    };
}

const FLOAT: Option<QuantBackend> = None;
const FBGEMM: Option<QuantBackend> = Some(QuantBackend::Fbgemm);
const QNNPACK: Option<QuantBackend> = Some(QuantBackend::Qnnpack);

torchvision_weights! {
    /// MobileNetV2's weights (`MobileNet_V2_Weights`, `MobileNet_V2_QuantizedWeights`).
    pub enum MobileNetV2Weights: Arch::MobileNetV2, MobileNetV2, legacy(ImageNet1kV1, ImageNet1kQnnpackV1) {
        /// Float, 71.878% top-1.
        ImageNet1kV1 = "MobileNet_V2_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth", FLOAT;
        /// Float, 72.154% top-1 (torchvision's `DEFAULT`).
        ImageNet1kV2 = "MobileNet_V2_Weights.IMAGENET1K_V2",
            "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth", FLOAT;
        /// int8 (qnnpack, QAT), 71.658% top-1.
        ImageNet1kQnnpackV1 = "MobileNet_V2_QuantizedWeights.IMAGENET1K_QNNPACK_V1",
            "https://download.pytorch.org/models/quantized/mobilenet_v2_qnnpack_37f702c5.pth", QNNPACK;
    }
}

torchvision_weights! {
    /// ResNet-18's weights (`ResNet18_Weights`, `ResNet18_QuantizedWeights`).
    pub enum ResNet18Weights: Arch::ResNet18, ResNet, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 69.758% top-1.
        ImageNet1kV1 = "ResNet18_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/resnet18-f37072fd.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 69.494% top-1.
        ImageNet1kFbgemmV1 = "ResNet18_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/resnet18_fbgemm_16fa66dd.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ResNet-50's weights (`ResNet50_Weights`, `ResNet50_QuantizedWeights`).
    pub enum ResNet50Weights: Arch::ResNet50, ResNet, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 76.13% top-1.
        ImageNet1kV1 = "ResNet50_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth", FLOAT;
        /// Float, 80.858% top-1 (torchvision's `DEFAULT`).
        ImageNet1kV2 = "ResNet50_Weights.IMAGENET1K_V2",
            "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", FLOAT;
        /// int8 (fbgemm, PTQ of V1), 75.92% top-1.
        ImageNet1kFbgemmV1 = "ResNet50_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/resnet50_fbgemm_bf931d71.pth", FBGEMM;
        /// int8 (fbgemm, PTQ of V2), 80.282% top-1 (torchvision's `DEFAULT`).
        ImageNet1kFbgemmV2 = "ResNet50_QuantizedWeights.IMAGENET1K_FBGEMM_V2",
            "https://download.pytorch.org/models/quantized/resnet50_fbgemm-23753f79.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ResNeXt-101 32×8d's weights (`ResNeXt101_32X8D_Weights`,
    /// `ResNeXt101_32X8D_QuantizedWeights`).
    pub enum ResNeXt101_32x8dWeights: Arch::ResNeXt101_32x8d, ResNet, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 79.312% top-1.
        ImageNet1kV1 = "ResNeXt101_32X8D_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth", FLOAT;
        /// Float, 82.834% top-1 (torchvision's `DEFAULT`).
        ImageNet1kV2 = "ResNeXt101_32X8D_Weights.IMAGENET1K_V2",
            "https://download.pytorch.org/models/resnext101_32x8d-110c445d.pth", FLOAT;
        /// int8 (fbgemm, PTQ of V1), 78.986% top-1.
        ImageNet1kFbgemmV1 = "ResNeXt101_32X8D_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/resnext101_32x8_fbgemm_09835ccf.pth", FBGEMM;
        /// int8 (fbgemm, PTQ of V2), 82.574% top-1 (torchvision's `DEFAULT`).
        ImageNet1kFbgemmV2 = "ResNeXt101_32X8D_QuantizedWeights.IMAGENET1K_FBGEMM_V2",
            "https://download.pytorch.org/models/quantized/resnext101_32x8_fbgemm-ee16d00c.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ResNeXt-101 64×4d's weights (`ResNeXt101_64X4D_Weights`,
    /// `ResNeXt101_64X4D_QuantizedWeights`).
    pub enum ResNeXt101_64x4dWeights: Arch::ResNeXt101_64x4d, ResNet, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 83.246% top-1.
        ImageNet1kV1 = "ResNeXt101_64X4D_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 82.898% top-1.
        ImageNet1kFbgemmV1 = "ResNeXt101_64X4D_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/resnext101_64x4d_fbgemm-605a1cb3.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// MobileNetV3-Large's weights (`MobileNet_V3_Large_Weights`,
    /// `MobileNet_V3_Large_QuantizedWeights`).
    pub enum MobileNetV3LargeWeights: Arch::MobileNetV3Large, MobileNetV3, legacy(ImageNet1kV1, ImageNet1kQnnpackV1) {
        /// Float, 74.042% top-1.
        ImageNet1kV1 = "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth", FLOAT;
        /// Float, 75.274% top-1 (torchvision's `DEFAULT`).
        ImageNet1kV2 = "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
            "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth", FLOAT;
        /// int8 (qnnpack, QAT of V1), 73.004% top-1. The file is the QAT model before
        /// `convert`, which the int8 loader converts as torchvision does.
        ImageNet1kQnnpackV1 = "MobileNet_V3_Large_QuantizedWeights.IMAGENET1K_QNNPACK_V1",
            "https://download.pytorch.org/models/quantized/mobilenet_v3_large_qnnpack-5bcacf28.pth", QNNPACK;
    }
}

torchvision_weights! {
    /// MobileNetV3-Small's weights (`MobileNet_V3_Small_Weights`). torchvision has no quantized
    /// MobileNetV3-Small weights (nor a `quantization.mobilenet_v3_small` builder), so
    /// `LEGACY_INT8` is the float entry, which the builders refuse with `quantize`.
    pub enum MobileNetV3SmallWeights: Arch::MobileNetV3Small, MobileNetV3, legacy(ImageNet1kV1, ImageNet1kV1) {
        /// Float, 67.668% top-1 (torchvision's `DEFAULT`).
        ImageNet1kV1 = "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth", FLOAT;
    }
}

torchvision_weights! {
    /// ShuffleNetV2 x0.5's weights (`ShuffleNet_V2_X0_5_Weights`,
    /// `ShuffleNet_V2_X0_5_QuantizedWeights`).
    pub enum ShuffleNetV2x0_5Weights: Arch::ShuffleNetV2x0_5, ShuffleNetV2, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 60.552% top-1.
        ImageNet1kV1 = "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 57.972% top-1.
        ImageNet1kFbgemmV1 = "ShuffleNet_V2_X0_5_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/shufflenetv2_x0.5_fbgemm-00845098.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ShuffleNetV2 x1.0's weights (`ShuffleNet_V2_X1_0_Weights`,
    /// `ShuffleNet_V2_X1_0_QuantizedWeights`).
    pub enum ShuffleNetV2x1_0Weights: Arch::ShuffleNetV2x1_0, ShuffleNetV2, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 69.362% top-1.
        ImageNet1kV1 = "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 68.360% top-1.
        ImageNet1kFbgemmV1 = "ShuffleNet_V2_X1_0_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/shufflenetv2_x1_fbgemm-1e62bb32.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ShuffleNetV2 x1.5's weights (`ShuffleNet_V2_X1_5_Weights`,
    /// `ShuffleNet_V2_X1_5_QuantizedWeights`).
    pub enum ShuffleNetV2x1_5Weights: Arch::ShuffleNetV2x1_5, ShuffleNetV2, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 72.996% top-1.
        ImageNet1kV1 = "ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/shufflenetv2_x1_5-3c479a10.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 72.052% top-1.
        ImageNet1kFbgemmV1 = "ShuffleNet_V2_X1_5_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/shufflenetv2_x1_5_fbgemm-d7401f05.pth", FBGEMM;
    }
}

torchvision_weights! {
    /// ShuffleNetV2 x2.0's weights (`ShuffleNet_V2_X2_0_Weights`,
    /// `ShuffleNet_V2_X2_0_QuantizedWeights`).
    pub enum ShuffleNetV2x2_0Weights: Arch::ShuffleNetV2x2_0, ShuffleNetV2, legacy(ImageNet1kV1, ImageNet1kFbgemmV1) {
        /// Float, 76.230% top-1.
        ImageNet1kV1 = "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1",
            "https://download.pytorch.org/models/shufflenetv2_x2_0-8be3c8ee.pth", FLOAT;
        /// int8 (fbgemm, PTQ), 75.354% top-1.
        ImageNet1kFbgemmV1 = "ShuffleNet_V2_X2_0_QuantizedWeights.IMAGENET1K_FBGEMM_V1",
            "https://download.pytorch.org/models/quantized/shufflenetv2_x2_0_fbgemm-5cac526c.pth", FBGEMM;
    }
}
