#!/usr/bin/env python3
"""WikiText-103 (v1, tokenized; the file Transformer-XL's getdata.sh and the SRU++
scripts use) → data-bin.

    python preprocess/prepare_wikitext103.py --out data-bin/wikitext-103          # download (≈190 MB zip)
    python preprocess/prepare_wikitext103.py --from DIR --out data-bin/wikitext-103

``DIR`` holds ``wiki.{train,valid,test}.tokens`` (or ``{split}.txt``, optionally
``.gz``). As in the reference (REFERENCE §8.4) the vocabulary comes from the
training split only, case preserved, every type kept, ordered by frequency
(fairseq-preprocess's dictionary); every line, empty ones included, ends with
``</s>`` (the reference's ``<eos>``). fairseq's 4 special symbols come first and
the dictionary is padded to a multiple of 8, so it has 267,744 entries for the
reference's 267,735; ``<unk>`` in the text is fairseq's own unknown symbol. No
sha256 is recorded for these files here, so they are not verified.
"""

from _corpus import main

if __name__ == "__main__":
    main(
        "wikitext-103",
        urls={"archive": "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"},
        archive_members={s: f"wikitext-103/wiki.{s}.tokens" for s in ("train", "valid", "test")},
        names={s: [f"wiki.{s}.tokens"] for s in ("train", "valid", "test")},
        sha256s={},
    )
