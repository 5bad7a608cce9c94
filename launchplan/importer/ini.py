"""INI files read the way cloudinit.d's Python 2 ConfigParser read them, keeping line numbers.

configparser forgets where a key was written, and its Python 3 rules differ (duplicates are
errors, `%` interpolation is strict), so this small reader follows the old rules: keys are
lowercased, `key: value` or `key = value`, indented lines continue a value, `#` and `;` start
comment lines, ` ;` starts an inline comment, `%(name)s` is replaced from the same section
or [DEFAULT] (then `%%` means `%`), and a repeated section or key merges, the later winning.
Problems are reported, never raised, so that one run lists all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .problems import Report

_SECTION = re.compile(r"\[(?P<name>[^]]+)\]")
_OPTION = re.compile(r"(?P<key>[^:=\s][^:=]*?)\s*(?P<sep>[:=])\s*(?P<value>.*)$")
_INTERPOLATION = re.compile(r"%\(([^)]*)\)s")
_MAX_DEPTH = 10
DEFAULT_SECTION = "DEFAULT"


@dataclass(frozen=True)
class Entry:
    key: str  # lowercased, as ConfigParser stored it
    value: str
    file: Path
    line: int


@dataclass
class Section:
    name: str
    file: Path
    line: int
    entries: dict[str, Entry] = field(default_factory=dict)

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)


@dataclass
class IniFile:
    path: Path
    sections: dict[str, Section] = field(default_factory=dict)  # in file order, no DEFAULT

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)


def read_ini(path: Path, report: Report, what: str) -> IniFile | None:
    """Parse `path`; None (with an error reported) when it cannot be read at all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.error(path, None, f"{what} not found")
        return None
    except UnicodeDecodeError as exc:
        report.error(path, None, f"{what} is not UTF-8 text ({exc.reason})")
        return None
    except OSError as exc:
        report.error(path, None, f"cannot read {what}: {exc.strerror or exc}")
        return None
    return parse_ini(text, path, report)


def parse_ini(text: str, path: Path, report: Report) -> IniFile:
    ini = IniFile(path)
    defaults = Section(DEFAULT_SECTION, path, 0)
    current: Section | None = None
    last: Entry | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line[0] in "#;" or _is_rem(line):
            continue
        if line[0].isspace() and current is not None and last is not None:
            more = line.strip()
            if more:
                last = Entry(last.key, f"{last.value}\n{more}", last.file, last.line)
                current.entries[last.key] = last
            continue
        header = _SECTION.match(line)
        if header:
            name = header.group("name")
            if name == DEFAULT_SECTION:
                current = defaults
            elif name in ini.sections:
                current = ini.sections[name]
                report.warn(path, number, f"section [{name}] is repeated (first at line "
                                          f"{current.line}); its keys are merged, later ones win")
            else:
                current = ini.sections[name] = Section(name, path, number)
            last = None
            continue
        if current is None:
            report.error(path, number, "a key outside any [section] (the file must start with "
                                       "a section header such as [svc-NAME])")
            continue
        option = _OPTION.match(line)
        if option is None:
            report.error(path, number, f"cannot parse {line.strip()!r}: expected "
                                       "'key: value' or 'key = value'")
            last = None
            continue
        last = Entry(option.group("key").rstrip().lower(), _value(option.group("value")),
                     path, number)
        previous = current.entries.get(last.key)
        if previous is not None:
            report.warn(path, number, f"[{current.name}] {last.key} is set again (first at "
                                      f"line {previous.line}); this later value wins")
        current.entries[last.key] = last
    for section in ini.sections.values():
        section.entries = {**defaults.entries, **section.entries}
        for key, entry in section.entries.items():
            section.entries[key] = _interpolate(entry, section, report)
    return ini


def _is_rem(line: str) -> bool:
    words = line.split(None, 1)
    return line[0] in "rR" and words[0].lower() == "rem"


def _value(text: str) -> str:
    """Strip an inline ` ;` comment and the quotes of an empty "" value, as ConfigParser did."""
    for index, char in enumerate(text):
        if char == ";" and index > 0 and text[index - 1].isspace():
            text = text[:index]
            break
    text = text.strip()
    return "" if text == '""' else text


def _interpolate(entry: Entry, section: Section, report: Report) -> Entry:
    value = entry.value
    depth = 0
    while "%(" in value and depth < _MAX_DEPTH:
        depth += 1
        missing = [m.group(1) for m in _INTERPOLATION.finditer(value)
                   if m.group(1).lower() not in section.entries]
        if missing:
            report.error(entry.file, entry.line, f"[{section.name}] {entry.key}: %({missing[0]})s "
                                                 "names no key of this section")
            return entry
        value = _INTERPOLATION.sub(lambda m: section.entries[m.group(1).lower()].value, value)
        value = value.replace("%%", "%")
    if "%(" in value:
        report.error(entry.file, entry.line, f"[{section.name}] {entry.key}: %(...)s "
                                             "substitutions nest too deeply (a loop?)")
        return entry
    return Entry(entry.key, value, entry.file, entry.line)
