#!/usr/bin/env bash
# AWD-QRNN on WikiText-2: the awd-lstm-lm README recipe (REFERENCE §3.7, §6.2) as fairseq commands.
#   bash examples/awd_qrnn_wt2.sh
#   FROM=../shared/data/wikitext-2 bash examples/awd_qrnn_wt2.sh    # prepare from local text files
#   EXTRA="--cpu --max-update 2 --nhid 32 --emsize 16" bash ...     # smoke test: appended to both trainings
#
# Published figures (awd-lstm-lm README, perplexity val / test; 33.35M parameters with a 33,278-word vocabulary):
#   AWD-QRNN              69.3 / 66.8   (500 epochs, 90 s/epoch on a Quadro GP100; AWD-LSTM: 180 s/epoch)
#   + finetune            68.5 / 65.9
#   + cache pointer       53.6 / 52.1
# ("val" is main.py's validation with 10 streams, "test" its final test with 1 stream: evaluated that way below.)
#
# Reference command lines (main.py defaults: emsize 400 dropout 0.4 dropoute 0.1 alpha 2 beta 1 wdecay 1.2e-6
# lr 30 bptt 70 nonmono 5 optimizer sgd); finetune.py is run with the same arguments:
#   python main.py    --epochs 500 --data data/wikitext-2 --clip 0.25 --dropouti 0.4 --dropouth 0.2 --nhid 1550 \
#                     --nlayers 4 --seed 4002 --model QRNN --wdrop 0.1 --batch_size 40 --save WT2.pt
#   python pointer.py --save WT2.pt --model QRNN --lambdasm 0.1279 --theta 0.662 --window 3785 --bptt 2000 \
#                     --data data/wikitext-2
#
# Flag mapping as in examples/awd_qrnn_ptb.sh (--model QRNN → --arch awd_qrnn_wt2, --bptt-cap 80 for finetuning).
# Known difference: finetune.py seeds NumPy (window lengths) with a fixed 331; here --seed drives both.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data-bin/wt2}
SAVE=${SAVE:-checkpoints/awd_qrnn_wt2}
read -r -a EXTRA <<< "${EXTRA:-}"
[ -d "$DATA" ] || python preprocess/prepare_wikitext2.py --out "$DATA" ${FROM:+--from "$FROM"}

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch awd_qrnn_wt2
  --emsize 400 --nhid 1550 --nlayers 4 --dropout 0.4 --dropouth 0.2 --dropouti 0.4 --dropoute 0.1 --wdrop 0.1
  --criterion split_cross_entropy --alpha 2 --beta 1
  --optimizer nt_asgd --lr-scheduler nt_asgd --lr 30 --weight-decay 1.2e-6 --nonmono 5 --clip-norm 0.25
  --batch-size 40 --bptt 70 --eval-batch-size 10 --seed 4002 --max-epoch 500
  --no-epoch-checkpoints --log-interval 200)

# 1. train (main.py): SGD until the non-monotone trigger, then averaged SGD; checkpoints hold the averaged weights
fairseq-train "$DATA" "${COMMON[@]}" --save-dir "$SAVE" "${EXTRA[@]}"

# 2. finetune (finetune.py, same arguments): restart averaging from the best model, windows ≤ bptt+10,
#    stop at the next trigger
fairseq-train "$DATA" "${COMMON[@]}" \
  --restore-file "$SAVE/checkpoint_best.pt" --reset-optimizer --reset-lr-scheduler --reset-dataloader --reset-meters \
  --asgd-from-start --stop-min-lr 0 --bptt-cap 80 --save-dir "$SAVE-finetune" "${EXTRA[@]}"

EVAL=(--user-dir awd_plugins --task awd_language_modeling --path "$SAVE-finetune/checkpoint_best.pt")
# 3. plain evaluation, as main.py/finetune.py report it: valid with 10 streams, test with 1
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset valid --batch-size 10 --bptt 70
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset test --batch-size 1 --bptt 70
# 4. continuous cache pointer (pointer.py): one stream, windows of 2000
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset $SUBSET --batch-size 1 --bptt 2000 \
    --pointer-window 3785 --pointer-theta 0.662 --pointer-lambda 0.1279
done
