"""awd-plugins: AWD-LSTM, AWD-QRNN, SHA-RNN, SRU/SRU++ and classic RNN language
models for fairseq, loaded with ``--user-dir awd_plugins`` or by importing it.

Importing registers the task ``awd_language_modeling``, the models, the
``split_cross_entropy`` criterion and the ``nt_asgd`` optimizer/lr scheduler.
"""

from awd_plugins import compat as _compat

_compat.apply()

from awd_plugins.errors import install_excepthook as _install_excepthook  # noqa: E402

_install_excepthook()

from awd_plugins import failures as _failures  # noqa: E402

_failures.install()

from awd_plugins import criterions, models, optim, tasks  # noqa: E402,F401

__version__ = "0.1.0"
