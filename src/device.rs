//! Burn devices by name, for the `--device` flags of the CLI and the examples.
//!
//! | name | device | needs |
//! |---|---|---|
//! | `flex`, `cpu` | [`Device::flex`], Burn's pure-Rust CPU backend | — |
//! | `wgpu` | `Device::wgpu` with the best adapter wgpu finds | feature `wgpu`, a Vulkan/Metal/DX12 driver |
//! | `wgpu:cpu` | a software adapter (Mesa's lavapipe, as CI uses) | feature `wgpu`, `mesa-vulkan-drivers` |
//! | `wgpu:N`, `wgpu:integrated:N` | the N-th discrete / integrated GPU | feature `wgpu` |
//! | `cuda`, `cuda:N` | `Device::cuda` | feature `cuda`, an NVIDIA driver |
//!
//! GPU devices start lazily and Burn panics when none can be had; [`check_device`] turns that
//! into an [`Error::Config`] that says what is missing, so a wrong `--device` never panics.

use burn::tensor::{Device, Tensor};

use crate::{Error, Result};

/// The device names this build accepts, for help texts.
pub fn device_names() -> &'static str {
    match (cfg!(feature = "wgpu"), cfg!(feature = "cuda")) {
        (true, true) => "flex | wgpu[:cpu|:N|:integrated:N] | cuda[:N]",
        (true, false) => "flex | wgpu[:cpu|:N|:integrated:N]",
        (false, true) => "flex | cuda[:N]",
        (false, false) => "flex (build with --features wgpu or cuda for GPU devices)",
    }
}

/// Parses a device name (see the module docs). Names of backends not compiled in get an error
/// that names the cargo feature to enable.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let mut parts = name.split(':');
    let backend = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let index = |s: &str| -> Result<usize> {
        s.parse()
            .map_err(|_| Error::Config(format!("device '{name}': '{s}' is not a device index")))
    };
    let unknown = || {
        Error::Config(format!(
            "unknown device '{name}'; this build accepts {}",
            device_names()
        ))
    };
    match (backend, rest.as_slice()) {
        ("flex" | "cpu", []) => Ok(Device::flex()),
        ("wgpu" | "vulkan", rest) => wgpu_device(&name, rest, index),
        ("cuda", rest) => cuda_device(&name, rest, index),
        _ => Err(unknown()),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device(name: &str, rest: &[&str], index: impl Fn(&str) -> Result<usize>) -> Result<Device> {
    use burn::tensor::DeviceKind;
    let kind = match rest {
        [] => DeviceKind::DefaultDevice,
        ["cpu"] => DeviceKind::Cpu,
        ["integrated", n] => DeviceKind::IntegratedGpu(index(n)?),
        ["discrete", n] | [n] => DeviceKind::DiscreteGpu(index(n)?),
        _ => {
            return Err(Error::Config(format!(
                "device '{name}': expected wgpu, wgpu:cpu, wgpu:N or wgpu:integrated:N"
            )));
        }
    };
    Ok(Device::wgpu(kind))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(
    name: &str,
    _rest: &[&str],
    _index: impl Fn(&str) -> Result<usize>,
) -> Result<Device> {
    Err(Error::Config(format!(
        "device '{name}' needs the wgpu backend: build with `--features wgpu`"
    )))
}

#[cfg(feature = "cuda")]
fn cuda_device(name: &str, rest: &[&str], index: impl Fn(&str) -> Result<usize>) -> Result<Device> {
    match rest {
        [] => Ok(Device::cuda(0)),
        [n] => Ok(Device::cuda(index(n)?)),
        _ => Err(Error::Config(format!(
            "device '{name}': expected cuda or cuda:N"
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(
    name: &str,
    _rest: &[&str],
    _index: impl Fn(&str) -> Result<usize>,
) -> Result<Device> {
    Err(Error::Config(format!(
        "device '{name}' needs the CUDA backend: build with `--features cuda`"
    )))
}

/// Starts `device` and runs one small operation on it, turning Burn's panic when the device
/// cannot be had (no driver, no adapter) into an error.
pub fn check_device(device: &Device) -> Result<()> {
    let probe = device.clone();
    let outcome = std::panic::catch_unwind(move || {
        Tensor::<1>::from_floats([1.0, 2.0], &probe)
            .sum()
            .into_scalar::<f32>()
    });
    match outcome {
        Ok(3.0) => Ok(()),
        Ok(v) => Err(Error::Config(format!(
            "device {device:?} computed 1 + 2 = {v}; its driver is not usable"
        ))),
        Err(payload) => {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown reason".into());
            Err(Error::Config(format!(
                "device {device:?} cannot be started ({why}); for wgpu install a Vulkan driver \
                 (Debian: mesa-vulkan-drivers, a software one) or pass --device flex"
            )))
        }
    }
}
