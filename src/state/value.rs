//! One state-dict value: a float, integer or quantized tensor, row-major, as PyTorch's
//! `state_dict()` holds it.

/// How a quantized tensor maps integers to reals: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, PartialEq)]
pub enum QScheme {
    /// `torch.per_tensor_affine`: one scale and zero point for the whole tensor.
    PerTensorAffine {
        /// Scale (PyTorch keeps a double).
        scale: f64,
        /// Zero point.
        zero_point: i64,
    },
    /// `torch.per_channel_affine`: one scale and zero point per index along `axis`.
    PerChannelAffine {
        /// Scales (from a float64 tensor), one per channel.
        scales: Vec<f64>,
        /// Zero points (from an int64 tensor), one per channel.
        zero_points: Vec<i64>,
        /// The channel dimension (0 for conv and linear weights).
        axis: usize,
    },
}

/// One state-dict value, with tensor data row-major (contiguous).
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue {
    /// A float32 tensor (float64, float16 and bfloat16 ones are converted to f32).
    Float {
        /// Shape (empty for a 0-d tensor).
        shape: Vec<usize>,
        /// Elements.
        data: Vec<f32>,
    },
    /// An integer or bool tensor (int64, int32, int16, int8, uint8, bool), widened to i64.
    Int {
        /// Shape.
        shape: Vec<usize>,
        /// Elements.
        data: Vec<i64>,
    },
    /// A `torch.qint8` tensor: its `int_repr()` and quantization parameters.
    QInt8 {
        /// Shape.
        shape: Vec<usize>,
        /// Raw integers.
        data: Vec<i8>,
        /// Scale(s) and zero point(s).
        qscheme: QScheme,
    },
    /// A `torch.quint8` tensor: its `int_repr()` and quantization parameters.
    QUInt8 {
        /// Shape.
        shape: Vec<usize>,
        /// Raw integers.
        data: Vec<u8>,
        /// Scale(s) and zero point(s).
        qscheme: QScheme,
    },
    /// A `torch.qint32` tensor: its `int_repr()` and quantization parameters.
    QInt32 {
        /// Shape.
        shape: Vec<usize>,
        /// Raw integers.
        data: Vec<i32>,
        /// Scale(s) and zero point(s).
        qscheme: QScheme,
    },
    /// A tuple or list, e.g. a quantized linear layer's `_packed_params._packed_params`
    /// `(qint8 weight, float bias or None)`.
    Tuple(Vec<StateValue>),
    /// `None`.
    None,
    /// Anything else, described: a dtype entry such as `torch.qint8`, a number, a string.
    Other(String),
}

impl StateValue {
    /// The tensor's shape, or `None` for a value that is not a tensor.
    pub fn shape(&self) -> Option<&[usize]> {
        match self {
            StateValue::Float { shape, .. }
            | StateValue::Int { shape, .. }
            | StateValue::QInt8 { shape, .. }
            | StateValue::QUInt8 { shape, .. }
            | StateValue::QInt32 { shape, .. } => Some(shape),
            _ => None,
        }
    }

    /// The quantization parameters of a quantized tensor.
    pub fn qscheme(&self) -> Option<&QScheme> {
        match self {
            StateValue::QInt8 { qscheme, .. }
            | StateValue::QUInt8 { qscheme, .. }
            | StateValue::QInt32 { qscheme, .. } => Some(qscheme),
            _ => None,
        }
    }

    /// A one-word name of the variant (`"float"`, `"qint8"`, `"tuple"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            StateValue::Float { .. } => "float",
            StateValue::Int { .. } => "int",
            StateValue::QInt8 { .. } => "qint8",
            StateValue::QUInt8 { .. } => "quint8",
            StateValue::QInt32 { .. } => "qint32",
            StateValue::Tuple(_) => "tuple",
            StateValue::None => "none",
            StateValue::Other(_) => "other",
        }
    }
}
