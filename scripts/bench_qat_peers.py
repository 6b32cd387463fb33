"""The QAT-step table of issue 9: PyTorch eager (float, QAT qnnpack, QAT x86) beside burn-qat
(`examples/bench_qat_step.rs`, flex) on the same shapes, same thread count, in one run.

Every (runtime, configuration, shape) runs in its own process, so each gets its own peak RSS,
and the rounds alternate between the runtimes so that load drifting on the machine hits both
alike. The figure per cell is the median over rounds of each process's median step time.

    cargo build --release --example bench_qat_step
    /opt/torch-oracle/bin/python scripts/bench_qat_peers.py --rounds 3 --iters 8

Prints a Markdown table (and, with --json FILE, writes every measurement).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CONFIGS = ["float", "qat_qnnpack", "qat_x86"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="128x32,32x224", help="BATCHxSIZE,...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--bin", default="target/release/examples/bench_qat_step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    runtimes = {
        "PyTorch": lambda b, s, c: [sys.executable, "scripts/bench_qat_step.py", "--batch", str(b),
                                    "--size", str(s), "--iters", str(args.iters), "--config", c],
        "burn-qat": lambda b, s, c: [args.bin, "--batch", str(b), "--size", str(s),
                                     "--iters", str(args.iters), "--config", c],
    }
    results = []
    for shape in args.shapes.split(","):
        b, s = (int(v) for v in shape.split("x"))
        for r in range(args.rounds):
            for config in CONFIGS:
                for name, cmd in runtimes.items():
                    m = run(cmd(b, s, config), args.threads)
                    m.update(runtime=name, round=r)
                    results.append(m)
                    print(f"  {name:8} {config:11} b{b} {s}x{s} round {r}: "
                          f"{m['median_ms']:.1f} ms, {m['peak_rss_mib']} MiB", file=sys.stderr)

    def cell(runtime, config, b, s):
        ms = [m for m in results if (m["runtime"], m["config"], m["batch"], m["size"]) ==
              (runtime, config, b, s)]
        return statistics.median(m["median_ms"] for m in ms), max(m["peak_rss_mib"] for m in ms)

    print(f"| shape | runtime | float step ms | QAT qnnpack ms | QAT x86 ms | QAT/float | "
          f"peak RSS MiB (float / qnnpack / x86) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for shape in args.shapes.split(","):
        b, s = (int(v) for v in shape.split("x"))
        for runtime in runtimes:
            cells = [cell(runtime, c, b, s) for c in CONFIGS]
            ratio = max(cells[1][0], cells[2][0]) / cells[0][0]
            print(f"| b{b} {s}×{s} | {runtime} | {cells[0][0]:.0f} | {cells[1][0]:.0f} | "
                  f"{cells[2][0]:.0f} | ×{ratio:.2f} | "
                  f"{' / '.join(str(c[1]) for c in cells)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
