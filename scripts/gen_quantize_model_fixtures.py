#!/usr/bin/env python3
"""Generates tests/fixtures/quantize_model.safetensors: torchvision's own
`torchvision.models.quantization.utils.quantize_model(model, backend)` (what its builders do for
`quantize=True` without weights) on the float fixture models, for tests/it/quantize_model.rs.

    /opt/torch-oracle/bin/python scripts/gen_quantize_model_fixtures.py

torchvision calibrates on `torch.rand(1, 3, 299, 299)`; the crate's `models::quantize_model`
on a fixed batch (`calibration_input`: `(bench_input(1, 299) + 2) / 4` in float32), so here
`torch.rand` is replaced by that batch while torchvision's function runs, unchanged otherwise
(`fuse_model`, its qconfig per backend, `prepare`, one pass, `convert`).

Cases (float weights from the committed fixtures, `_replace_relu` applied first as the builders
do), each with the input of its model's fixture:
  resnet_basic_fbgemm / resnet_basic_qnnpack   tests/fixtures/resnet/resnet_basic.pth
  resnext_bottleneck_fbgemm                    tests/fixtures/resnet/resnext_bottleneck.pth
  mobilenet_v2_w025_qnnpack                    tests/fixtures/mobilenet_v2_w025.pth
  mobilenet_v3_small_qnnpack / _fbgemm         tests/fixtures/mobilenet_v3/small.pth (mobilenet_v3_small,
                                               width 0.25, reduced tail, 16 classes)
  shufflenet_v2_fbgemm / _qnnpack              tests/fixtures/shufflenet_v2/model.pth (stages_repeats
                                               [2, 1, 2], channels [8, 16, 32, 64, 128], 32 classes)
For each (its input is its fixture's `input`): <case>.q (uint8 int_repr of the quantized logits before DeQuantStub, as
int64), <case>.q_scale, <case>.q_zero_point.
"""
import os
import sys

import numpy as np
import torch
import torchvision
from safetensors.numpy import load_file, save_file
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
from torchvision.models.quantization import mobilenetv2 as tv_mobilenetv2
from torchvision.models.quantization import mobilenetv3 as tv_mobilenetv3
from torchvision.models.quantization.shufflenetv2 import QuantizableShuffleNetV2
from torchvision.models.quantization import utils as tv_utils
from torchvision.models.quantization.resnet import QuantizableBasicBlock, QuantizableBottleneck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers import bench_input  # noqa: E402  the crate's bench_input, bit for bit
from gen_resnet_fixtures import SmallResNet  # noqa: E402

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert torchvision.__version__.startswith("0.20.1"), torchvision.__version__
torch.set_num_threads(1)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def calibration_input():
    """The crate's `models::quantize_model::calibration_input`, in float32 as Rust computes it."""
    return torch.from_numpy((bench_input(1, 299) + np.float32(2.0)) / np.float32(4.0))


def resnet(name, **kwargs):
    model = SmallResNet(width=8, num_classes=32, **kwargs)
    model.load_state_dict(torch.load(os.path.join(FIXTURES, "resnet", f"{name}.pth"), weights_only=True))
    return model, load_file(os.path.join(FIXTURES, "resnet", f"{name}.safetensors"))["input"]


def mobilenet_v2_w025():
    model = tv_mobilenetv2.QuantizableMobileNetV2(
        block=tv_mobilenetv2.QuantizableInvertedResidual, width_mult=0.25, num_classes=10)
    model.load_state_dict(torch.load(os.path.join(FIXTURES, "mobilenet_v2_w025.pth"), weights_only=True))
    return model, load_file(os.path.join(FIXTURES, "mobilenet_v2_w025.safetensors"))["input"]


def mobilenet_v3_small():
    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    model = tv_mobilenetv3.QuantizableMobileNetV3(
        setting, last_channel, block=tv_mobilenetv3.QuantizableInvertedResidual, num_classes=16, dropout=0.0)
    model.load_state_dict(torch.load(os.path.join(FIXTURES, "mobilenet_v3", "small.pth"), weights_only=True))
    return model, load_file(os.path.join(FIXTURES, "mobilenet_v3", "small.safetensors"))["input"]


def shufflenet_v2():
    model = QuantizableShuffleNetV2([2, 1, 2], [8, 16, 32, 64, 128], num_classes=32)
    model.load_state_dict(torch.load(os.path.join(FIXTURES, "shufflenet_v2", "model.pth"), weights_only=True))
    return model, load_file(os.path.join(FIXTURES, "shufflenet_v2", "model.safetensors"))["input"]


CASES = {
    "resnet_basic_fbgemm": (lambda: resnet("resnet_basic", block=QuantizableBasicBlock, layers=[1, 1, 1, 1]), "fbgemm"),
    "resnet_basic_qnnpack": (lambda: resnet("resnet_basic", block=QuantizableBasicBlock, layers=[1, 1, 1, 1]), "qnnpack"),
    "resnext_bottleneck_fbgemm": (lambda: resnet("resnext_bottleneck", block=QuantizableBottleneck, layers=[1, 1, 1, 1],
                                                 groups=4, width_per_group=16), "fbgemm"),
    "mobilenet_v2_w025_qnnpack": (mobilenet_v2_w025, "qnnpack"),
    "mobilenet_v3_small_qnnpack": (mobilenet_v3_small, "qnnpack"),
    "mobilenet_v3_small_fbgemm": (mobilenet_v3_small, "fbgemm"),
    "shufflenet_v2_fbgemm": (shufflenet_v2, "fbgemm"),
    "shufflenet_v2_qnnpack": (shufflenet_v2, "qnnpack"),
}


def main():
    out = {}
    real_rand = torch.rand
    for case, (build, backend) in CASES.items():
        model, x = build()
        tv_utils._replace_relu(model)
        # torchvision's quantize_model, its dummy batch replaced by the crate's.
        tv_utils.torch.rand = lambda *shape, **kw: calibration_input()
        try:
            tv_utils.quantize_model(model, backend)
        finally:
            tv_utils.torch.rand = real_rand
        xt = torch.from_numpy(x)
        with torch.no_grad():
            q = model._forward_impl(model.quant(xt))
            assert q.is_quantized and torch.equal(q.dequantize(), model(xt))
        out[f"{case}.q"] = q.int_repr().numpy().astype(np.int64)
        out[f"{case}.q_scale"] = np.array([q.q_scale()], dtype=np.float64)
        out[f"{case}.q_zero_point"] = np.array([q.q_zero_point()], dtype=np.int64)
        print(f"{case}: q {tuple(q.shape)}, scale {q.q_scale():.6g}, zero point {q.q_zero_point()}")
    path = os.path.join(FIXTURES, "quantize_model.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path,
              metadata={"torch": torch.__version__, "torchvision": torchvision.__version__})
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
