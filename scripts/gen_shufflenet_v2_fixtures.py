#!/usr/bin/env python3
"""Generates tests/fixtures/shufflenet_v2/: torchvision's quantizable ShuffleNetV2
(`torchvision.models.quantization.shufflenetv2.QuantizableShuffleNetV2`) in float, fused, int8
and QAT, and the quantized `x.mean([2, 3])` it pools with, for tests/it/shufflenet_v2.rs.

Environment (the pins the fixtures were generated with):

    python3 -m venv /opt/torch-oracle
    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 numpy safetensors

Run from the repository root (no network: weights are random, never downloaded):

    /opt/torch-oracle/bin/python scripts/gen_shufflenet_v2_fixtures.py
    /opt/torch-oracle/bin/python scripts/gen_shufflenet_v2_fixtures.py --full DIR  # x1.0, not committed

The model is torchvision's own class, unchanged, at a small size: stages_repeats [2, 1, 2]
(stride-1 blocks, whose channel split sends quantized cat down its general path, in stages 2
and 4), stages_out_channels [8, 16, 32, 64, 128], 32 classes, `_replace_relu` applied as
torchvision's builder does. Its initialisation is PyTorch's default (torchvision's), then
random BN affine parameters and running statistics and a random classifier
(`gen_int8_model_fixtures.randomize`), so BN folding matters.

Files:
  model.pth                 the float state_dict() (torchvision's float key names), torch.save
  model.safetensors         input [2, 3, 64, 48] and small [1, 3, 32, 32] (stage 4 at 1×1, where
                            PyTorch's channel slice is channels-last contiguous and cat takes its
                            fast path), uniform in [-2, 2]; logits (float, eval); fused_logits
                            (eval, fuse_model(), BN folded); for each engine E in fbgemm and
                            qnnpack and each input I in input, small (small on qnnpack only:
                            PyTorch 2.5.1's x86 quantized mean raises "required rank 4 tensor
                            to use channels_last format" on a 1×1 conv output, checked here):
                            q_E_I (uint8 int_repr of
                            the quantized logits before the DeQuantStub, as int64), q_E_I_scale,
                            q_E_I_zero_point
  model_<E>.pth             the converted model's state_dict() (E's default PTQ qconfig),
                            calibrated on 3 seeded batches of 4 × 3 × 64 × 64 in [-2, 2]
  mean.safetensors          quantized `x.mean([2, 3])`, both engines, NCHW and channels-last
                            inputs; cases `mean.<case>`: x (uint8 int_repr, NCHW order),
                            scale, zero_point; y_<E>_<layout> (uint8 int_repr)
  split_cat.safetensors     the stride-1 block's cat of a channel slice (its input's qparams)
                            and a channels-last tensor (other qparams), `quantized.cat`, on
                            qparams where PyTorch's two cat paths differ; cases
                            `split_cat.<case>`: x (the unsplit input), b, qparams / zero_points
                            (x's, b's, the output's), y, y_fast_path (see gen_split_cat)
  qat.safetensors           QAT, as tests/it/resnet.rs's: three seeded batches (batch{i}.x
                            [4, 3, 32, 32], batch{i}.y); the model from model.pth, train(),
                            fuse_model(is_qat=True), prepare_qat (x86 QAT qconfig), fake quant off,
                            three SGD steps (lr 0.01, momentum 0.9, cross-entropy; observers off
                            and BN frozen after the first); loss{i}; eval(), convert under
                            fbgemm; q / q_scale / q_zero_point: uint8 logits on model's input.
                            Per layer with fake quant ON (a fresh prepared model, train(), one
                            forward of layer.input [2, 3, 32, 32]): layer.<name>.in / .out for conv1 (fused
                            ConvBnReLU2d), stage2.0 (stride 2), stage2.1 (stride 1), its cat
                            (in0, in1 and out), conv5 and fc (fc.in is the pooled features),
                            and layer.<name>.scale / .zero_point of its output fake-quant.

Deterministic: fixed seeds, one intra-op thread.
"""
import os

import numpy as np
import torch
import torchvision
from gen_functional_int8_fixtures import sensitive_qparams  # this folder
from gen_int8_fixtures import nhwc, qu8
from gen_int8_model_fixtures import randomize  # this folder: the same random weights
import torchvision_fixtures  # this folder: the steps the model fixture scripts share
from torchvision_fixtures import ptq, put_q, qat_batches, qat_steps, quantized_logits, save_arrays
from torchvision.models.quantization.shufflenetv2 import QuantizableShuffleNetV2
from torchvision.models.quantization.utils import _replace_relu

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert torchvision.__version__.startswith("0.20.1"), torchvision.__version__
torch.set_num_threads(1)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "shufflenet_v2")
NUM_CLASSES = 32
REPEATS = [2, 1, 2]
CHANNELS = [8, 16, 32, 64, 128]
SEED = 0


def build_float():
    torch.manual_seed(SEED)
    model = QuantizableShuffleNetV2(REPEATS, CHANNELS, num_classes=NUM_CLASSES)
    _replace_relu(model)
    return randomize(model).eval()


def save(out, name):
    save_arrays(out, os.path.join(OUT, name))


def gen_model(inputs):
    model = build_float()
    torch.save(model.state_dict(), os.path.join(OUT, "model.pth"))
    out = {k: x.numpy() for k, x in inputs.items()}
    with torch.no_grad():
        out["logits"] = model(inputs["input"]).numpy()
        model.fuse_model(is_qat=False)
        out["fused_logits"] = model(inputs["input"]).numpy()
    for engine in ["fbgemm", "qnnpack"]:
        q = ptq(build_float, engine, SEED + 1, 3)
        torch.save(q.state_dict(), os.path.join(OUT, f"model_{engine}.pth"))
        for name, x in inputs.items():
            if engine == "fbgemm" and name == "small":
                # PyTorch 2.5.1 flaw: on x86 the quantized mean of a 1×1 channels-last conv
                # output takes the NCHW fast path and allocates a channels-last [N, C] result.
                try:
                    q(x)
                    raise AssertionError("fbgemm's 1×1 mean ran; record it")
                except RuntimeError as e:
                    assert "channels_last" in str(e), e
                continue
            put_q(out, f"q_{engine}_{name}", quantized_logits(q, x))
    save(out, "model.safetensors")


def gen_mean():
    """Quantized mean over H, W: 2×2 (ties), 7×7 and 9×9 (PyTorch's cascade sum), odd sizes."""
    g = torch.Generator().manual_seed(SEED + 7)
    out, cases = {}, []
    for i, (shape, scale, zp) in enumerate([([2, 40, 2, 2], 0.0123, 7), ([2, 24, 7, 7], 0.05, 128),
                                            ([1, 20, 9, 9], 0.2, 0), ([3, 5, 3, 5], 0.031, 255)]):
        x = torch.rand(*shape, generator=g) * 6.0 - 1.0
        q = torch.quantize_per_tensor(x, scale, zp, torch.quint8)
        case = f"mean.{i}"
        cases.append(case)
        out[f"{case}.x"] = q.int_repr().numpy()
        out[f"{case}.scale"] = np.array([scale], dtype=np.float64)
        out[f"{case}.zero_point"] = np.array([zp], dtype=np.int64)
        for engine in ["fbgemm", "qnnpack"]:
            torch.backends.quantized.engine = engine
            for layout, t in [("nchw", q.contiguous()), ("nhwc", q.contiguous(memory_format=torch.channels_last))]:
                y = t.mean([2, 3])
                assert y.q_scale() == q.q_scale() and y.q_zero_point() == zp
                out[f"{case}.y_{engine}_{layout}"] = y.int_repr().numpy()
        a, b = out[f"{case}.y_fbgemm_nhwc"], out[f"{case}.y_fbgemm_nchw"]
        print(f"{case} {shape}: fbgemm NHWC vs NCHW differ in {(a != b).sum()} of {a.size}")
    out["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8)
    save(out, "mean.safetensors")


def gen_split_cat():
    """The stride-1 block's join on its own: `quantized.cat([x1, b], 1)` with `x1, _ =
    x.chunk(2, dim=1)` a slice (PyTorch: general path, unless the slice is channels-last
    contiguous, as [1, C, 1, 1] is) and `b` a channels-last conv-like output. The slice's
    qparams are ones for which the fast path's fma dequantize gives other bytes (y_fast_path:
    the same cat on a channels-last copy of x1, to show the paths differ)."""
    g = torch.Generator().manual_seed(SEED + 9)
    rng = np.random.default_rng(SEED + 9)
    out, cases = {}, []
    for name, (n, c, h, w) in [("batch2", (2, 16, 6, 5)), ("batch1", (1, 16, 6, 5)),
                               ("one_by_one", (1, 16, 1, 1))]:
        (s0, z0), (so, zo) = sensitive_qparams(rng)
        sb, zb = float(np.float32(np.exp(rng.uniform(-6, 0)))), int(rng.integers(0, 256))
        numel = n * c * h * w
        x = qu8(((torch.arange(numel) * 7) % 256).reshape(n, c, h, w), s0, z0)  # every byte
        b = nhwc(qu8(torch.randint(0, 256, (n, c // 2, h, w), generator=g), sb, zb))
        x1, _ = x.chunk(2, dim=1)
        y = torch.ops.quantized.cat([x1, b], dim=1, scale=so, zero_point=zo)
        fast = torch.ops.quantized.cat([nhwc(x1), b], dim=1, scale=so, zero_point=zo)
        case = f"split_cat.{name}"
        cases.append(case)
        out[f"{case}.x"] = x.int_repr().numpy()
        out[f"{case}.b"] = b.int_repr().contiguous().numpy()
        out[f"{case}.qparams"] = np.array([s0, sb, so], dtype=np.float32)
        out[f"{case}.zero_points"] = np.array([z0, zb, zo], dtype=np.int64)
        out[f"{case}.y"] = y.int_repr().contiguous().numpy()
        out[f"{case}.y_fast_path"] = fast.int_repr().contiguous().numpy()
        differ = (out[f"{case}.y"] != out[f"{case}.y_fast_path"]).sum()
        print(f"{case}: x1 channels-last contiguous {x1.is_contiguous(memory_format=torch.channels_last)}, "
              f"general vs fast path differ in {differ} of {y.numel()}")
    out["cases"] = np.frombuffer(",".join(cases).encode(), dtype=np.uint8)
    save(out, "split_cat.safetensors")


def prepared_qat():
    return torchvision_fixtures.prepared_qat(build_float)


def record_layers(batch, out):
    """One fake-quant-on training forward; each listed layer's input, output and output qparams."""
    model = prepared_qat()
    layers = {"conv1": model.conv1, "stage2.0": model.stage2[0], "stage2.1": model.stage2[1],
              "conv5": model.conv5, "fc": model.fc}
    seen = {}

    def hook(name):
        def f(_, args, y):
            seen[name] = (args[0].detach().clone(), y.detach().clone())
        return f

    for name, m in layers.items():
        m.register_forward_hook(hook(name))
    ff = model.stage2[1].cat
    plain_cat = ff.cat

    def cat(xs, dim=0):
        y = plain_cat(xs, dim=dim)
        seen["stage2.1.cat"] = ([x.detach().clone() for x in xs], y.detach().clone())
        return y

    ff.cat = cat
    model(batch)
    fake_quants = {"conv1": model.conv1[0].activation_post_process,
                   "stage2.0": model.stage2[0].cat.activation_post_process,
                   "stage2.1": model.stage2[1].cat.activation_post_process,
                   "stage2.1.cat": model.stage2[1].cat.activation_post_process,
                   "conv5": model.conv5[0].activation_post_process,
                   "fc": model.fc.activation_post_process}
    for name, (x, y) in seen.items():
        if isinstance(x, list):
            for i, xi in enumerate(x):
                out[f"layer.{name}.in{i}"] = xi.numpy()
        else:
            out[f"layer.{name}.in"] = x.numpy()
        out[f"layer.{name}.out"] = y.numpy()
        fq = fake_quants[name]
        out[f"layer.{name}.scale"] = fq.scale.detach().numpy().astype(np.float32)
        out[f"layer.{name}.zero_point"] = fq.zero_point.detach().numpy().astype(np.int64)
    print("per-layer records:", sorted(seen))


def gen_qat(x):
    g = torch.Generator().manual_seed(SEED + 100)
    out = {}
    batches = qat_batches(g, 4, NUM_CLASSES, out)
    out["layer.input"] = (torch.rand(2, 3, 32, 32, generator=g) * 4.0 - 2.0).numpy()
    record_layers(torch.from_numpy(out["layer.input"]), out)
    model = prepared_qat()
    qat_steps(model, batches, out, lambda step: f"loss{step}")
    torch.backends.quantized.engine = "fbgemm"
    q = torch.ao.quantization.convert(model, inplace=False)
    put_q(out, "q", quantized_logits(q, x))
    print("QAT losses", [float(out[f"loss{s}"][0]) for s in range(3)])
    save(out, "qat.safetensors")


def gen_full(out_dir):
    """Full-size x1.0 (not committed, 10 MB): random weights as above, PTQ on both engines
    (calibrated on 2 seeded batches of 2 × 3 × 224 × 224), an input [2, 3, 224, 224]; for the
    ignored test `full_size_x1_0_matches_pytorch` (BURN_QAT_SHUFFLENET_FULL=DIR)."""
    global REPEATS, CHANNELS, NUM_CLASSES
    REPEATS, CHANNELS, NUM_CLASSES = [4, 8, 4], [24, 116, 232, 464, 1024], 1000
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(SEED + 3)
    x = torch.rand(2, 3, 224, 224, generator=g) * 4.0 - 2.0
    model = build_float()
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pth"))
    out = {"input": x.numpy()}
    with torch.no_grad():
        out["logits"] = model(x).numpy()
    for engine in ["fbgemm", "qnnpack"]:
        torch.backends.quantized.engine = engine
        q = build_float()
        q.fuse_model(is_qat=False)
        q.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.prepare(q, inplace=True)
        with torch.no_grad():
            for _ in range(2):
                q(torch.rand(2, 3, 224, 224, generator=g) * 4.0 - 2.0)
        torch.ao.quantization.convert(q, inplace=True)
        torch.save(q.state_dict(), os.path.join(out_dir, f"model_{engine}.pth"))
        put_q(out, f"q_{engine}", quantized_logits(q, x))
    save_arrays(out, os.path.join(out_dir, "model.safetensors"))
    print(f"full-size x1.0 in {out_dir}")


def main():
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        return gen_full(sys.argv[2])
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    inputs = {"input": torch.rand(2, 3, 64, 48, generator=g) * 4.0 - 2.0,
              "small": torch.rand(1, 3, 32, 32, generator=g) * 4.0 - 2.0}
    gen_model(inputs)
    gen_mean()
    gen_split_cat()
    gen_qat(inputs["input"])
    for f in sorted(os.listdir(OUT)):
        print(f"{f}: {os.path.getsize(os.path.join(OUT, f))} bytes")


if __name__ == "__main__":
    main()
