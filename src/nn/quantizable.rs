//! The walk over a model's quantizable layers that `fuse_modules`, `prepare`, `prepare_qat` and
//! the QAT schedule use — Rust's stand-in for PyTorch iterating `model.named_modules()`.

use super::conv_bn_act::ConvBnAct;
use super::float_functional::FloatFunctional;
use super::linear_bn_act::LinearBnAct;
use super::post_process::ActivationPostProcess;
use super::stubs::{DeQuantStub, QuantStub};
use crate::Result;

/// A mutable view of one quantizable layer.
pub enum QuantLayer<'a> {
    /// A convolution (+ BN) (+ activation).
    Conv(&'a mut ConvBnAct),
    /// A linear layer (+ BN) (+ activation).
    Linear(&'a mut LinearBnAct),
    /// The quant stub at a model's input.
    Quant(&'a mut QuantStub),
    /// A functional op (residual add, …) with its own output post-process.
    Functional(&'a mut FloatFunctional),
}

impl QuantLayer<'_> {
    /// The output post-process of a layer that has nothing else to prepare (`QuantStub`,
    /// `FloatFunctional`); `None` for convolutions and linear layers.
    pub fn output_only(&mut self) -> Option<&mut ActivationPostProcess> {
        match self {
            QuantLayer::Quant(stub) => Some(&mut stub.activation_post_process),
            QuantLayer::Functional(f) => Some(&mut f.activation_post_process),
            QuantLayer::Conv(_) | QuantLayer::Linear(_) => None,
        }
    }
}

/// `prefix.name`, or whichever of the two is not empty.
#[doc(hidden)]
pub fn join_path(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

/// A model (or part of one) whose quantizable layers can be visited in order.
///
/// Layers of this crate implement it; implement it for your own model with
/// [`impl_quantizable!`](crate::impl_quantizable), listing the fields that hold layers:
///
/// ```
/// use burn::module::Module;
/// use burn::tensor::{Device, Tensor};
/// use burn_qat::impl_quantizable;
/// use burn_qat::nn::{ConvBnAct, ConvBnActConfig, FloatFunctional, QuantStub, DeQuantStub};
///
/// #[derive(Module, Debug)]
/// struct Block {
///     quant: QuantStub,
///     conv: ConvBnAct,
///     skip_add: FloatFunctional,
///     dequant: DeQuantStub,
/// }
/// impl_quantizable!(Block { quant, conv, skip_add, dequant });
///
/// impl Block {
///     fn forward(&self, x: Tensor<4>) -> Tensor<4> {
///         let x: Tensor<4> = self.quant.forward(x);
///         let y = self.skip_add.add(x.clone(), self.conv.forward(x));
///         self.dequant.forward(y)
///     }
/// }
/// ```
pub trait Quantizable {
    /// Calls `f` on every quantizable layer, in forward order, with the layer's module path
    /// (`blocks.3.depthwise`, as Burn records name it); stops at the first error.
    fn visit_layers(&mut self, f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>)
    -> Result<()>;
}

/// Implements [`Quantizable`] for a struct by visiting the listed fields in order.
#[macro_export]
macro_rules! impl_quantizable {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::nn::Quantizable for $ty {
            fn visit_layers(
                &mut self,
                f: &mut dyn FnMut(&str, $crate::nn::QuantLayer<'_>) -> $crate::Result<()>,
            ) -> $crate::Result<()> {
                $(
                    $crate::nn::Quantizable::visit_layers(&mut self.$field, &mut |name, layer| {
                        f(&$crate::nn::quantizable::join_path(stringify!($field), name), layer)
                    })?;
                )*
                Ok(())
            }
        }
    };
}

impl Quantizable for ConvBnAct {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        f("", QuantLayer::Conv(self))
    }
}

impl Quantizable for LinearBnAct {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        f("", QuantLayer::Linear(self))
    }
}

impl Quantizable for QuantStub {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        f("", QuantLayer::Quant(self))
    }
}

impl Quantizable for FloatFunctional {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        f("", QuantLayer::Functional(self))
    }
}

impl Quantizable for DeQuantStub {
    fn visit_layers(
        &mut self,
        _: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        Ok(())
    }
}

impl<T: Quantizable> Quantizable for Vec<T> {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        self.iter_mut().enumerate().try_for_each(|(i, layer)| {
            layer.visit_layers(&mut |name, l| f(&join_path(&i.to_string(), name), l))
        })
    }
}

impl<T: Quantizable> Quantizable for Option<T> {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, QuantLayer<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Some(layer) => layer.visit_layers(f),
            None => Ok(()),
        }
    }
}
