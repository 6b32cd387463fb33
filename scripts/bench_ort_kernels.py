#!/usr/bin/env python3
"""onnxruntime's throughput on the convolution shapes of `benches/int8_kernels.rs`, for the
README's kernel table: each shape as one QLinearConv (uint8 input of bytes <= 127, as a
`reduce_range` model's and `BENCH_INPUT_MAX=127`; int8 weights, per-channel symmetric; int32
bias), batch 1 (or $B), $T threads (default 1), timed by onnxruntime's own profiler so that
only the convolution node counts (onnxruntime wraps a lone NCHW QLinearConv in transposes to
its NHWC kernels; those are left out). Prints G MAC/s per shape: the median and the best of the
timed passes (the first quarter dropped as warm-up).

    /opt/torch-oracle/bin/python scripts/bench_ort_kernels.py [SUBSTRING]
"""
import json
import os
import re
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def shapes():
    """(name, in channels, input size, out channels, kernel, stride, groups), read from
    `benches/int8_kernels.rs`'s SHAPES, so that the two stay one list."""
    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benches", "int8_kernels.rs")
    with open(bench) as f:
        text = f.read()
    table = text[text.index("const SHAPES"):]
    table = table[: table.index("];")]
    rows = re.findall(r'\("(\w+)", (\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\)', table)
    return [(name, *map(int, rest)) for name, *rest in rows]


def conv_model(batch, ic, size, oc, k, s, g, rng):
    w = rng.integers(-127, 128, size=(oc, ic // g, k, k)).astype(np.int8)
    arrays = {
        "xs": np.array(0.02, np.float32),
        "xz": np.array(7, np.uint8),
        "w": w,
        "ws": np.full(oc, 0.001, np.float32),
        "wz": np.zeros(oc, np.int8),
        "ys": np.array(0.05, np.float32),
        "yz": np.array(3, np.uint8),
        "b": rng.integers(-1000, 1000, size=oc).astype(np.int32),
    }
    inits = [numpy_helper.from_array(v, n) for n, v in arrays.items()]
    node = helper.make_node(
        "QLinearConv",
        ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
        ["y"],
        kernel_shape=[k, k],
        strides=[s, s],
        pads=[k // 2] * 4,
        group=g,
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [batch, ic, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    batch, threads = int(os.environ.get("B", "1")), int(os.environ.get("T", "1"))
    passes = int(os.environ.get("N", "200"))
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, batch {batch}, {threads} thread(s), {passes} passes")
    for name, ic, size, oc, k, s, g in shapes():
        if only not in name:
            continue
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.enable_profiling = True
        so.profile_file_prefix = "/tmp/bench_ort_kernels"
        model = conv_model(batch, ic, size, oc, k, s, g, rng)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = rng.integers(0, 128, size=(batch, ic, size, size)).astype(np.uint8)
        for _ in range(passes):
            sess.run(None, {"x": x})
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
        os.remove(path)
        times = [
            e["dur"]
            for e in events
            if e.get("cat") == "Node"
            and e["name"].endswith("_kernel_time")
            and "QLinearConv" in e["args"]["op_name"]
        ]
        times = times[len(times) // 4:]
        out = (size + 2 * (k // 2) - k) // s + 1
        macs = batch * oc * out * out * (ic // g) * k * k
        med, best = float(np.median(times)), float(min(times))
        print(f"{name:28s} {macs / med / 1e3:6.1f} G MAC/s (best {macs / best / 1e3:6.1f})")


if __name__ == "__main__":
    main()
