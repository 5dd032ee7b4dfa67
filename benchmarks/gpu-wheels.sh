#!/usr/bin/env bash
# The Python packages a lent GPU machine lacks for benchmarks/gpu-checks.sh, as wheels in .whl/
# (ignored by git, carried by the run). Run here, where pip reaches the package index; the
# versions are this checkout's .venv's, for the machine's Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
grep -qxF '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
pins=$("$py" - <<'PY'
import importlib.metadata as m
names = ("hydra-core", "omegaconf", "gymnasium", "farama-notifications")
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PY
)
antlr=$("$py" -c 'import importlib.metadata as m; print(m.version("antlr4-python3-runtime"))')
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl $pins
# hydra's antlr4 runtime is published as a source archive only: build its (pure) wheel here
"$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$antlr"
ls .whl
