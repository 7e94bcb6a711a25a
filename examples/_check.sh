# Input checks for the recipe scripts (sourced from the repository root: `source examples/_check.sh`).
#
# fairseq-train does not stop on a missing input: a --restore-file that does not exist trains from
# scratch with exit status 0, and a --save-dir that holds checkpoint_last.pt silently resumes that
# run. A recipe therefore checks what it needs before each long step, and stops with one line:
#   check_data_bin DIR         DIR holds a complete data-bin (dict.txt, {train,valid,test}.{bin,idx})
#   check_checkpoint FILE      FILE exists and is not empty (the checkpoint a step starts from)
#   note_save_dir DIR          says so when fairseq-train will resume the run already in DIR

_check_fail() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

check_data_bin() {
  local dir=$1 name
  [ -d "$dir" ] || _check_fail "data-bin $dir not found (prepare it with preprocess/prepare_*.py, or set DATA=)"
  for name in dict.txt train.bin train.idx valid.bin valid.idx test.bin test.idx; do
    [ -s "$dir/$name" ] || _check_fail "$dir is not a complete data-bin: $name is missing or empty (prepare it with preprocess/prepare_*.py, or set DATA=)"
  done
}

check_checkpoint() {
  [ -s "$1" ] || _check_fail "checkpoint $1 not found or empty: the step that writes it did not finish (fairseq-train would silently start from scratch)"
}

note_save_dir() {
  if [ -f "$1/checkpoint_last.pt" ]; then
    echo "note: $1 already holds checkpoint_last.pt: fairseq-train continues that run (set SAVE=another/folder for a new experiment)" >&2
  fi
}
