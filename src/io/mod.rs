//! Reading and writing PyTorch checkpoints and NumPy arrays.
