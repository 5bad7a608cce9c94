"""cloudinit.d's value substitutions as cei templates.

- A whole value `env.NAME` becomes `{{ env('NAME') }}`: read at launch, never copied.
- `${global.key}` becomes `{{ vars.key }}` ([globals] are the plan's variables).
- `${svc.key}` and `${.key}` (the service itself) are looked up as cloudinit.d did: `hostname`
  (the address it reached the node at), `run_name`, then the service's deps (their own value,
  converted where it was written), then its plan keys, then, for an earlier service with a boot
  program, what that program wrote to bootout.json (its outputs). `${svc-2.key}` names node 2
  of a service with replicas.

A reference cloudinit.d could never resolve (an unknown service or key, a service of the same
or a later level, a loop between deps) is an error at the line that holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launchplan.plan.variables import VAR_NAME
from launchplan.suggest import did_you_mean

from .ini import Entry
from .problems import Report
from .source import SERVICE_KEYS, CloudinitdPlan, Service

ENV = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)\Z")
REF = re.compile(r"\$\{([^.}]*)\.([^}]*)\}")
_REPLICA = re.compile(r"(.+)-(\d+)\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JINJA_WORDS = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not",
                          "in", "is", "if", "else"})
_MARKS = ("{{", "{%", "{#")
# cloudinit.d's names for a service's plan keys, where they differ from the .conf keys
COLUMNS = {"keyname": "sshkeyname", "localkey": "localsshkeypath", "username": "ssh_username"}
SECRETS = frozenset({"iaas_key", "iaas_secret"})


@dataclass(frozen=True)
class Expr:
    """A Jinja2 expression inside a converted value."""

    code: str


Part = str | Expr


def env_name(value: str) -> str | None:
    """NAME when the whole value is `env.NAME`."""
    match = ENV.match(value.strip())
    return match.group(1) if match else None


def env_template(name: str) -> str:
    return "{{ env('" + name + "') }}"


def template(parts: list[Part]) -> str:
    """The cei value of `parts`: plain text, or a template whose literal text stays literal."""
    rendered = any(isinstance(p, Expr) or "{{" in p or "{%" in p for p in parts)
    out = []
    for part in parts:
        if isinstance(part, Expr):
            out.append("{{ " + part.code + " }}")
        elif rendered and any(mark in part for mark in _MARKS):
            out.append("{% raw %}" + part + "{% endraw %}")
        else:
            out.append(part)
    return "".join(out)


def _member(base: str, name: str) -> str:
    if _IDENTIFIER.match(name) and name not in _JINJA_WORDS:
        return f"{base}.{name}"
    return f"{base}[{name!r}]"


class Expander:
    """Converts values of one plan; problems go to `report` at the line of the value."""

    def __init__(self, plan: CloudinitdPlan, report: Report) -> None:
        self.plan = plan
        self.report = report

    def text(self, service: Service, entry: Entry, value: str | None = None) -> str:
        """`entry`'s value (or `value`, a piece of it) converted for `service`."""
        source = entry.value if value is None else value
        return template(self._parts(service, service, entry, source, ()))

    def plain(self, entry: Entry) -> str:
        """A value of a key where cloudinit.d expanded only env.NAME."""
        name = env_name(entry.value)
        return env_template(name) if name else template([entry.value])

    def _parts(self, root: Service, context: Service, entry: Entry, value: str,
               stack: tuple[tuple[str, str], ...]) -> list[Part]:
        name = env_name(value)
        if name:
            return [Expr(f"env('{name}')")]
        parts: list[Part] = []
        last = 0
        for match in REF.finditer(value):
            parts.append(value[last:match.start()])
            parts.extend(self._ref(root, context, entry, match, stack))
            last = match.end()
        parts.append(value[last:])
        return [p for p in parts if p != ""]

    def _ref(self, root: Service, context: Service, entry: Entry, match: re.Match[str],
             stack: tuple[tuple[str, str], ...]) -> list[Part]:
        literal: list[Part] = [match.group(0)]
        svc_name, attr = match.group(1), match.group(2)
        where = f"{match.group(0)} in [{context.section.name}] {entry.key}"
        if svc_name == "global":
            return self._global(entry, attr, where) or literal
        found = self._target(root, context, entry, svc_name, where)
        if found is None:
            return literal
        target, index = found
        node = _member("services", target.name) + (f".nodes[{index}]" if index is not None
                                                   else "")
        if attr == "run_name":
            return [Expr("run")]
        if attr == "hostname":
            if target is root:
                self._warn(entry, f"{where}: a node's own address is not known when cei "
                                  "renders its values (programs read it from $CEI_CONTEXT); "
                                  "left as is")
                return literal
            return [Expr(f"{node if index is not None else node + '.nodes[0]'}.address")]
        if attr == "instance_id":
            self._warn(entry, f"{where}: cei templates have no instance id (cei status --json "
                              "shows it); left as is")
            return literal
        if attr in target.deps:
            return self._nested(root, target, target.deps[attr], stack, where) or literal
        key = COLUMNS.get(attr, attr if attr in SERVICE_KEYS else None)
        if key is not None:
            return self._column(root, target, entry, key, stack, where) or literal
        if target is not root and "bootpgm" in target.settings:
            return [Expr(_member(_member(node, "outputs"), attr))]
        known = sorted({"hostname", "run_name", "instance_id", *target.deps})
        why = ("" if target is root else
               " and it has no boot program that could write it to bootout.json")
        self._error(entry, f"{where}: service '{target.name}' has no key '{attr}'"
                           f"{did_you_mean(attr, known)} (its deps: "
                           f"{', '.join(sorted(target.deps)) or 'none'}){why}")
        return literal

    def _nested(self, root: Service, target: Service, value: Entry,
                stack: tuple[tuple[str, str], ...], where: str) -> list[Part] | None:
        key = (target.name, value.key)
        if key in stack:
            self._error(value, f"{where}: the values refer to each other in a loop "
                               f"({' -> '.join(f'{s}.{k}' for s, k in (*stack, key))})")
            return None
        return self._parts(root, target, value, value.value, (*stack, key))

    def _column(self, root: Service, target: Service, entry: Entry, key: str,
                stack: tuple[tuple[str, str], ...], where: str) -> list[Part] | None:
        setting = target.settings.get(key)
        if setting is None:
            self._warn(entry, f"{where}: service '{target.name}' sets no {key}; cloudinit.d "
                              "leaves the text as is")
            return None
        if key in SECRETS and env_name(setting.value) is None:
            self._error(entry, f"{where}: refers to a credential written in the plan; cei "
                               f"never copies one (write {key}: env.NAME at {setting.file.name}:"
                               f"{setting.line})")
            return None
        return self._nested(root, target, setting, stack, where)

    def _global(self, entry: Entry, attr: str, where: str) -> list[Part] | None:
        value = self.plan.globals.get(attr)
        if value is None:
            hint = did_you_mean(attr, self.plan.globals)
            self._error(entry, f"{where}: no '{attr}' in [globals] of the top file{hint} "
                               "(a value cloudinit.d took from -g/-G goes there, or in "
                               "cei launch --var)")
            return None
        name = env_name(value.value)
        if name:
            return [Expr(f"env('{name}')")]
        if VAR_NAME.match(attr):
            return [Expr(f"vars.{attr}")]
        return [value.value]

    def _target(self, root: Service, context: Service, entry: Entry, name: str,
                where: str) -> tuple[Service, int | None] | None:
        if name == "":
            return context, None
        target, index = self.plan.service(name), None
        replica = _REPLICA.match(name)
        if target is None and replica:
            base = self.plan.service(replica.group(1))
            if base is not None and int(replica.group(2)) < replicas(base):
                target, index = base, int(replica.group(2))
        if target is None:
            hint = did_you_mean(name, [s.name for s in self.plan.services()])
            self._error(entry, f"{where}: no service '{name}' in the plan{hint}")
            return None
        if target is not root and target.level >= root.level:
            which = "the same level" if target.level == root.level else "a later level"
            self._error(entry, f"{where}: service '{name}' is in {which}; a service can use "
                               "only services of earlier levels")
            return None
        return target, index

    def _error(self, entry: Entry, message: str) -> None:
        self.report.error(entry.file, entry.line, message)

    def _warn(self, entry: Entry, message: str) -> None:
        self.report.warn(entry.file, entry.line, message)


def replicas(service: Service) -> int:
    """How many nodes a service has (replica_count); a very large number when set by env."""
    text = service.get("replica_count")
    if text is None:
        return 1
    if env_name(text):
        return 1 << 30
    try:
        return max(1, int(text))
    except ValueError:
        return 1
