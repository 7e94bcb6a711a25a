"""Output folders of the corpus preparation scripts: nothing the user made is ever
deleted or rewritten.

The rules every ``prepare_*.py`` script follows for ``--out`` (and ``--raw``):

* **Refused outright**, before anything is read or written: a folder that is,
  contains or lies inside an input (``--from``, the input file or folder, a
  ``--vocab`` file), that is or contains the current folder or the home folder,
  that is a symbolic link or not a folder, and ``--out``/``--raw`` nested in one
  another.
* **Not empty** → refused without ``--force``. With ``--force`` only a folder that
  is recognisably an earlier output of these scripts is replaced: it holds the
  marker file ``.awd-prepared.json`` (written into every output folder; it names
  the script and lists every file the script wrote there) and nothing besides the
  files that marker lists. Any other file in it (a checkpoint, notes, the corpus)
  → refused, the folder left as it is.
* **Atomic**: each output is built in a new temporary folder beside its
  destination (``.NAME.tmp-*``) and renamed into place only when complete; the old
  folder (empty, or an earlier output) is moved aside first and deleted after the
  rename. A failure or an interrupt leaves the destination as it was (an
  interrupted run may leave a ``.NAME.tmp-*`` folder, never a half-written data-bin).
"""

import json
import os
import shutil
import sys
import tempfile
from typing import Iterable, List, Optional, Tuple

import _corpus

MARKER = ".awd-prepared.json"

FORCE_HELP = (f"replace a non-empty output folder, but only one an earlier run of these scripts made (it holds "
              f"{MARKER}, which lists the files they wrote, and nothing else); without it a non-empty folder is refused")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _inside(path: str, folder: str) -> bool:
    """``path`` lies strictly inside ``folder`` (both real, absolute)."""
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def unsafe_reason(dest: str, inputs: Iterable[str] = ()) -> Optional[str]:
    """Why ``dest`` must never be an output folder (None when it may be), from its place alone."""
    real = _real(dest)
    if os.path.islink(os.path.abspath(dest).rstrip(os.sep)):
        return "is a symbolic link (give the folder it points to, or another one)"
    if os.path.exists(real) and not os.path.isdir(real):
        return "exists and is not a folder"
    places = [(_real(os.getcwd()), "the current folder")]
    home = os.path.expanduser("~")
    if home and home != "~":
        places.append((_real(home), "your home folder"))
    for place, name in places:
        if real == place:
            return f"is {name}"
        if _inside(place, real):
            return f"contains {name} ({place})"
    for given in inputs:
        if not given:
            continue
        source = _real(given)
        if real == source:
            return f"is the input {given}"
        if _inside(source, real):
            return f"contains the input {given}"
        if _inside(real, source):
            return f"lies inside the input {given}"
    return None


def marked_files(folder: str) -> Optional[List[str]]:
    """The files an earlier run wrote into ``folder`` according to its marker, or None without a valid marker."""
    path = os.path.join(folder, MARKER)
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return files


def _files_in(folder: str) -> List[str]:
    """Every file (and symbolic link) below ``folder``, as paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def replace_refusal(dest: str, force: bool) -> Optional[str]:
    """Why the existing folder ``dest`` may not be replaced (None when it is absent, empty, or a marked output and --force)."""
    if not os.path.isdir(dest) or not os.listdir(dest):
        return None
    if not force:
        return "is not empty; give --force to replace an earlier output of these scripts, or choose another folder"
    listed = marked_files(dest)
    if listed is None:
        return (f"is not empty and is not an earlier output of these scripts (no valid {MARKER}); "
                "--force replaces only those: move its files away or choose another folder")
    foreign = [name for name in _files_in(dest) if name != MARKER and name not in set(listed)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        return (f"holds {foreign[0]}{more}, which these scripts did not write; --force does not delete it: "
                "move it away or choose another folder")
    return None


def check_destination(dest: str, what: str, force: bool, inputs: Iterable[str] = ()):
    """Stop with one ``error:`` line unless ``dest`` may be created (or, with --force, replaced)."""
    reason = unsafe_reason(dest, inputs) or replace_refusal(_real(dest), force)
    if reason:
        _corpus.fail(f"{what} {dest} {reason}")


def check_separate(out: Optional[str], raw: Optional[str]):
    """``--out`` and ``--raw`` must be different folders, neither inside the other."""
    if out and raw:
        a, b = _real(out), _real(raw)
        if a == b or _inside(a, b) or _inside(b, a):
            _corpus.fail(f"--raw {raw} and --out {out} must be two separate folders, neither inside the other")


class Outputs:
    """The output folders of one run, each built in a temporary folder beside its destination.

    ``with Outputs("prepare_x.py", force, inputs) as outputs:`` ``tmp = outputs.folder(dest, "--out")``
    … write into ``tmp`` … ``outputs.commit()``. Leaving the block without ``commit`` (an
    error, ``fail``, Ctrl-C) removes the temporary folders and any parent folder it created.
    """

    def __init__(self, script: str, force: bool, inputs: Iterable[str] = ()):
        self.script = script
        self.force = force
        self.inputs = list(inputs)
        self.pending: List[Tuple[str, str, str]] = []  # (temporary folder, destination, option)
        self.created_parents: List[str] = []

    def folder(self, dest: str, what: str) -> str:
        """A new empty folder beside ``dest`` that becomes ``dest`` at :meth:`commit`."""
        check_destination(dest, what, self.force, self.inputs)
        real = _real(dest)
        parent = os.path.dirname(real)
        missing = []
        while not os.path.isdir(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for path in reversed(missing):
            os.mkdir(path)
            self.created_parents.append(path)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.tmp-", dir=os.path.dirname(real))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make a shared data-bin private
        self.pending.append((tmp, real, what))
        return tmp

    def name_final_paths(self, path: str, others: Optional[dict] = None):
        """Rewrite the text file ``path`` (fairseq-preprocess's log) with final folder names instead of temporary
        ones (and ``others``: {old text: new text})."""
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for old, new in [(tmp, dest) for tmp, dest, _ in self.pending] + list((others or {}).items()):
            text = text.replace(old, new)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def commit(self):
        """Write each marker and move each folder into place (the old one aside first, then deleted)."""
        for tmp, dest, what in self.pending:
            check_destination(dest, what, self.force, self.inputs)  # nothing changed meanwhile
            files = [name for name in _files_in(tmp) if name != MARKER]
            with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
                json.dump({"made_by": self.script, "files": files}, f, indent=1)
                f.write("\n")
            old = None
            if os.path.isdir(dest):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.old-", dir=os.path.dirname(dest))
                os.replace(dest, old)  # renames over the empty placeholder
            os.replace(tmp, dest)
            if old:
                shutil.rmtree(old)
        self.pending = []
        self.created_parents = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for tmp, _, _ in self.pending:
            shutil.rmtree(tmp, ignore_errors=True)
        for path in reversed(self.created_parents):
            try:
                os.rmdir(path)
            except OSError:
                pass
        return False


def script_name() -> str:
    return os.path.basename(sys.argv[0]) or "prepare"
