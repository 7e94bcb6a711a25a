"""Checkpoint files: what is loaded, how it is written, what a resume starts from.

fairseq reads every checkpoint through ``checkpoint_utils.load_checkpoint_to_cpu``
(``fairseq-eval-lm``, ``fairseq-interactive``, ``fairseq-generate``, ``fairseq-validate``,
the hub's ``from_pretrained``, ``pointer_search`` through ``load_model_ensemble_and_task``;
``fairseq-train --restore-file`` / ``--finetune-from-model`` through the trainer) and
writes them in ``checkpoint_utils.save_checkpoint``. :func:`install` (called by
``compat.apply()`` at plugin import) wraps these functions of that module:

* **loading untrusted files** (``load_checkpoint_to_cpu``, ``_upgrade_state_dict``,
  ``load_model_ensemble_and_task``): a file that is not a
  readable torch file of a dict (missing, empty, truncated, text, a pickle that needs
  code: refused by torch's ``weights_only`` loader), or whose stored configuration
  names a model architecture or a task that this package does not register, is
  refused with one :class:`~awd_plugins.errors.AwdUserError` line *before* anything
  is built from it (checked on the state as loaded, before fairseq's upgrade of old
  checkpoints, and again after it). The configuration is a dict of strings, but fairseq builds
  whatever it names, and some of fairseq's own models ``eval()`` strings of their
  config (``transformer_lm``'s ``character_filters``, ``fconv``'s layer lists), so
  a file made only of dicts and strings could run code. The stored ``bpe`` / ``tokenizer``
  (which the hub builds) must be none or one of fairseq's local ones. Names of components the user
  trusts can be added with ``AWD_TRUSTED_CHECKPOINT_COMPONENTS=name,name``.
* **atomic checkpoint files** (``PathManager.copy`` → :func:`atomic_copy`): fairseq writes
  ``checkpoint_E_U.pt`` to ``.tmp`` and renames it, but then *copies* it over
  ``checkpoint_best.pt`` / ``checkpoint_last.pt`` in place, so a kill during the copy
  left an empty best/last file. The copy now goes to a temporary name in the same
  folder, is flushed, and replaces the destination with ``os.replace``.
* **resume** (``load_checkpoint``, training only): a ``checkpoint_last.pt`` that does not load is
  reported in one line and the run resumes from the newest checkpoint of the save
  dir that loads (or stops with that line when none does); resuming an existing
  ``--save-dir`` is announced; a ``--restore-file`` / ``--finetune-from-model`` that
  does not exist stops the run instead of training from scratch.
"""

import logging
import os
import re

from awd_plugins.atomic import atomic_file
from awd_plugins.errors import AwdUserError

logger = logging.getLogger("awd_plugins.checkpoints")

TRUST_ENV = "AWD_TRUSTED_CHECKPOINT_COMPONENTS"
_PACKAGE = __name__.split(".")[0]


class UnreadableCheckpoint(AwdUserError):
    """The file is not a checkpoint that can be loaded (missing, empty, truncated, not torch)."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class RefusedCheckpoint(AwdUserError):
    """The checkpoint names components this package does not provide: not built."""


# -- what a checkpoint may name -----------------------------------------------------------
def _trusted_extra():
    return {n.strip() for n in os.environ.get(TRUST_ENV, "").split(",") if n.strip()}


def _is_ours(registry, name) -> bool:
    cls = registry.get(name) if isinstance(name, str) else None
    return cls is not None and getattr(cls, "__module__", "").split(".")[0] == _PACKAGE


def _raw(node):
    """A config node as plain Python without resolving interpolations (no resolver runs)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=False)
    if hasattr(node, "__dict__") and not isinstance(node, (dict, str)):
        return vars(node)
    return node


# The hub (``from_pretrained``) also builds the stored ``bpe`` / ``tokenizer``: allowed are none
# and fairseq's local, file-based ones (no download from a stored URL, no code).
LOCAL_TEXT_PROCESSORS = frozenset({"space", "moses", "nltk", "sentencepiece", "subword_nmt", "fastbpe", "bytes",
                                   "characters", "byte_bpe"})


def _named_components(state):
    """(model names, task names, bpe/tokenizer names) that a checkpoint's ``args`` / ``cfg`` would
    make fairseq build."""
    models, tasks, text = [], [], []
    args = state.get("args")
    if args is not None:
        raw = _raw(args)
        if not isinstance(raw, dict):
            raise RefusedCheckpoint("its 'args' entry is not an option namespace")
        models.append(raw.get("arch"))
        tasks.append(raw.get("task"))
        text += [raw.get("bpe"), raw.get("tokenizer")]
    cfg = state.get("cfg")
    if cfg is not None:
        raw = _raw(cfg)
        if not isinstance(raw, dict):
            raise RefusedCheckpoint("its 'cfg' entry is not a configuration")
        model, task = _raw(raw.get("model")), _raw(raw.get("task"))
        if isinstance(model, dict) and ("_name" in model or "arch" in model):
            models += [model[k] for k in ("_name", "arch") if k in model]
        else:
            models.append(None)
        tasks.append(task.get("_name", task.get("task")) if isinstance(task, dict) else None)
        for key in ("bpe", "tokenizer"):
            node = _raw(raw.get(key))
            text.append(node.get("_name", "<unnamed>") if isinstance(node, dict) else node)
    if args is None and cfg is None:
        raise RefusedCheckpoint("it holds neither 'args' nor 'cfg': not a fairseq checkpoint")
    return models, tasks, [name for name in text if name is not None]


def check_components(state, path="checkpoint"):
    """Raise :class:`RefusedCheckpoint` unless every model/task ``state`` names is this package's."""
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    try:
        models, tasks, text_processors = _named_components(state)
    except RefusedCheckpoint as e:
        raise RefusedCheckpoint(f"{path}: refused: {e}") from None
    trusted = _trusted_extra()
    for name in models:
        if name in trusted:
            continue
        if not (_is_ours(ARCH_MODEL_REGISTRY, name) or _is_ours(MODEL_REGISTRY, name)):
            raise RefusedCheckpoint(
                f"{path}: refused: its model architecture {name!r} is not one of awd_plugins' "
                f"(a checkpoint's configuration is built as stored, so only this package's models are "
                f"loaded; set {TRUST_ENV}={name} to load one you trust)"
            )
    for name in tasks:
        if name in trusted:
            continue
        if not _is_ours(TASK_REGISTRY, name):
            raise RefusedCheckpoint(
                f"{path}: refused: its task {name!r} is not one of awd_plugins' "
                f"(set {TRUST_ENV}={name} to load one you trust)"
            )
    for name in text_processors:
        if name not in trusted and name not in LOCAL_TEXT_PROCESSORS:
            raise RefusedCheckpoint(
                f"{path}: refused: its bpe/tokenizer {name!r} is not one of fairseq's local ones "
                f"(set {TRUST_ENV}={name} to load one you trust)"
            )


# -- loading ----------------------------------------------------------------------------
def _unreadable_reason(path, exc) -> str:
    if isinstance(exc, FileNotFoundError) or not os.path.exists(path):
        return "no such checkpoint file"
    if os.path.isdir(path):
        return "is a folder, not a checkpoint file"
    size = os.path.getsize(path)
    if size == 0:
        return "empty file (0 bytes), not a checkpoint (was its writing interrupted?)"
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    # torch's weights_only loader says "Weights only load failed" for any bad file; only an
    # "Unsupported global" is a pickle that wants to run code
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)|Unsupported global", str(exc))
    if match:
        what = f" ({match.group(1)})" if match.group(1) else ""
        return (f"refused: it needs to run pickled code{what} to load, which a checkpoint never needs "
                f"(torch weights_only loading)")
    if "weights only load failed" in first.lower():  # torch's advice on weights_only, not the cause
        return f"not a readable checkpoint ({size:,} bytes; truncated, or not a torch file)"
    return f"not a readable checkpoint ({size:,} bytes; truncated, or not a torch file: {type(exc).__name__}: {first[:120]})"


def check_structure(state, path="checkpoint"):
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(path, f"holds a {type(state).__name__}, not a fairseq checkpoint")
    if not isinstance(state.get("model"), dict):
        raise UnreadableCheckpoint(path, "holds no model weights ('model' entry): not a fairseq checkpoint")
    check_components(state, path)


def make_upgrade_state_dict(original):
    """fairseq's upgrade of old checkpoints, run only on a state that passed :func:`check_structure`."""

    def _upgrade_state_dict(state):
        check_structure(state, path=_loading.get("path", "checkpoint"))
        return original(state)

    _upgrade_state_dict.awd_guard = True
    return _upgrade_state_dict


_loading = {}  # the path being loaded, for the messages of the upgrade guard


def make_load_checkpoint_to_cpu(original):
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        _loading["path"] = path
        try:
            state = original(path, arg_overrides, load_on_all_ranks)
        except (AwdUserError, KeyboardInterrupt):
            raise
        except Exception as e:  # torch.load / unpickling errors of any kind
            raise UnreadableCheckpoint(path, _unreadable_reason(path, e)) from None
        finally:
            _loading.pop("path", None)
        check_structure(state, path)  # again after the upgrade, which may rename components
        _loading["resumed_cfg"] = state.get("cfg")  # for the notice of load_checkpoint
        return state

    load_checkpoint_to_cpu.__doc__ = (original.__doc__ or "") + "\n(awd_plugins: readable dicts naming this package's model and task only.)"
    load_checkpoint_to_cpu.awd_guard = True
    return load_checkpoint_to_cpu


def make_load_model_ensemble_and_task(original):
    def load_model_ensemble_and_task(filenames, *args, **kwargs):
        if not filenames or any(name is None for name in filenames):
            raise AwdUserError("no checkpoint given: name the model file with --path")
        for name in filenames:
            if isinstance(name, str) and not os.path.exists(name) and "://" not in name:
                raise UnreadableCheckpoint(name, "no such checkpoint file (--path)")
        return original(filenames, *args, **kwargs)

    load_model_ensemble_and_task.awd_guard = True
    return load_model_ensemble_and_task


def loads(path) -> bool:
    """Whether ``path`` is a checkpoint that passes :func:`load_checkpoint_to_cpu`."""
    from fairseq import checkpoint_utils

    try:
        checkpoint_utils.load_checkpoint_to_cpu(path)
        return True
    except AwdUserError:
        return False


# -- writing ----------------------------------------------------------------------------
def atomic_copy(src: str, dst: str) -> bool:
    """Copy ``src`` to ``dst`` so that ``dst`` is always either the old or the complete new file."""
    with atomic_file(dst, "wb") as out, open(src, "rb") as inp:
        while True:
            chunk = inp.read(1 << 22)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())  # on disk before it replaces the destination
    return True


def make_path_manager(base):
    class AtomicCopyPathManager(base):
        """fairseq's PathManager whose local ``copy`` replaces the destination atomically."""

        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if base.path_requires_pathmanager(src_path) or base.path_requires_pathmanager(dst_path):
                return base.copy(src_path, dst_path, overwrite)
            return atomic_copy(src_path, dst_path)

    return AtomicCopyPathManager


# -- resuming ---------------------------------------------------------------------------
# options that a resume of the same experiment may change (train longer, save differently)
# mirrors of options that may change between a run and its resume (the task copies them with II(...))
_RESUME_MAY_CHANGE = {"task.save_interval_updates", "task.max_update", "task.data", "task.save_dir",
                      "task.finetune_from_model", "task.cpu"}
_COMPARED = ("model", "task", "criterion", "optimizer", "lr_scheduler")
_COMPARED_KEYS = ("optimization.lr", "optimization.clip_norm", "optimization.update_freq", "dataset.batch_size",
                  "common.seed")


def changed_options(saved_cfg, current_cfg, limit=6):
    """``key: saved → current`` for the training options in which two configurations differ."""
    from omegaconf import OmegaConf

    def flat(cfg):
        if cfg is None:
            return {}
        tree = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
        out = {}
        for group in _COMPARED:
            for key, value in (tree.get(group) or {}).items():
                out[f"{group}.{key}"] = value
        for dotted in _COMPARED_KEYS:
            group, key = dotted.split(".")
            if key in (tree.get(group) or {}):
                out[dotted] = tree[group][key]
        return out

    try:
        old, new = flat(saved_cfg), flat(current_cfg)
    except Exception:  # an unexpected layout only costs the notice
        return []
    keys = sorted(k for k in set(old) & set(new) if old[k] != new[k] and k not in _RESUME_MAY_CHANGE)
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys[:limit]] + (["..."] if len(keys) > limit else [])


def _candidates(save_dir, exclude):
    """Checkpoint files of ``save_dir`` other than ``exclude``, newest first."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return []
    paths = [os.path.join(save_dir, n) for n in names if re.fullmatch(r"checkpoint.*\.pt", n)]
    paths = [p for p in paths if os.path.isfile(p) and os.path.abspath(p) != os.path.abspath(exclude)]
    return sorted(paths, key=lambda p: os.path.getmtime(p), reverse=True)


def newest_loadable(save_dir, exclude):
    for path in _candidates(save_dir, exclude):
        if loads(path):
            return path
    return None


def make_load_checkpoint(original):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        suffix = trainer.checkpoint_suffix or ""
        default = cfg.restore_file == "checkpoint_last.pt"
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        if not default:
            path = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
            if "://" not in path and not os.path.isfile(path):
                raise UnreadableCheckpoint(
                    path, "no such checkpoint file (--restore-file): fairseq would silently train from scratch"
                )
        elif cfg.finetune_from_model is not None and not os.path.exists(last):
            if not os.path.isfile(cfg.finetune_from_model):
                raise UnreadableCheckpoint(cfg.finetune_from_model, "no such checkpoint file (--finetune-from-model)")
        elif os.path.exists(last):
            logger.warning(
                f"{cfg.save_dir} already holds a run: resuming it from {last} "
                "(give a new --save-dir to start a new experiment)"
            )
        try:
            result = original(cfg, trainer, **passthrough_args)
            if default and result[0] is not None and _loading.get("resumed_cfg") is not None:
                changed = changed_options(_loading.pop("resumed_cfg", None), getattr(trainer, "cfg", None))
                if changed:
                    logger.warning(
                        f"the run resumed from {cfg.save_dir} was started with other options ({'; '.join(changed)}); "
                        "give a new --save-dir for a new experiment"
                    )
            return result
        except UnreadableCheckpoint as e:
            if not default or os.path.abspath(e.path) != os.path.abspath(last):
                raise
            fallback = newest_loadable(cfg.save_dir, exclude=last)
            if fallback is None:
                raise AwdUserError(
                    f"{last} does not load ({e.reason}) and no other checkpoint of {cfg.save_dir} does: "
                    "move it away to start from scratch, or give --restore-file"
                ) from None
            logger.warning(f"{last} does not load ({e.reason}); resuming from {fallback}, the newest "
                           f"checkpoint of {cfg.save_dir} that loads")
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.restore_file = fallback
            try:
                return original(cfg, trainer, **passthrough_args)
            finally:
                with open_dict(cfg):
                    cfg.restore_file = "checkpoint_last.pt"

    load_checkpoint.awd_guard = True
    return load_checkpoint


def make_split_paths(original):
    def split_paths(paths, *args, **kwargs):
        if paths is None:  # fairseq-generate / fairseq-interactive split --path before loading it
            raise AwdUserError("no checkpoint given: name the model file with --path")
        return original(paths, *args, **kwargs)

    split_paths.awd_guard = True
    return split_paths


def install():
    """Wrap fairseq's checkpoint reading and writing (idempotent)."""
    from fairseq import checkpoint_utils, utils

    if not getattr(utils.split_paths, "awd_guard", False):
        utils.split_paths = make_split_paths(utils.split_paths)

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "awd_guard", False):
        checkpoint_utils.load_checkpoint_to_cpu = make_load_checkpoint_to_cpu(checkpoint_utils.load_checkpoint_to_cpu)
    if not getattr(checkpoint_utils._upgrade_state_dict, "awd_guard", False):
        checkpoint_utils._upgrade_state_dict = make_upgrade_state_dict(checkpoint_utils._upgrade_state_dict)
    if not getattr(checkpoint_utils.load_model_ensemble_and_task, "awd_guard", False):
        checkpoint_utils.load_model_ensemble_and_task = make_load_model_ensemble_and_task(
            checkpoint_utils.load_model_ensemble_and_task
        )
    if not getattr(checkpoint_utils.load_checkpoint, "awd_guard", False):
        checkpoint_utils.load_checkpoint = make_load_checkpoint(checkpoint_utils.load_checkpoint)
    if not getattr(checkpoint_utils.PathManager, "awd_atomic", False):
        checkpoint_utils.PathManager = make_path_manager(checkpoint_utils.PathManager)
        checkpoint_utils.PathManager.awd_atomic = True
