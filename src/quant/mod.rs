//! Quantization numerics: schemes, qparams, observers, fake-quant, qconfigs (see issue #3).
