"""Shared by the benchmarks: fairseq's own Trainer, built as ``fairseq-train`` builds it, and timed updates."""

import os
import resource
import statistics
import time

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "awd_plugins")


def build_trainer(data, arch, extra=()):
    """(trainer, epoch-1 batch iterator, parameter count) for ``arch`` at the published PTB
    training settings (split CE + AR/TAR, NT-ASGD lr 30, batch 20, bptt 70, seed 141);
    ``extra`` fairseq options override or add (e.g. ``--cpu-bf16``, ``--clip-norm 0.2``)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    extra = list(extra)
    argv = [data, "--user-dir", PLUGIN, "--task", "awd_language_modeling", "--arch", arch,
            "--criterion", "split_cross_entropy", "--optimizer", "nt_asgd", "--lr-scheduler", "nt_asgd",
            "--lr", "30", "--weight-decay", "1.2e-6", "--batch-size", "20", "--bptt", "70", "--seed", "141",
            "--cpu", "--num-workers", "0", "--disable-validation", "--no-save"] + extra
    if "--clip-norm" not in extra:
        argv += ["--clip-norm", "0.25"]
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    trainer.begin_epoch(1)
    itr = trainer.get_train_iterator(epoch=1, load_dataset=False).next_epoch_itr(shuffle=False)
    return trainer, itr, sum(p.numel() for p in model.parameters())


def time_updates(trainer, itr, updates, warmup=2):
    """Run ``updates`` training updates; rates over those after ``warmup``: wall tokens/s
    (median batch and whole run), tokens per CPU-second of this process, peak RSS (MiB)."""
    rows = []
    for _ in range(updates):
        sample = next(itr)
        w0, c0 = time.perf_counter(), time.process_time()
        trainer.train_step([sample])
        rows.append((sample["ntokens"], time.perf_counter() - w0, time.process_time() - c0))
    rows = rows[warmup:]
    tokens = sum(n for n, _, _ in rows)
    return {
        "median_tok_s": statistics.median(n / w for n, w, _ in rows),
        "tok_s": tokens / sum(w for _, w, _ in rows),
        "cpu_tok_s": tokens / sum(c for _, _, c in rows),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
