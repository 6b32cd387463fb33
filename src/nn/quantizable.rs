//! The walk over a model's quantizable layers that every stage driver (`fuse_modules`,
//! `prepare`, `convert`, the QAT switches, save/load, export) runs — Rust's stand-in for
//! PyTorch iterating `model.named_modules()`.

use super::layer::QuantLayer;
use crate::Result;

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
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, &mut dyn QuantLayer) -> Result<()>,
    ) -> Result<()>;

    /// The read-only walk (saving, exporting): the same layers in the same order.
    fn visit_layers_ref(
        &self,
        f: &mut dyn FnMut(&str, &dyn QuantLayer) -> Result<()>,
    ) -> Result<()>;
}

/// Implements [`Quantizable`] for a struct by visiting the listed fields in order.
#[macro_export]
macro_rules! impl_quantizable {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::nn::Quantizable for $ty {
            fn visit_layers(
                &mut self,
                f: &mut dyn FnMut(&str, &mut dyn $crate::nn::QuantLayer) -> $crate::Result<()>,
            ) -> $crate::Result<()> {
                $(
                    $crate::nn::Quantizable::visit_layers(&mut self.$field, &mut |name, layer| {
                        f(&$crate::nn::quantizable::join_path(stringify!($field), name), layer)
                    })?;
                )*
                Ok(())
            }

            fn visit_layers_ref(
                &self,
                f: &mut dyn FnMut(&str, &dyn $crate::nn::QuantLayer) -> $crate::Result<()>,
            ) -> $crate::Result<()> {
                $(
                    $crate::nn::Quantizable::visit_layers_ref(&self.$field, &mut |name, layer| {
                        f(&$crate::nn::quantizable::join_path(stringify!($field), name), layer)
                    })?;
                )*
                Ok(())
            }
        }
    };
}

/// A layer is a model of one layer, at the empty path.
impl<L: QuantLayer> Quantizable for L {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, &mut dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        f("", self)
    }

    fn visit_layers_ref(
        &self,
        f: &mut dyn FnMut(&str, &dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        f("", self)
    }
}

impl<T: Quantizable> Quantizable for Vec<T> {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, &mut dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        self.iter_mut().enumerate().try_for_each(|(i, layer)| {
            layer.visit_layers(&mut |name, l| f(&join_path(&i.to_string(), name), l))
        })
    }

    fn visit_layers_ref(
        &self,
        f: &mut dyn FnMut(&str, &dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        self.iter().enumerate().try_for_each(|(i, layer)| {
            layer.visit_layers_ref(&mut |name, l| f(&join_path(&i.to_string(), name), l))
        })
    }
}

impl<T: Quantizable> Quantizable for Option<T> {
    fn visit_layers(
        &mut self,
        f: &mut dyn FnMut(&str, &mut dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        self.as_mut().map_or(Ok(()), |layer| layer.visit_layers(f))
    }

    fn visit_layers_ref(
        &self,
        f: &mut dyn FnMut(&str, &dyn QuantLayer) -> Result<()>,
    ) -> Result<()> {
        self.as_ref()
            .map_or(Ok(()), |layer| layer.visit_layers_ref(f))
    }
}
