#!/usr/bin/env python3
"""PyTorch oracle for LSQ and low-bit weights in a qconfig (tests/it/qat_lsq.rs): a fused QAT ConvBnReLU2d
(`torch.ao.nn.intrinsic.qat.ConvBnReLU2d`) whose weight and output fake-quants are both
`torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize`, trained for three SGD
steps (momentum 0.9, dampening 0), then converted to int8 (`nniq.ConvReLU2d.from_float`); and
4-bit weights with the plain presets (`with_weight_bits(4)`): the x86 QAT qconfig (one step,
then convert) and the x86 PTQ qconfig (calibrate, convert).

Pins: torch 2.5.1, torchvision 0.20.1, numpy, safetensors (the venv of gen_quant_fixtures.py):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

From the repository root:

    /opt/torch-oracle/bin/python scripts/gen_lsq_qat_fixtures.py   # tests/fixtures/qat_lsq.safetensors

Batch norm. The QAT ConvBn forward scales the weight by `γ / sqrt(running_var + eps)` before the
weight fake-quant, and PyTorch's `torch.sqrt` here (MKL) is not correctly rounded: one value in
six is 1 ulp off the IEEE result the crate computes. With the observer formula's symmetric scale
`amax / 7.5` (4-bit) the largest weight of a channel lands on a rounding tie (`-7.5`), so that ulp
decides between -8 and -7. The 4-bit cases therefore freeze the BN statistics
(`freeze_bn_stats`) at `running_var + eps` in {0.25, 1, 4}, whose square roots (and reciprocal
square roots, used by `convert`) are exact everywhere; the 8-bit case keeps BN training (its
running statistics are compared too, and this data has no tie on a differing ulp).

Schedule of each case (what `QConfig::lsq_qat` + `quantize::enable_*` reproduce): step 0 with
static estimates (`enable_static_estimate`: the observers set scale and zero-point, nothing is
learned), then `enable_param_learning` and steps 1 and 2 learn scale and zero-point with the
weights. Every step records the parameters before it, the input, target, loss, output, the
gradients, the BN running statistics and the fake-quants' scale / zero-point (the values the
step's forward used, and the stored values after the optimizer step). Deterministic: fixed
seeds, one intra-op thread.
"""

import os
import sys

import numpy as np
import torch
from torch.ao.nn.intrinsic.qat import ConvBnReLU2d
from torch.ao.quantization import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import weight_qparams  # noqa: E402  (this folder: same pins)
from gen_quant_fixtures import f32, i64, save  # noqa: E402

LR = 0.005

# (tag, backend, weight bits, BN statistics training)
CASES = [
    ("x86_w4", "x86", 4, False),
    ("qnnpack_w4", "qnnpack", 4, False),
    ("x86_w8", "x86", 8, True),
]


def exact_running_var(n):
    """`running_var` with `running_var + eps` (f32) in {0.25, 1, 4}: exact square roots."""
    eps = np.float32(1e-5)
    out = []
    for sq in np.float32([0.25, 1.0, 4.0])[torch.randint(0, 3, (n,)).numpy()]:
        rv = np.float32(sq - eps)
        while np.float32(rv + eps) != sq:
            rv = np.nextafter(rv, np.float32(np.inf) if np.float32(rv + eps) < sq else np.float32(0))
        out.append(rv)
    rv = torch.tensor(np.array(out, dtype=np.float32))
    assert torch.equal(torch.sqrt(rv + 1e-5) ** 2, rv + 1e-5)
    assert torch.equal(torch.rsqrt(rv + 1e-5) ** -2, rv + 1e-5)
    return rv


def lsq_qconfig(backend, bits, out_channels):
    """What `QConfig::lsq_qat(backend, bits)` builds: quint8 per-tensor affine activations
    (x86: reduce_range, i.e. [0, 127]); qint8 symmetric weights in [-2^(b-1), 2^(b-1) - 1], per
    channel (x86) or per tensor (qnnpack); moving-average min/max observers; grad scaling on."""
    qmax_act = 127 if backend == "x86" else 255
    act = _LearnableFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=qmax_act,
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, use_grad_scaling=True)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if backend == "x86":
        weight = _LearnableFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, quant_min=lo, quant_max=hi,
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
            channel_len=out_channels, use_grad_scaling=True)
    else:
        weight = _LearnableFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=lo, quant_max=hi,
            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, use_grad_scaling=True)
    return torch.ao.quantization.QConfig(activation=act, weight=weight)


def lsq_state(prefix, fq, out):
    out[prefix + "scale"] = f32(fq.scale)
    out[prefix + "zero_point"] = f32(fq.zero_point)


def run_case(tag, backend, bits, bn_training, out):
    torch.manual_seed(4100 + bits)
    qconfig = lsq_qconfig(backend, bits, 6)
    m = ConvBnReLU2d(4, 6, 3, stride=1, padding=1, bias=False, qconfig=qconfig)
    act = qconfig.activation()  # what prepare_qat attaches as the output hook
    with torch.no_grad():
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.normal_(0.0, 0.1)
        m.bn.running_mean.normal_(0.0, 0.1)
        if bn_training:
            m.bn.running_var.uniform_(0.5, 2.0)
        else:
            m.bn.running_var.copy_(exact_running_var(6))
    out[f"{tag}.init.weight"] = f32(m.weight)
    out[f"{tag}.init.bn.weight"] = f32(m.bn.weight)
    out[f"{tag}.init.bn.bias"] = f32(m.bn.bias)
    out[f"{tag}.init.bn.running_mean"] = f32(m.bn.running_mean)
    out[f"{tag}.init.bn.running_var"] = f32(m.bn.running_var)
    m.train()
    act.train()
    if not bn_training:
        m.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    for fq in (m.weight_fake_quant, act):
        fq.enable_static_estimate()
    params = list(m.parameters()) + list(act.parameters())
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, dampening=0.0)
    for step in range(3):
        if step == 1:
            for fq in (m.weight_fake_quant, act):
                fq.enable_param_learning()
        p = f"{tag}.step{step}."
        x = torch.randn(2, 4, 7, 6)
        target = torch.rand(2, 6, 7, 6)
        opt.zero_grad()
        y = act(m(x))
        loss = ((y - target) ** 2).mean()
        loss.backward()
        out[p + "x"] = f32(x)
        out[p + "target"] = f32(target)
        out[p + "y"] = f32(y)
        out[p + "loss"] = f32(loss.reshape(1))
        out[p + "weight_grad"] = f32(m.weight.grad)
        out[p + "bn.weight_grad"] = f32(m.bn.weight.grad)
        out[p + "bn.bias_grad"] = f32(m.bn.bias.grad)
        out[p + "bn.running_mean"] = f32(m.bn.running_mean)
        out[p + "bn.running_var"] = f32(m.bn.running_var)
        # The qparams this forward used (symmetric zero-points were zeroed by it).
        lsq_state(p + "wfq.used.", m.weight_fake_quant, out)
        lsq_state(p + "act.used.", act, out)
        if step > 0:
            for name, fq in (("wfq", m.weight_fake_quant), ("act", act)):
                out[p + name + ".scale_grad"] = f32(fq.scale.grad)
                out[p + name + ".zero_point_grad"] = f32(fq.zero_point.grad)
        opt.step()
        out[p + "after.weight"] = f32(m.weight)
        out[p + "after.bn.weight"] = f32(m.bn.weight)
        out[p + "after.bn.bias"] = f32(m.bn.bias)
        lsq_state(p + "after.wfq.", m.weight_fake_quant, out)
        lsq_state(p + "after.act.", act, out)

    # Convert: eval-mode BN folded into the weight, the weight fake-quant sees it once more, the
    # learned qparams quantize it (clamped to the 4-bit range) and give the output qparams.
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    convert_and_run(m, act, backend, lo, hi, f"{tag}.convert.", out)


def qat_plain_w4(out):
    """`QConfig::default_qat(X86).with_weight_bits(4)`: PyTorch's x86 QAT qconfig with the weight
    fake-quant's range [-8, 7]. One training forward / backward of a QAT ConvBnReLU2d (BN
    statistics frozen at exact square roots, see the module docs), then convert and run int8."""
    from torch.ao.quantization import FusedMovingAvgObsFakeQuantize
    torch.manual_seed(4200)
    default = torch.ao.quantization.get_default_qat_qconfig("x86")
    weight = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8, quant_max=7,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    qconfig = torch.ao.quantization.QConfig(activation=default.activation, weight=weight)
    m = ConvBnReLU2d(4, 6, 3, stride=1, padding=1, bias=False, qconfig=qconfig)
    act = qconfig.activation()
    with torch.no_grad():
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.normal_(0.0, 0.1)
        m.bn.running_mean.normal_(0.0, 0.1)
        m.bn.running_var.copy_(exact_running_var(6))
    p = "qat_w4_plain."
    for k, v in (("weight", m.weight), ("bn.weight", m.bn.weight), ("bn.bias", m.bn.bias),
                 ("bn.running_mean", m.bn.running_mean), ("bn.running_var", m.bn.running_var)):
        out[p + "init." + k] = f32(v)
    m.train()
    act.train()
    m.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    x = torch.randn(2, 4, 7, 6)
    y = act(m(x))
    y.sum().backward()
    out[p + "x"] = f32(x)
    out[p + "y"] = f32(y)
    out[p + "weight_grad"] = f32(m.weight.grad)
    out[p + "wfq.scale"] = f32(m.weight_fake_quant.scale)
    out[p + "wfq.zero_point"] = i64(m.weight_fake_quant.zero_point.numpy())
    convert_and_run(m, act, "x86", -8, 7, p + "convert.", out)


def ptq_w4(out):
    """`QConfig::default_ptq(X86).with_weight_bits(4)`: PyTorch's x86 PTQ qconfig
    (HistogramObserver with reduce_range; PerChannelMinMaxObserver weights) with the weight
    range [-8, 7], on a ConvReLU2d with bias: calibrate one batch, convert, run int8."""
    from torch.ao.quantization import HistogramObserver, PerChannelMinMaxObserver
    torch.manual_seed(4300)
    qconfig = torch.ao.quantization.QConfig(
        activation=HistogramObserver.with_args(reduce_range=True),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-8, quant_max=7))
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=True)
    m = torch.ao.nn.intrinsic.ConvReLU2d(conv, torch.nn.ReLU()).eval()
    m.qconfig = conv.qconfig = qconfig
    p = "ptq_w4."
    out[p + "weight"] = f32(conv.weight)
    out[p + "bias"] = f32(conv.bias)
    m.activation_post_process = qconfig.activation()
    x = torch.randn(2, 4, 7, 6)
    with torch.no_grad():
        m.activation_post_process(m(x))
    out[p + "calib.x"] = f32(x)
    convert_and_run(m, None, "x86", -8, 7, p + "convert.", out)


def convert_and_run(m, act, backend, lo, hi, c, out):
    """`from_float` (fbgemm for x86), then the int8 weights, qparams and output on a fixed input."""
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack" if backend == "qnnpack" else "fbgemm"
    if act is not None:
        m.activation_post_process = act
    m.eval()
    qm = torch.ao.nn.intrinsic.quantized.ConvReLU2d.from_float(m)
    w = qm.weight()
    out[c + "weight_int8"] = i64(w.int_repr().numpy())
    scales, zps = weight_qparams(w)
    out[c + "weight_scale"] = f32(scales.float())
    out[c + "weight_zero_point"] = i64(zps.numpy())
    out[c + "bias"] = f32(qm.bias())
    out[c + "out_qparams"] = np.array([qm.scale, qm.zero_point], dtype=np.float64)
    x = torch.randn(2, 4, 7, 6)
    xq = torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)
    out[c + "x"] = f32(x)
    out[c + "y_int"] = i64(qm(xq).int_repr().numpy())
    torch.backends.quantized.engine = engine
    wq = w.int_repr()
    assert int(wq.min()) >= lo and int(wq.max()) <= hi, (c, int(wq.min()), int(wq.max()))


def main():
    out = {}
    for tag, backend, bits, bn_training in CASES:
        run_case(tag, backend, bits, bn_training, out)
    qat_plain_w4(out)
    ptq_w4(out)
    save("qat_lsq.safetensors", out)


if __name__ == "__main__":
    main()
