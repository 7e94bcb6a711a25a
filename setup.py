from setuptools import find_packages, setup

setup(
    name="awd-plugins",
    version="0.1.0",
    description="AWD-LSTM, AWD-QRNN, SHA-RNN, SRU/SRU++ and classic RNN language models as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["awd_plugins", "awd_plugins.*"]),
    python_requires=">=3.8",
    install_requires=[
        # a range, never a pin: an installed torch (2.13.0 CPU here) must satisfy it
        "torch>=2.1",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "fairseq==0.12.2; python_version < '3.11'",
        "numpy",
        "sentencepiece",
        "sacremoses",
        "tensorboardX",
        "matplotlib",
    ],
    extras_require={
        # the test extra installs the optional backends too, so that their tests run in CI
        "test": [
            "pytest",
            'triton; platform_system == "Linux" and platform_machine == "x86_64"',
            "faiss-cpu",
            "onnx",
            "onnxruntime",
        ],
        "knn": ["faiss-cpu"],
        "export": ["onnx", "onnxruntime"],
    },
    entry_points={
        "console_scripts": [
            "awd-help=awd_plugins.cli.help:cli_main",
            "awd-plot=awd_plugins.cli.plot_curves:cli_main",
            "awd-detokenize=awd_plugins.cli.detokenize:cli_main",
            "awd-pointer-search=awd_plugins.cli.pointer_search:cli_main",
            "awd-score=awd_plugins.cli.score:cli_main",
            "awd-dynamic-eval-search=awd_plugins.cli.dynamic_eval_search:cli_main",
            "awd-datastore=awd_plugins.cli.datastore:cli_main",
            "awd-export=awd_plugins.cli.export:cli_main",
            "awd-reproduce=awd_plugins.cli.reproduce:cli_main",
        ]
    },
)
