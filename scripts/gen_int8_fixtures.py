#!/usr/bin/env python3
"""Generates tests/fixtures/int8_*.safetensors: PyTorch's quantized CPU ops, for src/int8.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root:

    /opt/torch-oracle/bin/python scripts/gen_int8_fixtures.py

Deterministic: fixed seeds, one intra-op thread. Every integer tensor is stored as its
`int_repr()` (uint8 / int8); scales are float32-representable (PyTorch keeps them as double).

Engines: "qnnpack" and "fbgemm". The "x86" engine is fbgemm except on Linux machines with
AVX512-VNNI, where it sends convolutions with symmetric weights and <= 100 groups to oneDNN, whose
rounding differs; the fixtures therefore pin "fbgemm" (the x86 engine on AVX2 machines) and this
script prints how often "x86" on the generating machine disagrees with it. The fbgemm inputs are
reduce-range (0..127), as the x86/fbgemm qconfigs produce, so that AVX2 `vpmaddubsw` cannot
saturate.

Files (arrays are named `<case>.<field>`; `cases` lists the case names in order):
  int8_quantize.safetensors  quantize_per_tensor / quantize_per_channel (quint8, qint8, qint32)
  int8_conv.safetensors      quantized::conv2d / conv2d_relu, both engines
  int8_linear.safetensors    quantized::linear / linear_relu, both engines
  int8_add.safetensors       quantized::add / add_relu, both engines
  int8_pool.safetensors      adaptive_avg_pool2d to 1x1, both engines, NCHW and channels-last input
"""

import os

import numpy as np
import torch
from safetensors.numpy import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
ENGINE_ID = {"qnnpack": 0, "fbgemm": 1}


def f32(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def i64(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.int64))


def rep(q):
    """int_repr of a quantized tensor, NCHW-contiguous, as uint8/int8 numpy."""
    return np.ascontiguousarray(q.int_repr().contiguous().numpy())


def qu8(q, scale, zp):
    """A quint8 tensor from raw integers."""
    return torch._make_per_tensor_quantized_tensor(q.to(torch.uint8), scale, zp)


def nhwc(q):
    """`q` in channels-last memory format."""
    return q.contiguous(memory_format=torch.channels_last)


def fl(x):
    """A float32-representable Python float."""
    return float(np.float32(x))


def save(name, arrays, cases):
    arrays["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8).copy()
    path = os.path.join(OUT, name)
    save_file(arrays, path)
    print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


def rand_qu8(g, shape, lo, hi, scale, zp):
    q = torch.randint(lo, hi + 1, shape, generator=g, dtype=torch.int32).to(torch.uint8)
    return torch._make_per_tensor_quantized_tensor(q, scale, zp)


def rand_weight(g, shape, per_channel, symmetric):
    oc = shape[0]
    q = torch.randint(-128, 128, shape, generator=g, dtype=torch.int32).to(torch.int8)
    if per_channel:
        scales = [fl(0.002 + 0.02 * torch.rand(1, generator=g).item()) for _ in range(oc)]
        zps = [0 if symmetric else int(torch.randint(-20, 21, (1,), generator=g)) for _ in range(oc)]
        w = torch._make_per_channel_quantized_tensor(
            q, torch.tensor(scales, dtype=torch.float64), torch.tensor(zps), 0
        )
    else:
        scales = [fl(0.002 + 0.02 * torch.rand(1, generator=g).item())]
        zps = [0 if symmetric else int(torch.randint(-20, 21, (1,), generator=g))]
        w = torch._make_per_tensor_quantized_tensor(q, scales[0], zps[0])
    return w, scales, zps


def out_qparams(g, y_float, relu):
    """Output qparams that cover ~80% of the float range (so some outputs clamp)."""
    lo = min(float(y_float.min()), 0.0)
    hi = max(float(y_float.max()), 0.0)
    if relu:
        lo = min(lo, -0.1 * hi)
    scale = fl(0.8 * (hi - lo) / 255.0)
    zp = int(round(-lo / scale * 0.9)) + int(torch.randint(-3, 4, (1,), generator=g))
    return scale, max(0, min(255, zp))


def put_common(arrays, c, **kw):
    for k, v in kw.items():
        arrays[f"{c}.{k}"] = v


# ---------------------------------------------------------------- quantize / dequantize
def gen_quantize():
    g = torch.Generator().manual_seed(10)
    a, cases = {}, []
    k = torch.arange(-300, 300, dtype=torch.float32)
    specs = [
        ("tie_u8", (k + 0.5) * 0.5, 0.5, 128, torch.quint8),
        ("tie_i8", (k + 0.5) * 0.25, 0.25, -3, torch.qint8),
        ("rand_u8", torch.randn(3, 4, 5, 6, generator=g) * 2, 0.0173, 117, torch.quint8),
        ("rand_i8", torch.randn(5, 7, generator=g), 0.0081, 0, torch.qint8),
        ("rand_i32", torch.randn(40, generator=g) * 3, 1.7e-5, 0, torch.qint32),
        ("ext_u8", torch.tensor([1e30, -1e30, 3e9, -3e9, 0.0, -0.0, 12.75, 12.85, 25.45, 25.5]), 0.1, 5, torch.quint8),
        ("near_tie_u8", (torch.arange(0, 200, dtype=torch.float32) + 0.5) * 0.0137, 0.0137, 3, torch.quint8),
    ]
    for name, x, scale, zp, dtype in specs:
        scale = fl(scale)
        x = x.float()
        q = torch.quantize_per_tensor(x, scale, zp, dtype)
        put_common(
            a, name, x=f32(x), scale=f32([scale]), zp=i64([zp]),
            dtype=i64([{torch.quint8: 0, torch.qint8: 1, torch.qint32: 2}[dtype]]),
            q=np.ascontiguousarray(q.int_repr().numpy()), deq=f32(q.dequantize()),
        )
        cases.append(name)
    # per-channel along axis 0 (weights)
    x = torch.randn(6, 3, 3, 3, generator=g) * 0.2
    scales = [fl(s) for s in [0.001, 0.0031, 0.0007, 0.002, 0.0111, 0.0005]]
    zps = [0, 0, 3, -2, 0, 0]
    q = torch.quantize_per_channel(x, torch.tensor(scales, dtype=torch.float64), torch.tensor(zps), 0, torch.qint8)
    put_common(a, "pc_i8", x=f32(x), scales=f32(scales), zps=i64(zps), q=rep(q), deq=f32(q.dequantize()))
    cases.append("pc_i8")
    save("int8_quantize.safetensors", a, cases)


# ---------------------------------------------------------------- conv2d
CONV_CASES = [
    # name, N, C, H, W, OC, k, stride, pad, groups
    ("pw", 1, 8, 5, 6, 12, 1, 1, 0, 1),
    ("k3", 1, 5, 7, 6, 9, 3, 1, 1, 1),
    ("k3s2", 2, 6, 7, 8, 10, 3, 2, 1, 1),
    ("dw3", 1, 19, 6, 7, 19, 3, 1, 1, 19),  # depthwise, groups % 8 != 0 (fbgemm im2col),
    ("dw3s2", 2, 16, 7, 7, 16, 3, 2, 1, 16),  # fbgemm depthwise fast path (groups % 8 == 0),
    ("grp2", 1, 8, 5, 5, 8, 3, 1, 1, 2),  # fbgemm groupwise path (4 channels per group),
    ("stem", 1, 3, 11, 10, 16, 3, 2, 1, 1),
    ("pwb3", 3, 24, 4, 4, 7, 1, 1, 0, 1),
]


def gen_conv():
    g = torch.Generator().manual_seed(11)
    a, cases = {}, []
    mismatch = [0, 0]
    for engine in ["qnnpack", "fbgemm"]:
        for per_channel in ([False, True] if engine == "qnnpack" else [True, False]):
            for relu in [False, True]:
                for spec in CONV_CASES:
                    name, n, c, h, w, oc, k, s, p, grp = spec
                    torch.backends.quantized.engine = engine
                    hi = 255 if engine == "qnnpack" else 127
                    x_scale = fl(0.01 + 0.05 * torch.rand(1, generator=g).item())
                    x_zp = int(torch.randint(0, hi // 2, (1,), generator=g))
                    x = rand_qu8(g, (n, c, h, w), 0, hi, x_scale, x_zp)
                    symmetric = engine == "fbgemm" and per_channel
                    wq, w_scales, w_zps = rand_weight(g, (oc, c // grp, k, k), per_channel, symmetric)
                    bias = torch.randn(oc, generator=g) * 2.0
                    yf = torch.nn.functional.conv2d(x.dequantize(), wq.dequantize(), bias, s, p, 1, grp)
                    y_scale, y_zp = out_qparams(g, yf, relu)
                    packed = torch.ops.quantized.conv2d_prepack(wq, bias, [s, s], [p, p], [1, 1], grp)
                    op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
                    y = op(x, packed, y_scale, y_zp)
                    if engine == "fbgemm":
                        torch.backends.quantized.engine = "x86"
                        packed86 = torch.ops.quantized.conv2d_prepack(wq, bias, [s, s], [p, p], [1, 1], grp)
                        y86 = op(x, packed86, y_scale, y_zp)
                        mismatch[0] += int((y86.int_repr() != y.int_repr()).sum())
                        mismatch[1] += y.numel()
                    cname = f"{engine}_{'pc' if per_channel else 'pt'}_{'relu_' if relu else ''}{name}"
                    put_common(
                        a, cname,
                        x=rep(x), x_qp=f32([x_scale]), x_zp=i64([x_zp]),
                        w=rep(wq), w_scales=f32(w_scales), w_zps=i64(w_zps), bias=f32(bias),
                        y_qp=f32([y_scale]), y_zp=i64([y_zp]), y=rep(y),
                        meta=i64([ENGINE_ID[engine], int(per_channel), int(relu), s, p, grp]),
                    )
                    cases.append(cname)
    print(f"conv: engine 'x86' vs 'fbgemm' on this machine: {mismatch[0]} of {mismatch[1]} outputs differ")
    save("int8_conv.safetensors", a, cases)


# ---------------------------------------------------------------- linear
LINEAR_CASES = [("b1", 1, 37, 10), ("b4", 4, 64, 19), ("b3", 3, 200, 10)]


def gen_linear():
    g = torch.Generator().manual_seed(12)
    a, cases = {}, []
    for engine in ["qnnpack", "fbgemm"]:
        torch.backends.quantized.engine = engine
        for per_channel in [False, True]:
            for relu in [False, True]:
                for name, n, k, m in LINEAR_CASES:
                    hi = 255 if engine == "qnnpack" else 127
                    x_scale = fl(0.01 + 0.05 * torch.rand(1, generator=g).item())
                    x_zp = int(torch.randint(0, hi // 2, (1,), generator=g))
                    x = rand_qu8(g, (n, k), 0, hi, x_scale, x_zp)
                    symmetric = engine == "fbgemm" and per_channel
                    wq, w_scales, w_zps = rand_weight(g, (m, k), per_channel, symmetric)
                    bias = torch.randn(m, generator=g) * 2.0
                    yf = torch.nn.functional.linear(x.dequantize(), wq.dequantize(), bias)
                    y_scale, y_zp = out_qparams(g, yf, relu)
                    packed = torch.ops.quantized.linear_prepack(wq, bias)
                    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
                    y = op(x, packed, y_scale, y_zp)
                    cname = f"{engine}_{'pc' if per_channel else 'pt'}_{'relu_' if relu else ''}{name}"
                    put_common(
                        a, cname,
                        x=rep(x), x_qp=f32([x_scale]), x_zp=i64([x_zp]),
                        w=rep(wq), w_scales=f32(w_scales), w_zps=i64(w_zps), bias=f32(bias),
                        y_qp=f32([y_scale]), y_zp=i64([y_zp]), y=rep(y),
                        meta=i64([ENGINE_ID[engine], int(per_channel), int(relu)]),
                    )
                    cases.append(cname)
    save("int8_linear.safetensors", a, cases)


# ---------------------------------------------------------------- add
ADD_SHAPES = [("s128", (1, 8, 4, 4)), ("s300", (2, 6, 5, 5)), ("s1000", (1, 10, 10, 10)), ("s13", (1, 13, 1, 1))]


def gen_add():
    g = torch.Generator().manual_seed(13)
    a, cases = {}, []
    for engine in ["qnnpack", "fbgemm"]:
        torch.backends.quantized.engine = engine
        for relu in [False, True]:
            for name, shape in ADD_SHAPES:
                sa = fl(0.01 + 0.1 * torch.rand(1, generator=g).item())
                sb = fl(0.01 + 0.1 * torch.rand(1, generator=g).item())
                za = int(torch.randint(0, 256, (1,), generator=g))
                zb = int(torch.randint(0, 256, (1,), generator=g))
                qa = rand_qu8(g, shape, 0, 255, sa, za)
                qb = rand_qu8(g, shape, 0, 255, sb, zb)
                yf = qa.dequantize() + qb.dequantize()
                sy, zy = out_qparams(g, yf, relu)
                op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
                y = op(qa, qb, sy, zy)
                cname = f"{engine}_{'relu_' if relu else ''}{name}"
                put_common(
                    a, cname,
                    a=rep(qa), a_qp=f32([sa]), a_zp=i64([za]),
                    b=rep(qb), b_qp=f32([sb]), b_zp=i64([zb]),
                    y_qp=f32([sy]), y_zp=i64([zy]), y=rep(y),
                    meta=i64([ENGINE_ID[engine], int(relu)]),
                )
                cases.append(cname)
    save("int8_add.safetensors", a, cases)


# ---------------------------------------------------------------- adaptive average pool
POOL_SHAPES = [("m7", (1, 16, 7, 7)), ("b2", (2, 13, 4, 4)), ("r35", (1, 40, 3, 5)), ("k2", (1, 70, 2, 2)), ("one", (1, 9, 1, 1))]


def gen_pool():
    g = torch.Generator().manual_seed(14)
    a, cases = {}, []
    for engine in ["qnnpack", "fbgemm"]:
        torch.backends.quantized.engine = engine
        for channels_last in [False, True]:
            for name, shape in POOL_SHAPES:
                s = fl(0.01 + 0.1 * torch.rand(1, generator=g).item())
                z = int(torch.randint(0, 256, (1,), generator=g))
                x = rand_qu8(g, shape, 0, 255, s, z)
                xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                y = torch.nn.functional.adaptive_avg_pool2d(xin, (1, 1))
                assert y.q_scale() == s and y.q_zero_point() == z
                cname = f"{engine}_{'nhwc' if channels_last else 'nchw'}_{name}"
                put_common(
                    a, cname, x=rep(x), x_qp=f32([s]), x_zp=i64([z]), y=rep(y),
                    meta=i64([ENGINE_ID[engine], int(channels_last)]),
                )
                cases.append(cname)
    save("int8_pool.safetensors", a, cases)


if __name__ == "__main__":
    gen_quantize()
    gen_conv()
    gen_linear()
    gen_add()
    gen_pool()
