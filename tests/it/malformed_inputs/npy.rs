//! `.npy` arrays (`io::npy::read_f32`, the CLI's input format).

use burn_qat::io::npy::read_f32;

use super::{expect_err_at, temp_file};

/// A version-1 `.npy` file with header `dict` (padded as NumPy pads it) and `data`.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let len = (header.len() as u16).to_le_bytes();
    [
        b"\x93NUMPY\x01\x00".as_slice(),
        &len,
        header.as_bytes(),
        data,
    ]
    .concat()
}

fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

fn header(descr: &str, fortran: bool, shape: &str) -> String {
    let order = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}")
}

#[track_caller]
fn npy_err(bytes: &[u8], needles: &[&str]) {
    let (_dir, path) = temp_file("x.npy", bytes);
    expect_err_at(read_f32(&path), &path, needles);
}

#[test]
fn well_formed_control_reads() {
    let (_dir, path) = temp_file("x.npy", &npy(&header("<f4", false, "(2, 3)"), &f32s(6)));
    let a = read_f32(&path).unwrap();
    assert_eq!(a.shape, [2, 3]);
    assert_eq!(a.data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn npy_empty_file() {
    npy_err(
        b"",
        &["not a valid .npy file: shorter than its magic number"],
    );
}

#[test]
fn npy_directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    expect_err_at(read_f32(dir.path()), dir.path(), &["is a directory"]);
}

#[test]
fn npy_not_numpy_at_all() {
    npy_err(
        b"x,y\n1,2\n",
        &["not a valid .npy file: no \\x93NUMPY magic number"],
    );
}

#[test]
fn npy_wrong_dtype() {
    npy_err(
        &npy(&header("<f8", false, "(2,)"), &[0; 16]),
        &["expected a float32", "found dtype '<f8'"],
    );
    npy_err(
        &npy(&header(">f4", false, "(2,)"), &[0; 8]),
        &["found dtype '>f4'"],
    );
}

#[test]
fn npy_fortran_order() {
    npy_err(
        &npy(&header("<f4", true, "(2, 2)"), &f32s(4)),
        &["Fortran-ordered"],
    );
}

#[test]
fn npy_huge_declared_shape() {
    npy_err(
        &npy(&header("<f4", false, "(1099511627776,)"), &f32s(4)),
        &[
            "declares shape [1099511627776]",
            "the file holds 16 bytes after the header",
        ],
    );
    // A shape whose byte count overflows 64 bits.
    npy_err(
        &npy(&header("<f4", false, "(4294967296, 4294967296)"), &f32s(4)),
        &["(more than 2^64 bytes of float32 data)"],
    );
}

#[test]
fn npy_truncated_data() {
    npy_err(
        &npy(&header("<f4", false, "(20,)"), &f32s(15)),
        &[
            "(80 bytes of float32 data)",
            "the file holds 60 bytes after the header",
        ],
    );
    let whole = npy(&header("<f4", false, "(4,)"), &f32s(4));
    for cut in [3, 7, 9, 40, whole.len() - 1] {
        let (_dir, path) = temp_file("x.npy", &whole[..cut]);
        let msg = read_f32(&path).unwrap_err().to_string();
        assert!(msg.contains("x.npy"), "{msg}");
    }
}

#[test]
fn npy_huge_header_length() {
    // Version 2 has a 32-bit header length: 4 GiB declared, a few bytes present.
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(0xffff_fff0u32.to_le_bytes());
    bytes.extend(b"{'descr': '<f4'");
    npy_err(
        &bytes,
        &["header of 4294967280 bytes is longer than the 65536 accepted"],
    );
    // Version 1, a 1,000-byte header in a 30-byte file.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend(1000u16.to_le_bytes());
    bytes.extend(b"{'descr': '<f4'}");
    npy_err(&bytes, &["longer than the rest of the file"]);
}

#[test]
fn npy_deeply_nested_header() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    npy_err(
        &npy(&header("<f4", false, &deep), &f32s(1)),
        &["header nested deeper than 8 levels"],
    );
}

#[test]
fn npy_corrupted_header() {
    npy_err(
        &npy("{'descr': '<f4', 'fortran_order': Fals", &f32s(1)),
        &["not a valid .npy file"],
    );
    npy_err(
        &npy(&header("<f4", false, "(-3,)"), &f32s(3)),
        &["not a valid .npy file", "negative"],
    );
    npy_err(
        &npy(&header("<f4", false, "'many'"), &f32s(3)),
        &["not a valid .npy file"],
    );
}

#[test]
fn npy_unsupported_version() {
    let mut bytes = npy(&header("<f4", false, "(1,)"), &f32s(1));
    bytes[6] = 9;
    npy_err(&bytes, &["format version [9, 0] is not supported"]);
}

/// A FIFO at `dir/in.npy` (made with the `mkfifo` tool: std cannot).
#[cfg(unix)]
fn fifo(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("in.npy");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo: {status}");
    path
}

/// Writes `bytes` into the FIFO `path` from a thread, then closes it.
#[cfg(unix)]
fn feed(path: &std::path::Path, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        // The reader may close the pipe before taking everything.
        let _ = pipe.write_all(&bytes);
    })
}

#[cfg(unix)]
#[test]
fn npy_dev_zero_is_an_error_not_an_endless_read() {
    let path = std::path::Path::new("/dev/zero");
    expect_err_at(read_f32(path), path, &["no \\x93NUMPY magic number"]);
}

#[cfg(unix)]
#[test]
fn npy_fifo_reads_the_declared_array_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo(dir.path());
    let array = npy(&header("<f4", false, "(2, 3)"), &f32s(6));
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            pipe.write_all(&array).unwrap();
            // Then a tail without end, in effect: 256 MiB, far more than a pipe buffers. It
            // stops early only if the reader closes the pipe.
            let chunk = vec![0u8; 1 << 16];
            let mut sent = 0usize;
            while sent < 256 << 20 {
                match pipe.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => return (sent, Some(e.kind())),
                }
            }
            (sent, None)
        })
    };
    let a = read_f32(&path).unwrap();
    assert_eq!(a.shape, [2, 3]);
    assert_eq!(a.data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let (sent, end) = writer.join().unwrap();
    assert_eq!(
        end,
        Some(std::io::ErrorKind::BrokenPipe),
        "the reader took the whole tail ({sent} bytes) instead of closing after the array"
    );
    assert!(sent < 256 << 20, "{sent}");
}

#[cfg(unix)]
#[test]
fn npy_fifo_declaring_more_than_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo(dir.path());
    // 4 PiB of float32 declared, a few bytes sent: a stream has no length to check against,
    // so the machine's memory is the bound.
    let writer = feed(
        &path,
        npy(&header("<f4", false, "(1125899906842624,)"), &f32s(4)),
    );
    expect_err_at(
        read_f32(&path),
        &path,
        &[
            "header declares shape [1125899906842624]",
            "it needs 4.0 PiB of memory",
        ],
    );
    writer.join().unwrap();
}

#[cfg(unix)]
#[test]
fn npy_fifo_ending_before_the_data_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo(dir.path());
    let writer = feed(&path, npy(&header("<f4", false, "(4,)"), &f32s(3)));
    expect_err_at(
        read_f32(&path),
        &path,
        &[
            "truncated data",
            "(16 bytes of float32 data)",
            "ends after 12 bytes",
        ],
    );
    writer.join().unwrap();
}
