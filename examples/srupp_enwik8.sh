#!/usr/bin/env bash
# SRU++ (Lei 2021, "When Attention Meets Fast Recurrence", arXiv:2102.12459) on enwik8: the
# asappresearch/sru 3.0.0-dev experiments/srupp_experiments README recipe (REFERENCE §8.6) as fairseq commands,
# 8 GPUs with mixed precision as published.
#   bash examples/srupp_enwik8.sh                 (SIZE=large or SIZE=large_ratio8 for a large model)
#
# Published figures (test bits per character, 400k updates, 8 GPUs):
#   base         (srupp_enwik8_base,         n_d 3072 / n_proj 768,  107.6M parameters here, "108M"): 0.974
#                (paper: 0.97)
#   large_ratio8 (srupp_enwik8_large_ratio8, n_d 6016 / n_proj 752, README table "195M"): 0.953, the released
#                checkpoint enwik8_large_ratio8.pt (no command line published: the large run's other flags)
#   large        (srupp_enwik8_large,        n_d 4096 / n_proj 1024, 190.6M here, "191M"): the README's command
#                line; no figure of its own is published (the table's 0.953 is the ratio-8 checkpoint's)
# fairseq-eval-lm prints "Loss (base 2)": on a byte corpus that is bits per character.
#
# Reference command lines (train_enwik8.py; 8 processes via torch.distributed.launch --nproc_per_node 8):
#   base:  train_enwik8.py --data enwik8 --save base_model --fp16
#   large: train_enwik8.py --data enwik8 --save large_model --n_d 4096 --n_proj 1024 --dropout 0.32 \
#            --attn_dropout 0.32 --batch_size 8 --lr 0.0004 --fp16
#   eval:  train_enwik8.py --load base_model.pt --max_iter 0 --eval_unroll_size 3072   (+ --n_d/--n_proj for large)
# Flag by flag: 8 GPUs → --distributed-world-size 8; --batch_size (per GPU) → --batch-size (streams per rank);
# --unroll_size 1024 → --bptt 1024 --fixed-bptt --no-lr-rescale; RAdam(weight_decay 0.1) → --optimizer
# radam_decoupled --weight-decay 0.1; warmup 16000 + CosineAnnealingLR(max_iter 400000) → --lr-scheduler
# srupp_cosine --warmup-updates 16000 --max-update 400000; --clip_grad 1.0 → --clip-norm 1.0; --eval_period 8000 →
# --validate-interval-updates 8000 (and saves then); --eval_batch_size 16 → --eval-batch-size 16; --seed 1234 →
# --seed 1234; --fp16 (torch.cuda.amp) → --fp16 (fp16 weights + fp32 master copy; --amp is the closer
# equivalent); the final evaluation (batch 1, --eval_unroll_size 3072, same-length attention window 3072) →
# fairseq-eval-lm --batch-size 1 --bptt 3072 (the memory is the previous 3072-byte window).
set -euo pipefail
SIZE=${SIZE:-base}
DATA=${DATA:-data-bin/enwik8}
SAVE=${SAVE:-checkpoints/srupp_enwik8_$SIZE}
# 90M / 5M / 5M bytes, one token per byte (newline = </s>); downloads enwik8.zip, or FROM=path/to/enwik8.zip
[ -d "$DATA" ] || python preprocess/prepare_enwik8.py --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

if [ "$SIZE" != base ]; then BSZ=8; LR=0.0004; else BSZ=4; LR=0.0003; fi

fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling --arch srupp_enwik8_$SIZE \
  --criterion cross_entropy \
  --optimizer radam_decoupled --weight-decay 0.1 --lr $LR --clip-norm 1.0 \
  --lr-scheduler srupp_cosine --warmup-updates 16000 --max-update 400000 \
  --batch-size $BSZ --bptt 1024 --fixed-bptt --no-lr-rescale --eval-batch-size 16 \
  --distributed-world-size 8 --fp16 --seed 1234 \
  --validate-interval 1000000 --validate-interval-updates 8000 \
  --save-interval 1000000 --save-interval-updates 8000 --keep-interval-updates 1 \
  --save-dir "$SAVE" --log-format simple --log-interval 200

# test bpc: batch 1, windows of 3072 bytes, memory = the previous window, same-length attention window 3072
fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  --path "$SAVE/checkpoint_best.pt" --gen-subset test --batch-size 1 --bptt 3072
