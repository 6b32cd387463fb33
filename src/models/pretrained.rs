//! Pretrained torchvision weights: download once into a cache directory (with a progress bar)
//! and verify the SHA-256 prefix in the file name as `torch.hub` does. The weights tables are in
//! [`super::weights`], the builders that load them in [`super::builders`]. Needs the `download`
//! feature (an HTTP client, SHA-256 and a progress bar).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::weights::WeightsInfo;
use crate::io::atomic::write_atomic;
use crate::{Error, Result};

/// The cache directory: `$BURN_QAT_CACHE`, else `$XDG_CACHE_HOME/burn-qat`, else
/// `~/.cache/burn-qat`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BURN_QAT_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("burn-qat")
}

/// torch.hub's own cache, where a user who ran torchvision may already have the file.
fn torch_hub_file(name: &str) -> Option<PathBuf> {
    let torch_home = std::env::var_os("TORCH_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("torch"))
        })?;
    let path = torch_home.join("hub").join("checkpoints").join(name);
    path.is_file().then_some(path)
}

/// The hash prefix torch.hub reads from a file name, if any: the first match of its
/// `HASH_REGEX`, `-([a-f0-9]*)\.` (`name-<hex>.pth`; dots before it are allowed, as in
/// `shufflenetv2_x0.5_fbgemm-00845098.pth`), here non-empty.
fn hash_prefix(file_name: &str) -> Option<&str> {
    file_name.match_indices('-').find_map(|(i, _)| {
        let rest = &file_name[i + 1..];
        let hex = rest
            .find(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
            .filter(|&end| end > 0 && rest[end..].starts_with('.'))?;
        Some(&rest[..hex])
    })
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks the SHA-256 of `path` against the prefix in its canonical `file_name`.
fn verify(path: &Path, file_name: &str) -> Result<()> {
    let Some(prefix) = hash_prefix(file_name) else {
        return Ok(());
    };
    let digest = sha256_file(path)?;
    if digest.starts_with(prefix) {
        Ok(())
    } else {
        Err(Error::Download(format!(
            "{}: SHA-256 {digest} does not start with {prefix}; the file is corrupt — delete it \
             and try again",
            path.display()
        )))
    }
}

/// Where the files are downloaded from: `$BURN_QAT_DOWNLOAD_BASE` (a mirror of
/// `https://download.pytorch.org/models/`, with its `quantized/` folder) when set, else the URL
/// torchvision lists.
fn download_url(weights: &WeightsInfo) -> String {
    const TORCHVISION: &str = "https://download.pytorch.org/models/";
    match std::env::var("BURN_QAT_DOWNLOAD_BASE") {
        Ok(base) if weights.url.starts_with(TORCHVISION) => {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                &weights.url[TORCHVISION.len()..]
            )
        }
        _ => weights.url.to_string(),
    }
}

/// The local path of `weights`: the cache (or torch.hub's cache) if present, else downloaded
/// into the cache with a progress bar on stderr when `progress` is set.
pub fn fetch_weights(weights: &WeightsInfo, progress: bool) -> Result<PathBuf> {
    let name = weights.file_name();
    let cached = cache_dir().join(name);
    for path in [Some(cached.clone()), torch_hub_file(name)]
        .into_iter()
        .flatten()
    {
        if path.is_file() {
            verify(&path, name)?;
            return Ok(path);
        }
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    download(&download_url(weights), &cached, progress)?;
    if let Err(e) = verify(&cached, name) {
        let _ = std::fs::remove_file(&cached);
        return Err(e);
    }
    Ok(cached)
}

fn download(url: &str, dest: &Path, progress: bool) -> Result<()> {
    let offline = |reason: String| {
        Error::Download(format!(
            "could not download {url}: {reason}. Without network access, download the file on \
             another machine and either copy it to {} or pass it as a local file (`--weights \
             FILE.pth` on the command line, `TorchvisionModel::load_torchvision(path, ...)` or \
             `load_torchvision_int8` in code)",
            dest.display()
        ))
    };
    let mut response = ureq::get(url).call().map_err(|e| offline(e.to_string()))?;
    let total = response.body().content_length();
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("Downloading {url}"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = bar.wrap_read(response.body_mut().as_reader());
    write_atomic(dest, |file| {
        let copied = std::io::copy(&mut reader, file)?;
        if total.is_some_and(|t| t != copied) {
            return Err(std::io::Error::other("connection closed before the end"));
        }
        file.flush()
    })
    .map_err(|e| offline(e.to_string()))?;
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_prefix_follows_torch_hub() {
        assert_eq!(hash_prefix("mobilenet_v2-b0353104.pth"), Some("b0353104"));
        assert_eq!(hash_prefix("mobilenet_v2_qnnpack_37f702c5.pth"), None);
        let dotted = "shufflenetv2_x0.5_fbgemm-00845098.pth";
        assert_eq!(hash_prefix(dotted), Some("00845098"));
        assert_eq!(
            hash_prefix("resnext101_32x8_fbgemm-ee16d00c.pth"),
            Some("ee16d00c")
        );
        assert_eq!(hash_prefix("a-b-0f.pth"), Some("0f")); // the first `-<hex>.`
        assert_eq!(hash_prefix("a-B0.pth"), None); // lowercase only, as the regex
    }

    #[test]
    fn offline_download_says_how_to_pass_a_local_file() {
        let dir = std::env::temp_dir().join(format!("burn-qat-dl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A port on loopback nobody listens on: fails at once, like an offline machine.
        let err = download("http://127.0.0.1:9/x-0.pth", &dir.join("x-0.pth"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--weights FILE.pth"), "{err}");
        assert!(!dir.join("x-0.pth").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
