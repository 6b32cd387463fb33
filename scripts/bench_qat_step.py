"""PyTorch's side of the QAT step benchmark: one training step (forward, cross-entropy,
backward, SGD with momentum) of torchvision's QuantizableMobileNetV2 (width 1.0, 10 classes),
float and eager-mode QAT (fuse_model(is_qat=True), prepare_qat with the default qnnpack / x86
QAT qconfig), on CPU or CUDA. Prints one JSON line per configuration, like
`examples/bench_qat_step.rs`.

    python scripts/bench_qat_step.py --device cuda --batch 128 --size 32
"""
import argparse
import json
import resource
import time

import torch
from torchvision.models.quantization.mobilenetv2 import (QuantizableInvertedResidual,
                                                         QuantizableMobileNetV2)
from torchvision.models.quantization.utils import _replace_relu


def model(qat, device):
    m = QuantizableMobileNetV2(block=QuantizableInvertedResidual, num_classes=10)
    _replace_relu(m)
    m.train()
    if qat:
        m.fuse_model(is_qat=True)
        m.qconfig = torch.ao.quantization.get_default_qat_qconfig(qat)
        torch.ao.quantization.prepare_qat(m, inplace=True)
    return m.to(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--config", default=None, choices=["float", "qat_qnnpack", "qat_x86"],
                    help="only this configuration (float, qat_qnnpack, qat_x86); one per "
                         "process gives each its own peak-RSS figure")
    args = ap.parse_args()
    dev = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = (torch.arange(args.batch, device=dev) % 10)
    for name, qat in [("float", None), ("qat_qnnpack", "qnnpack"), ("qat_x86", "x86")]:
        if args.config and args.config != name:
            continue
        m = model(qat, dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        times = []
        for i in range(args.iters + 3):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        print(json.dumps({"device": f"torch-{args.device}", "config": name, "batch": args.batch,
                          "size": args.size, "median_ms": round(times[len(times) // 2], 2),
                          "min_ms": round(times[0], 2),
                          # ru_maxrss is in KiB on Linux.
                          "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          "torch": torch.__version__}))


if __name__ == "__main__":
    main()
