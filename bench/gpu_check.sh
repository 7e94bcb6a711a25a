#!/usr/bin/env bash
# One command on a CUDA machine (issue #11): kernel parity on the GPU (Triton vs the torch loops, fp32 and
# bf16), ~50 updates of awd_lstm_ptb, awd_qrnn_ptb, sha_rnn_enwik8, srupp_enwik8_base and rnn_lm_medium at
# their published batch size and bptt on synthetic data (fp32 and --amp: tokens/s, peak GPU memory, loss
# went down), AWD-QRNN vs cuDNN AWD-LSTM, SRU++ --recurrence-impl triton vs torch. One table on stdout,
# progress on stderr; at most ~6 minutes (--budget 330 s for the training runs, each cut at --timeout 60 s).
#   bash bench/gpu_check.sh                 # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --cpu           # dry run of the same code on a CPU (tiny models, ~4 minutes on 2 cores)
#   bash bench/gpu_check.sh --only awd_qrnn_ptb,awd_lstm_ptb --no-amp
# Exit status 1 when a parity check or a run FAILs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 420 python bench/gpu_check.py "$@"
