#!/usr/bin/env bash
# AWD-LSTM + Mixture of Softmaxes (Yang et al. 2018) on PTB or WikiText-2: the zihangdai/mos README
# commands as fairseq commands.
#   bash examples/awd_lstm_mos.sh ptb      (or wt2)
#
# Published figures (perplexity, test; the paper, PyTorch 0.2):
#   PTB  (21.5M parameters, "22M"): 55.97 before finetuning (as issue #15 cites it); 54.44 after (val 56.54);
#        47.69 with dynamic evaluation
#   WT2  (34.9M parameters, "35M"): 61.45 after finetuning (val 63.88); 40.68 with dynamic evaluation
# The authors' README for their PyTorch 0.4.1 code (PTB): 58.34 / 56.18 (val / test) before
# finetuning, 56.83 / 54.64 after, 49.03 / 48.43 with dynamic evaluation.
# Reference command lines (main.py defaults as AWD-LSTM's: nlayers 3 dropout 0.4 dropoute 0.1 wdrop 0.5
# alpha 2 beta 1 wdecay 1.2e-6 clip 0.25 bptt 70 nonmono 5 max_seq_len_delta 40):
#   PTB: python main.py --data data/penn --dropouti 0.4 --dropoutl 0.29 --dropouth 0.225 --seed 28 --batch_size 12
#          --lr 20.0 --epoch 1000 --nhid 960 --nhidlast 620 --emsize 280 --n_experts 15 --save PTB --single_gpu
#        python finetune.py <the same, --lr 25.0>
#   WT2: python main.py --epochs 1000 --data data/wikitext-2 --save WT2 --dropouth 0.2 --seed 1882 --n_experts 15
#          --nhid 1150 --nhidlast 650 --emsize 300 --batch_size 15 --lr 15.0 --dropoutl 0.29 --small_batch_size 5
#          --max_seq_len_delta 20 --dropouti 0.55 --single_gpu
#        python finetune.py <the same, --lr 20.0>
# --small_batch_size only splits each batch into chunks with their own state to save memory: the
# gradient is the full batch's, so it has no fairseq counterpart (and needs none). The windows are
# capped at bptt + max_seq_len_delta (--bptt-cap) in both stages, as main.py and finetune.py do.
set -euo pipefail
CORPUS=${1:?usage: $0 ptb|wt2}
case "$CORPUS" in
  ptb) PREPARE=prepare_ptb.py; ARCH=awd_lstm_mos_ptb; BSZ=12; SEED=28; LR=20; LR_FT=25; CAP=110 ;;
  wt2) PREPARE=prepare_wikitext2.py; ARCH=awd_lstm_mos_wt2; BSZ=15; SEED=1882; LR=15; LR_FT=20; CAP=90 ;;
  *) echo "usage: $0 ptb|wt2" >&2; exit 2 ;;
esac
DATA=${DATA:-data-bin/$CORPUS}
SAVE=${SAVE:-checkpoints/awd_lstm_mos_$CORPUS}
# download, or give the folder of train/valid/test.txt[.gz]: FROM=../shared/data/ptb
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch $ARCH
  --criterion split_cross_entropy --alpha 2 --beta 1
  --optimizer nt_asgd --lr-scheduler nt_asgd --weight-decay 1.2e-6 --nonmono 5 --clip-norm 0.25
  --batch-size $BSZ --bptt 70 --bptt-cap $CAP --eval-batch-size 10 --seed $SEED --max-epoch 1000
  --no-epoch-checkpoints --log-interval 200)

# 1. train: SGD until the non-monotone trigger, then averaged SGD
fairseq-train "$DATA" "${COMMON[@]}" --lr $LR --save-dir "$SAVE"

check_checkpoint "$SAVE/checkpoint_best.pt"
# 2. finetune (finetune.py): averaged SGD from the best model at the finetuning learning rate
fairseq-train "$DATA" "${COMMON[@]}" --lr $LR_FT --asgd-from-start --stop-min-lr 0 \
  --restore-file "$SAVE/checkpoint_best.pt" --reset-optimizer --reset-lr-scheduler --reset-dataloader --reset-meters \
  --save-dir "$SAVE-finetune"

# 3. evaluate with batch 1 (main.py's test_batch_size)
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
    --path "$SAVE-finetune/checkpoint_best.pt" --gen-subset $SUBSET --batch-size 1 --bptt 70
done
