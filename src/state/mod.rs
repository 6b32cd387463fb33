//! State dicts as PyTorch's `state_dict()` holds them: named float, integer and quantized
//! tensors ([`StateValue`]), and typed reading and writing of a layer's int8 entries
//! ([`entries`]); the saved on/off switches of a module ([`switch`]). The file formats that carry them are in [`crate::io`].

pub mod entries;
pub mod host_read;
pub mod switch;
pub mod value;

pub use entries::{Entries, StateDict, put_float, put_output, put_weight_and_bias};
pub use switch::Switch;
pub use value::{QScheme, StateValue};
