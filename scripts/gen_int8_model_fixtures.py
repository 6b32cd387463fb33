#!/usr/bin/env python3
"""Generates tests/fixtures/int8_models/: converted (int8) torchvision MobileNetV2 state dicts,
for the quantized state-dict reader (src/io/quantized_pth.rs) and whole-model int8 tests.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root (no network: weights are random, never downloaded):

    /opt/torch-oracle/bin/python scripts/gen_int8_model_fixtures.py

For each engine ("qnnpack": per-tensor weights, "x86": per-channel weights) and width it builds
`torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False, num_classes=10,
width_mult=W)` with seeded random weights and random BN affine parameters and running
statistics (so BN folding matters), then `eval()`, `fuse_model()`, the engine's default PTQ
qconfig, `prepare`, calibration on seeded random batches in [-2, 2], `convert`. It writes:

  mobilenet_v2_<engine>_w<WW>.pth          the converted model's state_dict(), torch.save (zip)
  mobilenet_v2_<engine>_w<WW>.output.npy   uint8 int_repr() of the quantized output (before
                                           DeQuantStub) on input.npy; its scale / zero point are
                                           in the manifest
  input.npy                                float32 input of every model, N x 3 x H x W
                                           (non-square, uniform in [-2, 2])
  mobilenet_v2_qnnpack_w025.legacy.pth     the first model again, legacy torch.save format
  misc_dtypes.pth / misc_dtypes.legacy.pth a small state dict covering every storage dtype,
                                           quint8 per-tensor and per-channel (axis 1), qint32,
                                           views with offsets / strides / shared storage, None,
                                           tuples, a dtype entry
  manifest.json                            for every checkpoint, every key as PyTorch sees it

Manifest entries (`keys`, in state-dict order, one per line) describe a value as the Rust
reader should: kind "float" (f16/bf16/f32/f64, read as f32), "int" (bool/u8/i8/i16/i32/i64,
read as i64), "qint8" / "quint8" / "qint32" (raw int_repr()), "tuple" (with `items`), "none",
"other" (`repr`). Tensors carry `dtype`, `shape`, `digest` (the first 16 hex digits of the
SHA-256 of their row-major data in the reader's representation: f32 / i64 / i8 / u8 / i32,
little-endian) and their first values; quantized ones a `qscheme` with `scale` / `zero_point`
(per-tensor) or `axis`, `channels` and digests and first values of the f64 scales and i64
zero points (per-channel). Every float is a string (Python `repr`, exact for f64) so that no
JSON parser rounds it.

Outputs: the qnnpack models run with the qnnpack engine. The x86 models run with "fbgemm" (a
fresh converted model loaded from the same state dict): "x86" is fbgemm except on machines with
AVX512-VNNI, where it sends some convolutions to oneDNN, whose rounding differs (see
gen_int8_fixtures.py); the script prints how many outputs "x86" on this machine changes.

Deterministic: fixed seeds, one intra-op thread; the legacy files' storage keys (memory
addresses in PyTorch) are replaced by first-use counters.
"""
import argparse
import builtins
import contextlib
import hashlib
import io
import json
import os
import pickle

import numpy as np
import torch
import torchvision
from torchvision.models.quantization import mobilenet_v2

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert torchvision.__version__.startswith("0.20.1"), torchvision.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "int8_models")

# How the Rust reader represents each dtype: (manifest kind, numpy dtype of its data).
READER_REPR = {
    torch.float32: ("float", np.float32),
    torch.float64: ("float", np.float32),
    torch.float16: ("float", np.float32),
    torch.bfloat16: ("float", np.float32),
    torch.int64: ("int", np.int64),
    torch.int32: ("int", np.int64),
    torch.int16: ("int", np.int64),
    torch.int8: ("int", np.int64),
    torch.uint8: ("int", np.int64),
    torch.bool: ("int", np.int64),
    torch.qint8: ("qint8", np.int8),
    torch.quint8: ("quint8", np.uint8),
    torch.qint32: ("qint32", np.int32),
}


FIRST = 4  # leading values quoted in the manifest next to each digest


def fs(x):
    """A float as an exact string (Python repr round-trips f64)."""
    return repr(float(x))


def tag(w):
    return f"w{int(round(w * 100)):03d}"


# ---------------------------------------------------------------- manifest
def digest(arr):
    """First 16 hex digits of the SHA-256 of an array's little-endian, row-major bytes."""
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()[:16]


def describe(v):
    if v is None:
        return {"kind": "none"}
    if isinstance(v, tuple):
        return {"kind": "tuple", "items": [describe(x) for x in v]}
    if not isinstance(v, torch.Tensor):
        return {"kind": "other", "repr": repr(v)}
    kind, np_dtype = READER_REPR[v.dtype]
    if v.is_quantized:
        data = v.int_repr()
    elif v.dtype in (torch.float16, torch.bfloat16, torch.float64):
        data = v.to(torch.float32)
    elif v.dtype == torch.bool:
        data = v.to(torch.int64)
    else:
        data = v
    arr = data.detach().contiguous().numpy().astype(np_dtype)
    first = arr.reshape(-1)[:FIRST].tolist()
    d = {
        "kind": kind,
        "dtype": str(v.dtype).removeprefix("torch."),
        "shape": list(v.shape),
        "digest": digest(arr),
        "first": [fs(x) for x in first] if kind == "float" else [int(x) for x in first],
    }
    if v.is_quantized:
        if v.qscheme() == torch.per_tensor_affine:
            d.update(qscheme="per_tensor_affine", scale=fs(v.q_scale()), zero_point=int(v.q_zero_point()))
        else:
            scales = v.q_per_channel_scales().numpy().astype(np.float64)
            zps = v.q_per_channel_zero_points().numpy().astype(np.int64)
            d.update(
                qscheme="per_channel_affine",
                axis=int(v.q_per_channel_axis()),
                channels=len(scales),
                scales_digest=digest(scales),
                zero_points_digest=digest(zps),
                scales_first=[fs(x) for x in scales[:FIRST]],
                zero_points_first=[int(x) for x in zps[:FIRST]],
            )
    return d


def dump_manifest(manifest):
    """JSON with one line per state-dict key (diff-friendly, compact)."""
    lines = []
    for i, ck in enumerate(manifest["checkpoints"]):
        head = {k: v for k, v in ck.items() if k != "keys"}
        keys = ",\n".join("   " + json.dumps(e) for e in ck["keys"])
        sep = "," if i + 1 < len(manifest["checkpoints"]) else ""
        lines.append(f'  {json.dumps(head)[:-1]}, "keys": [\n{keys}\n  ]}}{sep}')
    top = json.dumps({k: v for k, v in manifest.items() if k != "checkpoints"})[:-1]
    return top + ', "checkpoints": [\n' + "\n".join(lines) + "\n]}\n"


def describe_state_dict(sd):
    return [dict(key=k, **describe(v)) for k, v in sd.items()]


# ---------------------------------------------------------------- saving
@contextlib.contextmanager
def deterministic_legacy_keys():
    """PyTorch's legacy writer names storages `str(storage._cdata)` (a memory address); count
    them in first-use order instead (`_legacy_save` looks `str` up in its module's globals first
    and calls it on nothing else)."""
    ids = {}

    def key_str(x):
        if type(x) is int:
            return builtins.str(ids.setdefault(x, len(ids)))
        return builtins.str(x)

    torch.serialization.str = key_str
    try:
        yield
    finally:
        del torch.serialization.str


def save(obj, name, legacy=False):
    path = os.path.join(OUT, name)
    if legacy:
        # What torch.save(obj, path, _use_new_zipfile_serialization=False) does.
        with open(path, "wb") as f, deterministic_legacy_keys():
            torch.serialization._legacy_save(obj, f, pickle, torch.serialization.DEFAULT_PROTOCOL)
    else:
        torch.save(obj, path)
    # The file must read back as the same state dict.
    back = torch.load(path, weights_only=False)
    assert list(back.keys()) == list(obj.keys()), name
    for k, v in obj.items():
        assert describe(back[k]) == describe(v), (name, k)
    print(f"{path}: {os.path.getsize(path)} bytes")
    return name


# ---------------------------------------------------------------- models
def build_float(width_mult, seed):
    """Quantizable MobileNetV2 with random weights and random BN affine/statistics."""
    torch.manual_seed(seed)
    model = mobilenet_v2(weights=None, quantize=False, num_classes=10, width_mult=width_mult)
    return randomize(model).eval()


def randomize(model, conv_init=None):
    """Random BN affine and statistics and random linear layers, drawn from torch's generator
    module by module; `conv_init(conv)`, if given, initialises each Conv2d in the same walk."""
    with torch.no_grad():
        for m in model.modules():
            if conv_init is not None and isinstance(m, torch.nn.Conv2d):
                conv_init(m)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.05)
                m.bias.normal_(0.0, 0.1)
    return model


def quantize_model(engine, width_mult, seed, calib_batches):
    torch.backends.quantized.engine = engine
    model = build_float(width_mult, seed)
    model.fuse_model()
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(model, inplace=True)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(calib_batches):
            model(torch.rand(4, 3, 64, 64, generator=g) * 4.0 - 2.0)
    torch.ao.quantization.convert(model, inplace=True)
    return model


def quantized_output(model, x):
    """The int8 output before DeQuantStub, checked against the float forward."""
    with torch.no_grad():
        q = model._forward_impl(model.quant(x))
        assert q.is_quantized and q.dtype == torch.quint8
        assert torch.equal(q.dequantize(), model(x))
    return q


def gen_model(engine, width_mult, seed, calib_batches, x, legacy, manifest):
    stem = f"mobilenet_v2_{engine}_{tag(width_mult)}"
    model = quantize_model(engine, width_mult, seed, calib_batches)
    sd = model.state_dict()
    if engine == "x86":
        y86 = quantized_output(model, x)
        # Numerics of the x86 engine on an AVX2 machine: a fresh model converted under fbgemm.
        fb = quantize_model("fbgemm", width_mult, seed, 0)
        fb.load_state_dict(sd)
        y = quantized_output(fb, x)
        differ = int((y86.int_repr() != y.int_repr()).sum())
        print(f"{stem}: engine 'x86' vs 'fbgemm' on this machine: {differ} of {y.numel()} outputs differ")
        out_engine = "fbgemm"
    else:
        y = quantized_output(model, x)
        out_engine = engine
    np.save(os.path.join(OUT, f"{stem}.output.npy"), np.ascontiguousarray(y.int_repr().numpy()))
    entry = {
        "file": save(sd, f"{stem}.pth"),
        "engine": engine,
        "width_mult": width_mult,
        "seed": seed,
        "calib_batches": calib_batches,
        "input": "input.npy",
        "output": f"{stem}.output.npy",
        "output_engine": out_engine,
        "output_scale": fs(y.q_scale()),
        "output_zero_point": int(y.q_zero_point()),
        "keys": describe_state_dict(sd),
    }
    if legacy:
        entry["legacy_file"] = save(sd, f"{stem}.legacy.pth", legacy=True)
    manifest["checkpoints"].append(entry)


# ---------------------------------------------------------------- dtype coverage
def gen_misc(seed, manifest):
    """Every storage dtype, quint8 and qint32 quantized tensors, and views (offset, strides,
    shared storage) in one small state dict."""
    g = torch.Generator().manual_seed(seed + 3)
    base = torch.randn(5, 6, generator=g)
    qu8 = torch.quantize_per_tensor(torch.randn(3, 4, generator=g), 0.05, 130, torch.quint8)
    qu8_pc = torch.quantize_per_channel(
        torch.randn(2, 3, 4, generator=g),
        torch.tensor([0.02, 0.03, 0.07], dtype=torch.float64),
        torch.tensor([120, 128, 3]),
        1,
        torch.quint8,
    )
    qi8_pc = torch.quantize_per_channel(
        torch.randn(4, 3, generator=g), torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64),
        torch.tensor([0, -3, 5, 0]), 0, torch.qint8,
    )
    qi32 = torch.quantize_per_tensor(torch.randn(7, generator=g) * 3, 1.7e-5, 0, torch.qint32)
    qbig = torch.quantize_per_tensor(torch.randn(6, 5, generator=g), 0.04, -2, torch.qint8)
    sd = {
        "f32": torch.randn(2, 3, generator=g),
        "f64": torch.randn(4, generator=g, dtype=torch.float64),
        "f16": torch.randn(3, 2, generator=g).to(torch.float16),
        "bf16": torch.randn(5, generator=g).to(torch.bfloat16),
        "i64": torch.tensor([-(2**40), 0, 7, 2**62]),
        "i32": torch.tensor([[-5, 3], [2**31 - 1, -(2**31)]], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar_f32": torch.tensor(0.125),
        "scalar_i64": torch.tensor(-3),
        "empty": torch.zeros(0, 4),
        # Views of one storage: transposed, sliced with an offset, a strided column.
        "base": base,
        "base_t": base.t(),
        "base_slice": base[2:4, 1:5],
        "base_col": base[:, 3],
        "qu8": qu8,
        "qu8_t": qu8.t(),
        "qu8_pc_axis1": qu8_pc,
        "qi8_pc": qi8_pc,
        "qi8_slice": qbig[1:4, 2:],
        "qi32": qi32,
        "dtype": torch.qint8,
        "none": None,
        "pair": (qi8_pc, None),
        "nested": (torch.arange(3), (torch.ones(1), "text")),
        "number": 3,
    }
    manifest["checkpoints"].append(
        {
            "file": save(sd, "misc_dtypes.pth"),
            "legacy_file": save(sd, "misc_dtypes.legacy.pth", legacy=True),
            "keys": describe_state_dict(sd),
        }
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["qnnpack", "x86"], choices=["qnnpack", "x86"])
    ap.add_argument("--widths", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-batches", type=int, default=3)
    ap.add_argument("--input-shape", nargs=4, type=int, default=[2, 3, 64, 48], metavar=("N", "C", "H", "W"))
    ap.add_argument("--legacy", default="qnnpack_w025",
                    help="<engine>_w<WW> of the one model also saved in legacy format")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    manifest = {"torch": torch.__version__, "torchvision": torchvision.__version__, "checkpoints": []}
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(*args.input_shape, generator=g) * 4.0 - 2.0
    np.save(os.path.join(OUT, "input.npy"), np.ascontiguousarray(x.numpy().astype(np.float32)))
    for engine in args.engines:
        for w in args.widths:
            seed = args.seed + 10 * args.engines.index(engine) + args.widths.index(w) + 1
            gen_model(engine, w, seed, args.calib_batches, x, f"{engine}_{tag(w)}" == args.legacy, manifest)
    gen_misc(args.seed, manifest)
    path = os.path.join(OUT, "manifest.json")
    with open(path, "w") as f:
        f.write(dump_manifest(manifest))
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{path}: {os.path.getsize(path)} bytes; {OUT}: {total} bytes in all")


if __name__ == "__main__":
    main()
