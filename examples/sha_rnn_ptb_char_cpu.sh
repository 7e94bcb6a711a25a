#!/usr/bin/env bash
# A CPU-sized SHA-RNN on character-level Penn Treebank, to see the whole pipeline run in minutes:
# prepare PTB-char from word-level PTB → train (min_trust_lamb, warm-up, variable BPTT, carried state and
# attention memory) → bits per character on the test set.
#   bash examples/sha_rnn_ptb_char_cpu.sh                 (FROM=../shared/data/ptb to skip the download)
#
# The model is tiny (emsize 128, Boom 512, 2 blocks, attention in block 0: 0.46M parameters) and trains for
# 400 updates (≈ 1/6 of an epoch). Measured: valid 2.258 / test 2.228 bpc, 12.6 min wall in all (training
# 646 s, test 95 s) on a busy 2-core CPU. Far from the published PTB-char results (AWD-LSTM 3 layers:
# 1.175 test bpc; QRNN 6 layers: 1.187; REFERENCE §12). For the real recipe see sha_rnn_enwik8.sh.
set -euo pipefail
# one thread: a small LSTM is latency-bound, and two OpenMP threads on a busy 2-core machine can be 10× slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=${DATA:-data-bin/ptb-char}
SAVE=${SAVE:-checkpoints/sha_rnn_ptb_char_cpu}
[ -d "$DATA" ] || python preprocess/prepare_ptb_char.py --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling --arch sha_rnn \
  --emsize 128 --nhid 512 --nlayers 2 --dropout 0.1 --dropouth 0.1 --dropouti 0.1 \
  --criterion split_cross_entropy --alpha 0 --beta 0 \
  --optimizer min_trust_lamb --lr 2e-3 --lr-scheduler fixed --warmup-updates 100 --clip-norm 0.25 \
  --batch-size 16 --bptt 128 --bptt-cap 128 --no-lr-rescale --eval-batch-size 16 \
  --max-update 400 --seed 5512 --cpu --num-workers 0 --no-epoch-checkpoints \
  --log-format simple --log-interval 50 --save-dir "$SAVE"

fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  --path "$SAVE/checkpoint_best.pt" --gen-subset test --batch-size 16 --bptt 128 --cpu --num-workers 0
