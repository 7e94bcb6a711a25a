#!/usr/bin/env python3
"""WikiText-2 (v1, tokenized; as awd-lstm-lm's getdata.sh) → data-bin.

    python preprocess/prepare_wikitext2.py --out data-bin/wikitext-2          # download
    python preprocess/prepare_wikitext2.py --from ../shared/data/wikitext-2 --out data-bin/wikitext-2
    python preprocess/prepare_wikitext2.py --from data/wikitext-2-small --no-verify --out data-bin/wt2-small
"""

from _corpus import main

if __name__ == "__main__":
    main(
        "wikitext-2",
        urls={"archive": "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"},
        archive_members={s: f"wikitext-2/wiki.{s}.tokens" for s in ("train", "valid", "test")},
        names={s: [f"wiki.{s}.tokens"] for s in ("train", "valid", "test")},
        sha256s={
            "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
    )
