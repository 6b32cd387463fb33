//! Reading and writing PyTorch checkpoints and NumPy arrays.

pub mod atomic;
pub mod int8_file;
pub mod npy;
mod pickle;
pub mod pytorch;
pub mod quantized_pth;
mod torch_archive;

pub use int8_file::{
    INT8_FORMAT, load_int8_model, looks_like_safetensors, read_int8_file, save_int8_file,
    save_int8_model,
};
pub use pytorch::{KeyMap, load_state_dict};
pub use quantized_pth::{QScheme, StateValue, read_quantized_state_dict};
