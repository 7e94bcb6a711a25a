#!/usr/bin/env bash
# SRU++ (Lei 2021, arXiv:2102.12459) on the One Billion Word benchmark: the asappresearch/sru 3.0.0-dev
# experiments/srupp_experiments README recipe (REFERENCE §8.6) as fairseq commands, 8 GPUs, mixed precision.
#   bash examples/srupp_lm1b.sh                   (SIZE=large_k5 for the large model)
#
# Published figures (test perplexity, 800k updates, 8 GPUs):
#   base     (srupp_lm1b_base,     n_d 4096 / n_proj 1024, 327.5M parameters here, "328M"): 25.1
#   large_k5 (srupp_lm1b_large_k5, n_d 7616 / n_proj 1024, attention in 2 of 10 layers, 464.5M here, "465M"): 23.5
# (the reference's "test" is heldout-00000, the same file as its validation set; so is ours)
#
# Reference command lines (train_lm1b.py; 8 processes via torch.distributed.launch --nproc_per_node 8):
#   base:  train_lm1b.py --data lm1b_datadir --save base_model --fp16
#   large: train_lm1b.py --data lm1b_datadir --save large_model --n_d 7616 --dropout 0.1 --attn_every_n_layers 5 \
#            --batch_size 192 --fp16
#   eval:  train_lm1b.py --load base_model.pt --max_iter 0 --eval_unroll_size 96   (+ --n_d 7616
#            --attn_every_n_layers 5 for large)
# Flag by flag: as examples/srupp_enwik8.sh, plus: the vocabulary (prepare_corpus.py: 1b_word_vocab.txt) →
# preprocess/prepare_lm1b.py, which saves it and binarizes with --srcdict; adaptive input/softmax (cutoffs
# 59998,159998, embeddings tied, projections not) → in the named architecture; loss → --criterion
# split_cross_entropy --alpha 0 --beta 0 with --ddp-backend legacy_ddp (fp32 sum; not fairseq's adaptive_loss, whose
# fp16 sum overflows under --fp16: see examples/srupp_wt103.sh); --batch_size 128 (large 192) →
# --batch-size; --unroll_size 64 → --bptt 64; --eval_batch_size 8 → --eval-batch-size 8; --max_iter 800000 →
# --max-update 800000; --lr 0.0002 → --lr 0.0002. The reference reshuffles the sentences at every pass; here the
# shuffled order is drawn once by prepare_lm1b.py.
# Out of memory: the README's --batch_size 96 --update_param_freq 2 → --batch-size 96 --update-freq 2.
set -euo pipefail
SIZE=${SIZE:-base}
DATA=${DATA:-data-bin/lm1b}
SAVE=${SAVE:-checkpoints/srupp_lm1b_$SIZE}
# downloads the benchmark and 1b_word_vocab.txt, or FROM=directory with the unpacked benchmark (+ the vocabulary)
[ -d "$DATA" ] || python preprocess/prepare_lm1b.py --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

if [ "$SIZE" = base ]; then BSZ=128; else BSZ=192; fi

fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling --arch srupp_lm1b_$SIZE \
  --criterion split_cross_entropy --alpha 0 --beta 0 --ddp-backend legacy_ddp \
  --optimizer radam_decoupled --weight-decay 0.1 --lr 0.0002 --clip-norm 1.0 \
  --lr-scheduler srupp_cosine --warmup-updates 16000 --max-update 800000 \
  --batch-size $BSZ --bptt 64 --fixed-bptt --no-lr-rescale --eval-batch-size 8 \
  --distributed-world-size 8 --fp16 --seed 1234 \
  --validate-interval 1000000 --validate-interval-updates 8000 \
  --save-interval 1000000 --save-interval-updates 8000 --keep-interval-updates 1 \
  --save-dir "$SAVE" --log-format simple --log-interval 200

# test perplexity: batch 1, windows of 96 tokens, memory = the previous window, attention window 96
fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  --path "$SAVE/checkpoint_best.pt" --gen-subset test --batch-size 1 --bptt 96
