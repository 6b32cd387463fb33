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
    /// A layer that only has an output post-process: `QuantStub`, `FloatFunctional`.
    Output(&'a mut ActivationPostProcess),
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
///         let x = self.quant.forward(x);
///         let y = self.skip_add.add(x.clone(), self.conv.forward(x));
///         self.dequant.forward(y)
///     }
/// }
/// ```
pub trait Quantizable {
    /// Calls `f` on every quantizable layer, in forward order; stops at the first error.
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()>;
}

/// Implements [`Quantizable`] for a struct by visiting the listed fields in order.
#[macro_export]
macro_rules! impl_quantizable {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::nn::Quantizable for $ty {
            fn visit_layers(
                &mut self,
                f: &mut dyn FnMut($crate::nn::QuantLayer<'_>) -> $crate::Result<()>,
            ) -> $crate::Result<()> {
                $( $crate::nn::Quantizable::visit_layers(&mut self.$field, f)?; )*
                Ok(())
            }
        }
    };
}

impl Quantizable for ConvBnAct {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        f(QuantLayer::Conv(self))
    }
}

impl Quantizable for LinearBnAct {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        f(QuantLayer::Linear(self))
    }
}

impl Quantizable for QuantStub {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        f(QuantLayer::Output(&mut self.activation_post_process))
    }
}

impl Quantizable for FloatFunctional {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        f(QuantLayer::Output(&mut self.activation_post_process))
    }
}

impl Quantizable for DeQuantStub {
    fn visit_layers(&mut self, _: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        Ok(())
    }
}

impl<T: Quantizable> Quantizable for Vec<T> {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        self.iter_mut().try_for_each(|layer| layer.visit_layers(f))
    }
}

impl<T: Quantizable> Quantizable for Option<T> {
    fn visit_layers(&mut self, f: &mut dyn FnMut(QuantLayer<'_>) -> Result<()>) -> Result<()> {
        match self {
            Some(layer) => layer.visit_layers(f),
            None => Ok(()),
        }
    }
}
