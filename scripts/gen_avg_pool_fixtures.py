#!/usr/bin/env python3
"""Generates tests/fixtures/avg_pool.safetensors: PyTorch's quantized and float `avg_pool2d`, for
src/int8/avg_pool.rs and src/nn/avg_pool.rs.

Environment (the pins the fixtures were generated with, as for gen_int8_fixtures.py):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root:

    /opt/torch-oracle/bin/python scripts/gen_avg_pool_fixtures.py

Deterministic: fixed seeds, one intra-op thread. Generated on an AVX-512 CPU (AMD EPYC), where
PyTorch's kernels run their AVX-512 builds; the script reruns itself with
`ATEN_CPU_CAPABILITY=avx2` and asserts the AVX2 builds give the same bytes (the channels-last
kernel's vector part covers `C / 16 · 16` channels on AVX-512 and `C / 8 · 8` on AVX2; the rest
run its scalar tail, which rounds the same here, see src/int8/avg_pool.rs).

Arrays (`<case>.<field>`; `cases` lists the case names in order):
  <case>    `F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor)`
            on a quint8 x: x (int_repr, NCHW), x_qp, x_zp; meta [kh, kw, sh, sw, ph, pw, ceil,
            count_include_pad, divisor (0: none)]; outputs (int_repr, NCHW, with the input's
            qparams, asserted):
              y_nhwc     the x86 engine on a channels-last input (`_qavg_pool_nhwc_kernel`);
              y_nchw     the x86 engine on an NCHW input (`avg_pool2d_out_frame`), only where it
                         differs from y_nhwc;
              y_qnnpack  the qnnpack engine (QNNPACK's average pooling when ceil_mode is off,
                         the same for either input layout; the native kernels otherwise, as for
                         x86, asserted), only where it differs from y_nhwc.
  float     `F.avg_pool2d` on a float [1, 3, 6, 7] x: y_<case> for each case.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from gen_int8_fixtures import f32, fl, i64, nhwc, qu8, rep  # this folder: the same helpers and pins
from safetensors.numpy import load_file, save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.set_num_threads(1)
F = torch.nn.functional

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
CHILD = "GEN_AVG_POOL_CHILD"

# Input qparams and value ranges, rotated over the cases.
QPARAMS = [
    # name, scale, zero-point, low, high
    ("rand", 0.05, 127, 0, 256),
    ("zp0", 0.0371, 0, 0, 256),
    # Odd zero-points: x86 on NCHW inputs adds them before rounding, which moves ties.
    # Every value below the zero-point: padding read as the zero-point (qnnpack) shows.
    ("low", 0.02, 201, 0, 100),
    ("high", 0.03, 21, 150, 256),
]
# Channel counts, rotated over the cases: all-tail (3), one AVX2 vector (8), vector + tail
# (17), AVX-512 vector + AVX2 vector (40), and in the large cases AVX-512 blocks of 64.
CHANNELS = [3, 8, 17, 40, 24]


def configs():
    """(name, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, shape)."""
    out = []
    for k in (2, 3):
        for s in (1, 2):
            for p in (0, 1):
                for ceil in (False, True):
                    for cip, div in ((True, None), (False, None), (True, 3)):
                        name = f"k{k}s{s}p{p}{'c' if ceil else ''}{'' if cip else 'x'}{f'd{div}' if div else ''}"
                        c = CHANNELS[len(out) % len(CHANNELS)]
                        out.append((name, (k, k), (s, s), (p, p), ceil, cip, div, (1, c, 6, 7)))
    out += [
        ("k32s21p10x", (3, 2), (2, 1), (1, 0), False, False, None, (1, 17, 6, 7)),
        ("k32s21p11c", (3, 2), (2, 1), (1, 1), True, True, None, (1, 8, 6, 7)),
        ("k5s2p2x", (5, 5), (2, 2), (2, 2), False, False, None, (1, 40, 6, 7)),
        ("k5s3p2c", (5, 5), (3, 3), (2, 2), True, True, None, (1, 17, 6, 7)),
        ("k3s1p1d1", (3, 3), (1, 1), (1, 1), False, True, 1, (1, 17, 6, 7)),  # saturates
        ("k2s2d7", (2, 2), (2, 2), (0, 0), False, True, 7, (1, 40, 6, 7)),
        ("big_k3s2p1x", (3, 3), (2, 2), (1, 1), False, False, None, (2, 130, 6, 7)),
        ("big_k2s1c", (2, 2), (1, 1), (0, 0), True, True, None, (2, 72, 5, 5)),
    ]
    return out


def avg(x, cfg):
    _, k, s, p, ceil, cip, div, _ = cfg
    return F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=div)


def gen_int8(a, cases):
    g = torch.Generator().manual_seed(31)
    for i, cfg in enumerate(configs()):
        name, k, s, p, ceil, cip, div, shape = cfg
        qname, scale, zp, lo, hi = QPARAMS[i % len(QPARAMS)]
        x = qu8(torch.randint(lo, hi, shape, generator=g), fl(scale), zp)
        ys = {}
        for engine in ("x86", "qnnpack"):
            torch.backends.quantized.engine = engine
            for channels_last in (False, True):
                y = avg(nhwc(x) if channels_last else x, cfg)
                assert (y.q_scale(), y.q_zero_point()) == (x.q_scale(), x.q_zero_point())
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                assert y.is_contiguous(memory_format=fmt), (name, engine, channels_last)
                ys[engine, channels_last] = rep(y)
        if ceil:  # qnnpack's own kernel runs without ceil_mode only
            assert np.array_equal(ys["qnnpack", False], ys["x86", False]), name
            assert np.array_equal(ys["qnnpack", True], ys["x86", True]), name
        else:
            assert np.array_equal(ys["qnnpack", False], ys["qnnpack", True]), name
        a[f"{name}.x"] = rep(x)
        a[f"{name}.x_qp"] = f32([x.q_scale()])
        a[f"{name}.x_zp"] = i64([x.q_zero_point()])
        a[f"{name}.meta"] = i64([*k, *s, *p, int(ceil), int(cip), div or 0])
        a[f"{name}.y_nhwc"] = ys["x86", True]
        differ = {}
        for key, y in (("y_nchw", ys["x86", False]), ("y_qnnpack", ys["qnnpack", False])):
            differ[key] = int((y != ys["x86", True]).sum())
            if differ[key]:
                a[f"{name}.{key}"] = y
        print(f"{name} ({qname}, {list(shape)}): {ys['x86', True].size} outputs; differ from x86 NHWC: {differ}")
        cases.append(name)


def gen_float(a, cases):
    g = torch.Generator().manual_seed(32)
    x = torch.randn(1, 3, 6, 7, generator=g)
    a["float.x"] = f32(x)
    for cfg in configs():
        a[f"float.y_{cfg[0]}"] = f32(avg(x, cfg))
    cases.append("float")


def generate():
    a, cases = {}, []
    gen_int8(a, cases)
    gen_float(a, cases)
    a["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8).copy()
    return a


def main():
    if os.environ.get(CHILD):
        assert torch.backends.cpu.get_cpu_capability() == "AVX2"
        save_file(generate(), os.environ[CHILD])
        return
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    a = generate()
    # The AVX2 builds of PyTorch's kernels (another vector width) give the same bytes.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "avx2.safetensors")
        env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", **{CHILD: path})
        subprocess.run([sys.executable, __file__], env=env, check=True, stdout=subprocess.DEVNULL)
        b = load_file(path)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key}: AVX2 and AVX-512 builds differ"
    print("ATEN_CPU_CAPABILITY=avx2 gives the same arrays")
    path = os.path.join(OUT, "avg_pool.safetensors")
    save_file(a, path)
    print(f"{path}: {len(a['cases'].tobytes().split(b','))} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
