"""The published pipelines that ``awd-reproduce`` runs, as command lines of this package.

Each pipeline is a list of :class:`Stage` objects: prepare the corpus, train,
finetune where the authors did, then evaluate (plainly, with the cache pointer and
with dynamic evaluation where those were published), each with the published figure
it should reproduce. The flags are those of the matching ``examples/*.sh`` script
(``tests/test_reproduce.py`` checks that they agree).

``scale="full"`` is the published configuration; ``scale="tiny"`` keeps every stage
and flag but shrinks the model, the corpus (a slice) and the amount of training, and
drops the GPU-only flags, so that a pipeline runs on a 2-core CPU in a few minutes.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# tokens of each split in a tiny-scale corpus slice (whole lines)
TINY_SLICE = {"train": 20000, "valid": 2500, "test": 2500}
TINY_BYTES = (60000, 6000, 6000)  # byte corpora: train, valid, test bytes


@dataclass
class Stage:
    name: str  # "train", "eval test + pointer", ...
    kind: str  # prepare | train | eval
    tool: str = ""  # fairseq-train, fairseq-eval-lm, or a preprocess/ script
    args: List[str] = field(default_factory=list)
    published: Optional[float] = None
    metric: str = "ppl"  # ppl | bpc
    needs_task_option: Optional[str] = None  # e.g. "dynamic_eval": skipped when the task lacks it
    note: str = ""


@dataclass
class Pipeline:
    name: str
    title: str
    corpus: str  # ptb | wt2 | enwik8 | wt103
    metric: str
    source: str  # where the published figures come from
    gpus: int  # published number of GPUs
    stages: List[Stage]
    fixed: bool = False  # the same commands at every scale (the demo), figures "expected" rather than published


@dataclass
class Paths:
    work: str
    data_root: Optional[str]
    scale: str
    gpus: int

    @property
    def data(self):
        return os.path.join(self.work, "data-bin")

    def save(self, name):
        return os.path.join(self.work, "checkpoints", name)


COMMON_EVAL = ["--task", "awd_language_modeling"]

# -- per-family pieces ---------------------------------------------------------------------------------


def _prepare(corpus: str, p: Paths) -> Stage:
    """The preparation script of the corpus; at tiny scale it reads the slice the driver wrote."""
    script = {"ptb": "prepare_ptb.py", "wt2": "prepare_wikitext2.py", "enwik8": "prepare_enwik8.py",
              "wt103": "prepare_wikitext103.py", "ptb-char": "prepare_ptb_char.py"}[corpus]
    args = ["--out", p.data, "--force"]
    source = _source(corpus, p)
    if p.scale == "tiny":
        if corpus == "enwik8":
            args += ["--from", os.path.join(p.work, "slice", "enwik8.zip"), "--no-verify",
                     "--split-sizes", ",".join(str(n) for n in TINY_BYTES)]
        elif corpus == "ptb-char":  # characters of the word-level slice
            args += ["--from", os.path.join(p.work, "slice"), "--no-verify"]
        else:
            args += ["--from", os.path.join(p.work, "slice"), "--no-verify", "--vocab-size", "3000"]
    elif source:
        args += ["--from", source]
    return Stage("prepare", "prepare", script, args, note=f"slice of {_tiny_source_name(corpus, p)}"
                 if p.scale == "tiny" else "")


def _source(corpus: str, p: Paths) -> Optional[str]:
    if not p.data_root:
        return None
    names = {"ptb": ["ptb", "penn"], "ptb-char": ["ptb", "penn"], "wt2": ["wikitext-2", "wt2"], "enwik8": ["enwik8.zip", "enwik8"],
             "wt103": ["wikitext-103", "wt103"]}[corpus]
    for n in names:
        path = os.path.join(p.data_root, n)
        if os.path.exists(path):
            return path
    return None


def _tiny_source_name(corpus: str, p: Paths) -> str:
    src = tiny_source(corpus, p)
    return os.path.relpath(src) if src.startswith(os.getcwd()) else src


def tiny_source(corpus: str, p: Paths) -> str:
    """Word corpora slice PTB / WikiText-2 from --data-root when there; otherwise the bundled excerpt."""
    if corpus in ("ptb", "ptb-char", "wt2"):
        src = _source(corpus, p)
        if src and os.path.isdir(src):
            return src
    return bundled_corpus()


def bundled_corpus() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, "data", "wikitext-2-small")


def _cpu(p: Paths, published_gpus: int) -> List[str]:
    """Device flags: CPU at tiny scale or with --gpus 0; N GPUs (with --update-freq keeping the global batch)."""
    if p.scale == "tiny" or p.gpus == 0:
        return ["--cpu", "--num-workers", "0"]
    flags = []
    if p.gpus > 1:
        flags += ["--distributed-world-size", str(p.gpus)]
    if published_gpus > p.gpus:
        flags += ["--update-freq", str(published_gpus // p.gpus)]
    return flags


def _gpu_only(p: Paths, flags: List[str]) -> List[str]:
    return [] if (p.scale == "tiny" or p.gpus == 0) else flags


def _tiny(p: Paths, full: List[str], tiny: List[str]) -> List[str]:
    """Full-scale flags, then at tiny scale the overrides (fairseq: the last value of a flag wins)."""
    return full + tiny if p.scale == "tiny" else full


def _eval(name, p: Paths, ckpt: str, split: str, flags: List[str], published, metric, **kw) -> Stage:
    return Stage(name, "eval", "fairseq-eval-lm",
                 [p.data, *COMMON_EVAL, "--path", ckpt, "--gen-subset", split, *flags,
                  *(["--cpu", "--num-workers", "0"] if p.scale == "tiny" or p.gpus == 0 else [])],
                 published=published, metric=metric, **kw)


# -- AWD-LSTM / AWD-QRNN (awd-lstm-lm README; dynamic evaluation: Krause et al. 2018) --------------------

# the cache pointer's published settings (pointer.py commands of the awd-lstm-lm README)
POINTER_PTB = ["--bptt", "5000", "--pointer-window", "500", "--pointer-theta", "1.0", "--pointer-lambda", "0.1"]
POINTER_WT2 = ["--bptt", "2000", "--pointer-window", "3785", "--pointer-theta", "0.662", "--pointer-lambda", "0.1279"]


def _rms_dynamic_eval(lr: str, decay: str, bptt: str):
    return ["--dynamic-eval", "rms", "--dynamic-eval-lr", lr, "--dynamic-eval-decay", decay, "--dynamic-eval-bptt", bptt]


AWD = {
    # name: arch, corpus, clip, batch, train (seed, epochs), finetune (seed, epochs), pointer flags, figures
    "awd-lstm-ptb": dict(
        arch="awd_lstm_ptb", corpus="ptb", clip="0.25", bsz="20", train=("141", "500"), finetune=("141", "500"),
        pointer=POINTER_PTB,
        valid_bsz="1", fig=dict(train=61.2, finetune=58.8, valid=58.8, test=56.5, pvalid=53.2, ptest=52.5,
                                dvalid=51.6, dtest=51.1),
        dyn=_rms_dynamic_eval("5e-5", "0.002", "5"),
        title="AWD-LSTM, PTB", source="awd-lstm-lm README (train/finetune/pointer); Krause et al. 2018 (dynamic eval)"),
    "awd-lstm-wt2": dict(
        arch="awd_lstm_wt2", corpus="wt2", clip="0.25", bsz="80", train=("1882", "750"), finetune=("1882", "750"),
        pointer=POINTER_WT2,
        valid_bsz="1", fig=dict(train=68.7, finetune=67.4, valid=67.4, test=64.7, pvalid=52.2, ptest=50.6,
                                dvalid=46.4, dtest=44.3),
        # the paper's WT2 hyper-parameters are given in the old scaling only; dynamiceval.py's defaults
        dyn=_rms_dynamic_eval("5e-5", "0.002", "5"),
        title="AWD-LSTM, WikiText-2", source="awd-lstm-lm README; Krause et al. 2018 (dynamic eval)"),
    "awd-qrnn-ptb": dict(
        arch="awd_qrnn_ptb", corpus="ptb", clip="0.2", bsz="20", train=("9001", "550"), finetune=("404", "300"),
        pointer=POINTER_PTB,
        valid_bsz="10", fig=dict(train=60.6, finetune=59.1, valid=59.1, test=56.7, pvalid=53.4, ptest=52.6,
                                 dvalid=51.4, dtest=50.5),
        dyn=_rms_dynamic_eval("1.2e-4", "0.02", "20"),
        title="AWD-QRNN, PTB", source="awd-lstm-lm README; benkrause/dynamic-evaluation README (QRNN)"),
    "awd-qrnn-wt2": dict(
        arch="awd_qrnn_wt2", corpus="wt2", clip="0.25", bsz="40", train=("4002", "500"), finetune=("4002", "500"),
        pointer=POINTER_WT2,
        valid_bsz="10", fig=dict(train=69.3, finetune=68.5, valid=68.5, test=65.9, pvalid=53.6, ptest=52.1,
                                 dvalid=45.9, dtest=44.0),
        dyn=_rms_dynamic_eval("1.2e-4", "0.008", "20"),
        title="AWD-QRNN, WikiText-2", source="awd-lstm-lm README; benkrause/dynamic-evaluation README (QRNN)"),
}


def awd_pipeline(name: str, p: Paths) -> Pipeline:
    c = AWD[name]
    f = c["fig"]
    common = [p.data, "--task", "awd_language_modeling", "--arch", c["arch"],
              "--criterion", "split_cross_entropy", "--alpha", "2", "--beta", "1",
              "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--weight-decay", "1.2e-6",
              "--nonmono", "5", "--clip-norm", c["clip"], "--batch-size", c["bsz"], "--bptt", "70",
              "--eval-batch-size", "10", "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "200",
              *_cpu(p, 1)]
    tiny_model = ["--emsize", "32", "--nhid", "48", "--nlayers", "2", "--batch-size", "8", "--bptt", "20",
                  "--log-interval", "25"]
    train = _tiny(p, [*common, "--seed", c["train"][0], "--max-epoch", c["train"][1]],
                  [*tiny_model, "--max-epoch", "2"])
    train += ["--save-dir", p.save("train")]
    finetune = _tiny(p, [*common, "--seed", c["finetune"][0], "--max-epoch", c["finetune"][1], "--asgd-from-start",
                         "--stop-min-lr", "0", "--bptt-cap", "80"], [*tiny_model, "--max-epoch", "1", "--bptt-cap", "30"])
    finetune += ["--restore-file", os.path.join(p.save("train"), "checkpoint_best.pt"), "--reset-optimizer",
                 "--reset-lr-scheduler", "--reset-dataloader", "--reset-meters", "--save-dir", p.save("finetune")]
    ckpt = os.path.join(p.save("finetune"), "checkpoint_best.pt")
    plain = _tiny(p, ["--bptt", "70"], ["--bptt", "20"])
    pointer = _tiny(p, c["pointer"], ["--bptt", "200", "--pointer-window", "50"])
    dyn = _tiny(p, c["dyn"], ["--dynamic-eval-stats-batches", "5", "--dynamic-eval-stats-bsz", "10"])
    stages = [
        _prepare(c["corpus"], p),
        Stage("train", "train", "fairseq-train", train, f["train"], note="best validation (10 streams)"),
        Stage("finetune", "train", "fairseq-train", finetune, f["finetune"], note="best validation (10 streams)"),
        _eval("eval valid", p, ckpt, "valid", ["--batch-size", c["valid_bsz"], *plain], f["valid"], "ppl"),
        _eval("eval test", p, ckpt, "test", ["--batch-size", "1", *plain], f["test"], "ppl"),
        _eval("eval valid + pointer", p, ckpt, "valid", ["--batch-size", "1", *pointer], f["pvalid"], "ppl"),
        _eval("eval test + pointer", p, ckpt, "test", ["--batch-size", "1", *pointer], f["ptest"], "ppl"),
        _eval("eval valid + dynamic", p, ckpt, "valid", ["--batch-size", "1", *plain, *dyn], f["dvalid"], "ppl",
              needs_task_option="dynamic_eval"),
        _eval("eval test + dynamic", p, ckpt, "test", ["--batch-size", "1", *plain, *dyn], f["dtest"], "ppl",
              needs_task_option="dynamic_eval"),
    ]
    return Pipeline(name, c["title"], c["corpus"], "ppl", c["source"], 1, stages)


# -- the Adam runs of awd-lstm-lm (multi-scale paper; examples/awd_adam.sh) ------------------------------

ADAM = {
    # name: arch, corpus, lr, weight decay, when, bptt, batch, epochs, published test figure, metric
    "awd-lstm-enwik8": ("awd_lstm_enwik8", "enwik8", "1e-3", "1.2e-6", "25,35", "200", "128", "50", 1.232, "bpc"),
    "awd-lstm-ptb-char": ("awd_lstm_ptb_char", "ptb-char", "2e-3", "1.2e-6", "300,400", "150", "128", "500", 1.175,
                          "bpc"),
    "awd-qrnn-wt103": ("awd_qrnn_wt103", "wt103", "1e-3", "0", "12", "140", "60", "14", 33.0, "ppl"),
}


def awd_adam_pipeline(name: str, p: Paths) -> Pipeline:
    arch, corpus, lr, wd, when, bptt, bsz, epochs, figure, metric = ADAM[name]
    train = _tiny(p, [p.data, "--task", "awd_language_modeling", "--arch", arch,
                      "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0",
                      "--optimizer", "adam_l2", "--weight-decay", wd, "--lr", lr, "--lr-scheduler", "awd_when",
                      "--when", when, "--clip-norm", "0.25", "--batch-size", bsz, "--bptt", bptt,
                      "--eval-batch-size", "10", "--seed", "1111", "--max-epoch", epochs, "--no-epoch-checkpoints",
                      "--log-format", "simple", "--log-interval", "200", *_cpu(p, 1)],
                  ["--emsize", "32", "--nhid", "48", "--nlayers", "2", "--batch-size", "8", "--bptt", "30",
                   "--max-epoch", "2", "--when", "1", "--log-interval", "25"])
    train += ["--save-dir", p.save("train")]
    ckpt = os.path.join(p.save("train"), "checkpoint_best.pt")
    stages = [_prepare(corpus, p), Stage("train", "train", "fairseq-train", train, None, metric,
                                         note="best validation (10 streams)"),
              _eval("eval test", p, ckpt, "test", ["--batch-size", "1", *_tiny(p, ["--bptt", bptt], ["--bptt", "30"])],
                    figure, metric)]
    title = {"awd-lstm-enwik8": "AWD-LSTM 3 layers, Adam, enwik8", "awd-lstm-ptb-char": "AWD-LSTM 3 layers, Adam, "
             "PTB-char", "awd-qrnn-wt103": "AWD-QRNN 4 layers, Adam, WikiText-103"}[name]
    return Pipeline(name, title, corpus, metric, "Merity et al. 2018 (multi-scale paper)", 1, stages)


# -- SHA-RNN (Smerity/sha-rnn README) -------------------------------------------------------------------


def sha_rnn_pipeline(name: str, p: Paths) -> Pipeline:
    bsz = "16"
    common = [p.data, "--task", "awd_language_modeling", "--arch", "sha_rnn_enwik8",
              "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0",
              "--optimizer", "min_trust_lamb", "--min-trust", "0.25", "--weight-decay", "1.2e-6", "--clip-norm", "0.25",
              "--lr-scheduler", "fixed", "--warmup-updates", "800",
              "--batch-size", bsz, "--bptt", "1024", "--bptt-cap", "1024", "--no-lr-rescale", "--eval-batch-size", bsz,
              *_gpu_only(p, ["--amp"]), "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "10",
              *_cpu(p, 1)]
    tiny = ["--emsize", "32", "--nhid", "64", "--nlayers", "2", "--memory-len", "128", "--batch-size", "4",
            "--eval-batch-size", "4", "--bptt", "64", "--bptt-cap", "64", "--warmup-updates", "20", "--max-epoch", "1"]
    train = _tiny(p, [*common, "--max-epoch", "32", "--lr", "2e-3", "--seed", "5512"], tiny)
    train += ["--save-dir", p.save("train")]
    pass2 = _tiny(p, [*common, "--max-epoch", "5", "--lr", "1e-3", "--seed", "125"], tiny)
    pass2 += ["--finetune-from-model", os.path.join(p.save("train"), "checkpoint_best.pt"),
              "--save-dir", p.save("finetune")]
    ckpt = os.path.join(p.save("finetune"), "checkpoint_best.pt")
    stages = [
        _prepare("enwik8", p),
        Stage("train", "train", "fairseq-train", train, None, "bpc", note="best validation"),
        Stage("finetune", "train", "fairseq-train", pass2, None, "bpc",
              note="second pass: --resume at lr 1e-3 (best validation)"),
        _eval("eval test", p, ckpt, "test", ["--batch-size", "8", *_tiny(p, ["--bptt", "1024"], ["--bptt", "64"])],
              1.076, "bpc"),
    ]
    return Pipeline(name, "SHA-RNN (attention in block 2), enwik8", "enwik8", "bpc", "Merity 2019 (paper)", 1, stages)


# -- SRU++ (asappresearch/sru srupp_experiments README) ------------------------------------------------


def srupp_pipeline(name: str, p: Paths) -> Pipeline:
    enwik8 = name == "srupp-enwik8-base"
    corpus = "enwik8" if enwik8 else "wt103"
    metric = "bpc" if enwik8 else "ppl"
    common = [p.data, "--task", "awd_language_modeling", "--arch", "srupp_enwik8_base" if enwik8 else "srupp_wt103_base",
              *(["--criterion", "cross_entropy"] if enwik8 else ["--criterion", "split_cross_entropy", "--alpha", "0",
                                                                  "--beta", "0", "--ddp-backend", "legacy_ddp"]),
              "--optimizer", "radam_decoupled", "--weight-decay", "0.1", "--lr", "0.0003", "--clip-norm", "1.0",
              "--lr-scheduler", "srupp_cosine", "--warmup-updates", "16000", *([] if enwik8 else ["--warmup-from-zero"]),
              "--max-update", "400000", "--batch-size", "4" if enwik8 else "8", "--bptt", "1024" if enwik8 else "768",
              "--fixed-bptt", "--no-lr-rescale", "--eval-batch-size", "16", "--seed", "1234",
              *_gpu_only(p, ["--fp16"]),
              "--validate-interval", "1000000", "--validate-interval-updates", "8000",
              "--save-interval", "1000000", "--save-interval-updates", "8000", "--keep-interval-updates", "1",
              "--log-format", "simple", "--log-interval", "200", *_cpu(p, 8)]
    tiny = ["--n-d", "32", "--n-proj", "16", "--depth", "2", "--bptt", "32", "--batch-size", "4",
            "--eval-batch-size", "4", "--warmup-updates", "10", "--max-update", "80", "--validate-interval-updates",
            "40", "--save-interval-updates", "40", "--log-interval", "20"]
    if not enwik8:
        tiny += ["--n-e", "32", "--div-val", "2", "--adaptive-softmax-cutoff", "500,1500"]
    train = _tiny(p, common, tiny) + ["--save-dir", p.save("train")]
    ckpt = os.path.join(p.save("train"), "checkpoint_best.pt")
    bptt = _tiny(p, ["--bptt", "3072" if enwik8 else "2560"], ["--bptt", "64"])
    stages = [_prepare(corpus, p),
              Stage("train", "train", "fairseq-train", train, None, metric, note="best validation")]
    if not enwik8:
        stages.append(_eval("eval valid", p, ckpt, "valid", ["--batch-size", "1", *bptt], 17.5, metric))
    stages.append(_eval("eval test", p, ckpt, "test", ["--batch-size", "1", *bptt], 0.974 if enwik8 else 18.3, metric))
    title = "SRU++ base, enwik8" if enwik8 else "SRU++ base, WikiText-103"
    return Pipeline(name, title, corpus, metric, "asappresearch/sru srupp_experiments README (8 GPUs)", 8, stages)


# -- PyTorch word LM (pytorch/examples word_language_model, old README) --------------------------------


def word_lm_pipeline(name: str, p: Paths) -> Pipeline:
    train = _tiny(p, [p.data, "--task", "awd_language_modeling", "--arch", "rnn_lm_small", "--rnn-type", "LSTM",
                      "--criterion", "split_cross_entropy", "--alpha", "0", "--beta", "0",
                      "--optimizer", "sgd", "--momentum", "0", "--weight-decay", "0", "--lr", "20", "--clip-norm", "0.25",
                      "--lr-scheduler", "reduce_lr_on_plateau", "--lr-shrink", "0.25", "--lr-patience", "0",
                      "--lr-threshold", "0", "--fixed-bptt", "--bptt", "35", "--no-lr-rescale", "--batch-size", "20",
                      "--eval-batch-size", "10", "--max-epoch", "6", "--seed", "1111", "--log-format", "simple",
                      "--log-interval", "200", "--no-epoch-checkpoints", *_cpu(p, 1)],
                  ["--emsize", "32", "--nhid", "32", "--max-epoch", "2", "--log-interval", "25"])
    train += ["--save-dir", p.save("train")]
    ckpt = os.path.join(p.save("train"), "checkpoint_best.pt")
    stages = [_prepare("wt2", p),
              Stage("train", "train", "fairseq-train", train, None, note="best validation (10 streams)"),
              _eval("eval test", p, ckpt, "test", ["--batch-size", "10", "--bptt", "35"], 117.61, "ppl")]
    return Pipeline(name, "PyTorch word LM 2×200 LSTM, 6 epochs, WikiText-2", "wt2", "ppl",
                    "pytorch/examples word_language_model README (old)", 1, stages)


# -- the demo (README's `make demo`): a fixed amount of work on the bundled excerpt -------------------------

# Expected figures of the demo (perplexity: best validation of the 4 epochs with 10 streams, test, test with
# the pointer), measured with `awd-reproduce demo` on torch 2.13.0 CPU (notes/README-recipes.md); a run on
# another machine should land within DEMO_TOLERANCE (relative) of them.
DEMO_EXPECTED = {"train": 159.46, "eval test": 179.71, "eval test + pointer": 134.16, "eval test + dynamic": 99.42}
# dynamic evaluation (sgd; lr and decay from awd-dynamic-eval-search on the first 5,000 validation tokens of
# the demo model: lr 0.1 / 0.3 / 1 / 2 / 4 gave 151.7 / 140.9 / 124.2 / 114.9 / 114.4 against 163.4 plain)
DEMO_DYNAMIC_EVAL = ["--dynamic-eval", "sgd", "--dynamic-eval-lr", "2", "--dynamic-eval-decay", "0.002",
                     "--dynamic-eval-bptt", "20"]
DEMO_TOLERANCE = 0.03
DEMO_EPOCHS = 4


def demo_pipeline(name: str, p: Paths) -> Pipeline:
    prepare = Stage("prepare", "prepare", "prepare_wikitext2.py",
                    ["--from", bundled_corpus(), "--no-verify", "--vocab-size", "10000", "--out", p.data, "--force"],
                    note="the bundled WikiText-2 excerpt")
    train = [p.data, "--task", "awd_language_modeling", "--arch", "awd_lstm", "--emsize", "200", "--nhid", "400",
             "--nlayers", "2", "--dropouti", "0.4", "--dropouth", "0.25", "--dropout", "0.4",
             "--criterion", "split_cross_entropy", "--alpha", "2", "--beta", "1",
             "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd", "--lr", "30", "--nonmono", "1", "--clip-norm", "0.25",
             "--batch-size", "20", "--bptt", "35", "--seed", "141", "--max-epoch", str(DEMO_EPOCHS),
             "--no-epoch-checkpoints", "--cpu", "--num-workers", "0", "--log-format", "simple", "--log-interval", "50",
             "--tensorboard-logdir", os.path.join(p.work, "tensorboard"), "--save-dir", p.save("train")]
    ckpt = os.path.join(p.save("train"), "checkpoint_best.pt")
    stages = [prepare,
              Stage("train", "train", "fairseq-train", train, DEMO_EXPECTED["train"],
                    note=f"{DEMO_EPOCHS} epochs; best validation (10 streams)"),
              Stage("eval test", "eval", "fairseq-eval-lm",
                    [p.data, *COMMON_EVAL, "--path", ckpt, "--gen-subset", "test", "--batch-size", "1", "--bptt", "500",
                     "--cpu", "--num-workers", "0"], DEMO_EXPECTED["eval test"]),
              Stage("eval test + pointer", "eval", "fairseq-eval-lm",
                    [p.data, *COMMON_EVAL, "--path", ckpt, "--gen-subset", "test", "--batch-size", "1", "--bptt", "500",
                     "--pointer-window", "500", "--pointer-theta", "1.0", "--pointer-lambda", "0.1",
                     "--cpu", "--num-workers", "0"], DEMO_EXPECTED["eval test + pointer"]),
              Stage("eval test + dynamic", "eval", "fairseq-eval-lm",
                    [p.data, *COMMON_EVAL, "--path", ckpt, "--gen-subset", "test", "--batch-size", "1", "--bptt", "500",
                     *DEMO_DYNAMIC_EVAL, "--cpu", "--num-workers", "0"], DEMO_EXPECTED["eval test + dynamic"])]
    return Pipeline(name, "Demo: small AWD-LSTM on the bundled WikiText-2 excerpt", "wt2", "ppl",
                    f"expected figures of the demo (within {DEMO_TOLERANCE:.0%})", 0, stages, fixed=True)


BUILDERS = {**{n: awd_pipeline for n in AWD}, "sha-rnn-enwik8": sha_rnn_pipeline,
            "srupp-enwik8-base": srupp_pipeline, "srupp-wt103-base": srupp_pipeline, "word-lm-wt2": word_lm_pipeline,
            **{n: awd_adam_pipeline for n in ADAM}, "demo": demo_pipeline}


def build(name: str, p: Paths) -> Pipeline:
    return BUILDERS[name](name, p)


def names() -> List[str]:
    return list(BUILDERS)


def summary(name: str) -> Dict[str, str]:
    pipe = build(name, Paths("WORK", None, "full", 1))
    return {"title": pipe.title, "stages": ", ".join(s.name for s in pipe.stages), "source": pipe.source}
