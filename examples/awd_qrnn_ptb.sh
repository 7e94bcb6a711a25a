#!/usr/bin/env bash
# AWD-QRNN on Penn Treebank: the awd-lstm-lm README recipe (REFERENCE §3.7, §6.2) as fairseq commands.
#   bash examples/awd_qrnn_ptb.sh
#   FROM=../shared/data/ptb bash examples/awd_qrnn_ptb.sh          # prepare from local text files
#   EXTRA="--cpu --max-update 2 --nhid 32 --emsize 16" bash ...    # smoke test: appended to both trainings
#
# Published figures (awd-lstm-lm README, perplexity val / test; 24.02M parameters with a 10,000-word vocabulary):
#   AWD-QRNN              60.6 / 58.3   (550 epochs, 28 s/epoch on a Quadro GP100; AWD-LSTM: 65 s/epoch)
#   + finetune            59.1 / 56.7   (300 epochs)
#   + cache pointer       53.4 / 52.6
# ("val" is main.py's validation with 10 streams, "test" its final test with 1 stream: evaluated that way below.)
#
# Reference command lines (main.py defaults: dropout 0.4 dropoute 0.1 alpha 2 beta 1 wdecay 1.2e-6 lr 30
# bptt 70 nonmono 5 optimizer sgd):
#   python main.py     --model QRNN --batch_size 20 --clip 0.2 --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400 \
#                      --dropouth 0.3 --seed 9001 --dropouti 0.4 --epochs 550 --save PTB.pt
#   python finetune.py --model QRNN --batch_size 20 --clip 0.2 --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400 \
#                      --dropouth 0.3 --seed 404 --dropouti 0.4 --epochs 300 --save PTB.pt
#   python pointer.py  --model QRNN --lambdasm 0.1 --theta 1.0 --window 500 --bptt 5000 --save PTB.pt
#
# Flag mapping: --model QRNN → --arch awd_qrnn_ptb; --batch_size → --batch-size; --clip → --clip-norm;
# --epochs → --max-epoch; --wdecay → --weight-decay; --save → --save-dir; optimizer sgd + NT-ASGD →
# --optimizer nt_asgd --lr-scheduler nt_asgd; AR/TAR → --criterion split_cross_entropy --alpha 2 --beta 1;
# finetune.py → restore the best checkpoint, fresh averaging (--asgd-from-start), windows capped at bptt+10
# (--bptt-cap 80), stop when the trigger fires (--stop-min-lr 0); pointer.py → fairseq-eval-lm --pointer-*.
# Known difference: finetune.py seeds NumPy (window lengths) with a fixed 331; here --seed drives both.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data-bin/ptb}
SAVE=${SAVE:-checkpoints/awd_qrnn_ptb}
read -r -a EXTRA <<< "${EXTRA:-}"
[ -d "$DATA" ] || python preprocess/prepare_ptb.py --out "$DATA" ${FROM:+--from "$FROM"}

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch awd_qrnn_ptb
  --emsize 400 --nhid 1550 --nlayers 4 --dropout 0.4 --dropouth 0.3 --dropouti 0.4 --dropoute 0.1 --wdrop 0.1
  --criterion split_cross_entropy --alpha 2 --beta 1
  --optimizer nt_asgd --lr-scheduler nt_asgd --lr 30 --weight-decay 1.2e-6 --nonmono 5 --clip-norm 0.2
  --batch-size 20 --bptt 70 --eval-batch-size 10 --no-epoch-checkpoints --log-interval 200)

# 1. train (main.py): SGD until the non-monotone trigger, then averaged SGD; checkpoints hold the averaged weights
fairseq-train "$DATA" "${COMMON[@]}" --seed 9001 --max-epoch 550 --save-dir "$SAVE" "${EXTRA[@]}"

# 2. finetune (finetune.py): restart averaging from the best model, windows ≤ bptt+10, stop at the next trigger
fairseq-train "$DATA" "${COMMON[@]}" --seed 404 --max-epoch 300 \
  --restore-file "$SAVE/checkpoint_best.pt" --reset-optimizer --reset-lr-scheduler --reset-dataloader --reset-meters \
  --asgd-from-start --stop-min-lr 0 --bptt-cap 80 --save-dir "$SAVE-finetune" "${EXTRA[@]}"

EVAL=(--user-dir awd_plugins --task awd_language_modeling --path "$SAVE-finetune/checkpoint_best.pt")
# 3. plain evaluation, as main.py/finetune.py report it: valid with 10 streams, test with 1
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset valid --batch-size 10 --bptt 70
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset test --batch-size 1 --bptt 70
# 4. continuous cache pointer (pointer.py): one stream, windows of 5000
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset $SUBSET --batch-size 1 --bptt 5000 \
    --pointer-window 500 --pointer-theta 1.0 --pointer-lambda 0.1
done
