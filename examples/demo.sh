#!/usr/bin/env bash
# The README's main command (`make demo`): prepare the bundled WikiText-2 excerpt, train a small
# AWD-LSTM for a few minutes on the CPU, evaluate it with carried state and with the cache
# pointer, and sample text. Everything goes to demo-work/ (override with DEMO_DIR=...).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DEMO_DIR:-demo-work}
MINUTES=${DEMO_MINUTES:-4}
PLUGIN=awd_plugins
mkdir -p "$WORK"
export PYTHONWARNINGS=ignore

echo "== 1/4 prepare: data/wikitext-2-small → $WORK/data-bin (fairseq-preprocess --only-source)"
python preprocess/prepare_wikitext2.py --from data/wikitext-2-small --no-verify --vocab-size 10000 \
  --out "$WORK/data-bin" --force

echo "== 2/4 train: small AWD-LSTM, NT-ASGD, about $MINUTES minutes (fairseq-train --user-dir $PLUGIN)"
rm -rf "$WORK/checkpoints"
fairseq-train "$WORK/data-bin" --user-dir $PLUGIN --task awd_language_modeling \
  --arch awd_lstm --emsize 200 --nhid 400 --nlayers 2 --dropouti 0.4 --dropouth 0.25 --dropout 0.4 \
  --criterion split_cross_entropy --alpha 2 --beta 1 \
  --optimizer nt_asgd --lr-scheduler nt_asgd --lr 30 --nonmono 1 --clip-norm 0.25 \
  --batch-size 20 --bptt 35 --seed 141 --max-epoch 6 --stop-time-hours "$(python -c "print($MINUTES/60)")" \
  --save-dir "$WORK/checkpoints" --no-epoch-checkpoints --cpu --num-workers 0 \
  --log-format simple --log-interval 100 --tensorboard-logdir "$WORK/tensorboard" 2>&1 | tee "$WORK/train.log" \
  | grep --line-buffered -E "\| (train|valid) \||NT-ASGD|done training"

CKPT="$WORK/checkpoints/checkpoint_best.pt"
eval_lm() {
  fairseq-eval-lm "$WORK/data-bin" --user-dir $PLUGIN --task awd_language_modeling --path "$CKPT" \
    --cpu --num-workers 0 "$@" 2>&1 | grep -E "Loss \(base 2\)" | sed 's/.*Loss (base 2)/Loss (base 2)/'
}
echo "== 3/4 evaluate the test split (fairseq-eval-lm, batch 1, state carried across windows)"
VALID=$(grep -E "\| valid \|" "$WORK/train.log" | tail -1 | grep -oE "ppl [0-9.]+" || true)
TEST=$(eval_lm --gen-subset test --bptt 500)
TEST_PTR=$(eval_lm --gen-subset test --bptt 500 --pointer-window 500 --pointer-theta 1.0 --pointer-lambda 0.1)

echo "== 4/4 sample (hub interface, temperature 0.9, top-k 50)"
python - "$WORK" 2>&1 <<'PY' | grep -v -E "^(INFO|WARNING):"
import sys
from awd_plugins.models.awd_lstm import AwdLstmModel
work = sys.argv[1]
lm = AwdLstmModel.from_pretrained(f"{work}/checkpoints", "checkpoint_best.pt", data_name_or_path=f"{work}/data-bin")
lm.eval()
for prompt in ["The album was", "In 1998 , the"]:
    print("  " + lm.sample(prompt, beam=1, sampling=True, sampling_topk=50, temperature=0.9, max_len_b=30))
PY

echo
echo "== results ($CKPT)"
echo "  valid (last validation of fairseq-train, 10 streams): $VALID"
echo "  test:                               $TEST"
echo "  test + cache pointer (window 500):  $TEST_PTR"
