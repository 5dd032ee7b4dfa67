"""What ``ESPER_KEEP_FREED_MEMORY=1`` (:mod:`esper.allocator`) buys and costs, measured.

Each case runs in a fresh interpreter, with the variable off and on (the setting is per
process, and glibc's own state depends on what a process did before):

* ``readings``: four readings of a 784-2048-2048-10 MLP at batch 64 (blocks above glibc's
  32 MiB mmap ceiling): the pages each reading faulted in, its seconds, and the process's peak
  resident memory;
* ``fragmentation``: 20 rounds of a 64 MiB buffer allocated, written and freed while a small
  tensor made in each round is kept (the pattern that strands freed blocks between lasting
  ones): the resident memory after the loop.

Usage: ``.venv/bin/python benchmarks/kept_memory.py OUT.json`` (about 20 seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from esper.allocator import ENV
from esper.bench.harness import script_output, write_report

READINGS = """
import json, resource, time
import torch
from esper import allocator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem
kept = allocator.from_environment()
torch.manual_seed(0)
model = make_host("mlp", (784,), 10, hidden=(2048, 2048))
x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
system = NervousSystem()
system.prepare(model, x)
faults, seconds = [], []
for _ in range(4):
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    system.sense(model, x, y)
    seconds.append(time.perf_counter() - start)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"kept": kept, "faults": faults, "seconds": seconds, "peak_mib": peak}))
"""

FRAGMENTATION = """
import json
import torch
from esper import allocator
kept = allocator.from_environment()
lasting = []
for _ in range(20):
    buffer = torch.empty(16 << 20).fill_(1.0)  # 64 MiB
    lasting.append(torch.ones(4))
    del buffer
with open("/proc/self/statm") as f:
    resident = int(f.read().split()[1]) * 4096 / 2**20
print(json.dumps({"kept": kept, "resident_mib": resident}))
"""


def _run(code: str, setting: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**env, ENV: setting})  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    out, machine = script_output(__doc__.split("\n", 1)[0])
    report = {
        "what": "readings of a 784-2048-2048-10 MLP (batch 64) and a fragmenting loop of 64 MiB "
        "buffers, each in a fresh interpreter with ESPER_KEEP_FREED_MEMORY off and on",
        "readings": {s: _run(READINGS, v) for s, v in (("default", "0"), ("kept", "1"))},
        "fragmentation": {s: _run(FRAGMENTATION, v) for s, v in (("default", "0"), ("kept", "1"))},
    }
    write_report(out, machine, report)


if __name__ == "__main__":
    main()
