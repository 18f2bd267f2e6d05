#!/usr/bin/env bash
# Install mosnas beside a torch other than the pinned 2.13.0 CPU build, as a user who already has torch would,
# and check that it works there:
#   bash scripts/install_check.sh [TORCH_SPEC]        (default TORCH_SPEC: torch==2.14.1)
# 1. a virtual environment holding TORCH_SPEC: $CHECK_VENV when set (made once, then reused), else a fresh
#    temporary one; extra pip options for torch (e.g. a CPU-only index) go in $TORCH_PIP_OPTS;
# 2. mosnas installed into it (not editable, without constraints.txt): pip must keep that torch (checked),
#    and `pip check` must find every requirement met (pyproject's torch range included);
# 3. the installed package (not the checkout) trains configs/tiny.yaml 2 steps, exports and evaluates the
#    model from another directory, with no language or corpus option: the model's record must say en-de, the
#    scored references must be German, and the config's relative paths must resolve from the config file.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SPEC=${1:-torch==2.14.1}
PY3=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
VENV=${CHECK_VENV:-$WORK/venv}
[ -x "$VENV/bin/python" ] || "$PY3" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
version() { "$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none; }
want=${SPEC#torch==}
case $(version) in
  "$want" | "$want"+*) ;;
  *) "${PIP[@]}" install ${TORCH_PIP_OPTS:-} "$SPEC" ;;
esac
before=$(version)
[ "${before%%+*}" != "2.13.0" ] || { echo "install check: torch is the pinned 2.13.0; give another TORCH_SPEC" >&2; exit 1; }
"${PIP[@]}" install "$REPO"
after=$(version)
[ "$before" = "$after" ] || { echo "install check: installing mosnas replaced torch $before with $after" >&2; exit 1; }
"${PIP[@]}" check
cd "$WORK"
MOSNAS="$VENV/bin/mosnas"
"$MOSNAS" train "$REPO/configs/tiny.yaml" out_dir=runs train.max_steps=2 --quiet
"$MOSNAS" export runs/tiny --arch smallest
"$MOSNAS" evaluate runs/tiny/export/smallest --limit 4 --quiet
"$VENV/bin/python" - <<'EOF'
import json
import mosnas
import torch

model = json.load(open("runs/tiny/export/smallest/export.json"))["provenance"]
result = json.load(open("runs/tiny/export/smallest/eval.test_2016_flickr.json"))
assert model["pair"] == result["pair"] == "en-de", (model["pair"], result["pair"])
assert result["references"].split("/")[-1].startswith("test_2016_flickr.de"), result["references"]
assert "site-packages" in mosnas.__file__, mosnas.__file__  # the installed package, not the checkout
print(f"install check: mosnas {mosnas.__version__} installed beside torch {torch.__version__}: "
      f"trained, exported ({model['pair']}) and evaluated (BLEU {result['bleu']}, chrF {result['chrf']})")
EOF
