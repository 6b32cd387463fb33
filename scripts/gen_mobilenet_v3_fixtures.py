#!/usr/bin/env python3
"""Generates tests/fixtures/mobilenet_v3/: torchvision's quantizable MobileNetV3
(`torchvision.models.quantization.mobilenetv3.QuantizableMobileNetV3`) in float, fused, int8 and
QAT, for tests/it/mobilenet_v3.rs.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root (no network: weights are random, never downloaded):

    /opt/torch-oracle/bin/python scripts/gen_mobilenet_v3_fixtures.py

The model is torchvision's own class, built as its builder does (`_mobilenet_v3_conf`,
`QuantizableInvertedResidual`, `_replace_relu`): `mobilenet_v3_small` at width_mult 0.25 with
`reduced_tail=True`, 16 classes, dropout 0 (so that training steps are deterministic). It has
every kind of block: squeeze-excitation with ReLU and with hardswish, blocks without SE,
without expansion, with and without the residual add.

Weights: seeded random convolutions (Kaiming-normal fan-out, random biases for the SE's 1×1
convolutions), random BN affine parameters and running statistics, random linear layers.

  small.pth                 the float state_dict() (torchvision's float key names), torch.save
  small.safetensors         input [2, 3, 64, 48] uniform in [-2, 2]; logits (float, eval);
                            fused_logits (eval, fuse_model(), BN folded); for each engine E in
                            fbgemm and qnnpack: q_E (uint8 int_repr of the quantized logits
                            before DeQuantStub, as int64), q_E_scale, q_E_zero_point
  small_<E>.pth             the converted model's state_dict() (E's default PTQ qconfig),
                            calibrated on 3 seeded batches of 4 × 3 × 64 × 64 in [-2, 2]

QAT (qat.safetensors), the model trained as torchvision's reference script does: train(),
fuse_model(is_qat=True), the default x86 QAT qconfig, prepare_qat (which gives each SE's
hardsigmoid a FixedQParamsFakeQuantize, 1/256 and 0).
  - Fake quantization on: the first forward of batch0's first two images (observers on, BN on batch statistics),
    with the inputs and outputs of some layers recorded by forward hooks (layer.<name>.x /
    .y): the stem's QAT ConvBn (`features.0.0`), its hardswish (`features.0.2`), the SE of
    block 3 (`features.4.block.2`) and its hardsigmoid (`…scale_activation`), the whole
    block 4 with its residual add (`features.5`), and the classifier's first linear layer
    (`classifier.0`); fq_loss: that forward's cross-entropy.
  - Then, on a fresh copy, fake quantization off (observers and the fused ConvBn training forward
    on), three SGD steps (lr 0.01, momentum 0.9) with cross-entropy on batch{i}.x [4, 3, 32, 32]
    in [-2, 2] and labels batch{i}.y; after the first step observers are disabled and BN
    statistics frozen. loss{i}: each step's loss. Then eval(), the state dict saved as
    small_qat_x86.pth (a QAT checkpoint before convert, as torchvision's official
    mobilenet_v3_large_qnnpack-5bcacf28.pth), and convert under the fbgemm engine; q / q_scale /
    q_zero_point: the uint8 logits on small.safetensors's input.

Deterministic: fixed seeds, one intra-op thread.
"""
import copy
import os

import numpy as np
import torch
import torchvision
from gen_int8_model_fixtures import randomize  # this folder: the same random weights
import torchvision_fixtures  # this folder: the steps the model fixture scripts share
from torchvision_fixtures import ptq, put_q, qat_batches, qat_steps, quantized_logits, save_arrays
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
from torchvision.models.quantization.mobilenetv3 import (
    QuantizableInvertedResidual,
    QuantizableMobileNetV3,
)
from torchvision.models.quantization.utils import _replace_relu

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert torchvision.__version__.startswith("0.20.1"), torchvision.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "mobilenet_v3")
NUM_CLASSES = 16
SEED = 3
# The layers whose inputs and outputs the fake-quant-on forward records.
RECORDED = ["features.0.0", "features.0.2", "features.4.block.2", "features.4.block.2.scale_activation",
            "features.5", "classifier.0"]


def conv_init(c):
    torch.nn.init.kaiming_normal_(c.weight, mode="fan_out")
    if c.bias is not None:
        c.bias.normal_(0.0, 0.1)


def build_float():
    torch.manual_seed(SEED)
    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    model = QuantizableMobileNetV3(setting, last_channel, block=QuantizableInvertedResidual,
                                   num_classes=NUM_CLASSES, dropout=0.0)
    _replace_relu(model)
    return randomize(model, conv_init).eval()


def save(name, out):
    save_arrays(out, os.path.join(OUT, name))


def gen(x):
    model = build_float()
    out = {"input": x.numpy()}
    torch.save(model.state_dict(), os.path.join(OUT, "small.pth"))
    with torch.no_grad():
        out["logits"] = model(x).numpy()
        model.fuse_model(is_qat=False)
        out["fused_logits"] = model(x).numpy()
    for engine in ["fbgemm", "qnnpack"]:
        q = ptq(build_float, engine, SEED + 1, 3)
        y = quantized_logits(q, x)
        torch.save(q.state_dict(), os.path.join(OUT, f"small_{engine}.pth"))
        put_q(out, f"q_{engine}", y)
        diff = np.abs(out[f"q_{engine}"] - np.round(out["logits"] / y.q_scale()) - y.q_zero_point())
        print(f"{engine}: int8 vs float logits, worst {diff.max():.0f} quanta")
    save("small.safetensors", out)


def prepared_qat():
    model = torchvision_fixtures.prepared_qat(build_float)
    fq = model.features[4].block[2].scale_activation.activation_post_process
    assert type(fq) is torch.ao.quantization.FixedQParamsFakeQuantize, type(fq)
    return model


def gen_qat(x):
    g = torch.Generator().manual_seed(SEED + 100)
    out = {}
    batches = qat_batches(g, 4, NUM_CLASSES, out)

    # Fake quantization on: one forward, layers recorded.
    model = prepared_qat()
    modules = dict(model.named_modules())
    hooks = []
    for name in RECORDED:
        # Inputs before the forward (hardswish works in place), outputs after the
        # activation post-process (the hook prepare_qat registered first).
        def pre_hook(_, inputs, name=name):
            out[f"layer.{name}.x"] = inputs[0].detach().numpy().copy()

        def hook(_, inputs, output, name=name):
            out[f"layer.{name}.y"] = output.detach().numpy().copy()
        hooks.append(modules[name].register_forward_pre_hook(pre_hook))
        hooks.append(modules[name].register_forward_hook(hook))
    bx, by = batches[0][0][:2], batches[0][1][:2]
    loss = torch.nn.functional.cross_entropy(model(bx), by)
    out["fq_loss"] = np.array([loss.item()], dtype=np.float32)
    for h in hooks:
        h.remove()
    print("fake-quant-on loss", loss.item())

    # Fake quantization off: three steps, then convert.
    model = prepared_qat()
    qat_steps(model, batches, out, lambda step: f"loss{step}")
    # The QAT state dict before convert: the form of torchvision's official int8 checkpoint.
    # Legacy serialization: a third of the zip format's size for its ~600 small tensors.
    torch.save(model.state_dict(), os.path.join(OUT, "small_qat_x86.pth"), _use_new_zipfile_serialization=False)
    torch.backends.quantized.engine = "fbgemm"
    q = torch.ao.quantization.convert(copy.deepcopy(model), inplace=False)
    put_q(out, "q", quantized_logits(q, x))
    print("QAT losses", [float(out[f"loss{s}"][0]) for s in range(3)])
    save("qat.safetensors", out)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    x = torch.rand(2, 3, 64, 48, generator=g) * 4.0 - 2.0
    gen(x)
    gen_qat(x)
    for f in sorted(os.listdir(OUT)):
        print(f"  {f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


if __name__ == "__main__":
    main()
