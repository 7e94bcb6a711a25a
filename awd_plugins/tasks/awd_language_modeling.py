"""Task ``awd_language_modeling``: the AWD training and evaluation procedure in fairseq.

REFERENCE §1 and §3.1, §10: the corpus is cut into B contiguous streams per rank,
never shuffled; batches are consecutive windows of those streams and the model
carries its (detached) state from one window to the next, from zeros at the start
of every epoch and every evaluation. Training windows have the variable AWD length
and the learning rate of each update is scaled by ``seq_len / bptt``; evaluation
windows have a fixed length. ``fairseq-eval-lm`` evaluates in corpus order with
carried state and, with ``--pointer-window``, the continuous cache pointer.

The hooks used are those FAIRSEQ_NOTES §2, §3 and §5 found to work on fairseq
0.12.3.1: ``get_batch_iterator`` (an ``EpochBatchIterator`` with a per-epoch
callable batch sampler and shuffling disabled), ``optimizer_step`` (lr rescale),
``begin_epoch`` / ``begin_valid_epoch`` / ``train_step`` (state reset and the
NT-ASGD averaged-weight swap) and ``eval_lm_dataloader``.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq import metrics, utils
from fairseq.data import (
    AppendTokenDataset,
    Dictionary,
    IdDataset,
    ListDataset,
    NestedDictionaryDataset,
    NumelDataset,
    PadDataset,
    PrependTokenDataset,
    StripTokenDataset,
    data_utils,
    iterators,
)
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from awd_plugins.carried_state import CarriedTrainingState
from awd_plugins.data.stream_dataset import (
    StreamDataset,
    StreamRows,
    TokenStream,
    describe_shard,
    evaluation_windows,
    training_windows,
    window_columns,
)
from awd_plugins import dynamic_eval
from awd_plugins.autocast import enable_bf16_autocast
from awd_plugins.errors import AwdUserError
from awd_plugins.models.remap_embeddings import remap_for_finetuning
from awd_plugins.optim import nt_asgd
from awd_plugins.tasks import _input_checks

logger = logging.getLogger(__name__)


@dataclass
class AwdLanguageModelingConfig(FairseqDataclass):
    data: Optional[str] = field(default=None, metadata={"help": "path to a data-bin made by fairseq-preprocess --only-source"})
    bptt: int = field(
        default=70,
        metadata={"help": "BPTT length: mean training window (variable, see --fixed-bptt) and evaluation window"},
    )
    fixed_bptt: bool = field(
        default=False, metadata={"help": "train on fixed --bptt windows (PyTorch word LM, SRU++) instead of AWD's variable length"}
    )
    bptt_cap: Optional[int] = field(
        default=None,
        metadata={"help": "cap on a sampled training window (finetune.py: bptt+10; SHA-RNN: bptt); default no cap"},
    )
    no_lr_rescale: bool = field(
        default=False, metadata={"help": "do not scale the learning rate by seq_len/bptt per update (SHA-RNN)"}
    )
    eval_batch_size: int = field(
        default=10,
        metadata={
            "help": "streams for validation during training (the reference's eval_batch_size); "
            "fairseq-eval-lm uses --batch-size, default 1 as the reference's test"
        },
    )
    distributed_timeout: Optional[float] = field(
        default=None,
        metadata={"help": "seconds a rank waits for the others in a collective before the run stops with an error "
                  "(default torch's: 30 min gloo, 10 min NCCL), e.g. when another rank was stopped"},
    )
    pointer_window: int = field(
        default=0, metadata={"help": "continuous cache pointer: number of cached positions (0 = off; PTB 500, WT2 3785)"}
    )
    pointer_theta: float = field(default=1.0, metadata={"help": "pointer inverse temperature θ on raw dot products (PTB 1.0, WT2 0.662)"})
    pointer_lambda: float = field(default=0.1, metadata={"help": "pointer mixing weight λ (PTB 0.1, WT2 0.1279)"})
    dynamic_eval: Optional[ChoiceEnum(["sgd", "rms"])] = field(
        default=None,
        metadata={"help": "fairseq-eval-lm: dynamic evaluation (Krause et al. 2018), adapting the weights to each "
                  "scored segment with this rule (rms: RMS-normalised with training-set statistics)"},
    )
    dynamic_eval_lr: float = field(default=5e-5, metadata={"help": "dynamic evaluation learning rate η (0 = plain evaluation)"})
    dynamic_eval_decay: float = field(default=0.002, metadata={"help": "dynamic evaluation decay λ toward the trained weights"})
    dynamic_eval_bptt: Optional[int] = field(
        default=5, metadata={"help": "dynamic evaluation segment length (one update per segment; the paper's 5)"}
    )
    dynamic_eval_epsilon: float = field(default=2e-5, metadata={"help": "rms rule: ε added to the gradient RMS"})
    dynamic_eval_stats_batches: int = field(
        default=0, metadata={"help": "rms rule: training batches for the gradient statistics (0 = the whole split)"}
    )
    dynamic_eval_stats_bsz: int = field(default=100, metadata={"help": "rms rule: streams per statistics batch"})
    knn_datastore: Optional[str] = field(
        default=None, metadata={"help": "fairseq-eval-lm: kNN-LM (Khandelwal et al. 2020) over this awd-datastore folder"}
    )
    knn_k: int = field(default=1024, metadata={"help": "kNN-LM: neighbours retrieved per position"})
    knn_lambda: float = field(default=0.25, metadata={"help": "kNN-LM: mixing weight λ of p_kNN (0 = plain evaluation)"})
    knn_temperature: float = field(default=1.0, metadata={"help": "kNN-LM: temperature T of softmax(−distance/T)"})
    knn_nprobe: int = field(default=32, metadata={"help": "kNN-LM: inverted lists searched by an ivf datastore"})
    tokens_per_sample: int = field(
        default=1024, metadata={"help": "unused: accepted so that fairseq-eval-lm's --context-window parses (state is carried instead)"}
    )
    remap_embeddings: Optional[str] = field(
        default=None,
        metadata={"help": "with --finetune-from-model: the dict.txt the pretrained model was trained with; "
                  "embedding/output rows are mapped by symbol to this data-bin's dictionary (new symbols: mean row)"},
    )
    finetune_from_model: Optional[str] = II("checkpoint.finetune_from_model")
    save_dir: str = II("checkpoint.save_dir")
    cpu_bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 mixed precision on the CPU (autocast): matmuls in bf16; weights, optimizer, softmax, "
            "losses and the pointer in fp32 (fairseq's --bf16 means TPU on a CPU, --amp is CUDA-only)"
        },
    )
    gpu_bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 mixed precision on a CUDA GPU with native bf16 (Ampere or newer) by autocast: matmuls and "
            "attention in bf16; weights, optimizer, softmax, losses, AR/TAR, the pointer and cuDNN RNNs in fp32; "
            "no loss scaling needed (replaces --amp, whose fp16 autocast needs a scaler)"
        },
    )
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    amp: bool = II("common.amp")
    cpu: bool = II("common.cpu")
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    save_interval_updates: int = II("checkpoint.save_interval_updates")
    max_update: int = II("optimization.max_update")


@register_task("awd_language_modeling", dataclass=AwdLanguageModelingConfig)
class AwdLanguageModelingTask(FairseqTask):
    def __init__(self, cfg: AwdLanguageModelingConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._iterators = {}
        self._sampled_len = {}
        self._optimizer = None
        self._seq_len = None
        self._train_itr = None
        self._valid_epoch, self._valid_observed = 0, True
        self._model = None

    @classmethod
    def setup_task(cls, cfg: AwdLanguageModelingConfig, **kwargs):
        if not cfg.data:
            raise AwdUserError("no data directory given (the first positional argument)")
        data = utils.split_paths(cfg.data)[0]
        dict_path = os.path.join(data, "dict.txt")
        if not os.path.isdir(data):
            raise AwdUserError(f"data directory not found: {data}")
        if not os.path.isfile(dict_path):
            raise AwdUserError(f"{dict_path} not found: binarize the corpus with fairseq-preprocess --only-source first")
        if cfg.bptt < 1:
            raise AwdUserError(f"--bptt must be positive, got {cfg.bptt}")
        _input_checks.check_task_options(cfg)
        timeout = getattr(cfg, "distributed_timeout", None)  # absent from older checkpoints' configs
        if _input_checks.set_distributed_timeout(timeout):
            logger.info(f"collectives time out after {timeout} s")
        dictionary = Dictionary.load(dict_path)
        logger.info(f"dictionary: {len(dictionary)} types")
        return cls(cfg, dictionary)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return None

    # -- data ----------------------------------------------------------------------------
    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        path = os.path.join(utils.split_paths(self.cfg.data)[0], split)
        indexed = _input_checks.load_split(path, split, self.dictionary, self.cfg.data)
        # memory-mapped: each rank reads only its own rows' windows (issue #16)
        stream = TokenStream.from_indexed(indexed, self.dictionary.eos(), split)
        self.datasets[split] = stream
        logger.info(f"{split}: {len(stream) - 1:,} tokens")

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, seed=1, num_workers=0, epoch=1, **kwargs):
        if not isinstance(dataset, TokenStream):  # prompts for sampling: fairseq's own batching
            return super().get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=max_sentences, seed=seed,
                num_workers=num_workers, epoch=epoch, **kwargs,
            )
        training = dataset.split == self.cfg.train_subset
        if training:
            if not max_sentences:
                raise AwdUserError("give the number of streams per rank with --batch-size (--max-tokens is not used)")
            bsz = max_sentences
        else:
            bsz = self.cfg.eval_batch_size
        return self._stream_iterator(dataset, bsz, training, num_workers, epoch, key=dataset.split)

    def _stream_iterator(self, dataset, bsz, training, num_workers=0, epoch=1, key="eval"):
        cache_key = (dataset.split, bsz, training, key)
        if cache_key in self._iterators:
            return self._iterators[cache_key]
        world, rank = 1, 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = distributed_utils.get_data_parallel_world_size()
            rank = distributed_utils.get_data_parallel_rank()
        try:
            streams = StreamDataset(
                StreamRows(dataset, bsz, rank, world, _input_checks.min_stream_length(training)), carry_key=key
            )
        except ValueError as e:
            raise AwdUserError(f"{dataset.split}: {e}")
        # every rank says which streams it owns (fairseq silences INFO on ranks > 0)
        (logger.warning if world > 1 else logger.info)(describe_shard(streams.rows, dataset.split, rank, world))
        if training:
            sampler = self._training_sampler
        else:
            sampler = evaluation_windows(streams.length, self.cfg.bptt)
        itr = iterators.EpochBatchIterator(
            dataset=streams, collate_fn=streams.collater, batch_sampler=sampler, seed=self.cfg.seed,
            num_shards=1, shard_id=0, num_workers=num_workers, epoch=epoch, disable_shuffling=True,
        )
        self._iterators[cache_key] = itr
        if training:
            self._train_itr = itr
        return itr

    def _training_sampler(self, streams: StreamDataset, epoch: int):
        # Epoch 1 draws exactly what the reference draws after np.random.seed(seed);
        # later epochs get their own generator, so a resumed run sees the same windows.
        rng = np.random.RandomState(self.cfg.seed if epoch == 1 else [self.cfg.seed, epoch])
        starts = training_windows(streams.length, self.cfg.bptt, rng, not self.cfg.fixed_bptt, self.cfg.bptt_cap)
        self._sampled_len = dict(starts)
        return [window_columns(start, seq_len, streams.length) for start, seq_len in starts]

    def eval_lm_dataloader(self, dataset, max_tokens=None, batch_size=None, max_positions=None, num_shards=1,
                           shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        if context_window > 0:
            logger.warning("--context-window is ignored: awd_language_modeling carries the recurrent state instead")
        bsz = _input_checks.check_eval_batch_size(batch_size)
        logger.info(f"evaluating {dataset.split} in corpus order: {bsz} stream(s), windows of {self.cfg.bptt}")
        if is_character_level(self.dictionary):
            logger.info(
                "character/byte-level dictionary: one token is one character (byte), so the "
                "'Loss (base 2)' fairseq-eval-lm prints is the bits per character (bpc)"
            )
        itr = self._stream_iterator(dataset, bsz, training=False, num_workers=num_workers, key="eval")
        batches = itr.next_epoch_itr(shuffle=False)
        if self.cfg.dynamic_eval:  # adapt the model to each segment after it is scored
            evaluator = dynamic_eval.from_task(self, self._model)
            return evaluator.wrap(self._model, batches, self.cfg.dynamic_eval_bptt, self.cfg.bptt)
        return batches

    # -- sampling (fairseq-interactive, hub .sample()) ------------------------------------
    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """Prompts as fairseq's language_modeling lays them out: ``</s>`` + prompt, no final ``</s>``."""
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        prompts = StripTokenDataset(ListDataset(src_tokens, np.array(src_lengths)), eos)
        source = PrependTokenDataset(prompts, eos)
        return NestedDictionaryDataset(
            {
                "id": IdDataset(),
                "net_input": {
                    "src_tokens": PadDataset(source, pad_idx=pad, left_pad=False),
                    "src_lengths": NumelDataset(source, reduce=False),
                },
                "target": PadDataset(AppendTokenDataset(prompts, pad), pad_idx=pad, left_pad=False),
            },
            sizes=[np.array(src_lengths)],
        )

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """Generation starts from ``</s>`` (the stream's line separator) and is forced through the prompt."""
        eos = self.dictionary.eos()
        with torch.no_grad():
            if prefix_tokens is None and sample["net_input"]["src_tokens"].nelement():
                prefix_tokens = sample["net_input"]["src_tokens"]
                if prefix_tokens[:, 0].eq(eos).all():
                    prefix_tokens = prefix_tokens[:, 1:]
            return generator.generate(models, sample, prefix_tokens=prefix_tokens, bos_token=eos)

    # -- model ---------------------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # for --dynamic-eval, which fairseq-eval-lm's dataloader hook wraps (False: an ensemble)
        self._model = model if self._model is None else False
        if getattr(self.cfg, "remap_embeddings", None) and not from_checkpoint:  # training only, not a reload of the finetuned model
            model.remap_embeddings = remap_for_finetuning(self.cfg, self.dictionary)
        # getattr: both options are absent from older checkpoints' task configs
        cpu_bf16, gpu_bf16 = getattr(self.cfg, "cpu_bf16", False), getattr(self.cfg, "gpu_bf16", False)
        if cpu_bf16 and gpu_bf16:
            raise AwdUserError("--cpu-bf16 and --gpu-bf16 are one option per device: give the one for this run")
        if cpu_bf16 or gpu_bf16:
            device = "cpu" if cpu_bf16 else "cuda"
            enable_bf16_autocast(model, device, self.cfg.fp16, self.cfg.bf16, getattr(self.cfg, "amp", False),
                                 on_gpu=torch.cuda.is_available() and not self.cfg.cpu)
            logger.info(f"--{device.replace('cuda', 'gpu')}-bf16: bf16 autocast on the {device.upper()} "
                        "(fp32 weights, optimizer, softmax, losses)")
        if self.cfg.pointer_window > 0:
            if not hasattr(model, "set_pointer"):
                raise AwdUserError(
                    f"--pointer-window needs a model that exposes its last-layer output; {type(model).__name__} does not"
                )
            try:
                model.set_pointer(self.cfg.pointer_window, self.cfg.pointer_theta, self.cfg.pointer_lambda)
            except ValueError as e:
                raise AwdUserError(str(e))
            logger.info(
                f"cache pointer: window {self.cfg.pointer_window}, theta {self.cfg.pointer_theta}, "
                f"lambda {self.cfg.pointer_lambda}"
            )
        if self.cfg.knn_datastore:
            from awd_plugins.knn import KnnDatastore

            c = self.cfg
            model.knn = KnnDatastore.load(c.knn_datastore, len(self.dictionary), c.knn_k, c.knn_lambda,
                                          c.knn_temperature, c.knn_nprobe)
            logger.info(f"kNN-LM: {model.knn.index.ntotal:,} keys from {c.knn_datastore}, k {c.knn_k}, lambda {c.knn_lambda}")
        return model

    # -- training hooks ------------------------------------------------------------------
    def begin_epoch(self, epoch, model):
        model.reset_carried_state(self.cfg.train_subset)
        self.training_state.begin_epoch(epoch, model)  # a mid-epoch resume carries the saved state in

    @property
    def training_state(self) -> CarriedTrainingState:
        # created on first use (training), kept on the task
        if getattr(self, "_training_state", None) is None:
            self._training_state = CarriedTrainingState(self.cfg.train_subset)
        return self._training_state

    def get_checkpoint_dict(self):
        # fairseq stores this under extra_state[<task class name>] (rank 0 only)
        end_of_epoch = self._train_itr is None or self._train_itr.end_of_epoch()
        saved = self.training_state.state_for_checkpoint(end_of_epoch)
        return {type(self).__name__: {"carried_state": saved}}

    def set_checkpoint_dict(self, state):
        if isinstance(state, dict) and "carried_state" in state:
            self.training_state.load_from_checkpoint(state["carried_state"])

    def begin_valid_epoch(self, epoch, model):
        model.reset_carried_state(keep=self.cfg.train_subset)
        self._valid_epoch, self._valid_observed = epoch, False
        if self._optimizer is not None and nt_asgd.swap_in_average(self._optimizer):
            logger.info("NT-ASGD: validating (and saving) the averaged weights")

    def post_validate(self, model, stats, agg):
        # NT-ASGD's trigger sees the first validation subset at the end of each epoch,
        # before fairseq writes the epoch's checkpoint (so a resume continues in the right mode)
        first, self._valid_observed = not self._valid_observed, True
        inner = nt_asgd.unwrap(self._optimizer)
        if first and inner is not None and self._train_itr is not None and self._train_itr.end_of_epoch():
            inner.observe_validation(self._valid_epoch, float(stats["loss"]))

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._optimizer = optimizer
        inner = nt_asgd.unwrap(optimizer)
        if inner is not None:
            inner.trigger_attached = True
        nt_asgd.swap_out_average(optimizer)
        if sample and "net_input" in sample:
            self._seq_len = self._sampled_len.get(int(sample["net_input"]["carry_pos"]), sample["target"].size(1))
        out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        saves_at = getattr(self.cfg, "save_interval_updates", 0) or 0, getattr(self.cfg, "max_update", 0) or 0
        self.training_state.after_update(update_num + 1, *saves_at)
        return out

    def optimizer_step(self, optimizer, model, update_num):
        if self.cfg.no_lr_rescale or self._seq_len is None:
            optimizer.step()
            return
        lr = optimizer.get_lr()
        optimizer.set_lr(lr * self._seq_len / self.cfg.bptt)
        metrics.log_scalar("lr_step", optimizer.get_lr(), weight=1, priority=310, round=4)
        optimizer.step()
        optimizer.set_lr(lr)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        inner = nt_asgd.unwrap(self._optimizer)
        if inner is not None and inner.switch_epoch is not None:
            metrics.log_scalar("asgd_switch_epoch", inner.switch_epoch, weight=0, priority=900)


def is_character_level(dictionary: Dictionary) -> bool:
    """True when every symbol (besides fairseq's specials and padding) is one character or a byte value."""
    symbols = dictionary.symbols[dictionary.nspecial :]
    words = [s for s in symbols if not s.startswith("madeupword")]
    return bool(words) and all(len(s) == 1 or (s.isdigit() and int(s) < 256) for s in words)
