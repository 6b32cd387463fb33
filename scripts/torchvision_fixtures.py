"""Steps the torchvision model fixture scripts share (`gen_resnet_fixtures.py`,
`gen_mobilenet_v3_fixtures.py`, `gen_shufflenet_v2_fixtures.py`): torchvision's eager PTQ, the
three-step QAT schedule the tests replay (`pytorch_qat_steps` in tests/it/common/recipes.rs),
a converted model's quint8 logits and their arrays, and the safetensors writer."""

import os

import numpy as np
import torch
import torchvision
from safetensors.numpy import save_file

META = {"torch": torch.__version__, "torchvision": torchvision.__version__}


def save_arrays(out, path):
    """Writes `out` (name → array) to the safetensors file `path`, with the versions as metadata."""
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path, metadata=META)
    print(f"  {os.path.basename(path)}: {os.path.getsize(path)} bytes")


def ptq(build, engine, seed, calib_batches):
    """`build()`'s float model, with `engine` the quantized engine: fused for inference, prepared
    with `engine`'s default qconfig, calibrated on `calib_batches` batches of 4 × 3 × 64 × 64
    uniform in ±2 (a generator seeded `seed`), converted in place."""
    torch.backends.quantized.engine = engine
    model = build()
    model.fuse_model(is_qat=False)
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(model, inplace=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(calib_batches):
            model(torch.rand(4, 3, 64, 64, generator=g) * 4.0 - 2.0)
    torch.ao.quantization.convert(model, inplace=True)
    return model


def prepared_qat(build):
    """`build()`'s float model with the x86 engine, in training mode, fused for QAT and prepared
    with the x86 default QAT qconfig."""
    torch.backends.quantized.engine = "x86"
    model = build().train()
    model.fuse_model(is_qat=True)
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("x86")
    torch.ao.quantization.prepare_qat(model, inplace=True)
    return model


def qat_batches(g, batch, num_classes, out):
    """Three training batches from the generator `g`: images `batch` × 3 × 32 × 32 uniform in ±2
    and labels below `num_classes`, also stored as `out["batch{i}.x"]` / `["batch{i}.y"]` (i64)."""
    batches = [(torch.rand(batch, 3, 32, 32, generator=g) * 4.0 - 2.0,
                torch.randint(0, num_classes, (batch,), generator=g)) for _ in range(3)]
    for i, (bx, by) in enumerate(batches):
        out[f"batch{i}.x"] = bx.numpy()
        out[f"batch{i}.y"] = by.numpy().astype(np.int64)
    return batches


def qat_steps(model, batches, out, loss_key):
    """A QAT-prepared `model` trained as the tests replay it: fake quantization off, one SGD step
    (lr 0.01, momentum 0.9) with cross-entropy per `(x, y)` of `batches`, observers off and batch
    norms frozen from the second; step `i`'s loss in `out[loss_key(i)]` (f32). Leaves `model` in
    eval mode."""
    model.apply(torch.ao.quantization.disable_fake_quant)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step, (bx, by) in enumerate(batches):
        if step == 1:
            model.apply(torch.ao.quantization.disable_observer)
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(bx), by)
        loss.backward()
        opt.step()
        out[loss_key(step)] = np.array([loss.item()], dtype=np.float32)
    model.eval()


def quantized_logits(q, x):
    """The converted model `q`'s quint8 logits of `x` (before its DeQuantStub), checked against
    its float-out forward."""
    with torch.no_grad():
        y = q._forward_impl(q.quant(x))
        assert y.is_quantized and torch.equal(y.dequantize(), q(x))
    return y


def put_q(out, prefix, y):
    """The quint8 tensor `y` as `out[prefix]` (int64 values), `{prefix}_scale` (f64) and
    `{prefix}_zero_point` (i64): what `tests/it/common/int8_logits.rs` reads."""
    out[prefix] = y.int_repr().numpy().astype(np.int64)
    out[f"{prefix}_scale"] = np.array([y.q_scale()], dtype=np.float64)
    out[f"{prefix}_zero_point"] = np.array([y.q_zero_point()], dtype=np.int64)
