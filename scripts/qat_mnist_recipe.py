#!/usr/bin/env python3
"""The main job's QAT recipe (examples/qat_finetune.rs) run in PyTorch, on the very same start,
data and order, so that the two tables differ only by the framework.

Pins: torch 2.5.1, torchvision 0.20.1, numpy (the oracle venv, /opt/torch-oracle). Usage:

    cargo run --release --example export_main_job_data -- /tmp/main_job_data
    /opt/torch-oracle/bin/python scripts/qat_mnist_recipe.py /tmp/main_job_data
    /opt/torch-oracle/bin/python scripts/qat_mnist_recipe.py /tmp/main_job_data \
        --weight-bits 4 --lsq

The export writes the shipped float MobileNetV2 as a torchvision state dict, the test split
after the evaluation transform, the 512 PTQ calibration images and, per epoch, the 4,000
training images in the Rust loop's order after its seeded augmentation (about 50 MB an epoch;
`--epochs N` there for longer runs here). Prints the main job's table: float; PTQ int8 (x86);
QAT fake-quant; QAT int8 (x86); with `--weight-bits B` (B < 8) also PTQ B-bit-weight int8; with
`--lsq` also QAT B-bit LSQ fake-quant and its int8 conversion (B = 8 without `--weight-bits`).

The recipe (`finetune::run`): torchvision `QuantizableMobileNetV2(width_mult=0.5,
num_classes=10)`, `_replace_relu`, x86 engine.
- float: the float model (ReLU6), eval mode.
- PTQ: eval, `fuse_model(is_qat=False)`, `prepare` with `get_default_qconfig("x86")`, 8 batches
  of 64 calibration images, `convert`.
- QAT: train mode, `fuse_model(is_qat=True)`, `prepare_qat` with
  `get_default_qat_qconfig("x86")`; SGD momentum 0.9 (no dampening, no weight decay, no
  Nesterov), cross-entropy without label smoothing, batch 64 (the last batch of an epoch is
  the 32 left over), 3 epochs, learning rate 0.001 with a per-step cosine decay
  `lr · ½(1 + cos(π · step / total_steps))`; BN statistics frozen from epoch 1
  (`freeze_bn_stats`), observers off from epoch 2 (`disable_observer`); dropout seeded.
- Evaluation: a copy in eval mode with its observers off, 100 images a batch. int8: a copy in
  eval mode, `convert`, the x86 quantized kernels.
- Size: `torch.save(state_dict)` bytes (the Rust table counts its own file formats); latency:
  median of the first 20 test images, one at a time.

Low-bit weights (`--weight-bits B`, quant range [-2^(B-1), 2^(B-1)-1] held in qint8):
- PTQ B-bit: `get_default_qconfig("x86")` with its weight observer replaced by
  `PerChannelMinMaxObserver(dtype=qint8, qscheme=per_channel_symmetric, quant_min, quant_max)`.
  `convert` clamps the integer weights to the observer's range (`_clamp_weights`), and the x86
  int8 kernels run them as they are: int8 values that happen to lie in [-8, 7].

LSQ (`--lsq`), the definition both sides follow:
- Weights: `_LearnableFakeQuantize(observer=MovingAveragePerChannelMinMaxObserver,
  quant_min=-2^(B-1), quant_max=2^(B-1)-1, dtype=qint8, qscheme=per_channel_symmetric,
  ch_axis=0, use_grad_scaling=True)`.
- Activations: `_LearnableFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0,
  quant_max=127 (x86 reduce_range), dtype=quint8, qscheme=per_tensor_affine,
  use_grad_scaling=True)`.
- Forward: fake quantization with the module's own `scale` (and `zero_point`, zeroed each
  forward when symmetric) as parameters; backward: LSQ's straight-through gradient for the
  input and the learned-step gradient for scale and zero point, multiplied by
  `1 / sqrt(numel(x) · quant_max)` (`use_grad_scaling`; numel of the whole tensor, also per
  channel).
- Schedule: epoch 0 `enable_static_estimate` (every forward runs the observer and copies its
  `calculate_qparams` into scale and zero point before fake-quantizing; no gradient to them);
  from epoch 1 `enable_param_learning` (observer off, scale and zero point trained by the same
  SGD as the weights, same learning rate). BN freeze as the main job (epoch 1);
  `disable_observer` at epoch 2 changes nothing more.
- Convert: `calculate_qparams` gives the learned scale (clamped at float32 eps) and the rounded,
  clamped zero point; the weights are quantized with them and clamped to the B-bit range.
- What PyTorch 2.5.1 needs from the user: `_LearnableFakeQuantize` holds one scale unless told
  `channel_len`, and a per-channel one fails at its first forward ("output with shape [1]
  doesn't match the broadcast shape [16]"); an eager-mode qconfig cannot know each layer's
  channel count, so each weighted module (after fusion) gets its own qconfig with
  `channel_len = out_channels` before `prepare_qat` (`set_channel_len` below). `convert` and
  the x86 int8 kernels accept the LSQ-prepared model as it is.

Control (`--plain-low-bit`): QAT at B bits with the default x86 QAT qconfig, its weight
range narrowed to [-2^(B-1), 2^(B-1)-1] (nothing learned). PyTorch 2.5.1 trains it with
one scale and converts it with another: `FusedMovingAvgObsFakeQuantize`'s fused kernel
computes a symmetric scale as max(|min| / 2^(B-1), max / (2^(B-1) - 1)) (ATen's
`ChooseQuantizationParams`), while `convert` asks the inner observer, whose
`calculate_qparams` divides by (quant_max - quant_min) / 2 = 2^(B-1) - 0.5: at 4 bits /7
against /7.5, so every converted weight is re-rounded on a 7% finer grid and its largest
values are clipped (at 8 bits /127 against /127.5, 0.4%). Known upstream
(pytorch/pytorch#180990, #194816; pytorch/ao#4824 for PT2E). The table shows the int8 model
as `convert` makes it and, as a PyTorch user would work around it, converted with the
kernel's own scale and zero-point buffers (`int8_copy(kernel_qparams=True)`). LSQ has no such
split: its scale parameter is what both training and `convert` use.

Measured (2-core AMD EPYC with AVX-512 VNNI, 2 threads): float 98.20%, PTQ int8 98.20%, QAT
fake-quant 98.20%, QAT int8 98.20%; PTQ 4-bit-weight int8 95.40%, QAT 4-bit LSQ fake-quant
98.30%, QAT 4-bit LSQ int8 98.30%; `--weight-bits 4 --lsq` takes 60 s (about 9 s a QAT epoch).
Control: QAT 4-bit plain fake-quant 98.20%, int8 95.60% as `convert` makes it, 98.30% with
the kernel's qparams. Lower (`--weight-bits 3 / 2 --lsq --plain-low-bit --no-qat8`): PTQ 82.0% /
9.5%, LSQ int8 97.4% / 93.1%, plain int8 53.8% / 13.2% (97.1% / 76.6% with the kernel's
qparams). Runs repeat bit for bit (the same `trained state sha256` in every repeat: three for
LSQ, two for the 8-bit QAT and the control).
"""

import argparse
import copy
import hashlib
import io
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.nn.intrinsic.qat import freeze_bn_stats
from torch.ao.quantization import (
    FusedMovingAvgObsFakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    convert,
    disable_observer,
    get_default_qat_qconfig,
    get_default_qconfig,
    prepare,
    prepare_qat,
)
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torchvision.models.quantization.mobilenetv2 import (
    QuantizableInvertedResidual,
    QuantizableMobileNetV2,
)
from torchvision.models.quantization.utils import _replace_relu

ENGINE = "x86"


def read_safetensors(path):
    """A float32 safetensors file as a state dict (the format is a length, a JSON header and
    raw little-endian data; the oracle venv has no `safetensors` package)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    state = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
        state[name] = torch.from_numpy(array.copy())
    return state


class Data:
    """The exported files (see examples/export_main_job_data.rs)."""

    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "meta.json")) as f:
            self.meta = json.load(f)
        self.test_x = torch.from_numpy(np.load(os.path.join(directory, "test_x.npy")))
        self.test_y = torch.from_numpy(np.load(os.path.join(directory, "test_y.npy"))).long()
        self.calib_x = torch.from_numpy(np.load(os.path.join(directory, "calib_x.npy")))
        self.weights = read_safetensors(os.path.join(directory, "weights.safetensors"))

    def epoch(self, e):
        x = os.path.join(self.dir, f"train_x_epoch{e}.npy")
        if not os.path.exists(x):
            raise SystemExit(f"error: {x} is missing: export more epochs (--epochs)")
        y = np.load(os.path.join(self.dir, f"train_y_epoch{e}.npy"))
        return torch.from_numpy(np.load(x)), torch.from_numpy(y).long()


def float_model(data):
    m = data.meta
    model = QuantizableMobileNetV2(
        num_classes=m["num_classes"],
        width_mult=m["width_mult"],
        block=QuantizableInvertedResidual,
    )
    missing, unexpected = model.load_state_dict(data.weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def weight_range(bits):
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def ptq_qconfig(bits):
    qconfig = get_default_qconfig(ENGINE)
    if bits == 8:
        return qconfig
    lo, hi = weight_range(bits)
    weight = PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=lo, quant_max=hi
    )
    return QConfig(activation=qconfig.activation, weight=weight)


def lsq_qconfig(bits, channel_len=-1):
    lo, hi = weight_range(bits)
    weight = _LearnableFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=lo,
        quant_max=hi,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        use_grad_scaling=True,
        channel_len=channel_len,
    )
    activation = _LearnableFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=127,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
        use_grad_scaling=True,
    )
    return QConfig(activation=activation, weight=weight)


def plain_low_bit_qat_qconfig(bits):
    """The default x86 QAT qconfig with the weight range narrowed (a control for LSQ)."""
    qconfig = get_default_qat_qconfig(ENGINE)
    lo, hi = weight_range(bits)
    return QConfig(activation=qconfig.activation, weight=qconfig.weight.with_args(quant_min=lo, quant_max=hi))


def set_channel_len(model, bits):
    """Gives each weighted module (a fused Conv-BN(-ReLU) or a Linear) an LSQ qconfig whose
    per-channel scale has `out_channels` entries (see the module docstring)."""
    for module in model.modules():
        base = module[0] if isinstance(module, _FusedModule) else module
        if isinstance(module, (_FusedModule, torch.nn.Conv2d, torch.nn.Linear)) and isinstance(
            base, (torch.nn.Conv2d, torch.nn.Linear)
        ):
            module.qconfig = lsq_qconfig(bits, channel_len=base.weight.shape[0])


def lsq_call(method):
    def apply(module):
        if isinstance(module, _LearnableFakeQuantize):
            getattr(module, method)()

    return apply


@torch.no_grad()
def accuracy(model, data):
    correct = 0
    for start in range(0, len(data.test_y), 100):
        logits = model(data.test_x[start:start + 100])
        correct += (logits.argmax(1) == data.test_y[start:start + 100]).sum().item()
    return correct / len(data.test_y)


@torch.no_grad()
def latency_ms(model, data, images=20):
    times = []
    for i in range(images):
        x = data.test_x[i:i + 1]
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def size_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def row(name, model, data):
    return {
        "name": name,
        "accuracy": accuracy(model, data),
        "size_bytes": size_bytes(model),
        "latency_ms": latency_ms(model, data),
    }


def eval_copy(model):
    """The model as the main job evaluates it: a copy, eval mode, observers off."""
    model = copy.deepcopy(model).eval()
    model.apply(disable_observer)
    return model


def int8_copy(model, kernel_qparams=False):
    """`convert` of an eval-mode copy. `kernel_qparams`: convert with the scales the fused
    fake-quant trained with (see `--plain-low-bit`)."""
    model = copy.deepcopy(model).eval()
    if kernel_qparams:
        for m in model.modules():
            if isinstance(m, FusedMovingAvgObsFakeQuantize):
                m.calculate_qparams = lambda m=m: (m.scale.detach().clone(), m.zero_point.detach().clone())
    convert(model, inplace=True)
    return model


def check_weight_range(model, bits):
    """Every int8 weight of a converted model lies in the B-bit range (what `convert` is asked
    for; the x86 kernels then run those int8 values as they are)."""
    lo, hi = weight_range(bits)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight):  # quantized modules hold a packed weight behind weight()
            w = weight().int_repr()
            assert lo <= w.min().item() and w.max().item() <= hi, (name, w.min(), w.max())
    return model


def post_training_quantize(data, bits):
    model = float_model(data)
    _replace_relu(model)
    model.eval()  # the new ReLUs too: fusion wants one mode
    model.fuse_model(is_qat=False)
    model.qconfig = ptq_qconfig(bits)
    prepare(model, inplace=True)
    bs, batches = data.meta["batch_size"], data.meta["calibration_batches"]
    with torch.no_grad():
        for b in range(batches):
            model(data.calib_x[b * bs:(b + 1) * bs])
    convert(model, inplace=True)
    return check_weight_range(model, bits)


def qat(data, args, mode, bits):
    """QAT from the float weights; `mode`: "default" (the main job), "lsq" or "plain"."""
    meta = data.meta
    torch.manual_seed(meta["seed"])  # dropout
    model = float_model(data)
    _replace_relu(model)
    model.train()
    model.fuse_model(is_qat=True)
    if mode == "lsq":
        model.qconfig = lsq_qconfig(bits)
        set_channel_len(model, bits)
    elif mode == "plain":
        model.qconfig = plain_low_bit_qat_qconfig(bits)
    else:
        model.qconfig = get_default_qat_qconfig(ENGINE)
    prepare_qat(model, inplace=True)
    optim = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    bs = meta["batch_size"]
    steps = math.ceil(meta["train"] / bs)
    total = max(steps * args.epochs, 1)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        if mode == "lsq":
            model.apply(lsq_call("enable_param_learning" if epoch >= args.lsq_learn_epoch else "enable_static_estimate"))
        if epoch >= meta["observer_off_epoch"]:
            model.apply(disable_observer)
        if epoch >= meta["bn_freeze_epoch"]:
            model.apply(freeze_bn_stats)
        x, y = data.epoch(epoch)
        loss_sum = 0.0
        for i in range(steps):
            step = epoch * steps + i
            for group in optim.param_groups:
                group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x[i * bs:(i + 1) * bs]), y[i * bs:(i + 1) * bs])
            if not math.isfinite(loss.item()):
                raise SystemExit(f"error: non-finite loss at epoch {epoch + 1}, batch {i + 1}")
            loss_sum += loss.item()
            optim.zero_grad()
            loss.backward()
            optim.step()
        acc = accuracy(eval_copy(model), data)
        print(
            f"  epoch {epoch + 1}/{args.epochs}: loss {loss_sum / steps:.4f}, fake-quant test "
            f"accuracy {acc * 100:.2f}% ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    return model


def digest(model):
    """SHA-256 of the model's state (every tensor's bytes, by name): equal across two runs iff
    training was bit-for-bit reproducible."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if isinstance(value, torch.Tensor):
            h.update(name.encode())
            h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def format_table(rows):
    out = "| model | test accuracy | size | latency / image |\n|---|---|---|---|\n"
    for r in rows:
        out += (
            f"| {r['name']} | {r['accuracy'] * 100:.2f}% | {r['size_bytes'] / 1e6:.2f} MB | "
            f"{r['latency_ms']:.2f} ms |\n"
        )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="directory written by examples/export_main_job_data.rs")
    p.add_argument("--weight-bits", type=int, default=8, choices=range(2, 9), metavar="B",
                   help="also PTQ with B-bit weights (and LSQ at B bits with --lsq)")
    p.add_argument("--lsq", action="store_true", help="also QAT with LSQ at --weight-bits")
    p.add_argument("--plain-low-bit", action="store_true",
                   help="also QAT at --weight-bits with the default (not learned) fake-quant")
    p.add_argument("--no-qat8", action="store_true", help="skip the 8-bit QAT rows")
    p.add_argument("--epochs", type=int, help="QAT epochs (default: the exported recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--lsq-learn-epoch", type=int, default=1,
                   help="LSQ: epoch from which scale and zero point are learned")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = ENGINE
    data = Data(args.data)
    args.epochs = args.epochs or data.meta["epochs"]
    args.lr = args.lr if args.lr is not None else data.meta["lr"]
    exported = data.meta.get("exported_epochs", data.meta["epochs"])
    if args.epochs > exported:
        raise SystemExit(
            f"error: --epochs {args.epochs}: {args.data} holds {exported} epochs of training "
            "data; export more (export_main_job_data --epochs N)"
        )
    bits = args.weight_bits
    print(
        f"PyTorch {torch.__version__}, {args.threads} threads; {data.meta['train']} train / "
        f"{data.meta['test']} test images, {args.epochs} epochs, lr {args.lr}, {ENGINE}",
        flush=True,
    )
    t0 = time.perf_counter()
    rows = [row("float", float_model(data), data)]
    rows.append(row(f"PTQ int8 ({ENGINE})", post_training_quantize(data, 8), data))
    if bits < 8:
        rows.append(row(f"PTQ {bits}-bit-weight int8 ({ENGINE})", post_training_quantize(data, bits), data))
    for line in rows:
        print(f"{line['name']}: {line['accuracy'] * 100:.2f}%", flush=True)
    runs = [] if args.no_qat8 else [("default", 8, "QAT")]
    if args.lsq:
        runs.append(("lsq", bits, f"QAT {bits}-bit LSQ"))
    if args.plain_low_bit and bits < 8:
        runs.append(("plain", bits, f"QAT {bits}-bit plain"))
    for mode, b, name in runs:
        print(f"{name}:", flush=True)
        model = qat(data, args, mode, b)
        print(f"  trained state sha256 {digest(model)}", flush=True)
        rows.append(row(f"{name} fake-quant", eval_copy(model), data))
        rows.append(row(f"{name} int8 ({ENGINE})", check_weight_range(int8_copy(model), b), data))
        if mode == "plain":
            rows.append(row(f"{name} int8, kernel qparams ({ENGINE})", int8_copy(model, True), data))
    table = format_table(rows)
    print("\n" + table)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
