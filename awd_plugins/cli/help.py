"""Option help for the plugin's models, task, criterion, optimizer and lr scheduler.

``fairseq-train --help --arch X`` does not show any architecture-, task- or
registry-specific option: argparse consumes ``-h`` in the first
``parse_known_args`` of ``fairseq.options.parse_args_and_arch``, before those
options are added (FAIRSEQ_NOTES §1, fairseq issue #701). This command builds the
option groups of the chosen components the way fairseq does (their dataclasses
through ``gen_parser_from_dataclass``, or a legacy ``add_args``) and prints each
option with its help text and default, where the default of a model option is
the one the chosen named architecture publishes (REFERENCE §2.5, §3.7)::

    python -m awd_plugins.cli.help --arch awd_lstm_ptb --task awd_language_modeling \\
        --criterion split_cross_entropy --optimizer nt_asgd --lr-scheduler nt_asgd
    python -m awd_plugins.cli.help --archs          # every named architecture and what it sets
    python -m awd_plugins.cli.help --arch awd_lstm --full   # fairseq-train's complete help

A named architecture's published values are found by calling its
``register_model_architecture`` function on an empty ``Namespace`` (it sets
``cfg.x = getattr(cfg, "x", default)``) and comparing with the model's dataclass.
"""

import argparse
import io
import sys
from typing import Dict, List, Optional

PLUGIN_MODULE = "awd_plugins"
COMPONENTS = ("criterion", "optimizer", "lr_scheduler")


class HelpError(ValueError):
    pass


def _registries():
    import awd_plugins  # noqa: F401  (registers everything)
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY, MODEL_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_REGISTRY

    return dict(arch_config=ARCH_CONFIG_REGISTRY, arch_model=ARCH_MODEL_NAME_REGISTRY,
                model_dc=MODEL_DATACLASS_REGISTRY, model=MODEL_REGISTRY, task=TASK_REGISTRY, registries=REGISTRIES)


def _is_plugin(cls) -> bool:
    return getattr(cls, "__module__", "").startswith(PLUGIN_MODULE)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# -- named architectures ----------------------------------------------------------------
def model_defaults(model: str) -> Dict[str, object]:
    """The model dataclass's own defaults (empty for a legacy model without a dataclass)."""
    reg = _registries()
    dc = reg["model_dc"].get(model)
    if dc is None:
        return {}
    inst = dc()
    return {k: inst._get_default(k) for k in inst._get_all_attributes() if not k.startswith("_")}


def arch_settings(arch: str) -> Dict[str, object]:
    """What the architecture function sets, called on an empty Namespace."""
    reg = _registries()
    ns = argparse.Namespace()
    try:
        reg["arch_config"][arch](ns)
    except AttributeError as e:  # a function that reads a value it does not default
        raise HelpError(f"architecture {arch}: its function needs a value it does not set itself ({e})")
    return vars(ns)


def arch_overrides(arch: str) -> Dict[str, object]:
    """Published values of ``arch`` that differ from its model's dataclass defaults."""
    reg = _registries()
    own = model_defaults(reg["arch_model"][arch])
    return {k: v for k, v in arch_settings(arch).items() if k not in own or own[k] != v}


def archs_of(model: str) -> List[str]:
    reg = _registries()
    return sorted(a for a, m in reg["arch_model"].items() if m == model)


def _setting(name: str, value) -> str:
    """How to ask for the value on the command line (a flag for True, name=value where no flag exists)."""
    if value is True:
        return _flag(name)
    if value is False or value is None:
        return f"{name}={value}"
    return f"{_flag(name)} {value}"


def format_archs(models: List[str]) -> str:
    out = io.StringIO()
    for model in models:
        archs = archs_of(model)
        out.write(f"Named architectures of model {model} (--arch NAME; values that differ from {model}'s own defaults):\n")
        width = max(len(a) for a in archs)
        for arch in archs:
            try:
                diff = arch_overrides(arch)
            except HelpError as e:
                out.write(f"  {arch:<{width}}  ({e})\n")
                continue
            text = "  ".join(_setting(k, v) for k, v in diff.items()) if diff else f"({model}'s own defaults)"
            out.write(f"  {arch:<{width}}  {text}\n")
        out.write("\n")
    return out.getvalue()


# -- option groups ----------------------------------------------------------------------
def _interpolations(dc) -> Dict[str, str]:
    """Fields whose default is ``${group.name}``: shown as "same as --name"."""
    if dc is None:
        return {}
    inst = dc()
    out = {}
    for k in inst._get_all_attributes():
        default = inst._get_default(k)
        if isinstance(default, str) and default.startswith("${"):
            out[k] = _flag(default[2:-1].split(".")[-1])
    return out


def _add_component(group, cls, dc, delete_default=False):
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    if dc is not None:
        gen_parser_from_dataclass(group, dc(), delete_default=delete_default)
    elif hasattr(cls, "add_args"):
        cls.add_args(group)


def _annotate(group, notes: Dict[str, str], interpolated: Dict[str, str]):
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS:
            continue
        text = (action.help or "").rstrip()
        if not action.option_strings:  # positional (the task's data directory)
            default = None
        elif action.dest in notes:
            default = notes[action.dest]
        elif action.default is None and action.dest in interpolated:
            default = f"same as {interpolated[action.dest]}"
        elif action.default is argparse.SUPPRESS:
            default = None
        else:
            default = str(action.default).replace("%", "%%")
        if default is not None:
            text = f"{text} [default: {default}]" if text else f"[default: {default}]"
        action.help = text


def _mark_empty(group):
    if not group._group_actions:
        group.description = "(no options of its own)"


def _choose(kind: str, name: str, registry: dict, flag: str) -> type:
    if name not in registry:
        plugin = sorted(n for n, c in registry.items() if _is_plugin(c))
        raise HelpError(f"unknown {flag} {name!r}; the plugin's: {', '.join(plugin)} (or any fairseq {kind})")
    return registry[name]


def build_parser(arch=None, task=None, criterion=None, optimizer=None, lr_scheduler=None) -> argparse.ArgumentParser:
    reg = _registries()
    parser = argparse.ArgumentParser(
        prog="awd-help", add_help=False, usage=argparse.SUPPRESS,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=30, width=110),
    )
    if arch is not None:
        if arch not in reg["arch_model"]:
            plugin = sorted(a for a, m in reg["arch_model"].items() if _is_plugin(reg["model"][m]))
            raise HelpError(f"unknown --arch {arch!r}; the plugin's architectures: {', '.join(plugin)}")
        model = reg["arch_model"][arch]
        cls, dc = reg["model"][model], reg["model_dc"].get(model)
        title = f"model {model}" + (f", architecture {arch}" if arch != model else "") + f" ({cls.__module__})"
        group = parser.add_argument_group(title)
        _add_component(group, cls, dc)
        own = model_defaults(model)
        notes = {}
        for k, v in arch_overrides(arch).items():
            notes[k] = f"{v} (set by {arch}; {model}'s own: {own[k]})" if k in own else f"{v} (set by {arch})"
        _annotate(group, {k: v.replace("%", "%%") for k, v in notes.items()}, _interpolations(dc))
        _mark_empty(group)
    if task is not None:
        cls = _choose("task", task, reg["task"], "--task")
        dc = getattr(cls, "__dataclass", None)
        group = parser.add_argument_group(f"task {task} ({cls.__module__})")
        _add_component(group, cls, dc)
        _annotate(group, {}, _interpolations(dc))
        _mark_empty(group)
    for kind, name in zip(COMPONENTS, (criterion, optimizer, lr_scheduler)):
        if name is None:
            continue
        registry = reg["registries"][kind]["registry"]
        cls = _choose(kind.replace("_", " "), name, registry, _flag(kind))
        dc = reg["registries"][kind]["dataclass_registry"].get(name)
        group = parser.add_argument_group(f"{kind.replace('_', '-')} {name} ({cls.__module__})")
        _add_component(group, cls, dc)
        _annotate(group, {}, _interpolations(dc))
        _mark_empty(group)
    return parser


def full_help(arch=None, task=None, criterion=None, optimizer=None, lr_scheduler=None) -> str:
    """fairseq-train's complete help with the chosen components (FAIRSEQ_NOTES §1 helper)."""
    import logging
    import os

    from fairseq import options

    plugin_dir = os.path.dirname(os.path.abspath(__file__))
    argv = ["--user-dir", plugin_dir, "DATA"]
    for flag, value in (("--arch", arch), ("--task", task), ("--criterion", criterion),
                        ("--optimizer", optimizer), ("--lr-scheduler", lr_scheduler)):
        if value is not None:
            argv += [flag, value]
    logging.getLogger("fairseq.utils").setLevel(logging.WARNING)  # "--user-dir ... already imported"
    parser = options.get_training_parser(default_task=task or "awd_language_modeling")
    options.parse_args_and_arch(parser, input_args=argv, parse_known=True)  # adds the component groups
    parser.prog = "fairseq-train"
    return parser.format_help()


def plugin_listing() -> str:
    reg = _registries()
    lines = ["awd-plugins components (see --arch/--task/--criterion/--optimizer/--lr-scheduler NAME for options):"]
    models = sorted(m for m, c in reg["model"].items() if _is_plugin(c))
    lines.append("  models: " + ", ".join(models))
    lines.append("  tasks: " + ", ".join(sorted(n for n, c in reg["task"].items() if _is_plugin(c))))
    for kind in COMPONENTS:
        names = sorted(n for n, c in reg["registries"][kind]["registry"].items() if _is_plugin(c))
        lines.append(f"  {kind.replace('_', ' ')}s: " + ", ".join(names))
    return "\n".join(lines) + "\n\n" + format_archs(models)


def help_text(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(
        prog="awd-help",
        description="Print the options (help text and defaults) of a model architecture, task, criterion, "
        "optimizer and lr scheduler, which fairseq-train --help does not show (FAIRSEQ_NOTES §1).",
    )
    parser.add_argument("--arch", "-a", help="named architecture or model, e.g. awd_lstm_ptb")
    parser.add_argument("--task", help="e.g. awd_language_modeling")
    parser.add_argument("--criterion", help="e.g. split_cross_entropy")
    parser.add_argument("--optimizer", help="e.g. nt_asgd")
    parser.add_argument("--lr-scheduler", help="e.g. nt_asgd")
    parser.add_argument("--archs", action="store_true",
                        help="list the named architectures (of --arch's model, or all the plugin's) and what they set")
    parser.add_argument("--full", action="store_true",
                        help="print fairseq-train's complete help (all common options) with these components")
    args = parser.parse_args(argv)
    chosen = dict(arch=args.arch, task=args.task, criterion=args.criterion, optimizer=args.optimizer,
                  lr_scheduler=args.lr_scheduler)
    if args.full:
        build_parser(**chosen)  # validates the names with a clear message first
        return full_help(**chosen)
    if not any(chosen.values()):
        return plugin_listing()
    text = build_parser(**chosen).format_help().lstrip("\n")
    if args.arch is not None or args.archs:
        reg = _registries()
        models = [reg["arch_model"][args.arch]] if args.arch else sorted(
            m for m, c in reg["model"].items() if _is_plugin(c))
        text += "\n" + format_archs(models)
    return text


def cli_main(argv=None):
    try:
        text = help_text(argv)
    except HelpError as e:
        print(f"awd-help: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(text)


if __name__ == "__main__":
    cli_main()
