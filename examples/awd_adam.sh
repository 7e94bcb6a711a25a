#!/usr/bin/env bash
# The Adam runs of awd-lstm-lm (multi-scale paper, Merity et al. 2018, arXiv:1803.08240) as fairseq commands:
#   bash examples/awd_adam.sh enwik8      AWD-LSTM, 3 layers, byte-level enwik8
#   bash examples/awd_adam.sh ptb-char    AWD-LSTM, 3 layers, character-level PTB
#   bash examples/awd_adam.sh wt103       AWD-QRNN, 4 layers, WikiText-103 ("12hr" run)
#
# Published figures (test; REFERENCE §12):
#   enwik8   1.232 bpc   (47M parameters, 50 epochs, ≈ 2 days on one GPU)
#   ptb-char 1.175 bpc   (13.8M parameters, 500 epochs)
#   wt103    val 32.0 / test 33.0 ppl   (153.9M parameters, 14 epochs, ≈ 12 hours on one GPU)
# fairseq-eval-lm prints "Loss (base 2)": on byte/character corpora that is the bits per character.
#
# Reference command lines (main.py, REFERENCE §3.7):
#   enwik8:   --epochs 50 --nlayers 3 --emsize 400 --nhid 1840 --alpha 0 --beta 0 --dropoute 0 --dropouth 0.1
#             --dropouti 0.1 --dropout 0.4 --wdrop 0.2 --wdecay 1.2e-6 --bptt 200 --batch_size 128
#             --optimizer adam --lr 1e-3 --data data/enwik8 --save ENWIK8.pt --when 25 35
#   ptb-char: --epochs 500 --nlayers 3 --emsize 200 --nhid 1000 --alpha 0 --beta 0 --dropoute 0 --dropouth 0.25
#             --dropouti 0.1 --dropout 0.1 --wdrop 0.5 --wdecay 1.2e-6 --bptt 150 --batch_size 128
#             --optimizer adam --lr 2e-3 --data data/pennchar --save PTBC.pt --when 300 400
#   wt103:    --epochs 14 --nlayers 4 --emsize 400 --nhid 2500 --alpha 0 --beta 0 --dropoute 0 --dropouth 0.1
#             --dropouti 0.1 --dropout 0.1 --wdrop 0 --wdecay 0 --bptt 140 --batch_size 60
#             --optimizer adam --lr 1e-3 --data data/wikitext-103 --save WT103.12hr.QRNN.pt --when 12 --model QRNN
# Flag by flag: the model sizes and dropouts are the named architectures awd_lstm_enwik8, awd_lstm_ptb_char,
# awd_qrnn_wt103; --optimizer adam (torch.optim.Adam, L2 weight decay added to the gradient) → --optimizer
# adam_l2 --weight-decay W (fairseq's adam decays decoupled, a different optimiser); --when 25 35 (lr ÷ 10 after
# those epochs) → --lr-scheduler awd_when --when 25,35; the variable BPTT with lr ∝ seq_len/bptt, the clip 0.25,
# validation batch 10 and test batch 1 are main.py's defaults, as in examples/awd_lstm.sh. No NT-ASGD, no
# finetuning, no pointer in these runs.
set -euo pipefail
RUN=${1:?usage: $0 enwik8|ptb-char|wt103}
case "$RUN" in
  enwik8)   PREPARE=prepare_enwik8.py;     ARCH=awd_lstm_enwik8;   EPOCHS=50;  WHEN=25,35
            LR=1e-3; WD=1.2e-6; BPTT=200; BSZ=128 ;;
  ptb-char) PREPARE=prepare_ptb_char.py;   ARCH=awd_lstm_ptb_char; EPOCHS=500; WHEN=300,400
            LR=2e-3; WD=1.2e-6; BPTT=150; BSZ=128 ;;
  wt103)    PREPARE=prepare_wikitext103.py; ARCH=awd_qrnn_wt103;   EPOCHS=14;  WHEN=12
            LR=1e-3; WD=0;      BPTT=140; BSZ=60 ;;
  *) echo "usage: $0 enwik8|ptb-char|wt103" >&2; exit 2 ;;
esac
DATA=${DATA:-data-bin/$RUN}
SAVE=${SAVE:-checkpoints/awd_adam_$RUN}
SEED=${SEED:-1111}  # main.py's default seed (the published commands give none)
# downloads, or give the source: FROM=path/to/enwik8.zip, FROM=../shared/data/ptb (ptb-char), ...
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}

# 1. train: Adam with coupled L2, lr ÷ 10 after each --when epoch; checkpoint_best.pt = best validation
fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling --arch $ARCH \
  --criterion split_cross_entropy --alpha 0 --beta 0 \
  --optimizer adam_l2 --weight-decay $WD --lr $LR --lr-scheduler awd_when --when $WHEN --clip-norm 0.25 \
  --batch-size $BSZ --bptt $BPTT --eval-batch-size 10 --seed $SEED --max-epoch $EPOCHS \
  --no-epoch-checkpoints --log-format simple --log-interval 200 --save-dir "$SAVE"

# 2. test with batch 1 (the reference's test_batch_size), state carried across windows
fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  --path "$SAVE/checkpoint_best.pt" --gen-subset test --batch-size 1 --bptt $BPTT
