//! Models: MobileNetV2 and its quantizable form.
