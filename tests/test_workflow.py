"""The own-corpus workflow: prepare_text.py (moses / sentencepiece / bytes), detokenization,
one short fairseq-train with --tensorboard-logdir, learning-curve plot, option help.

The single training run (module fixture ``trained``) uses a data-bin made by
prepare_text.py whose validation text consists of words that occur once in the
training text: the better the model learns the training text, the worse it
predicts them, so the validation loss rises from epoch 1 to epoch 2 and NT-ASGD
with ``--nonmono 0`` switches after epoch 2 (REFERENCE §3.3). The plugin logs
``asgd_switch_epoch`` only from the epoch after the switch (the trigger runs after
the epoch's validation summary is printed), hence three epochs.
"""

import json
import os
import random
import struct
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import PLUGIN, REPO, cli, run

PREPARE = os.path.join(REPO, "preprocess", "prepare_text.py")

BASE = [
    "Le café coûte 3,50 € à Paris, n'est-ce pas ?",
    "The naïve résumé was 42% shorter (really!).",
    "Über 1.000 Menschen kamen — trotz Regen.",
    "¿Dónde está la estación? ¡Allí, a 200 m!",
    'She said: "It\'s 10:30 a.m." and left.',
    "Größe: 12×7 cm; Preis 19,99 €.",
]
RARE = "Zéphyr quixotic jabberwocky Ōsaka fjord kumquat 7¾ Łódź syzygy 1848".split()


def write_corpus(folder):
    rng = random.Random(0)
    splits = {
        "train": [" ".join(RARE)] + [rng.choice(BASE) for _ in range(160)],
        "valid": [" ".join(rng.sample(RARE, len(RARE))) for _ in range(12)],
        "test": [rng.choice(BASE) for _ in range(12)],
    }
    os.makedirs(folder, exist_ok=True)
    for split, lines in splits.items():
        with open(os.path.join(folder, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return splits


def prepare(*args, expect_fail=False):
    proc = subprocess.run([sys.executable, PREPARE, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2"))
    if expect_fail:
        assert proc.returncode != 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def binarized_symbols(dest, split):
    """The data-bin's tokens of ``split`` as dictionary symbols (``</s>`` after every line)."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(dest, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(dest, split), d, None)
    return [d[int(t)] for i in range(len(ds)) for t in ds[i]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    return root, write_corpus(str(root / "corpus"))


@pytest.fixture(scope="module")
def moses_bin(corpus):
    root, _ = corpus
    proc = prepare(root / "corpus", "--out", root / "moses", "--tokenizer", "moses", "--raw", root / "moses_raw")
    return str(root / "moses"), str(root / "moses_raw"), proc.stdout


# -- prepare_text.py ------------------------------------------------------------------------
def test_moses_prepares_word_tokens(moses_bin, corpus):
    dest, raw, stdout = moses_bin
    _, splits = corpus
    with open(os.path.join(dest, "tokenizer.json"), encoding="utf-8") as f:
        assert json.load(f)["tokenizer"] == "moses"
    with open(os.path.join(raw, "train.txt"), encoding="utf-8") as f:
        tokenized = f.read().split("\n")
    assert tokenized[0] == "Zéphyr quixotic jabberwocky Ōsaka fjord kumquat 7 ¾ Łódź syzygy 1848"
    for line in ("Le café coûte 3,50 € à Paris , n 'est-ce pas ?", "The naïve résumé was 42 % shorter ( really ! ) .",
                 "¿ Dónde está la estación ? ¡ Allí , a 200 m !", "Größe : 12 × 7 cm ; Preis 19,99 € ."):
        assert line in tokenized
    # the data-bin holds exactly the tokenized text, one </s> per line
    symbols = binarized_symbols(dest, "valid")
    expected = [w for line in open(os.path.join(raw, "valid.txt"), encoding="utf-8").read().splitlines()
                for w in line.split() + ["</s>"]]
    assert symbols == expected
    n_test = sum(len(line.split()) + 1 for line in open(os.path.join(raw, "test.txt"), encoding="utf-8"))
    assert f"test: {len(splits['test'])} lines, {n_test} tokens" in stdout
    assert "dictionary of" in stdout


def test_single_file_with_vocab_cap(corpus):
    """One input file split 0.8/0.1/0.1 (seeded), lowercased, 12 words kept: the rest are <unk>."""
    root, splits = corpus
    source = root / "all.txt"
    source.write_text("".join(line + "\n" for line in splits["train"]), encoding="utf-8")
    dest, raw = root / "moses_cap", root / "moses_cap_raw"
    prepare(source, "--split", "0.8,0.1,0.1", "--seed", "3", "--out", dest, "--tokenizer", "moses",
            "--vocab-size", "12", "--lowercase", "--raw", raw)
    counts = [len((raw / f"{s}.txt").read_text(encoding="utf-8").splitlines()) for s in ("train", "valid", "test")]
    n = len(splits["train"])
    assert counts == [n - 2 * round(0.1 * n), round(0.1 * n), round(0.1 * n)]
    words = set((raw / "train.txt").read_text(encoding="utf-8").split())
    assert "<unk>" in words and len(words - {"<unk>"}) == 12
    # the line of rare words holds none of the 12 most frequent words
    assert "zéphyr" not in words and "<unk> <unk> <unk> <unk>" in " ".join(
        (raw / f"{s}.txt").read_text(encoding="utf-8") for s in ("train", "valid", "test"))
    assert all(w == w.lower() for w in words - {"<unk>"})
    record = json.load(open(dest / "tokenizer.json", encoding="utf-8"))
    assert record["source"]["split"] == [0.8, 0.1, 0.1] and record["source"]["seed"] == 3
    assert record["vocab_size"] == 12 and record["lowercase"] is True


def test_line_assignment_is_seeded_and_keeps_order(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "preprocess"))
    from prepare_text import assign_lines

    lines = [f"line {i}" for i in range(100)]
    a = assign_lines(lines, [0.8, 0.1, 0.1], 3, "x")
    assert a == assign_lines(lines, [0.8, 0.1, 0.1], 3, "x") != assign_lines(lines, [0.8, 0.1, 0.1], 4, "x")
    assert [len(a[s]) for s in ("train", "valid", "test")] == [80, 10, 10]
    numbers = [int(line.split()[1]) for line in a["valid"]]
    assert numbers == sorted(numbers) and numbers != list(range(numbers[0], numbers[0] + 10))  # random, order kept
    assert sorted(int(line.split()[1]) for s in a for line in a[s]) == list(range(100))


def test_sentencepiece_round_trip(corpus):
    from awd_plugins.cli.detokenize import detokenize, load_detokenizer

    root, splits = corpus
    dest = root / "spm"
    proc = prepare(root / "corpus", "--out", dest, "--tokenizer", "sentencepiece", "--vocab-size", "90",
                   "--sp-model-type", "bpe")
    assert (dest / "spm.model").is_file()
    record = json.load(open(dest / "tokenizer.json", encoding="utf-8"))
    assert record["tokenizer"] == "sentencepiece" and record["model_type"] == "bpe" and record["vocab_size"] == 90
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(dest / "spm.model"))
    assert sp.get_piece_size() == 90
    for line in BASE + [" ".join(RARE)]:
        assert sp.decode(sp.encode(line)) == line
        assert detokenize(str(dest), " ".join(sp.encode(line, out_type=str))) == line
    # the whole chain: text → data-bin → symbols → text
    detok = load_detokenizer(str(dest))
    assert detok(binarized_symbols(str(dest), "test")) == "\n".join(splits["test"]) + "\n"
    assert detok.encode(BASE[1]) == " ".join(sp.encode(BASE[1], out_type=str))
    assert "sentencepiece tokens" in proc.stdout


def test_bytes_round_trip(corpus):
    from awd_plugins.cli.detokenize import load_detokenizer

    root, splits = corpus
    dest = root / "bytes"
    prepare(root / "corpus", "--out", dest, "--tokenizer", "bytes")
    symbols = binarized_symbols(str(dest), "test")
    text = "\n".join(splits["test"]) + "\n"
    assert len(symbols) == len(text.encode("utf-8"))  # one token per byte, newline = </s>
    detok = load_detokenizer(str(dest))
    assert detok.kind == "bytes" and detok(symbols) == text
    # a sample cut inside a multi-byte character still prints
    assert detok("195 169 </s> 195") == "é\n\ufffd"
    assert detok.encode("Éa\n") == "195 137 97"


@pytest.mark.parametrize("case", ["empty", "missing", "not_utf8", "empty_file"])
def test_bad_input_one_line_nothing_written(tmp_path, case):
    src = tmp_path / "in"
    src.mkdir()
    for split in ("train", "valid", "test"):
        (src / f"{split}.txt").write_text("Une phrase, avec 2 mots.\n", encoding="utf-8")
    target = src
    if case == "empty":
        (src / "valid.txt").write_text("\n  \n", encoding="utf-8")
    elif case == "missing":
        (src / "test.txt").unlink()
    elif case == "not_utf8":
        (src / "train.txt").write_bytes("caf".encode() + b"\xe9 cr\xe8me\n")
    else:
        target = tmp_path / "empty.txt"
        target.write_bytes(b"")
    before = sorted(os.listdir(tmp_path))
    proc = prepare(target, "--out", tmp_path / "dest", "--tokenizer", "sentencepiece", "--raw", tmp_path / "raw",
                   expect_fail=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("prepare_text.py: error: ")
    expected = {"empty": "valid split", "missing": "no test split", "not_utf8": "not UTF-8", "empty_file": "is empty"}
    assert expected[case] in lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # no dest, no raw, no temporary folder
    assert proc.stdout == ""


# -- detokenization ---------------------------------------------------------------------------
def test_moses_detokenize_cli_reads_fairseq_output(moses_bin, tmp_path, capsys):
    dest = moses_bin[0]
    samples = tmp_path / "samples.txt"
    samples.write_text(
        "S-0\tThe naïve\n"
        "H-0\t-0.81\tThe naïve résumé was 42 % shorter ( really ! ) . </s> Le café coûte 3,50 €\n"
        "The <unk> said : \" It 's 10:30 a.m. \" and left .\n",
        encoding="utf-8",
    )
    from awd_plugins.cli.detokenize import cli_main

    cli_main(["--data", dest, str(samples)])
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "The naïve résumé was 42% shorter (really!).",
        "Le café coûte 3,50 €",
        'The <unk> said: "It\'s 10:30 a.m." and left.',
    ]
    # --encode tokenizes prompts exactly as prepare_text.py tokenized the corpus
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(BASE[0] + "\n" + BASE[3] + "\n", encoding="utf-8")
    cli_main(["--data", dest, "--encode", str(prompts)])
    assert capsys.readouterr().out.splitlines() == [
        "Le café coûte 3,50 € à Paris , n 'est-ce pas ?", "¿ Dónde está la estación ? ¡ Allí , a 200 m !"]


# -- one training run: tensorboard scalars, curve plot -----------------------------------------
def read_tensorboard(logdir):
    """{(writer, tag): [(step, value)]} from the event files (TFRecord framing, tensorboardX protos)."""
    from tensorboardX.proto import event_pb2

    scalars = defaultdict(list)
    for sub in sorted(os.listdir(logdir)):
        for name in sorted(os.listdir(os.path.join(logdir, sub))):
            if "tfevents" not in name:
                continue
            data = open(os.path.join(logdir, sub, name), "rb").read()
            pos = 0
            while pos + 12 <= len(data):
                (length,) = struct.unpack("<Q", data[pos:pos + 8])
                event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
                pos += 12 + length + 4  # length, its crc, payload, payload crc
                for value in event.summary.value:
                    if value.WhichOneof("value") == "simple_value":
                        scalars[(sub, value.tag)].append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def trained(moses_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tb = root / "tb"
    proc = run(cli("fairseq-train") + [
        moses_bin[0], "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", "awd_lstm",
        "--emsize", "16", "--nhid", "16", "--nlayers", "2", "--criterion", "split_cross_entropy",
        "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--nonmono", "0", "--clip-norm", "0.25",
        "--batch-size", "16", "--bptt", "10", "--max-epoch", "3", "--cpu", "--num-workers", "0", "--seed", "1",
        "--log-format", "json", "--log-interval", "5", "--tensorboard-logdir", str(tb), "--no-save",
        "--save-dir", str(root / "ck"),
    ])
    log = root / "train.log"
    log.write_text(proc.stdout, encoding="utf-8")
    assert "NT-ASGD: switching to averaged SGD after epoch 2" in proc.stdout, proc.stdout[-3000:]
    return str(log), str(tb)


def test_tensorboard_has_plugin_scalars(trained):
    scalars = read_tensorboard(trained[1])
    for writer in ("train", "train_inner", "valid"):
        for tag in ("loss", "ppl", "ar", "tar"):
            assert scalars[(writer, tag)], f"{tag} missing from {writer}"
    # NT-ASGD switched after epoch 2: the metric appears from epoch 3 on
    assert scalars[("train", "asgd_switch_epoch")] and all(v == 2 for _, v in scalars[("train", "asgd_switch_epoch")])
    assert scalars[("valid", "asgd_switch_epoch")][-1][1] == 2
    # lr_step: the lr actually used, lr * seq_len / bptt averaged over the logged updates
    steps = [v for _, v in scalars[("train_inner", "lr_step")]]
    lrs = {v for _, v in scalars[("train_inner", "lr")]}
    assert steps and lrs == {30.0}
    assert all(0 < v < 4 * 30 for v in steps) and any(abs(v - 30) > 1e-3 for v in steps)


def test_plot_from_training_log(trained, tmp_path):
    from awd_plugins.cli.plot_curves import cli_main, parse_log

    run_ = parse_log(trained[0])
    assert sorted(run_.subsets["train"]) == [1, 2, 3] and sorted(run_.subsets["valid"]) == [1, 2, 3]
    assert run_.switch_epoch == 2
    assert run_.subsets["valid"][2]["loss"] > run_.subsets["valid"][1]["loss"]  # why the switch fired
    png = tmp_path / "curves.png"
    cli_main([trained[0], "--out", str(png)])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    cli_main([trained[0], "--out", str(tmp_path / "bpc.png"), "--bpc"])
    assert (tmp_path / "bpc.png").stat().st_size > 10000


SIMPLE_LOG = """\
2024-01-01 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.56653 | ppl 758.25 | num_updates 300
2024-01-01 10:00:00 | INFO | train | epoch 001 | loss 10 | ppl 1024 | num_updates 300 | train_wall 100 | wall 110
2024-01-01 10:00:01 | INFO | train_inner | epoch 002:    100 / 300 loss=9.1, ppl=550, wps=300
2024-01-01 10:02:00 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 8 | ppl 256 | num_updates 600
2024-01-01 10:02:00 | INFO | train | epoch 002 | loss 9 | ppl 512 | num_updates 600 | train_wall 200 | wall 220
2024-01-01 10:02:00 | INFO | awd_plugins.optim.nt_asgd | NT-ASGD: switching to averaged SGD after epoch 2 (val loss 8)
epoch 003 | valid on 'valid' subset | loss 7.5 | ppl 181.02 | asgd_switch_epoch 2
epoch 003 | loss 8.5 | ppl 362.04 | wall 330 | asgd_switch_epoch 2
"""


def test_plot_parses_simple_format(tmp_path):
    from awd_plugins.cli.plot_curves import parse_log

    path = tmp_path / "simple.log"
    path.write_text(SIMPLE_LOG, encoding="utf-8")
    r = parse_log(str(path))
    assert r.switch_epoch == 2
    assert r.series("valid", "ppl") == ([1, 2, 3], [758.25, 256.0, 181.02])
    assert r.series("valid", "ppl", x="wall") == ([110.0, 220.0, 330.0], [758.25, 256.0, 181.02])
    assert r.series("train", "loss") == ([1, 2, 3], [10.0, 9.0, 8.5])
    assert "asgd_switch_epoch" not in r.subsets["train"][2] and r.subsets["train"][3]["asgd_switch_epoch"] == 2


def test_plot_parses_log_file_json_without_prefix(tmp_path):
    """--log-file lines carry no "| INFO | tag |" prefix; the subset comes from the key prefix."""
    from awd_plugins.cli.plot_curves import parse_log

    path = tmp_path / "file.log"
    path.write_text(
        '{"epoch": 1, "update": 0.5, "loss": "9.9", "ppl": "955"}\n'
        '{"epoch": 1, "valid_small_loss": "9.5", "valid_small_ppl": "724.08", "valid_small_best_loss": "9.5"}\n'
        '{"epoch": 1, "train_loss": "9.75", "train_ppl": "861.08", "train_train_wall": "20", "train_wall": "25"}\n'
        '{"epoch": 2, "train_loss": "9", "train_ppl": "512", "train_wall": "50", "train_asgd_switch_epoch": "1"}\n',
        encoding="utf-8")
    r = parse_log(str(path))
    assert sorted(r.subsets) == ["train", "valid_small"]
    assert r.series("valid_small", "ppl", x="wall") == ([25.0], [724.08])
    assert r.series("train", "ppl") == ([1, 2], [861.08, 512.0]) and r.subsets["train"][1]["train_wall"] == 20
    assert r.switch_epoch == 1


# -- option help -------------------------------------------------------------------------------
def test_help_lists_arch_and_task_options():
    from awd_plugins.cli.help import help_text

    text = help_text(["--arch", "awd_lstm_ptb", "--task", "awd_language_modeling", "--optimizer", "nt_asgd"])
    lines = text.splitlines()
    wdrop = next(line for line in lines if line.strip().startswith("--wdrop"))
    assert "[default: 0.5]" in wdrop
    dropouti = next(i for i, line in enumerate(lines) if line.strip().startswith("--dropouti"))
    assert "0.4 (set by awd_lstm_ptb; awd_lstm's own: 0.65)" in " ".join(
        line.strip() for line in lines[dropouti:dropouti + 3])
    assert any(line.strip().startswith("--bptt BPTT") for line in lines)
    assert any(line.strip().startswith("--nonmono") for line in lines)
    table = text[text.index("Named architectures of model awd_lstm"):]
    ptb = next(line for line in table.splitlines() if line.strip().startswith("awd_lstm_ptb "))
    assert "--dropouti 0.4" in ptb and "--dropouth 0.25" in ptb and "--wdrop" not in ptb
