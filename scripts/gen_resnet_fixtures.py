#!/usr/bin/env python3
"""Generates tests/fixtures/resnet/: torchvision's quantizable ResNet / ResNeXt
(`torchvision.models.quantization.resnet`) in float, fused and int8, for tests/it/resnet.rs.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root (no network: weights are random, never downloaded):

    /opt/torch-oracle/bin/python scripts/gen_resnet_fixtures.py

Small models of torchvision's own classes. `QuantizableResNet` hard-codes its widths (stem 64,
stages 64·[1, 2, 4, 8] planes), which makes even one block per stage ~20 MB of weights; here
`SmallResNet` is `QuantizableResNet` with only the width 64 replaced by `--width` (8): the stem
has `width` channels and stage k `width·2^(k−1)` planes. Blocks (`QuantizableBasicBlock`,
`QuantizableBottleneck`), `_make_layer` (downsampling), `forward` and `fuse_model` are
torchvision's, unchanged; the Rust model's `width` field (default 64) is the same knob.

Models (one block per stage, 32 classes, `_replace_relu` applied as torchvision's builder does):
  resnet_basic      QuantizableBasicBlock, layers [1, 1, 1, 1]
  resnext_bottleneck QuantizableBottleneck, layers [1, 1, 1, 1], groups 4, width_per_group 16
                    (grouped 3×3 convolutions with 2·width/… channels per group, as ResNeXt)

Weights: seeded random convolution / linear weights, random BN affine parameters and running
statistics (so BN folding matters). For each model it writes:

  <name>.pth                 the float state_dict() (torchvision's float key names), torch.save
  <name>.safetensors         input [2, 3, 64, 48] uniform in [-2, 2]; logits (float, eval);
                             fused_logits (eval, fuse_model(), BN folded); for each engine E in
                             fbgemm and qnnpack: q_E (uint8 int_repr of the quantized logits
                             before DeQuantStub, as int64), q_E_scale, q_E_zero_point
  <name>_<E>.pth             the converted model's state_dict() (E's default PTQ qconfig:
                             per-channel weights with reduce_range for fbgemm, per-tensor for
                             qnnpack), calibrated on 3 seeded batches of 4 × 3 × 64 × 64 in [-2, 2]

QAT (both models, in qat.safetensors): three seeded batches (batch{i}.x [8, 3, 32, 32] in [-2, 2],
batch{i}.y labels); each model from <name>.pth, train(), fuse_model(is_qat=True), prepare_qat
with the default x86 QAT qconfig, fake quantization disabled (observers and the fused ConvBn
training forward on), three SGD steps (lr 0.01, momentum 0.9) with cross-entropy; after the first
step observers are disabled and BN statistics frozen. <name>.loss{i}: each step's loss. Then
eval() and convert under the fbgemm engine (the x86 engine's arithmetic without oneDNN);
<name>.q: the uint8 logits on <name>.safetensors's input, <name>.q_scale / q_zero_point.

Deterministic: fixed seeds, one intra-op thread.
"""
import argparse
import os

import numpy as np
import torch
import torchvision
from gen_int8_model_fixtures import randomize  # this folder: the same random weights
from torchvision_fixtures import prepared_qat, ptq, put_q, qat_batches, qat_steps, quantized_logits, save_arrays
from torchvision.models.quantization.resnet import (
    QuantizableBasicBlock,
    QuantizableBottleneck,
    QuantizableResNet,
)
from torchvision.models.quantization.utils import _replace_relu

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert torchvision.__version__.startswith("0.20.1"), torchvision.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "resnet")
NUM_CLASSES = 32


class SmallResNet(QuantizableResNet):
    """`QuantizableResNet` with its width 64 replaced by `width` (see the module docstring)."""

    def __init__(self, block, layers, width, **kwargs):
        self._width = width
        super().__init__(block, layers, **kwargs)
        # ResNet.__init__ built the stem and fc at width 64: rebuild them at `width`.
        self.conv1 = torch.nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.fc = torch.nn.Linear(8 * width * block.expansion, kwargs.get("num_classes", 1000))

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # layer1: ResNet.__init__ set inplanes to 64 just before.
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


MODELS = {
    "resnet_basic": dict(block=QuantizableBasicBlock, layers=[1, 1, 1, 1]),
    "resnext_bottleneck": dict(block=QuantizableBottleneck, layers=[1, 1, 1, 1], groups=4, width_per_group=16),
}


def build_float(name, width, seed):
    torch.manual_seed(seed)
    model = SmallResNet(width=width, num_classes=NUM_CLASSES, **MODELS[name])
    _replace_relu(model)
    conv_init = lambda c: torch.nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")  # noqa: E731
    return randomize(model, conv_init).eval()


def gen(name, width, seed, x, calib_batches):
    model = build_float(name, width, seed)
    out = {"input": x.numpy()}
    torch.save(model.state_dict(), os.path.join(OUT, f"{name}.pth"))
    with torch.no_grad():
        out["logits"] = model(x).numpy()
        model.fuse_model(is_qat=False)
        out["fused_logits"] = model(x).numpy()
    for engine in ["fbgemm", "qnnpack"]:
        q = ptq(lambda: build_float(name, width, seed), engine, seed + 1, calib_batches)
        y = quantized_logits(q, x)
        torch.save(q.state_dict(), os.path.join(OUT, f"{name}_{engine}.pth"))
        put_q(out, f"q_{engine}", y)
        diff = np.abs(out[f"q_{engine}"] - np.round(out["logits"] / y.q_scale()) - y.q_zero_point())
        print(f"{name} {engine}: int8 vs float logits, worst {diff.max():.0f} quanta")
    save_arrays(out, os.path.join(OUT, f"{name}.safetensors"))
    for f in sorted(os.listdir(OUT)):
        if f.startswith(name):
            print(f"  {f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


def gen_qat(width, seed, x):
    g = torch.Generator().manual_seed(seed + 100)
    out = {}
    batches = qat_batches(g, 8, NUM_CLASSES, out)
    for i, name in enumerate(MODELS):
        model = prepared_qat(lambda: build_float(name, width, seed + 10 * i + 1))  # <name>.pth's weights
        qat_steps(model, batches, out, lambda step: f"{name}.loss{step}")
        torch.backends.quantized.engine = "fbgemm"
        q = torch.ao.quantization.convert(model, inplace=False)
        put_q(out, f"{name}.q", quantized_logits(q, x))
        print(f"{name} QAT losses", [float(out[f"{name}.loss{s}"][0]) for s in range(3)])
    save_arrays(out, os.path.join(OUT, "qat.safetensors"))


def gen_qat_layers(width, seed):
    """Per-layer QAT with fake quantization on (qat_layers.safetensors).

    Whole-network fake-quant results are chaotic (a rounding tie flips and cascades), so each
    layer is held to PyTorch on PyTorch's recorded input: each model from <name>.pth, train(),
    fuse_model(is_qat=True), prepare_qat (x86), fake quantization and observers on, one forward
    of a seeded batch x [2, 3, 32, 32] in [-2, 2] (small, to keep the file small). Recorded per layer L (the quant stub, every fused conv, the residual add_relu,
    fc): <name>.<L>.in (the add: .in_main, .in_identity), <name>.<L>.out (after the layer's
    output fake-quant), <name>.<L>.scale / .zero_point (that fake-quant's qparams after the
    forward)."""
    g = torch.Generator().manual_seed(seed + 200)
    bx = torch.rand(2, 3, 32, 32, generator=g) * 4.0 - 2.0
    out = {"x": bx.numpy()}
    for i, name in enumerate(MODELS):
        model = prepared_qat(lambda: build_float(name, width, seed + 10 * i + 1))
        record, hooks = {}, []

        def keep(key, t):
            record[f"{name}.{key}"] = t.detach().numpy().copy()

        def qparams(key, fq):
            record[f"{name}.{key}.scale"] = fq.scale.detach().numpy().astype(np.float64).copy()
            record[f"{name}.{key}.zero_point"] = fq.zero_point.detach().numpy().astype(np.int64).copy()

        for mname, m in model.named_modules():
            if mname == "quant" or mname == "fc" or (
                    hasattr(m, "weight_fake_quant") and mname != "fc"):
                def hook(m, args, y, mname=mname):
                    keep(f"{mname}.in", args[0])
                    keep(f"{mname}.out", y)
                hooks.append(m.register_forward_hook(hook))
            if isinstance(m, (QuantizableBasicBlock, QuantizableBottleneck)):
                def block_hook(m, args, y, mname=mname):
                    last = m.conv3 if isinstance(m, QuantizableBottleneck) else m.conv2
                    add = m.skip_add_relu if isinstance(m, QuantizableBottleneck) else m.add_relu
                    keep(f"{mname}.add_relu.in_main", last_out[id(last)])
                    identity = last_out[id(m.downsample)] if m.downsample is not None else args[0]
                    keep(f"{mname}.add_relu.in_identity", identity)
                    keep(f"{mname}.add_relu.out", y)
                    qparams(f"{mname}.add_relu", add.activation_post_process)
                hooks.append(m.register_forward_hook(block_hook))
        last_out = {}
        for m in model.modules():
            hooks.append(m.register_forward_hook(lambda m, a, y: last_out.__setitem__(id(m), y)))
        model(bx)
        for mname, m in model.named_modules():
            if f"{name}.{mname}.out" in record and hasattr(m, "activation_post_process"):
                qparams(mname, m.activation_post_process)
        for h in hooks:
            h.remove()
        out.update(record)
        print(f"{name}: {sum(1 for k in record if k.endswith('.out'))} layers recorded")
    save_arrays(out, os.path.join(OUT, "qat_layers.safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-batches", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(2, 3, 64, 48, generator=g) * 4.0 - 2.0
    for i, name in enumerate(MODELS):
        gen(name, args.width, args.seed + 10 * i + 1, x, args.calib_batches)
    gen_qat(args.width, args.seed, x)
    gen_qat_layers(args.width, args.seed)


if __name__ == "__main__":
    main()
