//! Reading and writing PyTorch checkpoints and NumPy arrays.

pub mod atomic;
pub mod npy;
pub mod pytorch;

pub use pytorch::{KeyMap, load_state_dict};
