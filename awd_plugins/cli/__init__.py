"""The commands a person runs (``awd-help``, ``awd-plot``, ``awd-detokenize``,
``awd-pointer-search``, ...), as opposed to what fairseq loads through
``--user-dir awd_plugins`` (tasks, models, criterions, optimizers).

Each module has a ``cli_main`` and runs as ``python -m awd_plugins.cli.NAME``.
"""
