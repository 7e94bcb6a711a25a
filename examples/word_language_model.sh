#!/usr/bin/env bash
# pytorch/examples word_language_model (REFERENCE §9) and its NVIDIA apex fp16 fork, as fairseq commands.
#   bash examples/word_language_model.sh RUN            RUN: one of the names below
#   bash examples/word_language_model.sh sample RUN     generate.py: 1000 words into generated.txt
# Environment: DATA (data-bin), SAVE (checkpoint dir), FROM (folder with train/valid/test.txt[.gz] instead
# of downloading), CELL (RNN_TANH|RNN_RELU|LSTM|GRU, the example's --model; default LSTM), EXTRA (more
# fairseq-train flags, e.g. "--cpu" or "--cpu --fp16-no-flatten-grads" for fp16 on a CPU), and for
# sampling WORDS (1000), TEMPERATURE (1.0), OUTF (generated.txt), SEED (1111).
#
# Published test perplexities (REFERENCE §12; eval batch 10; "old README" of pytorch/examples and apex):
#   RUN            reference command line                                                   corpus  test ppl
#   wt2-6          python main.py --cuda --epochs 6                                         WT2     117.61
#   wt2-6-tied     python main.py --cuda --epochs 6 --tied                                  WT2     110.44
#   wt2-40-tied    python main.py --cuda --tied                                             WT2      87.17
#   ptb-650        python main.py --cuda --emsize 650 --nhid 650 --dropout 0.5 --epochs 40   PTB      80.97
#   ptb-650-tied   ... --tied                                                               PTB      75.96
#   ptb-1500       python main.py --cuda --emsize 1500 --nhid 1500 --dropout 0.65 --epochs 40 PTB     77.42
#   ptb-1500-tied  ... --tied                                                               PTB      72.30
#   fp16-static    python main_fp16_optimizer.py --cuda --fp16 (apex; static loss scale 128) WT2     ≈90 (≈93 with scale 1)
#   fp16-dynamic   python main_fp16_optimizer.py --cuda --fp16 --dynamic-loss-scale         WT2      —
#   sample         python generate.py [--words 1000 --temperature 1.0 --outf generated.txt]
# Users' reruns (pytorch/examples#415): 142.07 / 130.32 after 6 epochs, 84.1 for 1500 tied (WT2).
# The 650/1500 figures come from when the example's default corpus was PTB; the WT2 defaults today.
#
# main.py defaults: --model LSTM --emsize 200 --nhid 200 --nlayers 2 --lr 20 --clip 0.25 --epochs 40
# --batch_size 20 --bptt 35 --dropout 0.2 --seed 1111 --log-interval 200; validation and test at batch 10.
# apex main_fp16_optimizer.py defaults differ: --emsize 1504 --nhid 1504 --batch_size 24 (multiples of 8
# for Tensor Cores) and --static-loss-scale 128.
#
# Flag mapping (README table): --model → --rnn-type; --epochs → --max-epoch; --clip → --clip-norm;
# --bptt 35 → --fixed-bptt --bptt 35 --no-lr-rescale; manual SGD → --optimizer sgd --momentum 0
# --weight-decay 0; "lr /= 4 when validation does not improve" → --lr-scheduler reduce_lr_on_plateau
# --lr-shrink 0.25 --lr-patience 0 --lr-threshold 0 (see the caveats in the README); NLL of the
# log-softmax → --criterion split_cross_entropy --alpha 0 --beta 0; --save model.pt → checkpoint_best.pt.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,3p' "$0" >&2; exit 2; }
MODE=train
if [ "${1:-}" = sample ]; then MODE=sample; shift; fi
RUN=${1:-}
[ -n "$RUN" ] || usage

EPOCHS=40; BSZ=20
case "$RUN" in
  wt2-6)         CORPUS=wt2; ARCH=rnn_lm_small;       EPOCHS=6 ;;
  wt2-6-tied)    CORPUS=wt2; ARCH=rnn_lm_small_tied;  EPOCHS=6 ;;
  wt2-40-tied)   CORPUS=wt2; ARCH=rnn_lm_small_tied ;;
  ptb-650)       CORPUS=ptb; ARCH=rnn_lm_medium ;;
  ptb-650-tied)  CORPUS=ptb; ARCH=rnn_lm_medium_tied ;;
  ptb-1500)      CORPUS=ptb; ARCH=rnn_lm_large ;;
  ptb-1500-tied) CORPUS=ptb; ARCH=rnn_lm_large_tied ;;
  fp16-static|fp16-dynamic) CORPUS=wt2; ARCH=rnn_lm_small; BSZ=24 ;;
  *) usage ;;
esac
CELL=${CELL:-LSTM}
DATA=${DATA:-data-bin/$CORPUS}
SAVE=${SAVE:-checkpoints/word_lm_$RUN}

if [ "$MODE" = sample ]; then
  # generate.py: batch-1 state, the first word drawn uniformly, then WORDS times: one step, draw the
  # next word from p^(1/T) (the example's multinomial(exp(log_softmax / T))), feed it back; 20 words
  # a line, the corpus' line separator written as <eos>.
  python - "$SAVE" "$DATA" "${WORDS:-1000}" "${TEMPERATURE:-1.0}" "${OUTF:-generated.txt}" "${SEED:-1111}" <<'PY'
import sys

import torch

from awd_plugins.models.rnn_lm import RnnLmModel

save, data, words, temperature, outf, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
if temperature < 1e-3:
    sys.exit("--temperature has to be greater or equal 1e-3")
torch.manual_seed(seed)
lm = RnnLmModel.from_pretrained(save, checkpoint_file="checkpoint_best.pt", data_name_or_path=data)
lm.eval()
model, d = lm.models[0], lm.task.dictionary
# the example's vocabulary has no <s>, <pad> or fairseq-preprocess's madeupwordNNNN padding
words_only = torch.tensor([i != d.bos() and i != d.pad() and not d[i].startswith("madeupword") for i in range(len(d))])
ids = words_only.nonzero().view(-1)
token = ids[torch.randint(len(ids), (1,))].view(1, 1)
state = {}  # fairseq incremental state: the decoder consumes one new token per call
with torch.no_grad(), open(outf, "w") as f:
    for i in range(words):
        logits, _ = model(token, incremental_state=state)
        logp = torch.log_softmax(logits[0, -1].float(), -1).masked_fill(~words_only, float("-inf"))
        token = torch.multinomial(torch.softmax(logp / temperature, -1), 1).view(1, 1)
        word = "<eos>" if token.item() == d.eos() else d[token.item()]
        f.write(word + ("\n" if i % 20 == 19 else " "))
        if i % 100 == 0:
            print(f"| Generated {i}/{words} words")
PY
  # the same from a prompt through fairseq's generator (stops at </s> or --max-len-b tokens):
  #   echo "the meaning of" | fairseq-interactive "$DATA" --user-dir awd_plugins --task awd_language_modeling \
  #     --path "$SAVE/checkpoint_best.pt" --sampling --temperature 1.0 --beam 1 --max-len-b 50 --seed 1111
  # (with a prompt, keep --temperature moderate: fairseq forces the prompt's words and the final </s>
  # with their tempered probability, and torch.multinomial fails when that underflows to 0.)
  exit 0
fi

# download, or give the folder of train/valid/test.txt[.gz]: FROM=../shared/data/ptb.
# fairseq-preprocess pads the dictionary to a multiple of 8 (--padding-factor 8, its default), as the apex
# example pads its corpus dictionary for Tensor Cores.
case "$CORPUS" in
  ptb) PREPARE=prepare_ptb.py ;;
  wt2) PREPARE=prepare_wikitext2.py ;;
esac
[ -d "$DATA" ] || python preprocess/$PREPARE --out "$DATA" ${FROM:+--from "$FROM"}
source examples/_check.sh && check_data_bin "$DATA" && note_save_dir "$SAVE"

MODEL=(--arch $ARCH --rnn-type "$CELL")
FP16=()
case "$RUN" in
  # apex sizes: 1504 = 1500 rounded up to a multiple of 8 (rnn_lm warns under --fp16 otherwise)
  fp16-static)  MODEL+=(--emsize 1504 --nhid 1504)
                FP16=(--fp16 --fp16-init-scale 128 --fp16-scale-window 1000000000 --threshold-loss-scale 128) ;;
  fp16-dynamic) MODEL+=(--emsize 1504 --nhid 1504)
                FP16=(--fp16 --fp16-init-scale 4294967296 --fp16-scale-window 1000 --threshold-loss-scale 1) ;;
esac

# train: SGD lr 20, global-norm clipping 0.25, fixed 35-token windows with the state carried, the lr
# divided by 4 after every epoch whose validation loss (batch 10) does not improve; checkpoint_best.pt is
# the example's model.pt (saved only on improvement)
fairseq-train "$DATA" --user-dir awd_plugins --task awd_language_modeling "${MODEL[@]}" \
  --criterion split_cross_entropy --alpha 0 --beta 0 \
  --optimizer sgd --momentum 0 --weight-decay 0 --lr 20 --clip-norm 0.25 \
  --lr-scheduler reduce_lr_on_plateau --lr-shrink 0.25 --lr-patience 0 --lr-threshold 0 \
  --fixed-bptt --bptt 35 --no-lr-rescale --batch-size $BSZ --eval-batch-size 10 \
  --max-epoch $EPOCHS --seed 1111 --log-interval 200 --save-dir "$SAVE" --no-epoch-checkpoints \
  "${FP16[@]}" ${EXTRA:-}

# test: the best checkpoint at the example's eval batch 10 (fairseq-eval-lm's --batch-size here), 35-token windows
fairseq-eval-lm "$DATA" --user-dir awd_plugins --task awd_language_modeling --path "$SAVE/checkpoint_best.pt" \
  --gen-subset test --batch-size 10 --bptt 35
