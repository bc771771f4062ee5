"""The README's command table says exactly what each ``handover`` command accepts.

For every leaf command of the real parser (``handover.cli.build_parser``) there is one row in the
README's "Commands" table; the row names every option the parser has (help and hidden ones
aside), required options outside ``[...]`` and optional ones inside, no option the parser lacks,
and as many positional placeholders as the parser has positionals.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from handover.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def leaf_parsers(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    out = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {words: parser}
    for name, sub in subs[0].choices.items():
        out.update(leaf_parsers(sub, words + (name,)))
    return out


def usage_rows() -> dict[tuple[str, ...], str]:
    """README table rows whose first cell is a `handover ...` usage, keyed by the command words."""
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"^\| `handover ([^`]*)` \|", line)
        if not m:
            continue
        usage = m.group(1).replace("\\|", "|")
        words = []
        for token in usage.split():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", token):
                break
            words.append(token)
        rows.setdefault(tuple(words), []).append(usage)
    return rows


def options_in(usage: str) -> dict[str, bool]:
    """``--option`` -> True if it is inside ``[...]`` in the usage text."""
    found, depth = {}, 0
    for m in re.finditer(r"\[|\]|--[a-z][a-z0-9-]*", usage):
        tok = m.group(0)
        if tok == "[":
            depth += 1
        elif tok == "]":
            depth -= 1
        else:
            found[tok] = depth > 0
    return found


PARSERS = leaf_parsers(build_parser())


def test_every_command_has_a_row_and_every_row_a_command():
    rows = usage_rows()
    assert set(PARSERS) - set(rows) == set(), "commands without a README row"
    assert set(rows) - set(PARSERS) == set(), "README rows for commands that do not exist"


def _without_brackets(text: str) -> str:
    while True:
        stripped = re.sub(r"\[[^\[\]]*\]", "", text)
        if stripped == text:
            return text
        text = stripped


@pytest.mark.parametrize("words", sorted(PARSERS), ids=[" ".join(w) for w in sorted(PARSERS)])
def test_row_matches_the_parser(words):
    parser = PARSERS[words]
    real, takes_value, required_positionals = {}, {}, 0
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            required_positionals += action.nargs not in ("?", "*")
            continue
        long = max(action.option_strings, key=len)
        real[long] = not action.required
        takes_value[long] = action.nargs != 0
    rows = usage_rows()[words]
    name = "handover " + " ".join(words)
    union = {}
    for usage in rows:
        written = options_in(usage)
        assert set(written) <= set(real), f"{name}: README names options the parser lacks: {set(written) - set(real)}"
        for opt, optional in real.items():
            if not optional:
                assert written.get(opt) is False, f"{name}: required {opt} missing or in [...] in: {usage}"
            elif opt in written and not written[opt]:
                # written as required: only in one of several alternative forms of the command
                assert len(rows) > 1, f"{name}: optional {opt} written without [...]"
        union.update(written)
    assert set(union) == set(real), f"{name}: options missing from the README: {set(real) - set(union)}"
    for usage in rows:
        tokens = _without_brackets(usage).split()[len(words):]
        placeholders, i = [], 0
        while i < len(tokens):
            if tokens[i].startswith("--"):
                i += 2 if takes_value[tokens[i]] else 1
            else:
                placeholders.append(tokens[i])
                i += 1
        assert len(placeholders) == required_positionals, \
            f"handover {' '.join(words)}: README positionals {placeholders}, parser has {required_positionals}"
