#!/usr/bin/env python3
"""Generates tests/fixtures/pool_hardswish.safetensors: PyTorch's quantized max pooling and
hardswish, for src/int8/pool.rs, src/int8/hardswish.rs and src/nn/{max_pool,hardswish}.rs.

Environment (the pins the fixtures were generated with, as for gen_int8_fixtures.py):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root:

    /opt/torch-oracle/bin/python scripts/gen_pool_hardswish_fixtures.py

Deterministic: fixed seeds, one intra-op thread (x86 hardswish rounds the last `numel mod 64`
elements of each thread's share apart, see src/int8/hardswish.rs). Generated on an AVX2 CPU
without AVX-512, where PyTorch's "x86" engine is fbgemm and its vectors are 256 bits wide.

Arrays (`<case>.<field>`; `cases` lists the case names in order):
  mp_<input>            a quint8 [2, 8, 9, 9] input of max pooling: x (int_repr), x_qp, x_zp.
  mp_<input>_<config>   `F.max_pool2d` on it: meta [kh, kw, sh, sw, ph, pw, dh, dw, ceil]; y, the x86 engine's
                        output (int_repr, NCHW), equal to float max pooling of the dequantized
                        input; y_qnnpack where qnnpack's differs (dilation: it clamps positions
                        into the input, see src/int8/pool.rs). Each engine gave the same output
                        for NCHW and channels-last inputs, with the input's qparams and memory
                        format (asserted here).
  hs_<qparams>          `torch.ops.quantized.hardswish`: qp [s_in, s_out], zp [z_in, z_out];
                        qnnpack_table, x86_vector_table, x86_tail_table: PyTorch's output for each
                        of the 256 inputs (qnnpack; x86 in its vectorized body; x86 in its scalar
                        tail). For HS_RANDOM also x (a [2, 8, 9, 9] input) and its outputs
                        y_qnnpack, y_x86_nchw, y_x86_nhwc (NCHW order; the suffix is the memory
                        format of the input PyTorch ran on).
  float_hs              `F.hardswish` on floats: x, y.
  float_mp              `F.max_pool2d` on a float [1, 3, 9, 9] x: y_<config> for each config.
  model                 the float data of the tiny model below: weight, bias (its Conv2d), cal
                        (the calibration batch), x (the test input), y_float (the float model on x).
  model_<engine>        QuantStub -> Conv2d(3, 8, 3, padding=1) -> Hardswish -> MaxPool2d(3, 2, 1)
                        -> DeQuantStub in eager mode: `get_default_qconfig(engine)`, prepare,
                        calibrate on cal, convert, run on x: qp / zp (the QuantStub's, the conv's
                        and the Hardswish's output qparams after convert), y (the int8 output's
                        int_repr, NCHW).
"""

import os

import numpy as np
import torch
from gen_int8_fixtures import f32, fl, i64, nhwc, qu8, rep  # this folder: the same helpers and pins
from safetensors.numpy import save_file

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
ENGINES = ["qnnpack", "x86"]


# ---------------------------------------------------------------- max pooling
MP_CONFIGS = [
    # name, kernel, stride, padding, dilation, ceil_mode
    ("k3s2p1", (3, 3), (2, 2), (1, 1), (1, 1), False),  # ResNet / ShuffleNetV2
    ("k2s2c", (2, 2), (2, 2), (0, 0), (1, 1), True),  # ceil: a last, partial window
    ("k2s2p1c", (2, 2), (2, 2), (1, 1), (1, 1), True),  # ceil: a window starting in padding dropped
    ("k3s3p1c", (3, 3), (3, 3), (1, 1), (1, 1), True),
    ("k3s1p1", (3, 3), (1, 1), (1, 1), (1, 1), False),
    ("k3s2p1d2", (3, 3), (2, 2), (1, 1), (2, 2), False),
    ("k32s21p11", (3, 2), (2, 1), (1, 1), (1, 1), False),
]


def mp_inputs(g):
    shape = (2, 8, 9, 9)
    return [
        ("rand", qu8(torch.randint(0, 256, shape, generator=g), fl(0.05), 128)),
        ("zp0", qu8(torch.randint(0, 256, shape, generator=g), fl(0.0371), 0)),
        # Every value below the zero-point: padding read as the zero-point would show.
        ("low", qu8(torch.randint(0, 100, shape, generator=g), fl(0.02), 200)),
    ]


def gen_max_pool(a, cases):
    g = torch.Generator().manual_seed(21)
    for iname, x in mp_inputs(g):
        a[f"mp_{iname}.x"] = rep(x)
        a[f"mp_{iname}.x_qp"] = f32([x.q_scale()])
        a[f"mp_{iname}.x_zp"] = i64([x.q_zero_point()])
        cases.append(f"mp_{iname}")
        for cname, k, s, p, d, ceil in MP_CONFIGS:
            name = f"mp_{iname}_{cname}"
            yf = torch.nn.functional.max_pool2d(x.dequantize(), k, s, p, d, ceil_mode=ceil)
            ys = {}
            for engine in ENGINES:
                torch.backends.quantized.engine = engine
                outs = []
                for channels_last in [False, True]:
                    xin = nhwc(x) if channels_last else x
                    y = torch.nn.functional.max_pool2d(xin, k, s, p, d, ceil_mode=ceil)
                    assert (y.q_scale(), y.q_zero_point()) == (x.q_scale(), x.q_zero_point())
                    fmt = torch.channels_last if channels_last else torch.contiguous_format
                    assert y.is_contiguous(memory_format=fmt), (engine, channels_last)
                    outs.append(y)
                assert torch.equal(outs[0].int_repr(), outs[1].int_repr()), (iname, cname, engine)
                differ = int((outs[0].dequantize() != yf).sum())
                print(f"{name} {engine}: {differ} of {yf.numel()} outputs differ from float max pooling")
                ys[engine] = rep(outs[0])
            assert np.array_equal(ys["x86"], rep(torch.quantize_per_tensor(yf, x.q_scale(), x.q_zero_point(), torch.quint8)))
            a[f"{name}.y"] = ys["x86"]
            if not np.array_equal(ys["qnnpack"], ys["x86"]):
                a[f"{name}.y_qnnpack"] = ys["qnnpack"]
            a[f"{name}.meta"] = i64([*k, *s, *p, *d, int(ceil)])
            cases.append(name)


# ---------------------------------------------------------------- hardswish
HS_QPARAMS = [
    # name, s_in, z_in, s_out, z_out
    ("round", 0.05, 128, 0.03, 10),  # decimal scales: ties, and the x86 body and tail disagree
    ("zp0", 0.1, 0, 0.05, 0),
    ("pow2", 0.0625, 64, 0.0625, 32),
    ("mid", 0.0371, 97, 0.0213, 21),
    ("sat", 0.2, 100, 0.01, 200),  # most outputs saturate
    # The x86 body (fma dequantize) and tail disagree on inputs 131, 137, 143, 161.
    ("diff", 0.169, 110, 0.078, 138),
]
# The cases also run on a random [2, 8, 9, 9] input (whose last 16 elements, in either memory
# order, take x86's scalar tail).
HS_RANDOM = ["round", "zp0", "diff"]


def hs_table(engine, s, z, so, zo):
    """PyTorch's output for each quint8 input, in the vectorized body (`tail=False`: 256 values,
    a multiple of 64) or in the scalar tail (`tail=True`: 64 zeros, then 63 values, so the 63
    values are the last `numel mod 64`)."""
    torch.backends.quantized.engine = engine
    return rep(torch.ops.quantized.hardswish(qu8(torch.arange(256), s, z), so, zo))


def hs_tail_table(s, z, so, zo):
    torch.backends.quantized.engine = "x86"
    table = []
    for start in range(0, 256, 63):
        vals = torch.arange(start, min(start + 63, 256))
        x = qu8(torch.cat([torch.zeros(64, dtype=torch.long), vals]), s, z)
        table.extend(rep(torch.ops.quantized.hardswish(x, so, zo))[64:].tolist())
    return np.array(table, dtype=np.uint8)


def gen_hardswish(a, cases):
    g = torch.Generator().manual_seed(22)
    for name, s, z, so, zo in HS_QPARAMS:
        s, so = fl(s), fl(so)
        c = f"hs_{name}"
        a[f"{c}.qp"] = f32([s, so])
        a[f"{c}.zp"] = i64([z, zo])
        a[f"{c}.qnnpack_table"] = hs_table("qnnpack", s, z, so, zo)
        a[f"{c}.x86_vector_table"] = hs_table("x86", s, z, so, zo)
        a[f"{c}.x86_tail_table"] = hs_tail_table(s, z, so, zo)
        differ = np.nonzero(a[f"{c}.x86_vector_table"] != a[f"{c}.x86_tail_table"])[0].tolist()
        print(f"{c}: x86 body and tail tables differ at inputs {differ}")
        cases.append(c)
        if name not in HS_RANDOM:
            continue
        q = torch.randint(0, 256, (2, 8, 9, 9), generator=g)
        if differ:
            # The inputs the body and tail disagree on, in both memory orders' last 16 elements.
            cycle = torch.tensor(differ * 16)
            q[1, 7, 7, 2:] = cycle[:7]
            q[1, 7, 8, :] = cycle[7:16]
            q[1, :, 8, 7] = cycle[:8]
            q[1, :, 8, 8] = cycle[8:16]
            q[0, 0, 0, : len(differ)] = torch.tensor(differ)
        x = qu8(q, s, z)
        a[f"{c}.x"] = rep(x)
        for engine in ENGINES:
            torch.backends.quantized.engine = engine
            outs = []
            for channels_last in [False, True]:
                xin = nhwc(x) if channels_last else x
                y = torch.ops.quantized.hardswish(xin, so, zo)
                assert (y.q_scale(), y.q_zero_point()) == (so, zo)
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                assert y.is_contiguous(memory_format=fmt), (engine, channels_last)
                outs.append(rep(y))
            if engine == "qnnpack":
                assert np.array_equal(outs[0], outs[1])
                a[f"{c}.y_qnnpack"] = outs[0]
            else:
                a[f"{c}.y_x86_nchw"], a[f"{c}.y_x86_nhwc"] = outs
                print(f"{c}: x86 NCHW and NHWC outputs differ in {int((outs[0] != outs[1]).sum())}")


# ---------------------------------------------------------------- float forwards
def gen_float(a, cases):
    g = torch.Generator().manual_seed(23)
    edges = torch.tensor([-3.0, 3.0, 0.0, -0.0, -2.9999998, 2.9999998, -3.0000002, 3.0000002, 1e-8, -1e-8])
    x = torch.cat([edges, torch.linspace(-5, 5, 101), torch.randn(200, generator=g) * 3])
    a["float_hs.x"] = f32(x)
    a["float_hs.y"] = f32(torch.nn.functional.hardswish(x))
    cases.append("float_hs")
    x = torch.randn(1, 3, 9, 9, generator=g)
    a["float_mp.x"] = f32(x)
    for cname, k, s, p, d, ceil in MP_CONFIGS:
        a[f"float_mp.y_{cname}"] = f32(torch.nn.functional.max_pool2d(x, k, s, p, d, ceil_mode=ceil))
    cases.append("float_mp")


# ---------------------------------------------------------------- the tiny model
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.hs = torch.nn.Hardswish()
        self.pool = torch.nn.MaxPool2d(3, 2, 1)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def body(self, x):
        return self.pool(self.hs(self.conv(self.quant(x))))

    def forward(self, x):
        return self.dequant(self.body(x))


def gen_model(a, cases):
    from torch.ao.quantization import convert, get_default_qconfig, prepare

    for engine in ENGINES:
        g = torch.Generator().manual_seed(24)
        torch.manual_seed(24)
        torch.backends.quantized.engine = engine
        model = Tiny().eval()
        with torch.no_grad():
            model.conv.bias.mul_(4.0)  # some channels mostly below -3, some above 3
        cal = torch.randn(4, 3, 9, 9, generator=g) * 1.5
        x = torch.randn(2, 3, 9, 9, generator=g) * 1.5
        y_float = model(x)
        c = f"model_{engine}"
        shared = {"weight": model.conv.weight, "bias": model.conv.bias, "cal": cal, "x": x, "y_float": y_float}
        for k, v in shared.items():
            v = f32(v.detach())
            assert f"model.{k}" not in a or np.array_equal(a[f"model.{k}"], v)
            a[f"model.{k}"] = v
        model.qconfig = get_default_qconfig(engine)
        prepare(model, inplace=True)
        assert not hasattr(model.pool, "activation_post_process"), "max pooling has no observer"
        with torch.no_grad():
            model(cal)
        convert(model, inplace=True)
        assert type(model.hs).__name__ == "Hardswish" and "quantized" in type(model.hs).__module__
        qp = [model.quant.scale, model.conv.scale, model.hs.scale]
        zp = [model.quant.zero_point, model.conv.zero_point, model.hs.zero_point]
        a[f"{c}.qp"] = f32([float(v) for v in qp])
        a[f"{c}.zp"] = i64([int(v) for v in zp])
        with torch.no_grad():
            y = model.body(x)
        assert (y.q_scale(), y.q_zero_point()) == (float(model.hs.scale), int(model.hs.zero_point))
        a[f"{c}.y"] = rep(y)
        print(f"{c}: qparams {[float(v) for v in qp]} {[int(v) for v in zp]}")
        cases.append(c)
    cases.append("model")


def main():
    a, cases = {}, []
    gen_max_pool(a, cases)
    gen_hardswish(a, cases)
    gen_float(a, cases)
    gen_model(a, cases)
    a["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8).copy()
    path = os.path.join(OUT, "pool_hardswish.safetensors")
    save_file(a, path)
    print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
