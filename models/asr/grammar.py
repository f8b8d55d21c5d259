"""JSGF grammars for the pocketsphinx backend: find one, read its words, trim the dictionary to them.

A grammar is given as a path to a ``.jsgf`` file or as the name of a bundled one (``grammars/*.jsgf``
next to this module; ``robot`` is the default robot-command grammar). :func:`load_grammar` parses it
with pocketsphinx's own JSGF compiler and returns its first public rule, that rule as a finite-state
grammar (:meth:`FsgModel.accept` tells whether a word sequence is a sentence of it) and its words.
:func:`trimmed_dictionary` writes the pronunciations of just those words, so each decoder loads a few
entries instead of the whole 130k-word dictionary. Errors are ParamError naming the file and the problem.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kikimimi.engine.errors import ParamError

GRAMMAR_DIR = Path(__file__).resolve().parent / "grammars"
DEFAULT_GRAMMAR = GRAMMAR_DIR / "robot.jsgf"
_PUBLIC_RULE = re.compile(r"public\s+<([^>]+)>")
_ALT_PRON = re.compile(r"\(\d+\)$")


def resolve_grammar(grammar: str | Path | None) -> Path:
    """The JSGF file for ``grammar``: None or "" = the bundled robot commands, a bundled name ("robot"), or a path."""
    if grammar is None or grammar == "":
        return DEFAULT_GRAMMAR
    path = Path(grammar)
    if not path.suffix and (GRAMMAR_DIR / f"{grammar}.jsgf").is_file():
        return GRAMMAR_DIR / f"{grammar}.jsgf"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in GRAMMAR_DIR.glob("*.jsgf")))
        raise ParamError(f"grammar {str(grammar)!r} is neither a JSGF file nor a bundled grammar; bundled: {bundled}")
    return path


def load_grammar(ps: Any, path: Path) -> tuple[str, Any, list[str]]:
    """(top rule name, its FsgModel, sorted words) of the JSGF grammar at ``path``; ParamError if it does not parse."""
    text = path.read_text(encoding="utf-8", errors="replace")
    m = _PUBLIC_RULE.search(re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S))
    if m is None:
        raise ParamError(f"grammar {str(path)!r} has no public rule; write one like: public <command> = stop | go;")
    try:
        jsgf = ps.Jsgf(str(path))
    except ValueError as exc:
        raise ParamError(f"grammar {str(path)!r} is not valid JSGF: {exc}") from None
    rule = f"{jsgf.get_name()}.{m.group(1)}"
    fsg = jsgf.build_fsg(jsgf.get_rule(rule), ps.LogMath(1.0001), 7.5)
    with tempfile.TemporaryDirectory(prefix="kkm-fsg-") as tmp:
        out = Path(tmp) / "g.fsg"
        fsg.writefile(str(out))
        lines = out.read_text().splitlines()
    words = {parts[4] for parts in (ln.split() for ln in lines) if parts[:1] == ["TRANSITION"] and len(parts) == 5}
    if not words:
        raise ParamError(f"grammar {str(path)!r}: rule <{m.group(1)}> has no words")
    return rule, fsg, sorted(words)


def trimmed_dictionary(full: Path, words: Sequence[str], out: Path) -> None:
    """Write the entries of ``words`` (alternate pronunciations too) from dictionary ``full`` to ``out``.

    ParamError lists the words the dictionary does not have.
    """
    wanted = set(words)
    found: set[str] = set()
    lines = []
    with open(full, encoding="utf-8") as f:
        for line in f:
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            base = _ALT_PRON.sub("", head)
            if base in wanted:
                lines.append(line if line.endswith("\n") else line + "\n")
                found.add(base)
    missing = sorted(wanted - found)
    if missing:
        raise ParamError(f"grammar words not in the pronunciation dictionary {full.name}: {', '.join(missing)}; "
                         "use words from the dictionary (or spell numbers as words)")
    out.write_text("".join(lines), encoding="utf-8")
