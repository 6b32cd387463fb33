#!/usr/bin/env python3
"""PyTorch oracle fixture for per-layer qconfigs (tests/it/qconfig_mapping.rs): torchvision's
QuantizableMobileNetV2 with its first layer (the stem, features[0]) and its classifier left in
float (`qconfig = None`, as PyTorch eager mode does it), the QuantStub moved after the stem and
the DeQuantStub before the pooling. PTQ with the default x86 qconfig: fuse_model(is_qat=False),
prepare, two calibration batches, convert; the converted model's logits on a test batch.

Pins: torch 2.5.1, torchvision 0.20.1, numpy, safetensors (the venv of scripts/gen_fixtures.py).
From the repo root, after scripts/gen_fixtures.py (it reads qat_mobilenet_v2_float.pth):

    /opt/torch-oracle/bin/python scripts/gen_qconfig_mapping_fixtures.py
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.numpy import save_file
from torchvision.models.quantization.mobilenetv2 import (
    QuantizableInvertedResidual, QuantizableMobileNetV2)
from torchvision.models.quantization.utils import _replace_relu

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


class FloatEnds(QuantizableMobileNetV2):
    """The stem and the classifier run in float; the stubs sit around the int8 part."""

    def forward(self, x):
        x = self.features[0](x)
        x = self.quant(x)
        for f in self.features[1:]:
            x = f(x)
        x = self.dequant(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    state = torch.load(os.path.join(FIXTURES, "qat_mobilenet_v2_float.pth"), weights_only=True)
    g = torch.Generator().manual_seed(6100)
    batches = [torch.randn(2, 3, 32, 32, generator=g) for _ in range(2)]
    model = FloatEnds(block=QuantizableInvertedResidual, width_mult=0.25, num_classes=10,
                      dropout=0.0)
    _replace_relu(model)
    model.load_state_dict(state)
    model.eval()
    model.fuse_model(is_qat=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    model.features[0].qconfig = None
    model.classifier.qconfig = None
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.no_grad():
        for b in batches:
            model(b)
    head = model.features[-1][0].activation_post_process
    head_scale, head_zp = head.calculate_qparams()
    qm = torch.ao.quantization.convert(model, inplace=False)
    kinds = {name: type(m).__module__ for name, m in qm.named_modules()}
    assert ".quantized" not in kinds["features.0.0"], kinds["features.0.0"]  # float, fused
    assert ".quantized" in kinds["features.1.conv.0.0"], kinds["features.1.conv.0.0"]
    assert ".quantized" not in kinds["classifier.1"], kinds["classifier.1"]
    x = torch.randn(4, 3, 32, 32, generator=g)
    torch.use_deterministic_algorithms(False)  # quantized::linear is not in the allow-list
    with torch.no_grad():
        y = qm(x)
        # The float classifier's input: the int8 part's output, dequantized (for a check that
        # does not go through the float classifier's summation order).
        feats = qm.dequant(qm.features[1:](qm.quant(qm.features[0](x))))
    out = {
        "batch0": batches[0].numpy(),
        "batch1": batches[1].numpy(),
        "x": x.numpy(),
        "y": y.numpy(),
        "features": feats.numpy(),
        "head_qparams": np.array([float(head_scale), float(head_zp)], dtype=np.float64),
    }
    save_file(out, os.path.join(FIXTURES, "ptq_mobilenet_v2_float_ends.safetensors"),
              metadata={"source": f"torch {torch.__version__}, torchvision {torchvision.__version__}: "
                                  "QuantizableMobileNetV2 x86 PTQ, features.0 and classifier float"})
    print("y", tuple(y.shape), "features", tuple(feats.shape), "head", float(head_scale), int(head_zp))


if __name__ == "__main__":
    main()
