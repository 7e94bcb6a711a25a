#!/usr/bin/env bash
# The README's main command (`make demo`): one pipeline of awd-reproduce on the CPU, a fixed amount of work
# (the same figures on every machine, within a few percent): prepare the bundled WikiText-2 excerpt, train a
# small AWD-LSTM for 4 epochs (NT-ASGD), evaluate the test split with carried state, with the cache pointer
# and with dynamic evaluation, print the table, then sample text. Progress is shown live (one updating
# line on a terminal, a line every 15 s otherwise). Everything goes to demo-work/ (override with DEMO_DIR=...); running it again
# resumes after the last finished stage (delete the folder to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DEMO_DIR:-demo-work}
export PYTHONWARNINGS=ignore OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

python -m awd_plugins.cli.reproduce demo --work "$WORK/run"

echo
echo "== sample (hub interface, temperature 0.9, top-k 50)"
python - "$WORK/run" 2>&1 <<'PY' | grep -v -E "^(INFO|WARNING):"
import sys
from awd_plugins.models.awd_lstm import AwdLstmModel
run = sys.argv[1]
lm = AwdLstmModel.from_pretrained(f"{run}/checkpoints/train", "checkpoint_best.pt", data_name_or_path=f"{run}/data-bin")
lm.eval()
for prompt in ["The album was", "In 1998 , the"]:
    print("  " + lm.sample(prompt, beam=1, sampling=True, sampling_topk=50, temperature=0.9, max_len_b=30))
PY
