"""`cei clouds check`: everything a plan needs from its clouds and its SSH routes, looked up
read-only, every problem at once, so a CI job fails before it spends money.

Each service is rendered as `cei validate` renders it (outputs of earlier levels are still
placeholders). For every distinct cloud profile the provider's own check() describes what the
plan names (credentials, image, size, networks, key pairs, ...); the capabilities say whether
the cloud can take what the service gives it (user-data, a console); and the SSH side is
resolved as a launch would: the key file and its passphrase, the ssh config, every bastion's
host key, an existing host's key. Nothing is created and nothing is stored. A value that only
the launch will know (a placeholder) is not checked and is listed as such.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launchplan.errors import CeiError, PlanError
from launchplan.levels.hostkeys import existing_host_key
from launchplan.plan import render_service
from launchplan.plan.model import NodeSpec, Plan, ServiceDecl, SourceLocation
from launchplan.plan.render import cloud_site, service_site
from launchplan.plan.templates import mentions_placeholder
from launchplan.providers import Capabilities, Problem, get_provider
from launchplan.remote.keys import KeyRing
from launchplan.remote.route import Settings, jump_hosts, node_target


@dataclass(frozen=True)
class CheckProblem:
    """One problem, where the plan writes what is at fault."""

    message: str
    location: SourceLocation
    service: str | None = None
    cloud: str | None = None

    def __str__(self) -> str:
        about = f"service '{self.service}'" if self.service else "plan"
        if self.cloud:
            about += f" (cloud '{self.cloud}')"
        location = self.location
        return str(PlanError(f"{about}: {self.message}", location.file, location.line,
                             location.column))

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "file": self.location.file, "line": self.location.line,
                "column": self.location.column, "service": self.service, "cloud": self.cloud}


@dataclass
class CheckReport:
    plan: str
    problems: list[CheckProblem] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # only the launch will know these
    clouds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, problem: CheckProblem) -> None:
        if str(problem) not in {str(p) for p in self.problems}:
            self.problems.append(problem)


def check_plan(plan: Plan) -> CheckReport:
    """Check every service of `plan` against its cloud and its SSH route, read-only."""
    report = CheckReport(plan.name)
    with tempfile.TemporaryDirectory(prefix="cei-check-") as scratch:
        checker = _Checker(plan, report, Path(scratch))
        for decl in plan.services():
            checker.service(decl)
    return report


class _Checker:
    def __init__(self, plan: Plan, report: CheckReport, scratch: Path) -> None:
        self.plan = plan
        self.report = report
        self.scratch = scratch  # a provider's run directory, which no check writes to
        self.cloud_problems: dict[str, list[Problem]] = {}

    def service(self, decl: ServiceDecl) -> None:
        try:
            specs = render_service(self.plan, decl.name, self.plan.name)
        except PlanError as exc:
            location = SourceLocation(exc.file or str(self.plan.path), exc.line, exc.column)
            message = exc.message.removeprefix(f"service '{decl.name}': ")
            self.report.add(CheckProblem(message, location, decl.name))
            return
        for spec in specs:
            problems = list(self._node(spec))
            for option, message in problems:
                self.report.add(CheckProblem(message, self._where(decl, spec, option),
                                             decl.name, spec.cloud.name))
            if problems:
                return  # the other nodes of the service would repeat the same

    def _node(self, spec: NodeSpec) -> Iterator[tuple[tuple[str, ...], str]]:
        cloud = spec.cloud
        try:
            provider = get_provider(cloud.driver, cloud.options, self.scratch)
            capabilities = provider.capabilities
        except CeiError as exc:
            yield (), str(exc)
            return
        self._describe_cloud(spec, capabilities)
        key = cloud.driver + json.dumps(cloud.options, sort_keys=True, default=str)
        if key not in self.cloud_problems:
            self.cloud_problems[key] = provider.check()
        for problem in self.cloud_problems[key]:
            if mentions_placeholder(_value(cloud.options, problem.option)):
                self._unchecked(spec, ".".join(problem.option))
            else:
                yield problem.option, problem.message
        yield from self._capabilities(spec, capabilities)
        if spec.needs_ssh:
            yield from self._ssh(spec, capabilities)

    def _capabilities(self, spec: NodeSpec, capabilities: Capabilities
                      ) -> Iterator[tuple[tuple[str, ...], str]]:
        name = f"the {spec.cloud.name} cloud"
        if capabilities.creates_machines and not capabilities.takes_userdata:
            if spec.userdata:
                yield ("userdata",), f"{name} cannot pass user-data to its nodes"
            elif spec.host_key_policy == "pinned":
                yield ("host_key_policy",), (
                    f"{name} cannot pass user-data, which carries the host key cei pins: use "
                    "host_key_policy: console or accept-new")
        if spec.host_key_policy == "console" and not capabilities.console:
            yield ("host_key_policy",), f"{name} has no console to read host keys from"

    def _ssh(self, spec: NodeSpec, capabilities: Capabilities
             ) -> Iterator[tuple[tuple[str, ...], str]]:
        if spec.ssh_key:
            try:
                KeyRing(spec.ssh_key, (), True, spec.ssh_key_passphrase_env).close()
            except CeiError as exc:
                yield ("ssh_key",), str(exc)
        settings = Settings(spec.ssh_config, spec.ssh_jump, spec.ssh_key_passphrase_env)
        where = ("ssh_jump",) if spec.ssh_jump is not None else ("ssh_config",)
        if mentions_placeholder(spec.ssh_jump) or mentions_placeholder(spec.host):
            self._unchecked(spec, "ssh_jump")
            return
        try:
            if capabilities.creates_machines:  # its address (and so its ssh config) comes later
                jump_hosts(settings, spec.ssh_key)
            else:
                assert spec.host is not None
                node_target(spec.host, port=spec.ssh_port, user=spec.ssh_user,
                            key_path=spec.ssh_key, host_key=None, policy="accept-new",
                            settings=settings)
        except CeiError as exc:
            yield where, str(exc)
        if not capabilities.creates_machines and spec.host and spec.host_key_policy == "pinned":
            try:
                existing_host_key(spec, spec.host, spec.ssh_port)
            except CeiError as exc:
                yield ("host",), str(exc)

    def _where(self, decl: ServiceDecl, spec: NodeSpec, option: tuple[str, ...]
               ) -> SourceLocation:
        """Where the plan writes `option` for this service: the service (or its defaults),
        else its cloud profile, else the service itself."""
        if option and option[0] in decl.raw:
            return service_site(self.plan, decl).locate(option)
        profile = self.plan.clouds.get(spec.cloud.name) or {}
        site = cloud_site(self.plan, spec.cloud.name)
        if option and option[0] in profile:
            return site.locate(option)
        if ("clouds", spec.cloud.name) in self.plan.locations:
            return site.locate(())
        return service_site(self.plan, decl).locate(())

    def _describe_cloud(self, spec: NodeSpec, capabilities: Capabilities) -> None:
        entry = self.report.clouds.setdefault(spec.cloud.name, {
            "driver": spec.cloud.driver, "services": [],
            "capabilities": asdict(capabilities)})
        if spec.service not in entry["services"]:
            entry["services"].append(spec.service)

    def _unchecked(self, spec: NodeSpec, what: str) -> None:
        note = (f"service '{spec.service}': {what} comes from an earlier level's outputs; "
                "it is checked at launch")
        if note not in self.report.unchecked:
            self.report.unchecked.append(note)


def _value(options: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = options
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
