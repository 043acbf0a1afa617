#!/usr/bin/env bash
# Refresh requirements/lock.txt: resolve every dependency anew within pyproject.toml's ranges (the dev and
# postgres extras included), write the exact versions, then run the suite against them (`make test` from the
# new lock). Commit the lock only if the suite passes. Usage: make lock   (or scripts/lock.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install -q --upgrade pip setuptools
$pip install -q "torch==$TORCH_VERSION" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
$pip install -q -e '.[dev,postgres]'
{
  echo "# Every Python package a fresh clone installs (make setup, make setup-dev, .ci/run), at the versions the"
  echo "# suite last passed with. pyproject.toml keeps the ranges a library user needs; this is what a clone gets."
  echo "# Refreshed by \`make lock\` (scripts/lock.sh): resolves anew within the ranges, then runs the suite."
  echo "# Python $(python3 -c 'import platform; print(platform.python_version())'), $(date -u +%Y-%m-%d)."
  # not torch: the Makefile installs it first, pinned by TORCH_VERSION, from the index the user chooses
  echo "# torch: \$(TORCH_VERSION) in the Makefile, tested with $TORCH_VERSION"
  $pip freeze --all --exclude-editable | grep -v -i -E '^(instructrl|torch)==' | LC_ALL=C sort -f
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "requirements/lock.txt: $(grep -vc '^#' requirements/lock.txt) packages; running the suite against them"
rm -rf .venv
make test
