#!/usr/bin/env bash
# SHA-RNN ("SHA-LSTM", Merity 2019, arXiv:1911.11423) on enwik8: the Smerity/sha-rnn README recipe
# (REFERENCE §7.6) as fairseq commands. Needs a GPU in practice (≈1800 s/epoch on a Titan V / V100).
#   bash examples/sha_rnn_enwik8.sh            (ARCH=sha_rnn_enwik8_full BSZ=8 for attention in every block)
#
# Published figures (bits per character, test):
#   attention in block 2 only (sha_rnn_enwik8, 53.8M parameters): 1.076 (paper), ≈1.08 (README), 1.077 (third party);
#     third-party validation 1.101 after epoch 14
#   attention in all 4 blocks (sha_rnn_enwik8_full, 63.3M parameters, batch 8): 1.068 (paper), ≈1.07 (README)
# fairseq-eval-lm prints "Loss (base 2)": on a byte corpus that is bits per character.
#
# Reference command lines (main.py; data/enwik8 prepared by prep_enwik8.py, REFERENCE §1.1):
#   1. python -u main.py --epochs 32 --dropouth 0.1 --dropouti 0.1 --dropout 0.1 --data data/enwik8/ --save ENWIK8.pt \
#        --log-interval 10 --seed 5512 --optimizer lamb --bptt 1024 --warmup 800 --lr 2e-3 --emsize 1024 --nhid 4096 \
#        --nlayers 4 --batch_size 16
#   2. the same line + --epochs 5 --resume ENWIK8.pt --lr 1e-3 --seed 125     (when validation stalls; last values win)
# Flag by flag: --epochs → --max-epoch; --optimizer lamb → --optimizer min_trust_lamb (min trust 0.25, weight decay
# 1.2e-6 = main.py's --wdecay default, eps 1e-6, betas 0.9/0.999); --warmup 800 → --lr-scheduler fixed
# --warmup-updates 800 (lr·min(step, 800)/800 then constant, exactly); --bptt 1024 → --bptt 1024 --bptt-cap 1024
# --no-lr-rescale (variable length capped at bptt, no lr rescale); --batch_size 16 → --batch-size 16 (streams);
# --clip 0.25 (default) → --clip-norm 0.25; the criterion (SplitCrossEntropyLoss without splits, no AR/TAR) →
# --criterion split_cross_entropy --alpha 0 --beta 0; validation batch min(100, batch_size) → --eval-batch-size
# $BSZ (16, or 8 for the all-attention run); test
# batch 8 → fairseq-eval-lm --batch-size 8; apex amp O1 → --amp; --save ENWIK8.pt → --save-dir (best = lowest
# validation loss); --resume (model weights only, fresh optimizer, warm-up again, epochs from 1) →
# --finetune-from-model CHECKPOINT (resets optimizer, lr scheduler, meters and data iterator).
set -euo pipefail
DATA=${DATA:-data-bin/enwik8}
ARCH=${ARCH:-sha_rnn_enwik8}
BSZ=${BSZ:-16}
SAVE=${SAVE:-checkpoints/$ARCH}
# downloads enwik8.zip (sha256-checked), or give it: FROM=path/to/enwik8.zip
[ -d "$DATA" ] || python preprocess/prepare_enwik8.py --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

COMMON=(--user-dir awd_plugins --task awd_language_modeling --arch $ARCH
  --criterion split_cross_entropy --alpha 0 --beta 0
  --optimizer min_trust_lamb --min-trust 0.25 --weight-decay 1.2e-6 --clip-norm 0.25
  --lr-scheduler fixed --warmup-updates 800
  --batch-size $BSZ --bptt 1024 --bptt-cap 1024 --no-lr-rescale --eval-batch-size $(( BSZ < 100 ? BSZ : 100 ))
  --amp --no-epoch-checkpoints --log-format simple --log-interval 10)

# 1. 32 epochs at lr 2e-3 after an 800-update warm-up
fairseq-train "$DATA" "${COMMON[@]}" --max-epoch 32 --lr 2e-3 --seed 5512 --save-dir "$SAVE"

# 2. when validation stalls: 5 more epochs from the best model at half the lr, with a fresh optimizer
#    and the warm-up again (the reference's --resume)
check_checkpoint "$SAVE/checkpoint_best.pt"
fairseq-train "$DATA" "${COMMON[@]}" --max-epoch 5 --lr 1e-3 --seed 125 \
  --finetune-from-model "$SAVE/checkpoint_best.pt" --save-dir "$SAVE-pass2"

# 3. test bpc with 8 streams (the reference's test batch size), state and attention memory carried
fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  --path "$SAVE-pass2/checkpoint_best.pt" --gen-subset test --batch-size 8 --bptt 1024
