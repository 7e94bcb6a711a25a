#!/usr/bin/env bash
# AWD-QRNN on PTB or WikiText-2: the awd-lstm-lm README recipes (REFERENCE §3.7, §6.2) as fairseq commands.
#   bash examples/awd_qrnn.sh ptb      (or wt2)
#   FROM=../shared/data/ptb bash examples/awd_qrnn.sh ptb          # prepare from local text files
#   EXTRA="--cpu --max-update 2 --nhid 32 --emsize 16" bash ...    # smoke test: appended to both trainings
#
# Published figures (awd-lstm-lm README, perplexity val / test):
#   PTB (24.02M parameters): AWD-QRNN 60.6 / 58.3 (550 epochs, 28 s/epoch on a Quadro GP100; AWD-LSTM 65 s);
#                            + finetune 59.1 / 56.7 (300 epochs); + cache pointer 53.4 / 52.6
#   WT2 (33.35M parameters): AWD-QRNN 69.3 / 66.8 (500 epochs, 90 s/epoch on a GP100; AWD-LSTM 180 s);
#                            + finetune 68.5 / 65.9; + cache pointer 53.6 / 52.1
# ("val" is main.py's validation with 10 streams, "test" its final test with 1 stream: evaluated that way below.)
#
# Reference command lines (main.py defaults: emsize 400 dropout 0.4 dropoute 0.1 alpha 2 beta 1 wdecay 1.2e-6
# lr 30 bptt 70 nonmono 5 optimizer sgd):
#   PTB: python main.py     --model QRNN --batch_size 20 --clip 0.2 --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400 \
#                           --dropouth 0.3 --seed 9001 --dropouti 0.4 --epochs 550 --save PTB.pt
#        python finetune.py <the same, with> --seed 404 --epochs 300
#        python pointer.py  --model QRNN --lambdasm 0.1 --theta 1.0 --window 500 --bptt 5000 --save PTB.pt
#   WT2: python main.py     --epochs 500 --data data/wikitext-2 --clip 0.25 --dropouti 0.4 --dropouth 0.2 --nhid 1550 \
#                           --nlayers 4 --seed 4002 --model QRNN --wdrop 0.1 --batch_size 40 --save WT2.pt
#        python finetune.py <the same arguments>
#        python pointer.py  --save WT2.pt --model QRNN --lambdasm 0.1279 --theta 0.662 --window 3785 --bptt 2000 \
#                           --data data/wikitext-2
#
# Flag mapping: --model QRNN → --arch awd_qrnn_ptb / awd_qrnn_wt2; --batch_size → --batch-size; --clip → --clip-norm;
# --epochs → --max-epoch; --wdecay → --weight-decay; --save → --save-dir; optimizer sgd + NT-ASGD →
# --optimizer nt_asgd --lr-scheduler nt_asgd; AR/TAR → --criterion split_cross_entropy --alpha 2 --beta 1;
# finetune.py → restore the best checkpoint, fresh averaging (--asgd-from-start), windows capped at bptt+10
# (--bptt-cap 80), stop when the trigger fires (--stop-min-lr 0); pointer.py → fairseq-eval-lm --pointer-*.
# Known difference: finetune.py seeds NumPy (window lengths) with a fixed 331; here --seed drives both.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?usage: $0 ptb|wt2}
case "$CORPUS" in
  ptb) PREPARE=prepare_ptb.py; CLIP=0.2; BSZ=20; TRAIN=(--seed 9001 --max-epoch 550); FINETUNE=(--seed 404 --max-epoch 300)
       POINTER=(--bptt 5000 --pointer-window 500 --pointer-theta 1.0 --pointer-lambda 0.1) ;;
  wt2) PREPARE=prepare_wikitext2.py; CLIP=0.25; BSZ=40; TRAIN=(--seed 4002 --max-epoch 500); FINETUNE=("${TRAIN[@]}")
       POINTER=(--bptt 2000 --pointer-window 3785 --pointer-theta 0.662 --pointer-lambda 0.1279) ;;
  *) echo "usage: $0 ptb|wt2" >&2; exit 2 ;;
esac
DATA=${DATA:-data-bin/$CORPUS}
SAVE=${SAVE:-checkpoints/awd_qrnn_$CORPUS}
read -r -a EXTRA <<< "${EXTRA:-}"
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch awd_qrnn_$CORPUS
  --criterion split_cross_entropy --alpha 2 --beta 1
  --optimizer nt_asgd --lr-scheduler nt_asgd --lr 30 --weight-decay 1.2e-6 --nonmono 5 --clip-norm $CLIP
  --batch-size $BSZ --bptt 70 --eval-batch-size 10 --no-epoch-checkpoints --log-interval 200)

# 1. train (main.py): SGD until the non-monotone trigger, then averaged SGD; checkpoints hold the averaged weights
fairseq-train "$DATA" "${COMMON[@]}" "${TRAIN[@]}" --save-dir "$SAVE" "${EXTRA[@]}"

# 2. finetune (finetune.py): restart averaging from the best model, windows ≤ bptt+10, stop at the next trigger
check_checkpoint "$SAVE/checkpoint_best.pt"
fairseq-train "$DATA" "${COMMON[@]}" "${FINETUNE[@]}" \
  --restore-file "$SAVE/checkpoint_best.pt" --reset-optimizer --reset-lr-scheduler --reset-dataloader --reset-meters \
  --asgd-from-start --stop-min-lr 0 --bptt-cap 80 --save-dir "$SAVE-finetune" "${EXTRA[@]}"

EVAL=(--user-dir awd_plugins --task awd_language_modeling --path "$SAVE-finetune/checkpoint_best.pt")
# 3. plain evaluation, as main.py/finetune.py report it: valid with 10 streams, test with 1
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset valid --batch-size 10 --bptt 70
fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset test --batch-size 1 --bptt 70
# 4. continuous cache pointer (pointer.py): one stream, long windows
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" "${EVAL[@]}" --gen-subset $SUBSET --batch-size 1 "${POINTER[@]}"
done
