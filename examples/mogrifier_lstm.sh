#!/usr/bin/env bash
# Mogrifier LSTM (Melis, Kočiský & Blunsom 2020) on PTB or WikiText-2 with the authors' tuned
# configurations (deepmind/lamb experiment/mogrifier/config: tune_ptb_24m_lstm_fm_d2_arms/trial_483,
# tune_wikitext-2_35m_lstm_mos2_fm_d2_arms/trial_747).
#   bash examples/mogrifier_lstm.sh ptb      (or wt2)
#
# Published figures (perplexity, test, the paper's Table 1):
#   PTB  (24M parameters: 2 × 912, 5 rounds of rank 84):             50.1; 44.8 with dynamic evaluation
#   WT2  (35M: 2 × 1366, embedding 272, 6 rounds of rank 48, 2-expert MoS): 55.1; 38.6 with dynamic evaluation
#
# lamb's training, as far as fairseq's own parts express it: Adam with β1 = 0 (lamb's "rmsprop":
# β2 0.999, ε 1e-8), learning rate 0.0023 (PTB) / 0.00329 (WT2), batch 64, fixed windows of 70,
# gradient norm clipped at 10, no AR/TAR, turns of 200 updates × 1000.
# NOT reproduced here, so expect worse figures than the paper's until they are:
#   * lamb's averaging of the Adam iterates (triggered after 50 turns without improvement);
#   * its L2 penalty (2.5e-4 / 1.9e-4 on Σw²/2 of a loss summed over the 70 steps): fairseq's Adam
#     decays weights decoupled (AdamW), which is a different regularizer, so it is left out;
#   * its per-time-step (unlocked) input/inter-layer/output dropout masks (locked masks are used),
#     its 1 % chance of dropping the carried state, and its tuned evaluation softmax temperature.
set -euo pipefail
CORPUS=${1:?usage: $0 ptb|wt2}
case "$CORPUS" in
  ptb) PREPARE=prepare_ptb.py; ARCH=mogrifier_lstm_ptb; LR=0.0023 ;;
  wt2) PREPARE=prepare_wikitext2.py; ARCH=mogrifier_lstm_wt2; LR=0.00329 ;;
  *) echo "usage: $0 ptb|wt2" >&2; exit 2 ;;
esac
DATA=${DATA:-data-bin/$CORPUS}
SAVE=${SAVE:-checkpoints/mogrifier_lstm_$CORPUS}
# download, or give the folder of train/valid/test.txt[.gz]: FROM=../shared/data/ptb
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

# 1. train: 1000 turns of 200 updates
fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling --arch $ARCH \
  --criterion split_cross_entropy --alpha 0 --beta 0 \
  --optimizer adam --adam-betas "(0.0, 0.999)" --adam-eps 1e-08 --lr $LR --clip-norm 10 \
  --batch-size 64 --bptt 70 --fixed-bptt --eval-batch-size 10 --seed 1 --max-update 200000 \
  --validate-interval-updates 200 --save-interval-updates 200 --keep-interval-updates 1 \
  --no-epoch-checkpoints --log-interval 200 --save-dir "$SAVE"

# 2. evaluate with batch 1, carried state
for SUBSET in valid test; do
  fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
    --path "$SAVE/checkpoint_best.pt" --gen-subset $SUBSET --batch-size 1 --bptt 70
done
