#!/usr/bin/env python3
"""PyTorch oracle fixtures for the MobileNetV2 tests (tests/it/mobilenet_v2.rs).

Pins: torch 2.5.1, torchvision 0.20.1, numpy, safetensors. Build the venv outside the repo:

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Then, from the repo root:

    /opt/torch-oracle/bin/python scripts/gen_fixtures.py            # rewrite tests/fixtures/mobilenet_v2_*
    /opt/torch-oracle/bin/python scripts/gen_fixtures.py --cli-check DIR --width-mult 0.35 --seed 7

The second form writes a fresh checkpoint, input and expected logits (model.pth, x.npy,
expected.npy) to DIR for a by-hand check of `burn-qat infer`. Everything is seeded: re-running
gives the same numbers.
"""
import argparse
import os

import numpy as np
import torch
import torchvision
from safetensors.numpy import save_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

# (name, width_mult, num_classes, input shape NCHW, serialization)
CASES = [
    ("mobilenet_v2_w025", 0.25, 10, (2, 3, 64, 48), "legacy"),
    ("mobilenet_v2_w050", 0.5, 10, (3, 3, 64, 64), "zip"),
]


def build(width_mult, num_classes, seed):
    """A torchvision MobileNetV2 with random weights *and* random BN statistics, so that every
    parameter and buffer matters to the logits (fresh BN layers would be the identity)."""
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 0.05)
                m.bias.normal_(0.0, 0.1)
    return model.eval()


def run_case(width_mult, num_classes, shape, seed):
    model = build(width_mult, num_classes, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(*shape, generator=g)
    with torch.no_grad():
        logits = model(x)
    return model, x, logits


def save_state_dict(model, path, fmt):
    # torchvision's official float and int8 checkpoints use the legacy (pre-zip) format.
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=(fmt == "zip"))


def randomize_bn(bn):
    """Non-trivial affine parameters and running statistics, so that every one matters."""
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)


def batch_norm_and_folding():
    """PyTorch BatchNorm2d in training mode (three steps: outputs, running statistics,
    gradients) and eval-mode BN folding into conv / linear (torch.nn.utils.fusion)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    torch.manual_seed(2000)
    out = {}
    bn = torch.nn.BatchNorm2d(4)
    randomize_bn(bn)
    for k, v in bn.state_dict().items():
        if k != "num_batches_tracked":
            out[f"bn.init.{k}"] = v.numpy().copy()
    bn.train()
    for step in range(3):
        x = (torch.randn(3, 4, 5, 6) * 2 + 0.5).requires_grad_(True)
        g = torch.randn(3, 4, 5, 6)
        y = bn(x)
        (y * g).sum().backward()
        out[f"bn.step{step}.x"] = x.detach().numpy()
        out[f"bn.step{step}.g"] = g.numpy()
        out[f"bn.step{step}.y"] = y.detach().numpy()
        out[f"bn.step{step}.x_grad"] = x.grad.numpy()
        out[f"bn.step{step}.weight_grad"] = bn.weight.grad.numpy().copy()
        out[f"bn.step{step}.bias_grad"] = bn.bias.grad.numpy().copy()
        out[f"bn.step{step}.running_mean"] = bn.running_mean.numpy().copy()
        out[f"bn.step{step}.running_var"] = bn.running_var.numpy().copy()
        bn.zero_grad()
    bn.eval()
    with torch.no_grad():
        out["bn.eval.y"] = bn(out_x := torch.from_numpy(out["bn.step0.x"])).numpy()

    for bias in (True, False):
        conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=bias).eval()
        cbn = torch.nn.BatchNorm2d(6).eval()
        randomize_bn(cbn)
        with torch.no_grad():
            fused = fuse_conv_bn_eval(conv, cbn)
            tag = f"conv_bias{int(bias)}"
            out[f"{tag}.weight"] = conv.weight.numpy()
            if bias:
                out[f"{tag}.bias"] = conv.bias.numpy()
            for k in ("weight", "bias", "running_mean", "running_var"):
                out[f"{tag}.bn.{k}"] = getattr(cbn, k).numpy()
            out[f"{tag}.fused_weight"] = fused.weight.numpy()
            out[f"{tag}.fused_bias"] = fused.bias.numpy()
            out[f"{tag}.y"] = cbn(conv(out_x)).numpy()
    lin = torch.nn.Linear(5, 3).eval()
    lbn = torch.nn.BatchNorm1d(3).eval()
    randomize_bn(lbn)
    with torch.no_grad():
        fused = fuse_linear_bn_eval(lin, lbn)
        out["linear.weight"] = lin.weight.numpy()
        out["linear.bias"] = lin.bias.numpy()
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"linear.bn.{k}"] = getattr(lbn, k).numpy()
        out["linear.fused_weight"] = fused.weight.numpy()
        out["linear.fused_bias"] = fused.bias.numpy()
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
              os.path.join(FIXTURES, "batch_norm.safetensors"),
              metadata={"source": f"torch {torch.__version__}: BatchNorm2d train steps, fuse_conv_bn_eval, fuse_linear_bn_eval"})
    print("batch_norm", len(out), "arrays")


def weight_qparams(w):
    """Scales and zero-points of a quantized weight, per channel or a single pair."""
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return w.q_per_channel_scales(), w.q_per_channel_zero_points()
    return torch.tensor([w.q_scale()]), torch.tensor([w.q_zero_point()])


def qat_conv_bn():
    """torch.ao.nn.intrinsic.qat.ConvBnReLU2d with the default qnnpack and x86 QAT qconfigs:
    three training steps (SGD on the parameters between steps), recording each step's
    parameters, output, gradients, BN running statistics and weight fake-quant qparams."""
    from torch.ao.nn.intrinsic.qat import ConvBnReLU2d

    out = {}
    engine = torch.backends.quantized.engine
    for backend in ("qnnpack", "x86"):
        torch.manual_seed(3000)
        qconfig = torch.ao.quantization.get_default_qat_qconfig(backend)
        m = ConvBnReLU2d(4, 6, 3, stride=1, padding=1, bias=False, qconfig=qconfig)
        with torch.no_grad():
            m.bn.weight.uniform_(0.5, 1.5)
            m.bn.bias.normal_(0.0, 0.1)
            m.bn.running_mean.normal_(0.0, 0.1)
            m.bn.running_var.uniform_(0.5, 2.0)
        out[f"{backend}.init.bn.running_mean"] = m.bn.running_mean.numpy().copy()
        out[f"{backend}.init.bn.running_var"] = m.bn.running_var.numpy().copy()
        m.train()
        for step in range(3):
            p = f"{backend}.step{step}."
            out[p + "weight"] = m.weight.detach().numpy().copy()
            out[p + "bn.weight"] = m.bn.weight.detach().numpy().copy()
            out[p + "bn.bias"] = m.bn.bias.detach().numpy().copy()
            x = torch.randn(2, 4, 7, 6).requires_grad_(True)
            g = torch.randn(2, 6, 7, 6)
            y = m(x)
            (y * g).sum().backward()
            out[p + "x"] = x.detach().numpy()
            out[p + "g"] = g.numpy()
            out[p + "y"] = y.detach().numpy()
            out[p + "x_grad"] = x.grad.numpy()
            out[p + "weight_grad"] = m.weight.grad.numpy().copy()
            out[p + "bn.weight_grad"] = m.bn.weight.grad.numpy().copy()
            out[p + "bn.bias_grad"] = m.bn.bias.grad.numpy().copy()
            out[p + "bn.running_mean"] = m.bn.running_mean.numpy().copy()
            out[p + "bn.running_var"] = m.bn.running_var.numpy().copy()
            out[p + "wfq.scale"] = m.weight_fake_quant.scale.numpy().copy()
            out[p + "wfq.zero_point"] = m.weight_fake_quant.zero_point.numpy().astype(np.int64)
            with torch.no_grad():
                for prm in m.parameters():
                    prm -= 0.1 * prm.grad
            m.zero_grad()
        # Calibrate an output fake-quant in eval mode, then convert (from_float) and run int8.
        out[f"{backend}.final.weight"] = m.weight.detach().numpy().copy()
        out[f"{backend}.final.bn.weight"] = m.bn.weight.detach().numpy().copy()
        out[f"{backend}.final.bn.bias"] = m.bn.bias.detach().numpy().copy()
        torch.backends.quantized.engine = "qnnpack" if backend == "qnnpack" else "fbgemm"
        m.activation_post_process = qconfig.activation()
        m.eval()
        x_cal = torch.randn(2, 4, 7, 6)
        with torch.no_grad():
            m.activation_post_process(m(x_cal))
        qm = torch.ao.nn.intrinsic.quantized.ConvReLU2d.from_float(m)
        w = qm.weight()
        out[f"{backend}.convert.x"] = x_cal.numpy()
        out[f"{backend}.convert.weight_int8"] = w.int_repr().numpy().astype(np.int64)
        scales, zps = weight_qparams(w)
        out[f"{backend}.convert.weight_scale"] = scales.numpy().astype(np.float32)
        out[f"{backend}.convert.weight_zero_point"] = zps.numpy().astype(np.int64)
        out[f"{backend}.convert.bias"] = qm.bias().detach().numpy().copy()
        out[f"{backend}.convert.out_qparams"] = np.array([qm.scale, qm.zero_point], dtype=np.float64)
        xq = torch.quantize_per_tensor(x_cal, 0.05, 64, torch.quint8)
        out[f"{backend}.convert.y_int"] = qm(xq).int_repr().numpy().astype(np.int64)
    torch.backends.quantized.engine = engine
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
              os.path.join(FIXTURES, "qat_conv_bn.safetensors"),
              metadata={"source": f"torch {torch.__version__}: qat.ConvBnReLU2d, default QAT qconfigs"})
    print("qat_conv_bn", len(out), "arrays")


def ordered_fake_quants_and_bns(model):
    """Fake-quants and batch norms of a prepared QuantizableMobileNetV2 in this crate's visit
    order: quant stub, then per layer weight fake-quant and output fake-quant, blocks' skip_add
    after their convolutions, the classifier last."""
    import torch.nn as nn

    fqs, bns = [model.quant.activation_post_process], []

    def layer(m):
        fqs.extend([m.weight_fake_quant, m.activation_post_process])
        if hasattr(m, "bn"):
            bns.append(m.bn)

    feats = list(model.features)
    layer(feats[0][0])
    for block in feats[1:-1]:
        for sub in block.conv:
            if isinstance(sub, torchvision.ops.misc.Conv2dNormActivation):  # fused into [0]
                layer(sub[0])
            elif not isinstance(sub, nn.Identity):  # the fused pw-linear ConvBn2d
                layer(sub)
        fqs.append(block.skip_add.activation_post_process)
    layer(feats[-1][0])
    layer(model.classifier[1])
    return fqs, bns


def qat_linear():
    """A QAT Linear (torch.ao.nn.qat.Linear, default QAT qconfigs) with an output fake-quant,
    one forward pass, then nnq.Linear.from_float and an int8 forward."""
    out = {}
    engine = torch.backends.quantized.engine
    for backend in ("qnnpack", "x86"):
        torch.backends.quantized.engine = "qnnpack" if backend == "qnnpack" else "fbgemm"
        torch.manual_seed(7000)
        qconfig = torch.ao.quantization.get_default_qat_qconfig(backend)
        lin = torch.ao.nn.qat.Linear(16, 5, qconfig=qconfig)
        lin.activation_post_process = qconfig.activation()
        x = torch.randn(3, 16)
        with torch.no_grad():
            lin.activation_post_process(lin(x))
        qm = torch.ao.nn.quantized.Linear.from_float(lin)
        w = qm.weight()
        scales, zps = weight_qparams(w)
        p = f"{backend}."
        out[p + "weight"] = lin.weight.detach().numpy().copy()
        out[p + "bias"] = lin.bias.detach().numpy().copy()
        out[p + "x"] = x.numpy()
        out[p + "weight_int8"] = w.int_repr().numpy().astype(np.int64)
        out[p + "weight_scale"] = scales.numpy().astype(np.float32)
        out[p + "weight_zero_point"] = zps.numpy().astype(np.int64)
        out[p + "out_qparams"] = np.array([qm.scale, qm.zero_point], dtype=np.float64)
        xq = torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)
        # quantized::linear resizes its output with an op PyTorch does not flag deterministic.
        torch.use_deterministic_algorithms(False)
        out[p + "y_int"] = qm(xq).int_repr().numpy().astype(np.int64)
        torch.use_deterministic_algorithms(True)
    torch.backends.quantized.engine = engine
    save_file(out, os.path.join(FIXTURES, "qat_linear.safetensors"),
              metadata={"source": f"torch {torch.__version__}: qat.Linear, nnq.Linear.from_float"})


def convert_and_run(model, backend, x):
    """PyTorch's convert of a prepared / QAT model (eval mode) and its int8 output on `x`,
    with the classifier's output scale and zero-point (one quantum of the logits)."""
    torch.backends.quantized.engine = backend
    model.eval()
    qm = torch.ao.quantization.convert(model, inplace=False)
    # quantized::linear resizes its output, which PyTorch counts as non-deterministic.
    torch.use_deterministic_algorithms(False)
    with torch.no_grad():
        y = qm(x)
    torch.use_deterministic_algorithms(True)
    head = qm.classifier[1]
    return y.numpy().copy(), np.array([head.scale, head.zero_point], dtype=np.float64)


def qat_mobilenet_v2():
    """torchvision's QuantizableMobileNetV2 (width 0.25, 10 classes, no dropout): fuse_model
    (QAT), prepare_qat with the default qnnpack / x86 QAT qconfig, three SGD steps with momentum
    on fixed batches. Scenario "observe" trains normally; "observe_frozen" disables observers
    and freezes BN statistics after the first step. Saves the float checkpoint it started from,
    each step's loss, and the final observer ranges and BN running statistics.

    Both run with fake quantization disabled (observers and the fused ConvBn training path
    still on). Fake-quant rounding makes full QAT losses depend on the last bit of every
    pre-activation: an exact .5 tie (a few per forward pass, e.g. x * (1/scale) == 162.5 in the
    first 32-channel block) rounds to even in PyTorch and either way in any implementation whose
    convolution or batch-norm arithmetic differs by one ulp, and a flipped value moves the
    observed ranges downstream."""
    from torchvision.models.quantization.mobilenetv2 import (
        QuantizableInvertedResidual, QuantizableMobileNetV2)
    from torchvision.models.quantization.utils import _replace_relu

    torch.manual_seed(4000)
    # 48×48 keeps 2×2 maps in the last layers: with 1×1 maps and a small batch, training-mode
    # batch norm normalises 4 numbers per channel and amplifies float noise without bound.
    batches = [(torch.randn(8, 3, 48, 48), torch.randint(0, 10, (8,))) for _ in range(3)]
    float_model = QuantizableMobileNetV2(block=QuantizableInvertedResidual, width_mult=0.25,
                                         num_classes=10, dropout=0.0)
    # A well-conditioned starting point, as real QAT starts from a trained float model:
    # torchvision's initialisation with batch-norm statistics calibrated on data. (Random BN
    # parameters make the network so sensitive that a one-ulp difference anywhere flips a
    # fake-quant rounding and changes the loss by percents — PyTorch against itself included.)
    float_model.train()
    with torch.no_grad():
        for _ in range(5):
            float_model(torch.randn(16, 3, 32, 32))
    _replace_relu(float_model)
    float_state = {k: v.clone() for k, v in float_model.state_dict().items()}
    torch.save(float_state, os.path.join(FIXTURES, "qat_mobilenet_v2_float.pth"))

    out = {}
    for i, (x, y) in enumerate(batches):
        out[f"batch{i}.x"] = x.numpy()
        out[f"batch{i}.y"] = y.numpy().astype(np.int64)
    for backend in ("qnnpack", "x86"):
        for scenario in ("observe", "observe_frozen"):
            model = QuantizableMobileNetV2(block=QuantizableInvertedResidual, width_mult=0.25,
                                           num_classes=10, dropout=0.0)
            _replace_relu(model)
            model.load_state_dict(float_state)
            model.train()
            model.fuse_model(is_qat=True)
            model.qconfig = torch.ao.quantization.get_default_qat_qconfig(backend)
            torch.ao.quantization.prepare_qat(model, inplace=True)
            model.apply(torch.ao.quantization.disable_fake_quant)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            tag = f"{backend}.{scenario}"
            for step, (x, y) in enumerate(batches):
                if scenario == "observe_frozen" and step == 1:
                    model.apply(torch.ao.quantization.disable_observer)
                    model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                out[f"{tag}.loss{step}"] = np.array([loss.item()], dtype=np.float32)
            # Convert after the run: the int8 model PyTorch makes from it, on a fixed batch.
            x_test = torch.randn(32, 3, 48, 40, generator=torch.Generator().manual_seed(4100))
            y, head = convert_and_run(model, backend, x_test)
            out[f"{tag}.convert.x"] = x_test.numpy()
            out[f"{tag}.convert.y"] = y
            out[f"{tag}.convert.out_qparams"] = head
            fqs, bns = ordered_fake_quants_and_bns(model)
            for i, fq in enumerate(fqs):
                out[f"{tag}.fq{i}.min_val"] = fq.activation_post_process.min_val.numpy().copy()
                out[f"{tag}.fq{i}.max_val"] = fq.activation_post_process.max_val.numpy().copy()
            for i, bn in enumerate(bns):
                out[f"{tag}.bn{i}.running_mean"] = bn.running_mean.numpy().copy()
                out[f"{tag}.bn{i}.running_var"] = bn.running_var.numpy().copy()
            print(tag, [float(out[f"{tag}.loss{s}"][0]) for s in range(3)], len(fqs), "fake-quants")
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()},
              os.path.join(FIXTURES, "qat_mobilenet_v2.safetensors"),
              metadata={"source": f"torch {torch.__version__}, torchvision {torchvision.__version__}: QuantizableMobileNetV2 QAT"})


def ptq_mobilenet_v2():
    """PTQ calibration of torchvision's QuantizableMobileNetV2 (the QAT fixture's float model):
    eval mode, fuse_model(is_qat=False), prepare with the default qnnpack / x86 PTQ qconfig
    (HistogramObserver activations), two calibration batches. Saves every activation
    observer's min/max and the qparams it computes, in this crate's visit order."""
    import torch.nn as nn
    from torchvision.models.quantization.mobilenetv2 import (
        QuantizableInvertedResidual, QuantizableMobileNetV2)
    from torchvision.models.quantization.utils import _replace_relu

    state = torch.load(os.path.join(FIXTURES, "qat_mobilenet_v2_float.pth"), weights_only=True)
    g = torch.Generator().manual_seed(6000)
    batches = [torch.randn(2, 3, 48, 48, generator=g) for _ in range(2)]
    out = {f"batch{i}": b.numpy() for i, b in enumerate(batches)}
    for backend in ("qnnpack", "x86"):
        model = QuantizableMobileNetV2(block=QuantizableInvertedResidual, width_mult=0.25,
                                       num_classes=10, dropout=0.0)
        _replace_relu(model)
        model.load_state_dict(state)
        model.eval()
        model.fuse_model(is_qat=False)
        model.qconfig = torch.ao.quantization.get_default_qconfig(backend)
        torch.ao.quantization.prepare(model, inplace=True)
        with torch.no_grad():
            for b in batches:
                model(b)
        obs = [model.quant.activation_post_process]
        feats = list(model.features)
        obs.append(feats[0][0].activation_post_process)
        for block in feats[1:-1]:
            for sub in block.conv:
                if isinstance(sub, torchvision.ops.misc.Conv2dNormActivation):
                    obs.append(sub[0].activation_post_process)
                elif not isinstance(sub, nn.Identity):
                    obs.append(sub.activation_post_process)
            obs.append(block.skip_add.activation_post_process)
        obs.append(feats[-1][0].activation_post_process)
        obs.append(model.classifier[1].activation_post_process)
        for i, o in enumerate(obs):
            scale, zp = o.calculate_qparams()
            out[f"{backend}.obs{i}.min_val"] = o.min_val.numpy().reshape(1)
            out[f"{backend}.obs{i}.max_val"] = o.max_val.numpy().reshape(1)
            out[f"{backend}.obs{i}.scale"] = scale.numpy().reshape(1).astype(np.float32)
            out[f"{backend}.obs{i}.zero_point"] = zp.numpy().reshape(1).astype(np.int64)
        x_test = torch.randn(32, 3, 48, 40, generator=g)
        y, head = convert_and_run(model, backend, x_test)
        out[f"{backend}.convert.x"] = x_test.numpy()
        out[f"{backend}.convert.y"] = y
        out[f"{backend}.convert.out_qparams"] = head
        print("ptq", backend, len(obs), "observers")
    save_file(out, os.path.join(FIXTURES, "ptq_mobilenet_v2.safetensors"),
              metadata={"source": f"torch {torch.__version__}, torchvision {torchvision.__version__}: QuantizableMobileNetV2 PTQ calibration"})


def transforms():
    """torchvision-style preprocessing: bilinear resize (align_corners=False, no antialias),
    centre crop, normalise — on a grey 28×28 (MNIST-like) and an RGB 40×36 image."""
    import torch.nn.functional as F
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(5000)
    out = {}
    cases = {"grey": ((28, 28, 1), (32, 32), None, (0.1307,) * 3, (0.3081,) * 3),
             "rgb": ((40, 36, 3), (48, 44), (40, 40), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
    for name, (shape, size, crop, mean, std) in cases.items():
        img = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        x = img.permute(2, 0, 1).float().div(255).unsqueeze(0)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)[0]
        if crop:
            x = TF.center_crop(x, list(crop))
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        x = TF.normalize(x, list(mean), list(std))
        out[f"{name}.image"] = img.numpy()
        out[f"{name}.out"] = x.contiguous().numpy()
    save_file(out, os.path.join(FIXTURES, "transforms.safetensors"),
              metadata={"source": f"torch {torch.__version__}, torchvision {torchvision.__version__}: interpolate, center_crop, normalize"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli-check", metavar="DIR", help="write a fresh case for a by-hand CLI check")
    ap.add_argument("--width-mult", type=float, default=0.35)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    if args.cli_check:
        os.makedirs(args.cli_check, exist_ok=True)
        model, x, logits = run_case(args.width_mult, args.num_classes, (4, 3, 72, 56), args.seed)
        save_state_dict(model, os.path.join(args.cli_check, "model.pth"), "zip")
        np.save(os.path.join(args.cli_check, "x.npy"), x.numpy())
        np.save(os.path.join(args.cli_check, "expected.npy"), logits.numpy())
        print(f"wrote {args.cli_check}/model.pth, x.npy, expected.npy")
        return

    os.makedirs(FIXTURES, exist_ok=True)
    for i, (name, width_mult, num_classes, shape, fmt) in enumerate(CASES):
        model, x, logits = run_case(width_mult, num_classes, shape, seed=1000 + i)
        save_state_dict(model, os.path.join(FIXTURES, f"{name}.pth"), fmt)
        save_file(
            {"input": x.numpy(), "logits": logits.numpy()},
            os.path.join(FIXTURES, f"{name}.safetensors"),
            # One metadata key: several would be written in hash order and change the bytes.
            metadata={"source": f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                                f"mobilenet_v2(width_mult={width_mult}, num_classes={num_classes})"},
        )
        print(name, "logits", tuple(logits.shape), "absmax", float(logits.abs().max()))
    batch_norm_and_folding()
    qat_conv_bn()
    qat_linear()
    qat_mobilenet_v2()
    ptq_mobilenet_v2()
    transforms()


if __name__ == "__main__":
    main()
