"""Kernel launches per training update, ``--recurrence-impl torch`` vs ``triton``, and the CPU
speed of ``auto`` (issue #11). Run by hand; prints two tables.

1. Launches: one training update (forward, loss, backward) of srupp_enwik8_base (depth 10,
   bptt 1024, batch 4) and awd_qrnn_ptb (4 layers, bptt 70, batch 20), counted with the
   torch profiler on the CPU: every leaf ``aten::`` op that computes (views, ``empty`` and
   other metadata ops excluded) is one kernel launch on CUDA, plus one per Triton kernel
   launch. The widths are reduced (n_d 32 / n_proj 8, emsize 16 / nhid 24): the number of
   launches depends on depth, bptt and the code path, not on widths. ``torch`` is counted
   with the code CUDA runs (the forget-mult's log-depth ``scan``; the SRU TorchScript
   loops are the same on both devices); ``triton`` runs the kernels under Triton's
   interpreter (TRITON_INTERPRET=1 is set here) and counts each launch once.
2. CPU tokens/s of one update (forward+backward+SGD step) with ``auto`` and ``torch`` (the
   same code on the CPU: ``auto`` only adds the dispatch check), awd_qrnn_ptb at full size
   and an SRU++ of reduced size, median of ``--repeats``. Measured on a shared machine: noisy.

    OMP_NUM_THREADS=2 python bench/bench_kernels.py [--repeats 5] [--skip-speed]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import awd_plugins  # noqa: E402,F401
from awd_plugins.kernels import dispatch  # noqa: E402
from awd_plugins.models.awd_qrnn import AwdQrnnConfig, AwdQrnnDecoder, AwdQrnnModel, awd_qrnn_ptb  # noqa: E402
from awd_plugins.models.srupp import SruDecoder, SruppConfig, SruppModel, srupp_enwik8_base  # noqa: E402
from awd_plugins.modules import QRNNLayer, SRULayer  # noqa: E402

# aten ops that launch no kernel on CUDA (views, allocation, metadata, host-side scalars)
NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::_unsafe_view", "aten::as_strided",
    "aten::select", "aten::slice", "aten::unsqueeze", "aten::squeeze", "aten::transpose", "aten::t",
    "aten::permute", "aten::expand", "aten::reshape", "aten::alias", "aten::detach", "aten::unbind", "aten::split",
    "aten::chunk", "aten::narrow", "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh", "aten::unflatten",
    "aten::flatten", "aten::set_", "aten::result_type", "aten::item", "aten::_local_scalar_dense", "aten::size",
    "aten::stride", "aten::numel", "aten::is_nonzero", "aten::_reshape_alias", "aten::view_as", "aten::expand_as",
    "aten::contiguous", "aten::to", "aten::_to_copy", "aten::lift", "aten::is_same_size", "aten::new_empty",
    "aten::new_empty_strided", "aten::split_with_sizes", "aten::unsafe_split", "aten::_has_compatible_shallow_copy_type",
    "aten::clone", "aten::movedim", "aten::squeeze_", "aten::unsqueeze_", "aten::as_strided_",
}


def dictionary(n):
    d = Dictionary()
    for i in range(n - len(d)):
        d.add_symbol(f"w{i}")
    return d


def build(arch, widths, impl):
    if arch == "awd_qrnn_ptb":
        cfg = OmegaConf.structured(AwdQrnnConfig)
        for k, v in widths.items():
            setattr(cfg, k, v)
        awd_qrnn_ptb(cfg)
        cfg.recurrence_impl = impl
        return AwdQrnnModel(AwdQrnnDecoder(cfg, dictionary(10008))), 20, 70
    cfg = OmegaConf.structured(SruppConfig)
    for k, v in widths.items():
        setattr(cfg, k, v)
    srupp_enwik8_base(cfg)
    cfg.recurrence_impl = impl
    return SruppModel(SruDecoder(cfg, dictionary(208), attention=True)), 4, 1024


def one_update(model, bsz, bptt, optimizer=None):
    tokens = torch.randint(4, len(model.decoder.dictionary), (bsz, bptt + 1))
    features, _ = model(tokens[:, :-1], features_only=True)
    loss = model.decoder.nll(features, tokens[:, 1:]).sum()
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad()
    return bsz * bptt


def count_launches(arch, impl):
    model, bsz, bptt = build(arch, {"emsize": 16, "nhid": 24} if arch == "awd_qrnn_ptb" else
                             {"n_d": 32, "n_proj": 8}, impl)
    for m in model.modules():
        if isinstance(m, QRNNLayer):
            m.forget_mult_impl = "scan"  # what CUDA runs under --recurrence-impl torch
    model.train()
    triton_launches = [0]
    real_launch = dispatch.launch

    def counted(fn, grid, *args, **meta):
        triton_launches[0] += 1
        with torch.profiler.record_function("triton_launch"):
            return real_launch(fn, grid, *args, **meta)

    dispatch.launch = counted
    try:
        one_update(model, bsz, bptt)  # warm-up (TorchScript profiling runs, interpreter caches)
        triton_launches[0] = 0
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            one_update(model, bsz, bptt)
    finally:
        dispatch.launch = real_launch
    events = prof.events()
    inside = set()
    for e in events:  # ops the interpreter runs inside a Triton launch are not CUDA work
        if e.name == "triton_launch":
            stack = list(e.cpu_children)
            while stack:
                c = stack.pop()
                inside.add(id(c))
                stack.extend(c.cpu_children)
    aten = 0
    for e in events:
        if (e.name.startswith("aten::") and e.name not in NO_KERNEL and id(e) not in inside
                and not any(c.name.startswith("aten::") for c in e.cpu_children)):
            aten += 1
    return aten + triton_launches[0], triton_launches[0]


def cpu_speed(arch, widths, repeats):
    """tokens/s of ``auto`` and ``torch``, updates interleaved so that the load of a shared machine
    weighs on both alike; two warm-up updates each (TorchScript optimises the loops after profiling runs)."""
    runs = {}
    for impl in ("auto", "torch"):
        torch.manual_seed(0)
        model, bsz, bptt = build(arch, widths, impl)
        if arch != "awd_qrnn_ptb":
            bptt, bsz = 256, 2
        model.train()
        runs[impl] = (model, bsz, bptt, torch.optim.SGD(model.parameters(), lr=1e-3), [])
    for _ in range(2):
        for model, bsz, bptt, opt, _ in runs.values():
            one_update(model, bsz, bptt, opt)
    for _ in range(repeats):
        for model, bsz, bptt, opt, times in runs.values():
            t0 = time.perf_counter()
            n = one_update(model, bsz, bptt, opt)
            times.append(n / (time.perf_counter() - t0))
    return [statistics.median(r[4]) for r in runs.values()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-speed", action="store_true", help="only the launch counts")
    p.add_argument("--skip-counts", action="store_true",
                   help="only the CPU speed (the counts take ~7 minutes on 2 shared cores: SRU++ at bptt 1024 "
                   "through the profiler and Triton's interpreter)")
    args = p.parse_args()
    torch.manual_seed(0)
    if not args.skip_counts:
        launch_table()
    if args.skip_speed:
        return
    speed_table(args.repeats)


def launch_table():
    print("kernel launches per training update (forward + loss + backward; profiler count, widths reduced)")
    print(f"{'model':22s} | {'torch':>8s} | {'triton':>8s} | of which Triton kernels")
    for arch in ("srupp_enwik8_base", "awd_qrnn_ptb"):
        t0 = time.time()
        n_torch, _ = count_launches(arch, "torch")
        n_triton, k = count_launches(arch, "triton")
        print(f"{arch:22s} | {n_torch:8,d} | {n_triton:8,d} | {k} ({time.time() - t0:.0f}s to count)", flush=True)


def speed_table(repeats):
    print(f"\nCPU tokens/s of one update (median of {repeats}; {torch.get_num_threads()} threads; shared machine: noisy)")
    print(f"{'model':40s} | {'auto':>8s} | {'torch':>8s}")
    for arch, widths, label in (("awd_qrnn_ptb", {}, "awd_qrnn_ptb (24M, batch 20, bptt 70)"),
                                ("srupp_enwik8_base", {"n_d": 512, "n_proj": 128, "depth": 4},
                                 "srupp n_d 512 / p 128 / depth 4, 2×256")):
        auto, plain = cpu_speed(arch, widths, repeats)
        print(f"{label:40s} | {auto:8,.0f} | {plain:8,.0f}", flush=True)


if __name__ == "__main__":
    main()
