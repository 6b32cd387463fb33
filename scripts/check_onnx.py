#!/usr/bin/env python3
"""Checks an ONNX model exported by burn-qat with third-party tools: `onnx.checker` (full check,
with shape inference) and onnxruntime (CPU), against expected logits.

    /opt/torch-oracle/bin/pip install onnx onnxruntime   # once, in the oracle venv
    /opt/torch-oracle/bin/python scripts/check_onnx.py MODEL.onnx INPUT.npy EXPECTED.npy \
        [--quanta-scale S] [--expected-zero-point Z] [--max-quanta 2] [--min-within-one 0.99]

INPUT.npy is a float32 NCHW batch. EXPECTED.npy holds the expected logits: float32, or the uint8
`int_repr()` of PyTorch's quantized output (then pass --expected-zero-point; its scale is the
quantum). Differences are counted in output quanta: --quanta-scale, else the scale of the
model's last DequantizeLinear (the one producing `logits`); a float model without one needs
--quanta-scale (or --atol, an absolute tolerance, instead).

Prints the checker result, the maximum difference and how many outputs are equal / within one
quantum, and the operators onnxruntime runs after its graph optimizations (QLinearConv etc.:
whether the QDQ groups were fused). Exit code 0 only if the checker passes, every difference is
within --max-quanta and at least --min-within-one of them are within one quantum.
"""
import argparse
import collections
import os
import sys
import tempfile

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort


def output_scale(model):
    """The scale of the DequantizeLinear that produces the graph's output, if any."""
    out = model.graph.output[0].name
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and out in node.output:
            return float(onnx.numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
    return None


def fused_ops(path):
    """Operator counts of the graph onnxruntime runs (extended optimizations, CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    return collections.Counter(n.op_type for n in optimized.graph.node)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("expected")
    p.add_argument("--quanta-scale", type=float)
    p.add_argument("--expected-zero-point", type=int)
    p.add_argument("--atol", type=float)
    p.add_argument("--max-quanta", type=float, default=2.0)
    p.add_argument("--min-within-one", type=float, default=0.99)
    args = p.parse_args()

    model = onnx.load(args.model)
    ok = True
    try:
        onnx.checker.check_model(model, full_check=True)
        print(f"onnx.checker (full_check): OK  (ir_version {model.ir_version}, opset "
              f"{[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]}, "
              f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers)")
    except Exception as e:  # noqa: BLE001 - report any checker failure
        print(f"onnx.checker (full_check): FAILED: {e}")
        ok = False

    x = np.load(args.input).astype(np.float32)
    expected = np.load(args.expected)
    scale = args.quanta_scale or output_scale(model)
    if expected.dtype == np.uint8:
        if args.expected_zero_point is None or scale is None:
            sys.exit("uint8 expected values need --expected-zero-point (and a scale)")
        expected = (expected.astype(np.float64) - args.expected_zero_point) * scale
    expected = expected.astype(np.float64)

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    print(f"onnxruntime {ort.__version__}: input {inp.name} {inp.shape} {inp.type}, "
          f"output {out.name} {out.shape} {out.type}")
    (y,) = sess.run(None, {inp.name: x})
    y = y.astype(np.float64)
    if y.shape != expected.shape:
        print(f"shape mismatch: onnxruntime {y.shape}, expected {expected.shape}")
        sys.exit(1)
    diff = np.abs(y - expected)
    if scale is None and args.atol is None:
        sys.exit("no quantum: pass --quanta-scale or --atol for a float model")
    if scale is not None:
        q = diff / scale
        rounded = np.rint(q)
        n = q.size
        equal = int((rounded == 0).sum())
        within1 = int((rounded <= 1).sum())
        worst = float(rounded.max())
        hist = collections.Counter(int(v) for v in rounded.reshape(-1))
        print(f"quantum {scale:.9g}: {equal}/{n} equal, {within1}/{n} within 1 quantum "
              f"({100.0 * within1 / n:.2f}%), max {worst:g} quanta, histogram "
              f"{dict(sorted(hist.items()))}")
        if worst > args.max_quanta or within1 < args.min_within_one * n:
            print(f"FAILED: needs max <= {args.max_quanta:g} quanta and >= "
                  f"{100 * args.min_within_one:g}% within 1 quantum")
            ok = False
    if args.atol is not None:
        worst = float(diff.max())
        print(f"max abs difference {worst:.3e} (atol {args.atol:g})")
        if worst > args.atol:
            ok = False
    ops = fused_ops(args.model)
    print("onnxruntime runs: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())))
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
