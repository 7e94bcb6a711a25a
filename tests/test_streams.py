"""Contiguous streams, BPTT windows and the lr rescale (REFERENCE §1.2–1.4, §3.1)."""

import numpy as np
import torch

from awd_plugins.data.stream_dataset import StreamDataset, batchify, evaluation_windows, training_windows, window_columns


def test_batchify_columns_are_contiguous_slices():
    streams = batchify(torch.arange(103), 4)
    assert streams.shape == (4, 25)
    for j in range(4):
        assert torch.equal(streams[j], torch.arange(j * 25, (j + 1) * 25))


def test_batchify_gives_each_rank_its_own_streams():
    both = batchify(torch.arange(100), 6)
    assert torch.equal(torch.cat([batchify(torch.arange(100), 3, r, 2) for r in (0, 1)]), both)


def test_collated_window_targets_are_inputs_shifted():
    ds = StreamDataset(batchify(torch.arange(40), 2), carry_key="train")
    sample = ds.collater(list(range(5, 9)))
    assert torch.equal(sample["net_input"]["src_tokens"][1], torch.arange(25, 29))
    assert torch.equal(sample["target"][1], torch.arange(26, 30))
    assert sample["ntokens"] == 8 and sample["net_input"]["carry_pos"] == 5


def test_variable_lengths_follow_reference_rule_and_seed():
    rng = np.random.RandomState(141)
    starts = training_windows(200000, 70, rng)
    lengths = np.array([n for _, n in starts])
    assert lengths.min() >= 5
    half = np.mean(lengths < 52)  # draws around bptt/2 = 35
    assert 0.03 < half < 0.07
    assert abs(lengths.mean() - (0.95 * 70 + 0.05 * 35)) < 0.5
    # exactly the draws of the reference after np.random.seed(seed): one uniform, then one normal
    np.random.seed(141)
    expected = []
    for _ in range(50):
        base = 70 if np.random.random() < 0.95 else 35.0
        expected.append(max(5, int(np.random.normal(base, 5))))
    assert [n for _, n in starts[:50]] == expected


def test_training_windows_tile_the_stream_in_order():
    length = 1000
    starts = training_windows(length, 30, np.random.RandomState(0))
    cols = np.concatenate([window_columns(s, n, length) for s, n in starts])
    assert cols[0] == 0 and np.all(np.diff(cols) == 1) and cols[-1] <= length - 2
    assert cols[-1] >= length - 3  # the loop stops only when fewer than 2 columns remain


def test_cap_and_fixed_lengths():
    capped = training_windows(5000, 70, np.random.RandomState(0), cap=70)
    assert max(n for _, n in capped) <= 70
    fixed = training_windows(100, 35, None, variable=False)
    assert [s for s, _ in fixed] == [0, 35, 70] and all(n == 35 for _, n in fixed)


def test_evaluation_windows_cover_every_target_once():
    wins = evaluation_windows(101, 30)
    assert [len(w) for w in wins] == [30, 30, 30, 10]
    assert np.array_equal(np.concatenate(wins), np.arange(100))


class _RecordingOptimizer:
    def __init__(self):
        self.lr, self.seen = 30.0, []

    def get_lr(self):
        return self.lr

    def set_lr(self, lr):
        self.lr = lr

    def step(self):
        self.seen.append(self.lr)


def test_lr_is_rescaled_for_one_step_only(small_bin):
    from omegaconf import OmegaConf

    from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig, AwdLanguageModelingTask

    cfg = OmegaConf.structured(AwdLanguageModelingConfig(data=small_bin, bptt=70))
    cfg.seed, cfg.train_subset = 1, "train"
    task = AwdLanguageModelingTask.setup_task(cfg)
    task._seq_len = 18
    opt = _RecordingOptimizer()
    task.optimizer_step(opt, None, 0)
    assert opt.seen == [30.0 * 18 / 70] and opt.lr == 30.0


def test_character_level_dictionaries_are_recognised():
    from fairseq.data import Dictionary

    from awd_plugins.tasks.awd_language_modeling import is_character_level

    def make(symbols):
        d = Dictionary()
        for s in symbols:
            d.add_symbol(s)
        return d

    assert is_character_level(make(["97", "32", "10", "255"]))  # enwik8-style byte values
    assert is_character_level(make(list("abc_")))  # PTB-char
    assert not is_character_level(make(["the", "a"]))
    assert not is_character_level(make(["300", "1"]))


def test_pointer_on_a_model_without_last_layer_output_is_a_user_error(small_bin, monkeypatch):
    import pytest
    from fairseq.tasks import FairseqTask
    from omegaconf import OmegaConf

    from awd_plugins.errors import AwdUserError
    from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig, AwdLanguageModelingTask

    cfg = OmegaConf.structured(AwdLanguageModelingConfig(data=small_bin, pointer_window=100))
    cfg.seed, cfg.train_subset = 1, "train"
    task = AwdLanguageModelingTask.setup_task(cfg)
    monkeypatch.setattr(FairseqTask, "build_model", lambda self, cfg, from_checkpoint=False: torch.nn.Linear(2, 2))
    with pytest.raises(AwdUserError, match="--pointer-window needs a model that exposes its last-layer output"):
        task.build_model(None)


def test_ptb_target_counts_equal_the_references_token_counts(shared_corpus, tmp_path):
    """A batch-1 evaluation scores as many targets as the reference counts tokens (REFERENCE §1.1)."""
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from awd_plugins.tasks.awd_language_modeling import AwdLanguageModelingConfig, AwdLanguageModelingTask
    from conftest import REPO

    subprocess.run([sys.executable, f"{REPO}/preprocess/prepare_ptb.py", "--from", shared_corpus("ptb"),
                    "--out", str(tmp_path / "ptb")], check=True, capture_output=True)
    cfg = OmegaConf.structured(AwdLanguageModelingConfig(data=str(tmp_path / "ptb")))
    cfg.seed, cfg.train_subset = 1, "train"
    task = AwdLanguageModelingTask.setup_task(cfg)
    # 9,998 words; the text's <unk> is fairseq's own; 4 specials; padded to a multiple of 8
    assert len(task.dictionary) == 10008
    for split, expected in [("test", 82_430), ("valid", 73_760)]:
        task.load_dataset(split)
        targets = sum(s["ntokens"] for s in task.eval_lm_dataloader(task.dataset(split), batch_size=1))
        assert targets == expected
