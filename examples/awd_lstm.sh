#!/usr/bin/env bash
# AWD-LSTM on PTB or WikiText-2: the awd-lstm-lm README recipes (REFERENCE §3.7) as fairseq commands.
#   bash examples/awd_lstm.sh ptb      (or wt2)
#
# Published figures (perplexity, val / test):
#   PTB  README: 61.2 / 58.8; + finetune 58.8 / 56.5; + cache pointer 53.2 / 52.5 (24.2M parameters)
#        paper:  60.0 / 57.3;                          + cache pointer 53.9 / 52.8
#   WT2  README: 68.7 / 65.6; + finetune 67.4 / 64.7; + cache pointer 52.2 / 50.6 (33.6M parameters)
#        paper:  68.6 / 65.8;                          + cache pointer 53.8 / 52.0
# Reference command lines (main.py defaults: emsize 400 nhid 1150 nlayers 3 dropout 0.4 dropouth 0.3
# dropouti 0.65 dropoute 0.1 wdrop 0.5 alpha 2 beta 1 wdecay 1.2e-6 lr 30 clip 0.25 bptt 70 nonmono 5):
#   PTB: python main.py --batch_size 20 --data data/penn --dropouti 0.4 --dropouth 0.25 --seed 141 --epoch 500 --save PTB.pt
#        python finetune.py <the same arguments>
#        python pointer.py --data data/penn --save PTB.pt --lambdasm 0.1 --theta 1.0 --window 500 --bptt 5000
#   WT2: python main.py --epochs 750 --data data/wikitext-2 --save WT2.pt --dropouth 0.2 --seed 1882
#        python finetune.py <the same arguments>
#        python pointer.py --save WT2.pt --lambdasm 0.1279 --theta 0.662 --window 3785 --bptt 2000 --data data/wikitext-2
set -euo pipefail
CORPUS=${1:?usage: $0 ptb|wt2}
case "$CORPUS" in
  ptb) PREPARE=prepare_ptb.py; ARCH=awd_lstm_ptb; BSZ=20; SEED=141; EPOCHS=500
       POINTER=(--bptt 5000 --pointer-window 500 --pointer-theta 1.0 --pointer-lambda 0.1) ;;
  wt2) PREPARE=prepare_wikitext2.py; ARCH=awd_lstm_wt2; BSZ=80; SEED=1882; EPOCHS=750
       POINTER=(--bptt 2000 --pointer-window 3785 --pointer-theta 0.662 --pointer-lambda 0.1279) ;;
  *) echo "usage: $0 ptb|wt2" >&2; exit 2 ;;
esac
DATA=${DATA:-data-bin/$CORPUS}
SAVE=${SAVE:-checkpoints/awd_lstm_$CORPUS}
# download, or give the folder of train/valid/test.txt[.gz]: FROM=../shared/data/ptb
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch $ARCH
  --criterion split_cross_entropy --alpha 2 --beta 1
  --optimizer nt_asgd --lr-scheduler nt_asgd --lr 30 --weight-decay 1.2e-6 --nonmono 5 --clip-norm 0.25
  --batch-size $BSZ --bptt 70 --eval-batch-size 10 --seed $SEED --max-epoch $EPOCHS
  --no-epoch-checkpoints --log-interval 200)

# 1. train: SGD until the non-monotone trigger, then averaged SGD (checkpoints hold the averaged weights)
fairseq-train "$DATA" "${COMMON[@]}" --save-dir "$SAVE"

# 2. finetune (finetune.py): restart averaging from the best averaged model, windows capped at
#    bptt+10; training ends when the non-monotone criterion fires again
check_checkpoint "$SAVE/checkpoint_best.pt"
fairseq-train "$DATA" "${COMMON[@]}" --asgd-from-start --stop-min-lr 0 --bptt-cap 80 \
  --restore-file "$SAVE/checkpoint_best.pt" --reset-optimizer --reset-lr-scheduler --reset-dataloader --reset-meters \
  --save-dir "$SAVE-finetune"

# 3. evaluate with batch 1 (the reference's test_batch_size), then with the continuous cache pointer
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
    --path "$SAVE-finetune/checkpoint_best.pt" --gen-subset $SUBSET --batch-size 1 --bptt 70
  fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
    --path "$SAVE-finetune/checkpoint_best.pt" --gen-subset $SUBSET --batch-size 1 "${POINTER[@]}"
done
