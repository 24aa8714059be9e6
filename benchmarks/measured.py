"""Run one ``dynamight`` command and print its cost as one JSON line (used by ``scale.py``).

    python benchmarks/measured.py COMMAND [OPTIONS...]

Prints ``MEASURED {"rank": r, "seconds": ..., "peak_rss_mb": ..., "peak_gpu_mb": ...}`` (one line
per process when started by ``torchrun``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch

from dynamight.cli import main

if __name__ == "__main__":
    start = time.perf_counter()
    code = main(sys.argv[1:])
    record = {"rank": int(os.environ.get("RANK", "0")), "seconds": time.perf_counter() - start, "exit": code,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0}
    print("MEASURED " + json.dumps(record), flush=True)
    sys.exit(code)
