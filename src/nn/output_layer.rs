//! The stages of a layer whose only quantization is its output (`QuantStub`, `FloatFunctional`):
//! an `activation_post_process` that `prepare` swaps, and the output scale and zero-point
//! (`int8: Option<QuantizedOutput>`) that `convert` gives it.

/// Implements [`QuantLayer`](super::QuantLayer) for `$ty`, a struct with the fields
/// `activation_post_process: ActivationPostProcess` and `int8: Option<QuantizedOutput>`.
/// `$unobserved` maps the error of an observer that saw no data to what convert does then;
/// `$boundary` is the layer's [`Boundary`](super::layer::Boundary), if any.
macro_rules! impl_output_layer {
    ($ty:ty, $kind:literal, $unobserved:expr, $boundary:expr) => {
        impl $crate::nn::QuantLayer for $ty {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn boundary(&self) -> Option<$crate::nn::layer::Boundary> {
                $boundary
            }

            fn prepare(
                &mut self,
                qconfig: &$crate::quant::QConfig,
                mode: $crate::nn::PrepareMode,
                device: &burn::tensor::Device,
            ) -> $crate::Result<()> {
                use $crate::nn::ActivationPostProcess;
                self.activation_post_process.ensure_unprepared()?;
                self.activation_post_process =
                    ActivationPostProcess::prepared(qconfig, mode, device)?;
                Ok(())
            }

            fn for_each_fake_quant(&mut self, f: &mut dyn FnMut(&mut $crate::quant::FakeQuantize)) {
                if let Some(fq) = self.activation_post_process.fake_quantize_mut() {
                    f(fq);
                }
            }

            fn output_observer(&self) -> Option<&$crate::quant::Observer> {
                self.activation_post_process.observer()
            }

            fn convert(
                &mut self,
                _: $crate::int8::QParamsPt,
                engine: $crate::int8::Engine,
            ) -> $crate::Result<()> {
                let unobserved: fn($crate::Error) -> $crate::Result<$crate::int8::QParamsPt> =
                    $unobserved;
                let qparams = match self.activation_post_process.calibrated_observer($kind) {
                    Ok(_) => $crate::nn::post_process::single_qparams(
                        self.activation_post_process.calculate_qparams()?,
                    )?,
                    Err(
                        e @ $crate::Error::Stage {
                            problem: $crate::error::StageProblem::NotCalibrated { .. },
                            ..
                        },
                    ) => unobserved(e)?,
                    Err(e) => return Err(e),
                };
                self.int8 = Some($crate::nn::QuantizedOutput { qparams, engine });
                Ok(())
            }

            fn int8_output(&self) -> Option<$crate::nn::QuantizedOutput> {
                self.int8
            }

            fn int8_state_keys(&self) -> &'static [&'static str] {
                &["scale", "zero_point"]
            }

            fn int8_state(
                &self,
                path: &str,
                state: &mut $crate::state::StateDict,
            ) -> $crate::Result<()> {
                if let Some(out) = self.int8 {
                    $crate::state::put_output(state, path, out.qparams);
                }
                Ok(())
            }

            fn load_int8_state(
                &mut self,
                path: &str,
                entries: &$crate::state::Entries<'_>,
                _: $crate::int8::QParamsPt,
                engine: $crate::int8::Engine,
            ) -> $crate::Result<()> {
                let qparams = entries.output(path)?;
                self.int8 = Some($crate::nn::QuantizedOutput { qparams, engine });
                Ok(())
            }
        }
    };
}

pub(crate) use impl_output_layer;
