#!/usr/bin/env python3
"""Inference latency of burn-qat against its peers (MobileNetV2, or with --arch resnet18,
mobilenet_v3_large or shufflenet_v2_x1_0 that model), in one run on one machine, on the same float weights: onnxruntime (float, and int8 QDQ from its own static quantization),
PyTorch (float, and eager-mode PTQ int8 for the x86 and qnnpack engines) and the crate
(`burn-qat bench`: float on Burn's flex backend, int8 on the crate's kernels with the x86 and
qnnpack arithmetic, loading PyTorch's int8 state dicts).

    /opt/torch-oracle/bin/pip install torch==2.5.1 torchvision==0.20.1 onnx onnxruntime
    /opt/torch-oracle/bin/python scripts/bench_peers.py \\
        [--arch mobilenet_v2|resnet18|mobilenet_v3_large|shufflenet_v2_x1_0] \\
        [--threads 2] [--batch 1] [--input-size 224] [--iters 20] [--warmup 3] [--rounds 3] \\
        [--crate-kernels avx2|avx512|reference] [--json-out FILE] [--work-dir DIR]

The model is torchvision's QuantizableMobileNetV2 (width 1.0, 1000 classes; the default) or
QuantizableResNet ResNet-18 (`--arch resnet18`, 1000 classes; `burn-qat --arch resnet18`), or
QuantizableMobileNetV3 large / QuantizableShuffleNetV2 x1.0 (`--arch mobilenet_v3_large` /
`shufflenet_v2_x1_0`, 1000 classes, eager PTQ as for the others), with
seeded random weights (torchvision's initialisation for the convolutions) and random batch-norm
statistics (so folding matters). Its float state dict is what
the float peers run; the int8 models are calibrated on the same seeded random batches. Every
runtime gets the same input (the crate's `bench_input`, recomputed here bit for bit), the same
thread count, warm-up and number of timed passes, in rounds that alternate the runtimes (this
machine's speed drifts by up to 2× for seconds at a time), and is reported by the median of its
rounds' medians and the minimum of all its timed passes. The crate runs as a subprocess
(`--crate-bin`, default target/release/burn-qat, built with
`cargo build --release --features cli --bin burn-qat` when missing).

Before timing, the crate's float and int8 logits (`burn-qat infer`) and onnxruntime's float
logits on the benchmark input are compared with PyTorch's, so the table compares the same
models: the maximum absolute differences are printed under the table. The crate's x86 int8 is
also compared with PyTorch's "fbgemm" engine, whose arithmetic it reproduces: on Linux CPUs
with AVX512-VNNI PyTorch's "x86" engine runs most convolutions on oneDNN instead, which rounds
rare ties the other way (one quantum on a few logits of a large batch). So is the share of the
CPUs other processes took during the timing: on a busy machine the numbers mean little.

`--crate-kernels avx2` caps the crate's int8 kernel set (`BURN_QAT_KERNELS`), which stands in
for an AVX2-only CPU; the crate reports the set that ran, printed above the table. PyTorch and
onnxruntime have no such switch (their kernels read CPUID), so they run their best kernels.

Prints the machine (CPU model, nproc), the versions and one markdown table: runtime, precision,
median ms, min ms, images/s, and the ratio of the median to the crate's int8 median of
--ref-engine (below 1: faster than the crate).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from torchvision.models.quantization import mobilenet_v2 as quantizable_mobilenet_v2
from torchvision.models.quantization import mobilenet_v3_large as quantizable_mobilenet_v3_large
from torchvision.models.quantization import resnet18 as quantizable_resnet18
from torchvision.models.quantization import shufflenet_v2_x1_0 as quantizable_shufflenet_v2_x1_0

# Known and harmless here: the default qconfigs still pass reduce_range, and torchvision's
# non-residual blocks carry a skip_add whose observer never sees data.
warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
warnings.filterwarnings("ignore", message="must run observer before calling calculate_qparams")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ENGINES = ("x86", "qnnpack")
# Per architecture: torchvision's quantizable builder, its float counterpart (what the float
# peers run), the title line, and the crate's model flags.
ARCHS = {
    "mobilenet_v2": (quantizable_mobilenet_v2, torchvision.models.mobilenet_v2,
                     "MobileNetV2 width 1.0, 1000 classes",
                     ["--width-mult", "1.0", "--num-classes", "1000"]),
    "resnet18": (quantizable_resnet18, torchvision.models.resnet18, "ResNet-18, 1000 classes",
                 ["--arch", "resnet18", "--num-classes", "1000"]),
    "mobilenet_v3_large": (quantizable_mobilenet_v3_large, torchvision.models.mobilenet_v3_large,
                           "MobileNetV3-Large, 1000 classes",
                           ["--arch", "mobilenet_v3_large", "--num-classes", "1000"]),
    "shufflenet_v2_x1_0": (quantizable_shufflenet_v2_x1_0, torchvision.models.shufflenet_v2_x1_0,
                           "ShuffleNetV2 x1.0, 1000 classes",
                           ["--arch", "shufflenet_v2_x1_0", "--num-classes", "1000"]),
}


def cpu_name():
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_snapshot():
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its children)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own


def others_cpu_share(before, after):
    """Share of the machine's CPU time between two snapshots spent by other processes."""
    wall, busy, own = (a - b for a, b in zip(after, before))
    return max(0.0, (busy - own) / (wall * os.cpu_count()))


def bench_input(batch, size):
    """burn_qat::bench::bench_input: value i is ((i * 0x9E3779B97F4A7C15 mod 2^64) >> 40) / 2^24
    * 4 - 2, in float32, so every runtime sees the crate's exact batch."""
    i = np.arange(batch * 3 * size * size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (i * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    x = (h.astype(np.float32) / np.float32(1 << 24)) * np.float32(4.0) - np.float32(2.0)
    return x.reshape(batch, 3, size, size)


def float_model(arch, seed):
    """The quantizable model of `arch`, 1000 classes: seeded weights, random BN statistics."""
    torch.manual_seed(seed)
    model = ARCHS[arch][0](weights=None, quantize=False, num_classes=1000)
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


def calibration_batches(n, size, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return [torch.rand(2, 3, size, size, generator=g) * 4.0 - 2.0 for _ in range(n)]


def pytorch_int8(float_q, engine, calib):
    """Eager PTQ as torchvision does: fuse_model, the engine's default qconfig, calibrate,
    convert. Returns the converted model (its state dict is what the crate loads)."""
    torch.backends.quantized.engine = engine
    model = copy.deepcopy(float_q).eval()
    model.fuse_model()
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.inference_mode():
        for x in calib:
            model(x)
    torch.ao.quantization.convert(model, inplace=True)
    return model


class Calibration(CalibrationDataReader):
    def __init__(self, calib):
        self.it = iter([{"input": x.numpy()} for x in calib])

    def get_next(self):
        return next(self.it, None)


def ort_int8(arch, float_onnx, work, calib):
    """onnxruntime's static quantization: pre-processing (shape inference, graph cleanup),
    then QDQ with per-channel int8 weights and uint8 activations, calibrated (MinMax) on the
    same batches as PyTorch."""
    pre = os.path.join(work, f"{arch}_float_pre.onnx")
    quant_pre_process(float_onnx, pre)
    out = os.path.join(work, f"{arch}_int8_qdq.onnx")
    quantize_static(pre, out, Calibration(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def timed(run, warmup, iters):
    """(median, min) wall time of `run()` in ms over `iters` passes after `warmup` ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def ort_session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def crate_bin(path):
    if os.path.exists(path):
        return path
    print(f"{path} missing: cargo build --release --features cli --bin burn-qat", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--release", "--features", "cli", "--bin", "burn-qat"],
        cwd=ROOT,
        check=True,
    )
    if not os.path.exists(path):
        sys.exit(f"error: {path} still missing after the build (pass --crate-bin)")
    return path


def crate_args(arch, weights, engine):
    args = ["--weights", weights, *ARCHS[arch][3]]
    return args + (["--quantized", "--engine", engine] if engine else [])


def crate_bench(binary, weights, engine, a):
    cmd = [binary, "bench", *crate_args(a.arch, weights, engine), "--input-size", str(a.input_size),
           "--batch", str(a.batch), "--threads", str(a.threads), "--warmup", str(a.warmup),
           "--iters", str(a.iters), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=crate_env(a))
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r.get("kernels"):
        CRATE_KERNELS.add(r["kernels"])
    return r["median_ms"], r["min_ms"]


# The int8 kernel sets the crate reported running (one, unless the cap is ignored).
CRATE_KERNELS = set()


def crate_env(a):
    """The crate's environment: this one, with `--crate-kernels` as `BURN_QAT_KERNELS`."""
    env = dict(os.environ)
    env.pop("BURN_QAT_KERNELS", None)
    if a.crate_kernels:
        env["BURN_QAT_KERNELS"] = a.crate_kernels
    return env


def crate_logits(binary, arch, weights, engine, x, work, env):
    """The crate's logits on `x` through `burn-qat infer` (to check it runs PyTorch's model)."""
    xin, yout = os.path.join(work, "x.npy"), os.path.join(work, "y.npy")
    np.save(xin, x)
    cmd = [binary, "infer", *crate_args(arch, weights, engine), "--input", xin, "--output", yout]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: {out.stderr.strip()}")
    return np.load(yout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="mobilenet_v2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds, alternating the runtimes; a row reports the median of "
                         "its rounds' medians and the minimum of all passes")
    ap.add_argument("--calib-batches", type=int, default=4, help="random batches of 2 images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref-engine", choices=ENGINES, default="x86",
                    help="the crate int8 row the ratio column divides by")
    ap.add_argument("--crate-bin", default=os.path.join(ROOT, "target", "release", "burn-qat"))
    ap.add_argument("--work-dir", help="keep the models here (default: a temporary directory)")
    ap.add_argument("--crate-kernels", choices=["avx2", "avx512", "reference"],
                    help="cap the crate's int8 kernel set (BURN_QAT_KERNELS); the peers are uncapped")
    ap.add_argument("--json-out", help="also write the machine, settings and rows as JSON")
    a = ap.parse_args()
    binary = crate_bin(a.crate_bin)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work_dir or tmp
        os.makedirs(work, exist_ok=True)
        run(a, binary, work)


def run(a, binary, work):
    torch.set_num_threads(a.threads)
    machine = f"{cpu_name()}, nproc {len(os.sched_getaffinity(0))}"
    x = bench_input(a.batch, a.input_size)
    xt = torch.from_numpy(x)
    calib = calibration_batches(a.calib_batches, a.input_size, a.seed)

    # (a) float weights: one state dict for every peer; the float ONNX from the same module.
    float_q = float_model(a.arch, a.seed)
    float_pth = os.path.join(work, f"{a.arch}_float.pth")
    torch.save(float_q.state_dict(), float_pth)
    float_pt = ARCHS[a.arch][1](weights=None, num_classes=1000)
    float_pt.load_state_dict(torch.load(float_pth, weights_only=True), strict=True)
    float_pt.eval()
    float_onnx = os.path.join(work, f"{a.arch}_float.onnx")
    torch.onnx.export(float_pt, xt, float_onnx, opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    onnx.checker.check_model(float_onnx)

    # (b) PyTorch eager PTQ int8 per engine; (c) onnxruntime QDQ int8.
    int8_pt, int8_pth = {}, {}
    for engine in ENGINES:
        int8_pt[engine] = pytorch_int8(float_q, engine, calib)
        int8_pth[engine] = os.path.join(work, f"{a.arch}_int8_{engine}.pth")
        torch.save(int8_pt[engine].state_dict(), int8_pth[engine])
    int8_onnx = ort_int8(a.arch, float_onnx, work, calib)

    # The crate loads the same models: its logits against PyTorch's.
    with torch.inference_mode():
        y_float = float_pt(xt).numpy()
    checks = {"burn-qat float": float(np.abs(crate_logits(binary, a.arch, float_pth, None, x, work,
                                                          crate_env(a))
                                             - y_float).max())}
    for engine in ENGINES:
        torch.backends.quantized.engine = engine
        with torch.inference_mode():
            y = int8_pt[engine](xt).numpy()
        y_crate = crate_logits(binary, a.arch, int8_pth[engine], engine, x, work, crate_env(a))
        checks[f"burn-qat int8 {engine}"] = float(np.abs(y_crate - y).max())
        if engine == "x86":
            # The crate's x86 arithmetic is fbgemm's. PyTorch's "x86" engine is fbgemm too,
            # except on Linux CPUs with AVX512-VNNI, where it hands convolutions with symmetric
            # weights and <= 100 groups to oneDNN, whose rounding differs by one quantum on rare
            # ties; so the crate is also held to PyTorch's "fbgemm" engine on the same weights.
            torch.backends.quantized.engine = "fbgemm"
            with torch.inference_mode():
                y_fbgemm = pytorch_int8(float_q, "fbgemm", calib)(xt).numpy()
            checks["burn-qat int8 x86 vs PyTorch fbgemm"] = float(np.abs(y_crate - y_fbgemm).max())
    y_ort = ort_session(float_onnx, a.threads).run(None, {"input": x})[0]
    checks["onnxruntime float"] = float(np.abs(y_ort - y_float).max())

    # (d) timing, one runtime after the other, same input, threads, warm-up and passes, with a
    # record of how much CPU other processes took meanwhile (PyTorch's OpenMP threads suffer
    # most from sharing the cores).
    cpu_before = cpu_snapshot()
    results = {}

    def add(runtime, precision, result):
        results.setdefault((runtime, precision), []).append(result)
        print(f"{runtime} {precision}: median {result[0]:.2f} ms, min {result[1]:.2f} ms",
              file=sys.stderr)

    sessions = {precision: ort_session(path, a.threads)
                for precision, path in [("float", float_onnx), ("int8 QDQ", int8_onnx)]}
    # Rounds alternate the runtimes, so a slow spell of the machine hits one round of each
    # rather than one runtime's every pass.
    for r in range(a.rounds):
        print(f"round {r + 1} of {a.rounds}", file=sys.stderr)
        add("burn-qat (flex)", "float", crate_bench(binary, float_pth, None, a))
        for engine in ENGINES:
            add("burn-qat", f"int8 {engine}", crate_bench(binary, int8_pth[engine], engine, a))
        with torch.inference_mode():
            add("PyTorch eager", "float", timed(lambda: float_pt(xt), a.warmup, a.iters))
            for engine in ENGINES:
                torch.backends.quantized.engine = engine
                add("PyTorch eager", f"int8 {engine}",
                    timed(lambda: int8_pt[engine](xt), a.warmup, a.iters))
        for precision, sess in sessions.items():
            add("onnxruntime", precision, timed(lambda: sess.run(None, {"input": x}), a.warmup,
                                                a.iters))
    rows = [{"runtime": runtime, "precision": precision,
             "median_ms": statistics.median(m for m, _ in rs), "min_ms": min(n for _, n in rs),
             "round_medians_ms": [m for m, _ in rs]}
            for (runtime, precision), rs in results.items()]

    others = others_cpu_share(cpu_before, cpu_snapshot())
    ref = next(r["median_ms"] for r in rows
               if r["runtime"] == "burn-qat" and r["precision"] == f"int8 {a.ref_engine}")
    for r in rows:
        r["images_per_s"] = a.batch * 1000.0 / r["median_ms"]
        r["ratio"] = r["median_ms"] / ref
    settings = {"arch": a.arch, "batch": a.batch, "input_size": a.input_size, "threads": a.threads,
                "warmup": a.warmup, "iters": a.iters, "rounds": a.rounds,
                "ref_engine": a.ref_engine, "crate_kernels_cap": a.crate_kernels,
                "crate_kernels_ran": sorted(CRATE_KERNELS)}
    print(f"\n{ARCHS[a.arch][2]}, {a.batch}x3x{a.input_size}x{a.input_size}, "
          f"{a.threads} threads, {a.rounds} rounds of {a.warmup} warm-up + {a.iters} timed passes "
          f"(median of the rounds' medians, min of all passes)")
    print(f"machine: {machine}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"onnxruntime {ort.__version__}; other processes used {others:.0%} of the CPUs "
          f"during the timing")
    print(f"burn-qat int8 kernels: {', '.join(sorted(CRATE_KERNELS)) or '?'}"
          + (f" (capped with BURN_QAT_KERNELS={a.crate_kernels}; PyTorch and onnxruntime uncapped)"
             if a.crate_kernels else "") + "\n")
    print(f"| runtime | precision | median ms | min ms | images/s | × burn-qat int8 "
          f"{a.ref_engine} |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['runtime']} | {r['precision']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
              f"{r['images_per_s']:.1f} | {r['ratio']:.2f} |")
    print("\nlogits vs PyTorch's of the same precision on the benchmark input, max |diff|: "
          + ", ".join(f"{k} {v:.3g}" for k, v in checks.items()))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"machine": machine, "torch": torch.__version__,
                       "onnxruntime": ort.__version__, "settings": settings,
                       "others_cpu_share": others,
                       "logit_max_abs_diff": checks, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
