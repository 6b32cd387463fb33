#!/usr/bin/env python3
"""Generates tests/fixtures/functional_int8.safetensors: PyTorch's quantized mul, cat,
hardsigmoid and channel shuffle, for src/int8/{mul,cat,hardsigmoid,shuffle}.rs,
src/nn/{float_functional,hardsigmoid}.rs and `ImageBatch::channel_shuffle`
(tests/it/functional_int8.rs).

Environment (the pins the fixtures were generated with, as for gen_int8_fixtures.py):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root:

    /opt/torch-oracle/bin/python scripts/gen_functional_int8_fixtures.py

Deterministic: fixed seeds, one intra-op thread. Generated on a 2-core AMD EPYC with AVX-512
VNNI (`torch.backends.cpu.get_cpu_capability()` says AVX512; the quantized kernels still step
as PyTorch's AVX2 code does, 8 floats, see src/int8/cat.rs). Every int8 output is stored NCHW
(int_repr), as uint8.

Arrays (`<case>.<field>`; `cases` lists the case names in order):
  mul_<name>    `torch.ops.quantized.mul` (or `mul_relu`): a, b (NCHW inputs; b may be
                [N, C, 1, 1]); qp [s_a, s_b, s_y]; zp [z_a, z_b, z_y]; flags [a channels-last,
                b channels-last, order (1: PyTorch ran mul(b, a), the SE block's order), relu];
                y_<engine> for qnnpack and x86 (asserted equal here: both run the native kernel).
  cat_<name>    `torch.ops.quantized.cat(xs, dim, scale, zero_point)`: x0, x1, ... (NCHW);
                qp [s_0, ..., s_y]; zp [z_0, ..., z_y]; meta [dim, inputs channels-last (0/1),
                output channels-last (0/1), number of inputs]; y_<engine>.
  hsig_<name>   `F.hardsigmoid` on quint8: qp [s_in], zp [z_in]; table_<engine> (the output for
                each of the 256 inputs, a multiple of 64 elements: the x86 vectorized body),
                x86_tail_table (x86's scalar tail); x (a [2, 8, 9, 11] input, 1584 elements,
                48 in x86's tail) and y_qnnpack, y_x86_nchw, y_x86_nhwc (the suffix is the memory
                format PyTorch ran on). The output qparams are (1/256, 0), asserted here.
  shuffle       torchvision's `channel_shuffle` on a quint8 x [2, 12, 5, 7] (qp, zp): y_g<g> for
                g in 1, 2, 3, 4, 6 (qparams kept, asserted here); on floats: xf, yf_g<g>.
  float_hsig    `F.hardsigmoid` on floats: x, y.
  model         the float data of the tiny model below: <conv>.weight, <conv>.bias for a, b, se;
                cal (the calibration batch), x (the test input), y_float (the float model on x).
  model_<engine> `Tiny` in eager mode, `get_default_qconfig(engine)`, prepare, calibrate on cal,
                convert, run on x: qp / zp (the QuantStub's, cat's and mul's output qparams),
                y (the int8 output's int_repr, NCHW).

The tiny model: QuantStub -> a = Conv2d(3, 13, 1), b = Conv2d(3, 8, 3, padding=1) -> cat([a, b])
(both channels-last: the NHWC fast path) -> se = Conv2d(21, 21, 5, stride=5, padding=2) on the
5x5 input ([N, 21, 1, 1]) -> Hardsigmoid -> mul(gate, cat) (the SE block's broadcast) ->
channel_shuffle(3) -> DeQuantStub.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from gen_int8_fixtures import f32, fl, i64, nhwc, qu8, rep  # this folder: the same helpers and pins
from safetensors.numpy import save_file
from torchvision.models.shufflenetv2 import channel_shuffle

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
ENGINES = ["qnnpack", "x86"]


def rand_scale(g, lo=-6.0, hi=0.0):
    return fl(float(np.exp(torch.empty(1).uniform_(lo, hi, generator=g).item())))


def rand_zp(g):
    return int(torch.randint(0, 256, (1,), generator=g))


def rand_q(g, shape):
    return torch.randint(0, 256, shape, generator=g)


def u8(q):
    return np.ascontiguousarray(rep(q).astype(np.uint8))


def per_engine(run):
    """run() under each engine: {engine: output}."""
    out = {}
    for engine in ENGINES:
        torch.backends.quantized.engine = engine
        out[engine] = run()
    return out


# -- mul -----------------------------------------------------------------------------------------

MUL_CASES = [
    # name, a shape, b shape, a channels-last, b channels-last, order, relu
    ("same0", (2, 16, 9, 11), (2, 16, 9, 11), 0, 0, 0, 0),
    ("same1", (2, 16, 9, 11), (2, 16, 9, 11), 1, 1, 0, 0),
    ("same2", (2, 16, 9, 11), (2, 16, 9, 11), 1, 0, 0, 0),
    ("same3", (3, 7, 5, 13), (3, 7, 5, 13), 0, 0, 0, 0),
    ("relu", (2, 16, 9, 11), (2, 16, 9, 11), 0, 0, 0, 1),
    ("broadcast", (2, 48, 16, 16), (2, 48, 1, 1), 1, 1, 0, 0),
    ("se", (2, 48, 16, 16), (2, 48, 1, 1), 1, 1, 1, 0),
    ("se_nchw", (1, 40, 7, 9), (1, 40, 1, 1), 0, 0, 1, 0),
]


def gen_mul(a, cases):
    g = torch.Generator().manual_seed(26)
    for name, sa_shape, sb_shape, acl, bcl, order, relu in MUL_CASES:
        c = f"mul_{name}"
        s = [rand_scale(g) for _ in range(3)]
        z = [rand_zp(g) for _ in range(3)]
        qa, qb = qu8(rand_q(g, sa_shape), s[0], z[0]), qu8(rand_q(g, sb_shape), s[1], z[1])
        xa, xb = (nhwc(qa) if acl else qa), (nhwc(qb) if bcl else qb)
        op = torch.ops.quantized.mul_relu if relu else torch.ops.quantized.mul

        def run():
            y = op(xb, xa, s[2], z[2]) if order else op(xa, xb, s[2], z[2])
            assert (y.q_scale(), y.q_zero_point()) == (s[2], z[2])
            return u8(y)

        ys = per_engine(run)
        assert (ys["qnnpack"] == ys["x86"]).all(), c
        a[f"{c}.a"], a[f"{c}.b"] = u8(qa), u8(qb)
        a[f"{c}.qp"], a[f"{c}.zp"] = f32(s), i64(z)
        a[f"{c}.flags"] = i64([acl, bcl, order, relu])
        for engine, y in ys.items():
            a[f"{c}.y_{engine}"] = y
        cases.append(c)


# -- cat -----------------------------------------------------------------------------------------

def sensitive_qparams(rng):
    """Input/output qparams for which the NHWC fast path's vector channels (fma dequantize) and
    scalar ones (plain) give different bytes, so that a test can tell them apart."""
    q = np.arange(256)
    while True:
        s, so = (fl(np.exp(rng.uniform(-6, 0))) for _ in range(2))
        z, zo = (int(v) for v in rng.integers(0, 256, 2))
        plain = np.float32(s) * (q - z).astype(np.float32)
        pre = np.float32(np.float32(s) * np.float32(-z))
        fma = (np.float64(np.float32(s)) * q + np.float64(pre)).astype(np.float32)
        inv = np.float32(1) / np.float32(so)
        byte = lambda x: np.clip(np.rint(x * inv) + zo, 0, 255)  # noqa: E731
        if (byte(plain) != byte(fma)).any():
            return (s, z), (so, zo)


CAT_CASES = [
    # name, channels per input, other dims [N, H, W], dim, channels-last, qparams kind
    ("nhwc", [13, 24, 3], (2, 8, 16), 1, 1, "sensitive"),
    ("nhwc_small", [8, 5], (1, 7, 9), 1, 1, "sensitive"),
    ("nchw", [13, 24, 3], (2, 8, 16), 1, 0, "sensitive"),
    ("nchw_dim2", [6, 6], (2, 8, 16), 2, 0, "random"),
    ("nhwc_dim3", [6, 6], (2, 8, 16), 3, 1, "random"),
    ("same_qparams", [16, 16], (1, 6, 6), 1, 1, "same"),
    ("mixed", [16, 8], (2, 6, 6), 1, -1, "random"),
]


def gen_cat(a, cases):
    g = torch.Generator().manual_seed(27)
    rng = np.random.default_rng(27)
    for name, chans, (n, h, w), dim, chl, kind in CAT_CASES:
        c = f"cat_{name}"
        k = len(chans)
        if kind == "sensitive":
            (s0, z0), (so, zo) = sensitive_qparams(rng)
            s = [s0] + [rand_scale(g) for _ in range(k - 1)] + [so]
            z = [z0] + [rand_zp(g) for _ in range(k - 1)] + [zo]
        elif kind == "same":
            s, z = [rand_scale(g)] * (k + 1), [rand_zp(g)] * (k + 1)
        else:
            s = [rand_scale(g) for _ in range(k + 1)]
            z = [rand_zp(g) for _ in range(k + 1)]
        shapes = []
        for ch in chans:
            shape = [n, 6, h, w]
            shape[dim] = ch
            shapes.append(shape)
        if dim == 1:
            shapes = [[n, ch, h, w] for ch in chans]
        xs = []
        for i, shape in enumerate(shapes):
            numel = int(np.prod(shape))
            # Every byte value, densely: the sensitive input bytes occur in every channel.
            vals = (torch.arange(numel) * 7 + i) % 256
            q = qu8(vals.reshape(shape) if i == 0 else rand_q(g, shape), s[i], z[i])
            xs.append(q)
        if chl == 1:
            run_xs = [nhwc(x) for x in xs]
        elif chl == -1:
            run_xs = [nhwc(xs[0])] + xs[1:]
        else:
            run_xs = xs

        def run():
            y = torch.ops.quantized.cat(run_xs, dim=dim, scale=s[-1], zero_point=z[-1])
            assert (y.q_scale(), y.q_zero_point()) == (s[-1], z[-1])
            return u8(y), int(y.is_contiguous(memory_format=torch.channels_last)
                              and not y.is_contiguous())

        ys = per_engine(run)
        for i, x in enumerate(xs):
            a[f"{c}.x{i}"] = u8(x)
        a[f"{c}.qp"], a[f"{c}.zp"] = f32(s), i64(z)
        a[f"{c}.meta"] = i64([dim, max(chl, 0), ys["x86"][1], k])
        for engine, (y, _) in ys.items():
            a[f"{c}.y_{engine}"] = y
        cases.append(c)


# -- hardsigmoid ---------------------------------------------------------------------------------

HSIG_QPARAMS = [("a", 0.05, 128), ("b", 0.0234, 30), ("c", 0.1, 0), ("d", 0.011, 255)]


def hsig_tail_table(s, z):
    """x86's output for each quint8 input in the scalar tail: 64 zeros, then 63 values, so the
    63 values are the last `numel mod 64`."""
    torch.backends.quantized.engine = "x86"
    table = []
    for start in range(0, 256, 63):
        vals = torch.arange(start, min(start + 63, 256))
        x = qu8(torch.cat([torch.zeros(64, dtype=torch.long), vals]), s, z)
        table.extend(rep(F.hardsigmoid(x))[64:].tolist())
    return np.array(table, dtype=np.uint8)


def gen_hardsigmoid(a, cases):
    g = torch.Generator().manual_seed(28)
    qps = [(n, fl(s), z) for n, s, z in HSIG_QPARAMS]
    qps += [(f"r{i}", rand_scale(g, -7, 1), rand_zp(g)) for i in range(4)]
    for name, s, z in qps:
        c = f"hsig_{name}"
        a[f"{c}.qp"], a[f"{c}.zp"] = f32([s]), i64([z])

        def table():
            y = F.hardsigmoid(qu8(torch.arange(256), s, z))
            assert (y.q_scale(), y.q_zero_point()) == (1.0 / 256.0, 0)
            return u8(y)

        for engine, t in per_engine(table).items():
            a[f"{c}.table_{engine}"] = t
        a[f"{c}.x86_tail_table"] = hsig_tail_table(s, z)
        x = qu8(rand_q(g, (2, 8, 9, 11)), s, z)
        a[f"{c}.x"] = u8(x)
        torch.backends.quantized.engine = "qnnpack"
        a[f"{c}.y_qnnpack"] = u8(F.hardsigmoid(x))
        torch.backends.quantized.engine = "x86"
        a[f"{c}.y_x86_nchw"] = u8(F.hardsigmoid(x))
        a[f"{c}.y_x86_nhwc"] = u8(F.hardsigmoid(nhwc(x)))
        cases.append(c)


# -- channel shuffle, float hardsigmoid ----------------------------------------------------------

def gen_shuffle(a, cases):
    g = torch.Generator().manual_seed(29)
    s, z = rand_scale(g), rand_zp(g)
    x = qu8(rand_q(g, (2, 12, 5, 7)), s, z)
    xf = torch.randn(2, 12, 5, 7, generator=g)
    a["shuffle.x"], a["shuffle.qp"], a["shuffle.zp"] = u8(x), f32([s]), i64([z])
    a["shuffle.xf"] = f32(xf)
    for groups in [1, 2, 3, 4, 6]:
        for src in [x, nhwc(x)]:
            y = channel_shuffle(src, groups)
            assert (y.q_scale(), y.q_zero_point()) == (s, z)
            assert (u8(y) == u8(channel_shuffle(x, groups))).all()
        a[f"shuffle.y_g{groups}"] = u8(channel_shuffle(x, groups))
        a[f"shuffle.yf_g{groups}"] = f32(channel_shuffle(xf, groups))
    cases.append("shuffle")
    xh = torch.cat([torch.linspace(-4, 4, 161), torch.randn(200, generator=g) * 3])
    a["float_hsig.x"], a["float_hsig.y"] = f32(xh), f32(F.hardsigmoid(xh))
    cases.append("float_hsig")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.a = torch.nn.Conv2d(3, 13, 1)
        self.b = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.cat = torch.ao.nn.quantized.FloatFunctional()
        self.se = torch.nn.Conv2d(21, 21, 5, stride=5, padding=2)
        self.gate = torch.nn.Hardsigmoid()
        self.mul = torch.ao.nn.quantized.FloatFunctional()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def body(self, x):
        x = self.quant(x)
        c = self.cat.cat([self.a(x), self.b(x)], dim=1)
        y = self.mul.mul(self.gate(self.se(c)), c)
        return channel_shuffle(y, 3)

    def forward(self, x):
        return self.dequant(self.body(x))


def gen_model(a, cases):
    from torch.ao.quantization import convert, get_default_qconfig, prepare

    for engine in ENGINES:
        g = torch.Generator().manual_seed(30)
        torch.manual_seed(30)
        torch.backends.quantized.engine = engine
        model = Tiny().eval()
        cal = torch.randn(4, 3, 5, 5, generator=g)
        x = torch.randn(2, 3, 5, 5, generator=g)
        y_float = model(x)
        shared = {"cal": cal, "x": x, "y_float": y_float}
        for conv in ["a", "b", "se"]:
            shared[f"{conv}.weight"] = getattr(model, conv).weight
            shared[f"{conv}.bias"] = getattr(model, conv).bias
        for k, v in shared.items():
            v = f32(v.detach())
            assert f"model.{k}" not in a or np.array_equal(a[f"model.{k}"], v)
            a[f"model.{k}"] = v
        model.qconfig = get_default_qconfig(engine)
        prepare(model, inplace=True)
        with torch.no_grad():
            model(cal)
        convert(model, inplace=True)
        qp = [model.quant.scale, model.cat.scale, model.mul.scale]
        zp = [model.quant.zero_point, model.cat.zero_point, model.mul.zero_point]
        a[f"model_{engine}.qp"] = f32([float(v) for v in qp])
        a[f"model_{engine}.zp"] = i64([int(v) for v in zp])
        with torch.no_grad():
            y = model.body(x)
        assert (y.q_scale(), y.q_zero_point()) == (float(qp[2]), int(zp[2]))
        a[f"model_{engine}.y"] = u8(y)
        print(f"model_{engine}: qparams {[float(v) for v in qp]} {[int(v) for v in zp]}")
        cases.append(f"model_{engine}")
    cases.append("model")


def main():
    a, cases = {}, []
    gen_mul(a, cases)
    gen_cat(a, cases)
    gen_hardsigmoid(a, cases)
    gen_shuffle(a, cases)
    gen_model(a, cases)
    a["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8).copy()
    path = os.path.join(OUT, "functional_int8.safetensors")
    save_file(a, path)
    print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
