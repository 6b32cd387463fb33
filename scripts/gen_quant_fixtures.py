#!/usr/bin/env python3
"""Generates tests/fixtures/quant_*.safetensors: PyTorch reference values for src/quant.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root:

    /opt/torch-oracle/bin/python scripts/gen_quant_fixtures.py

    /opt/torch-oracle/bin/python scripts/gen_quant_fixtures.py float_functional   # one file

Deterministic: fixed seeds, one intra-op thread (torch.linspace, used by HistogramObserver,
rounds differently when split across threads). The histogram fixtures (quant_observers) assume
PyTorch's AVX-512 CPU dispatch (`torch.backends.cpu.get_cpu_capability() == "AVX512"`), which
decides the vector width of torch.linspace; the script refuses to write them on other
capabilities.

Files:
  quant_fake_quant.safetensors  fake-quant forward/STE backward, per-tensor and per-channel
  quant_qparams.safetensors     scale/zero-point, Python observer formula and fbgemm formula
  quant_observers.safetensors   observer states over batch sequences; FakeQuantize modules
  quant_lsq.safetensors         _LearnableFakeQuantize forward and gradients
  quant_qconfig.safetensors     observer/fake-quant settings of the default qconfigs
  float_functional.safetensors  FloatFunctional add / add_relu / mul / cat with the default
                                QAT activation fake-quants: outputs, gradients, qparams
  depthwise_conv.safetensors    depthwise conv2d (groups = C) forward, input and weight
                                gradients over MobileNetV2's geometries and edge cases
"""

import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from torch.ao.quantization import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

assert torch.__version__.startswith("2.5.1"), torch.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def f32(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


def i64(t):
    return np.ascontiguousarray(np.asarray(t, dtype=np.int64))


def save(name, arrays):
    path = os.path.join(OUT, name)
    save_file(arrays, path)
    print(f"{path}: {len(arrays)} arrays, {os.path.getsize(path)} bytes")


# ---------------------------------------------------------------- fake-quant function
def gen_fake_quant():
    g = torch.Generator().manual_seed(1)
    a = {}
    # (x, scale, zero_point, qmin, qmax)
    cases = []
    k = torch.arange(-300, 300, dtype=torch.float32)
    # exact .5 ties for power-of-two scales
    for scale, zp, qmin, qmax in [(0.5, 128, 0, 255), (0.25, 0, -128, 127), (2.0, 3, 0, 127), (1.0, 0, -128, 127)]:
        cases.append(((k + 0.5) * scale, scale, zp, qmin, qmax))
    # random values, ordinary scales (non power of two)
    for scale, zp, qmin, qmax in [(0.1, 128, 0, 255), (0.0235, 64, 0, 127), (0.0078431, 0, -128, 127), (0.3, -5, -64, 63)]:
        x = torch.randn(2, 3, 7, 5, generator=g) * 3.0
        cases.append((x, scale, zp, qmin, qmax))
    # huge and tiny ranges
    cases.append((torch.randn(200, generator=g) * 1e6, 1e4, 0, -128, 127))
    cases.append((torch.randn(200, generator=g) * 1e-5, 1e-7, 10, 0, 255))
    cases.append((torch.randn(200, generator=g) * 1e-3, 6.1e-5, 128, 0, 255))
    # extreme inputs: int64 overflow, +-inf, NaN, values right at the range edges
    ext = torch.tensor([1e30, -1e30, 3e18, -3e18, float("inf"), float("-inf"), float("nan"), 0.0, -0.0,
                        12.75, 12.8, 12.85, -0.05, -0.1, -0.15, 25.45, 25.5, 25.55])
    cases.append((ext, 0.1, 0, 0, 255))
    # constant and all-zero tensors
    cases.append((torch.full((4, 5), 0.7), 0.7 / 255, 0, 0, 255))
    cases.append((torch.zeros(4, 5), 1.0, 0, 0, 255))
    for i, (x, scale, zp, qmin, qmax) in enumerate(cases):
        x = x.clone().float().requires_grad_(True)
        s = torch.tensor([scale], dtype=torch.float32)
        z = torch.tensor([zp], dtype=torch.int32)
        y = torch.fake_quantize_per_tensor_affine(x, s, z, qmin, qmax)
        dy = torch.randn(x.shape, generator=g)
        y.backward(dy)
        a[f"pt{i}_x"] = f32(x)
        a[f"pt{i}_scale"] = f32(s)
        a[f"pt{i}_zp"] = i64([zp])
        a[f"pt{i}_qrange"] = i64([qmin, qmax])
        a[f"pt{i}_out"] = f32(y)
        a[f"pt{i}_dy"] = f32(dy)
        a[f"pt{i}_dx"] = f32(x.grad)
    a["n_pt"] = i64([len(cases)])

    # per-channel, several axes
    pc = []
    x = torch.randn(2, 4, 5, 3, generator=g) * 2
    pc.append((x, 1, [0.01, 0.05, 0.125, 0.3], [0, 10, 128, 255], 0, 255))
    x = torch.randn(3, 2, 4, 4, generator=g)
    x[0, 0, 0, :] = torch.tensor([0.0625, -0.1875, 0.3125, 1e30])  # ties for scale 0.125, overflow
    pc.append((x, 0, [0.125, 0.02, 0.0078], [0, 0, 0], -128, 127))
    x = torch.randn(5, 6, generator=g) * 10
    pc.append((x, 1, [0.1, 0.2, 0.5, 1.0, 2.0, 0.05], [3, -3, 0, 60, -60, 1], -64, 63))
    x = torch.randn(2, 3, 4, generator=g)
    pc.append((x, 2, [1e-6, 1e3, 0.01, 0.02], [0, 0, 0, 0], -128, 127))
    for i, (x, axis, scales, zps, qmin, qmax) in enumerate(pc):
        x = x.clone().float().requires_grad_(True)
        s = torch.tensor(scales, dtype=torch.float32)
        z = torch.tensor(zps, dtype=torch.int32)
        y = torch.fake_quantize_per_channel_affine(x, s, z, axis, qmin, qmax)
        dy = torch.randn(x.shape, generator=g)
        y.backward(dy)
        a[f"pc{i}_x"] = f32(x)
        a[f"pc{i}_scale"] = f32(s)
        a[f"pc{i}_zp"] = i64(zps)
        a[f"pc{i}_axis_qrange"] = i64([axis, qmin, qmax])
        a[f"pc{i}_out"] = f32(y)
        a[f"pc{i}_dy"] = f32(dy)
        a[f"pc{i}_dx"] = f32(x.grad)
    a["n_pc"] = i64([len(pc)])
    save("quant_fake_quant.safetensors", a)


# ---------------------------------------------------------------- qparams
def minmax_pairs():
    g = torch.Generator().manual_seed(2)
    lo = -torch.rand(40, generator=g) * 5
    hi = torch.rand(40, generator=g) * 5
    mins = list(lo) + list(torch.rand(10, generator=g)) + list(-torch.rand(10, generator=g) * 3)
    maxs = list(hi) + list(torch.rand(10, generator=g) + 1) + list(-torch.rand(10, generator=g) * 0.001)
    edge = [(0.0, 0.0), (1.0, 1.0), (-1.0, -1.0), (-1e-10, 1e-10), (0.0, 1e-8), (-1e-8, 0.0),
            (-1e30, 1e30), (-3e38, 3e38), (-1.0, 1.0), (-128.0, 127.0), (-0.5, 0.0), (0.0, 0.5),
            (-1e-3, 2e-3), (-6.1e-5 * 100, 6.1e-5 * 27), (-0.0078125, 0.0078125 * 2), (-2.0, 254.0),
            (-0.2, 1e-9), (-1e-9, 0.3), (2.5, 7.5), (-7.5, -2.5)]
    mins += [torch.tensor(a) for a, _ in edge]
    maxs += [torch.tensor(b) for _, b in edge]
    return torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in mins]), torch.stack(
        [torch.as_tensor(m, dtype=torch.float32) for m in maxs])


QP_CONFIGS = [
    # (name, dtype, qscheme(sym?), reduce_range, custom range or None)
    ("quint8_aff", torch.quint8, False, False, None),
    ("quint8_aff_rr", torch.quint8, False, True, None),
    ("quint8_sym", torch.quint8, True, False, None),
    ("qint8_aff", torch.qint8, False, False, None),
    ("qint8_sym", torch.qint8, True, False, None),
    ("qint8_sym_rr", torch.qint8, True, True, None),
    ("quint8_aff_c0_255_rr", torch.quint8, False, True, (0, 255)),
    ("quint8_sym_c0_15", torch.quint8, True, False, (0, 15)),
    ("qint8_sym_c127", torch.qint8, True, False, (-127, 127)),
    ("qint8_aff_c128_127", torch.qint8, False, False, (-128, 127)),
]


def gen_qparams():
    mins, maxs = minmax_pairs()
    a = {"min": f32(mins), "max": f32(maxs)}
    for name, dtype, sym, rr, rng in QP_CONFIGS:
        kw = dict(dtype=dtype, qscheme=torch.per_channel_symmetric if sym else torch.per_channel_affine,
                  reduce_range=rr)
        if rng is not None:
            kw.update(quant_min=rng[0], quant_max=rng[1])
        obs = PerChannelMinMaxObserver(ch_axis=0, **kw)
        obs.min_val.resize_(mins.shape).copy_(mins)
        obs.max_val.resize_(maxs.shape).copy_(maxs)
        s, z = obs.calculate_qparams()
        a[f"obs_{name}_scale"] = f32(s)
        a[f"obs_{name}_zp"] = i64(z)
        a[f"obs_{name}_qrange"] = i64([obs.quant_min, obs.quant_max])
        # per-tensor observer on a few pairs
        kw_t = dict(kw, qscheme=torch.per_tensor_symmetric if sym else torch.per_tensor_affine)
        ss, zz = [], []
        for j in range(0, len(mins), 7):
            o = MinMaxObserver(**kw_t)
            o.min_val.copy_(mins[j])
            o.max_val.copy_(maxs[j])
            s1, z1 = o.calculate_qparams()
            ss.append(float(s1[0]))
            zz.append(int(z1[0]))
        a[f"obst_{name}_scale"] = np.array(ss, dtype=np.float32)
        a[f"obst_{name}_zp"] = i64(zz)
    # fbgemm ChooseQuantizationParams through the fused op (observer off, fake-quant on)
    for qmin, qmax in [(0, 255), (0, 127), (-128, 127), (-64, 63), (-127, 127), (0, 15)]:
        for sym in (False, True):
            n = len(mins)
            x = torch.zeros(n, 1)
            rmin, rmax = mins.clone(), maxs.clone()
            scale = torch.ones(n)
            zp = torch.zeros(n, dtype=torch.int32)
            torch.fused_moving_avg_obs_fake_quant(
                x, torch.tensor([0]), torch.tensor([1]), rmin, rmax, scale, zp, 0.01, qmin, qmax, 0, True, sym)
            tag = f"fb_{qmin}_{qmax}_{'sym' if sym else 'aff'}".replace("-", "m")
            a[f"{tag}_scale"] = f32(scale)
            a[f"{tag}_zp"] = i64(zp)
            # per-tensor path for a few pairs
            ss, zz = [], []
            for j in range(0, n, 7):
                s1 = torch.ones(1)
                z1 = torch.zeros(1, dtype=torch.int32)
                torch.fused_moving_avg_obs_fake_quant(
                    torch.zeros(3), torch.tensor([0]), torch.tensor([1]), mins[j:j + 1].clone().reshape(()),
                    maxs[j:j + 1].clone().reshape(()), s1, z1, 0.01, qmin, qmax, 0, False, sym)
                ss.append(float(s1[0]))
                zz.append(int(z1[0]))
            a[f"{tag}_pt_scale"] = np.array(ss, dtype=np.float32)
            a[f"{tag}_pt_zp"] = i64(zz)
    save("quant_qparams.safetensors", a)


# ---------------------------------------------------------------- observers and FakeQuantize
def batches(g, shape, n=4):
    out = []
    for i in range(n):
        x = torch.randn(*shape, generator=g) * (1.0 + i) + 0.3 * i
        out.append(x)
    return out


def gen_observers():
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        sys.exit("histogram fixtures need PyTorch's AVX512 CPU dispatch")
    g = torch.Generator().manual_seed(3)
    a = {}
    seq4 = batches(g, (2, 3, 4, 5))
    for i, x in enumerate(seq4):
        a[f"seq_x{i}"] = f32(x)
    observers = {
        "minmax_aff": MinMaxObserver(),
        "minmax_sym_qint8": MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        "ma_aff": MovingAverageMinMaxObserver(),
        "ma_aff_c05_rr": MovingAverageMinMaxObserver(averaging_constant=0.5, reduce_range=True),
        "pc_minmax_ax1": PerChannelMinMaxObserver(ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
        "pc_minmax_ax3_aff": PerChannelMinMaxObserver(ch_axis=3),
        "pc_ma_ax0": MovingAveragePerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8,
                                                            qscheme=torch.per_channel_symmetric),
        "pc_ma_ax2_aff": MovingAveragePerChannelMinMaxObserver(ch_axis=2, averaging_constant=0.2),
    }
    for name, obs in observers.items():
        for i, x in enumerate(seq4):
            obs(x)
            a[f"{name}_min{i}"] = f32(obs.min_val.reshape(-1))
            a[f"{name}_max{i}"] = f32(obs.max_val.reshape(-1))
        s, z = obs.calculate_qparams()
        a[f"{name}_scale"] = f32(s)
        a[f"{name}_zp"] = i64(z)

    # histogram observers: growing ranges (combine/upscale), a constant first batch, inf values
    hseq = [torch.full((3, 4), 0.25), torch.randn(4, 50, generator=g), torch.randn(4, 50, generator=g) * 3,
            torch.randn(4, 50, generator=g) * 0.5, torch.randn(200, generator=g) * 2 + 5]
    hseq[3][0, :3] = torch.tensor([float("inf"), float("-inf"), 1.0])
    for i, x in enumerate(hseq):
        a[f"hist_x{i}"] = f32(x)
    hists = {
        "hist_aff": HistogramObserver(),
        "hist_aff_rr": HistogramObserver(reduce_range=True),
        "hist_sym_qint8": HistogramObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    }
    for name, obs in hists.items():
        for i, x in enumerate(hseq):
            obs(x)
            a[f"{name}_hist{i}"] = f32(obs.histogram)
            a[f"{name}_min{i}"] = f32(obs.min_val.reshape(1))
            a[f"{name}_max{i}"] = f32(obs.max_val.reshape(1))
            s, z = obs.calculate_qparams()
            a[f"{name}_scale{i}"] = f32(s)
            a[f"{name}_zp{i}"] = i64(z)
    # a histogram fed only a growing sequence of plain normal batches (no constant start)
    obs = HistogramObserver()
    for i, x in enumerate(hseq[1:3]):
        obs(x)
    a["hist_plain_hist"] = f32(obs.histogram)
    s, z = obs.calculate_qparams()
    a["hist_plain_scale"] = f32(s)
    a["hist_plain_zp"] = i64(z)

    # FakeQuantize modules (default qconfig building blocks) over a sequence, with gradients
    fqs = {
        "fused_act_rr": FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=True)(),
        "fused_act": FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=False)(),
        "fused_wt_pt": torch.ao.quantization.fake_quantize.default_fused_wt_fake_quant(),
        "fused_wt_pc": torch.ao.quantization.fake_quantize.default_fused_per_channel_wt_fake_quant(),
        "fq_act_rr": FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=True)(),
        "fq_wt_pc": torch.ao.quantization.fake_quantize.default_per_channel_weight_fake_quant(),
        "fq_wt_pt": torch.ao.quantization.fake_quantize.default_weight_fake_quant(),
    }
    fseq = [torch.randn(3, 4, 3, 3, generator=g) * (0.5 + i) for i in range(4)]
    fseq.append(torch.zeros(3, 4, 3, 3))
    fseq.append(torch.full((3, 4, 3, 3), -0.3))
    for i, x in enumerate(fseq):
        a[f"fq_x{i}"] = f32(x)
        a[f"fq_dy{i}"] = f32(torch.randn(x.shape, generator=g))
    for name, fq in fqs.items():
        for i, x in enumerate(fseq):
            if i == 3:
                fq.disable_observer()
            if i == 4:
                fq.enable_observer()
            xr = x.clone().requires_grad_(True)
            y = fq(xr)
            y.backward(torch.from_numpy(a[f"fq_dy{i}"]))
            a[f"{name}_out{i}"] = f32(y)
            a[f"{name}_dx{i}"] = f32(xr.grad)
            a[f"{name}_scale{i}"] = f32(fq.scale)
            a[f"{name}_zp{i}"] = i64(fq.zero_point)
            a[f"{name}_min{i}"] = f32(fq.activation_post_process.min_val.reshape(-1))
            a[f"{name}_max{i}"] = f32(fq.activation_post_process.max_val.reshape(-1))
        s, z = fq.calculate_qparams()
        a[f"{name}_calc_scale"] = f32(s)
        a[f"{name}_calc_zp"] = i64(z)
    save("quant_observers.safetensors", a)


# ---------------------------------------------------------------- LSQ
def gen_lsq():
    g = torch.Generator().manual_seed(4)
    a = {}
    cases = [
        # name, qscheme, ch_axis, qmin, qmax, scale, zp, grad scaling
        ("pt_aff", torch.per_tensor_affine, -1, 0, 255, [0.02], [100.3], False),
        ("pt_aff_gs", torch.per_tensor_affine, -1, 0, 255, [0.015], [37.0], True),
        ("pt_sym", torch.per_tensor_symmetric, -1, -128, 127, [0.01], [0.0], False),
        ("pc_aff", torch.per_channel_affine, 1, 0, 255, [0.01, 0.02, 0.005, 0.03], [120.0, 3.6, 250.2, 0.4], False),
        ("pc_sym_gs", torch.per_channel_symmetric, 0, -128, 127, [0.01, 0.004, 0.02], [0.0, 0.0, 0.0], True),
    ]
    for name, qscheme, axis, qmin, qmax, scale, zp, gs in cases:
        per_channel = axis >= 0
        obs = (MovingAveragePerChannelMinMaxObserver.with_args(ch_axis=axis) if per_channel
               else MovingAverageMinMaxObserver)
        dtype = torch.qint8 if qmin < 0 else torch.quint8
        m = _LearnableFakeQuantize(obs, quant_min=qmin, quant_max=qmax,
                                   channel_len=len(scale) if per_channel else -1,
                                   use_grad_scaling=gs, dtype=dtype, qscheme=qscheme)
        with torch.no_grad():
            m.scale.copy_(torch.tensor(scale))
            m.zero_point.copy_(torch.tensor(zp))
        m.enable_param_learning()
        shape = (2, 4, 3, 3) if not per_channel or axis == 1 else (3, 2, 5)
        x = (torch.randn(*shape, generator=g) * 2.0).requires_grad_(True)
        dy = torch.randn(shape, generator=g)
        y = m(x)
        y.backward(dy)
        a[f"{name}_x"] = f32(x)
        a[f"{name}_dy"] = f32(dy)
        a[f"{name}_scale_in"] = np.array(scale, dtype=np.float32)
        a[f"{name}_zp_in"] = np.array(zp, dtype=np.float32)
        a[f"{name}_out"] = f32(y)
        a[f"{name}_dx"] = f32(x.grad)
        a[f"{name}_dscale"] = f32(m.scale.grad)
        a[f"{name}_dzp"] = f32(m.zero_point.grad)
        # Sum of |per-element contributions| to the scale / zero-point gradients (float64): the
        # scale of the f32 rounding error of their sums, which the tests' tolerance is based on.
        xd, dyd = x.detach().double(), dy.double()
        bshape = [1] * x.dim()
        if per_channel:
            bshape[axis] = -1
        sc = torch.tensor(scale, dtype=torch.float64).reshape(bshape)
        z = torch.tensor(zp, dtype=torch.float64)
        z = (z.round().clamp(qmin, qmax) if per_channel else (z + 0.5).clamp(qmin, qmax).trunc()).reshape(bshape)
        xq = torch.round(z + xd / sc)
        below, above = xq < qmin, xq > qmax
        xfq = (xq.clamp(qmin, qmax) - z) * sc
        ds = torch.where(below, dyd * (qmin - z), torch.where(above, dyd * (qmax - z), dyd * (xfq - xd) / sc))
        dz = torch.where(below | above, -dyd * sc, torch.zeros_like(dyd))
        dims = [d for d in range(x.dim()) if not per_channel or d != axis]
        a[f"{name}_dscale_abs"] = f32(ds.abs().sum(dims).reshape(-1))
        a[f"{name}_dzp_abs"] = f32(dz.abs().sum(dims).reshape(-1))
    save("quant_lsq.safetensors", a)


# ---------------------------------------------------------------- qconfig presets
KIND = {MinMaxObserver: 0, PerChannelMinMaxObserver: 0, MovingAverageMinMaxObserver: 1,
        MovingAveragePerChannelMinMaxObserver: 1, HistogramObserver: 2}


def describe(mod):
    """[is_fake_quant, is_fused, kind, signed, qmin, qmax, symmetric, per_channel, ch_axis,
    reduce_range, averaging_constant * 1e6]"""
    fused = isinstance(mod, FusedMovingAvgObsFakeQuantize)
    is_fq = isinstance(mod, FakeQuantize)
    obs = mod.activation_post_process if is_fq else mod
    qs = obs.qscheme
    per_channel = qs in (torch.per_channel_affine, torch.per_channel_symmetric)
    sym = qs in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
    return [int(is_fq), int(fused), KIND[type(obs)], int(obs.dtype == torch.qint8), obs.quant_min,
            obs.quant_max, int(sym), int(per_channel), obs.ch_axis if per_channel else 0,
            int(obs.reduce_range), int(round(getattr(obs, "averaging_constant", 0.0) * 1e6))]


def gen_qconfig():
    from torch.ao.quantization import get_default_qat_qconfig, get_default_qconfig
    a = {}
    for backend in ("x86", "fbgemm", "qnnpack", "onednn"):
        for tag, qc in (("qat", get_default_qat_qconfig(backend)),
                        ("qat0", get_default_qat_qconfig(backend, version=0)),
                        ("ptq", get_default_qconfig(backend))):
            a[f"{backend}_{tag}_act"] = i64(describe(qc.activation()))
            a[f"{backend}_{tag}_wt"] = i64(describe(qc.weight()))
    save("quant_qconfig.safetensors", a)


# ---------------------------------------------------------------- FloatFunctional
def gen_float_functional():
    """torch.ao.nn.quantized.FloatFunctional as prepare_qat leaves it (activation_post_process
    = the default QAT activation fake-quant of x86 / qnnpack), three batches per op."""
    from torch.ao.nn.quantized import FloatFunctional
    from torch.ao.quantization import get_default_qat_qconfig

    g = torch.Generator().manual_seed(6)
    a = {}
    ops = {
        "add": lambda f, x, y: f.add(x, y),
        "add_relu": lambda f, x, y: f.add_relu(x, y),
        "mul": lambda f, x, y: f.mul(x, y),
        "cat": lambda f, x, y: f.cat([x, y], dim=1),
    }
    for backend in ("x86", "qnnpack"):
        for op, fn in ops.items():
            ff = FloatFunctional()
            ff.activation_post_process = get_default_qat_qconfig(backend).activation()
            for i in range(3):
                key = f"{backend}.{op}.{i}"
                x = (torch.randn(2, 3, 4, 5, generator=g) * (1 + i)).requires_grad_(True)
                y = (torch.randn(2, 3, 4, 5, generator=g) - 0.5 * i).requires_grad_(True)
                out = fn(ff, x, y)
                dout = torch.randn(out.shape, generator=g)
                out.backward(dout)
                a[f"{key}.x"] = f32(x)
                a[f"{key}.y"] = f32(y)
                a[f"{key}.dout"] = f32(dout)
                a[f"{key}.out"] = f32(out)
                a[f"{key}.dx"] = f32(x.grad)
                a[f"{key}.dy"] = f32(y.grad)
                a[f"{key}.scale"] = f32(ff.activation_post_process.scale)
                a[f"{key}.zero_point"] = i64(ff.activation_post_process.zero_point)
    save("float_functional.safetensors", a)


def gen_depthwise_conv():
    """F.conv2d(x, w, groups=C): output and both gradients for an upstream gradient dout.
    Geometry per case: [N, C, H, W, KH, KW, stride_h, stride_w, pad_top, pad_left, pad_bottom,
    pad_right] (asymmetric padding through F.pad, as Burn's ConvOptions allows it)."""
    g = torch.Generator().manual_seed(7)
    cases = {
        "s1": [2, 8, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1],  # MobileNetV2's stride-1 blocks
        "s2_even": [2, 6, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1],  # stride-2 blocks
        "s2_odd": [1, 5, 7, 9, 3, 3, 2, 2, 1, 1, 1, 1],  # non-square, odd sides
        "k5": [3, 4, 6, 5, 5, 5, 1, 1, 2, 2, 2, 2],
        "asym": [2, 3, 6, 7, 3, 3, 1, 2, 0, 1, 2, 0],  # asymmetric padding and stride
        "small": [1, 2, 2, 3, 3, 3, 2, 1, 1, 1, 1, 1],  # input smaller than the kernel
    }
    a = {}
    for name, geo in cases.items():
        n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr = geo
        x = torch.randn(n, c, h, w, generator=g).requires_grad_(True)
        wt = torch.randn(c, 1, kh, kw, generator=g).requires_grad_(True)
        xp = torch.nn.functional.pad(x, (pl, pr, pt, pb))
        out = torch.nn.functional.conv2d(xp, wt, stride=(sh, sw), groups=c)
        dout = torch.randn(out.shape, generator=g)
        out.backward(dout)
        a[f"{name}.geometry"] = i64(geo)
        a[f"{name}.x"] = f32(x)
        a[f"{name}.w"] = f32(wt)
        a[f"{name}.dout"] = f32(dout)
        a[f"{name}.out"] = f32(out)
        a[f"{name}.dx"] = f32(x.grad)
        a[f"{name}.dw"] = f32(wt.grad)
    save("depthwise_conv.safetensors", a)


GENERATORS = {
    "fake_quant": gen_fake_quant,
    "qparams": gen_qparams,
    "observers": gen_observers,
    "lsq": gen_lsq,
    "qconfig": gen_qconfig,
    "float_functional": gen_float_functional,
    "depthwise_conv": gen_depthwise_conv,
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name in sys.argv[1:] or GENERATORS:
        GENERATORS[name]()
