#!/usr/bin/env python3
"""Penn Treebank (Mikolov's 10k-vocabulary version, as awd-lstm-lm's getdata.sh) → data-bin.

    python preprocess/prepare_ptb.py --out data-bin/ptb                       # download
    python preprocess/prepare_ptb.py --from ../shared/data/ptb --out data-bin/ptb
"""

from _corpus import SPLITS, main

URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
ARCHIVE_MEMBERS = {s: f"simple-examples/data/ptb.{s}.txt" for s in SPLITS}
FILE_NAMES = {s: [f"ptb.{s}.txt"] for s in SPLITS}
SHA256 = {  # of the uncompressed ptb.{train,valid,test}.txt
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}

if __name__ == "__main__":
    main("ptb", urls={"archive": URL}, archive_members=ARCHIVE_MEMBERS, names=FILE_NAMES, sha256s=SHA256)
