"""render_service: one service declaration + run name + earlier outputs -> NodeSpecs.

Rendering happens per node (templates may use service.index). Every rendered node and cloud
profile is checked against the schema again, strictly, so that a template that produced the
wrong type is reported at the line that holds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchplan.ctx.userdata import check_cloud_config, detect_content_type
from launchplan.errors import PlanError
from launchplan.suggest import did_you_mean

from . import budgets, compat, schema
from .elastic import ElasticSpec, parse_elastic
from .model import (
    CloudSpec,
    NodeSpec,
    Plan,
    ProgramSpec,
    ServiceDecl,
    ServiceView,
    SourceLocation,
)
from .problems import Problems, clip
from .templates import (
    CLOUD_INIT_JINJA,
    Namespace,
    Placeholders,
    TemplateProblem,
    env_variable,
    is_template,
    shared_templates,
    to_plain,
)
from .yamlsrc import read_text

PROGRAMS = ("boot", "ready", "terminate", "reconfigure", "metrics")
DEFAULT_TIMEOUT = 600.0  # a node's whole create-to-ready path, and its boot program
# CloudSpec option naming the environment variables of each credential field (see
# credential_env); the name must not look like a secret to state.store.scrub_secrets.
AUTH_ENV = "auth_env"
READY_TIMEOUT = 120.0
READY_INTERVAL = 2.0
TERMINATE_TIMEOUT = 120.0
RECONFIGURE_TIMEOUT = 120.0
METRICS_TIMEOUT = 30.0
DEFAULT_AGENT_SLOTS = 4  # `agent: true`

# Keys rendered as text even when their template is one whole expression.
_TEXT_KEYS = frozenset({
    "cloud", "driver", "ssh_user", "ssh_key", "image", "size", "key_name", "subnet", "region",
    "location", "zone", "endpoint_url", "provider", "address", "host_key_policy", "compat",
    "bootconf", "ssh_config", "ssh_key_passphrase_env",
})  # fmt: skip
_TEXT_LISTS = frozenset({
    "tags", "credentials", "security_groups", "host", "userdata", "ssh_jump",
})  # fmt: skip
NO_SSH_CONFIG = "none"  # ssh_config: none reads no OpenSSH client config at all


def wants_text(path: tuple[Any, ...]) -> bool:
    """Whether the value at `path` (in a service or profile) is always a string."""
    if len(path) == 1:
        return path[0] in _TEXT_KEYS
    if len(path) == 2 and path[0] in PROGRAMS:
        return path[1] in ("run", "command")
    if len(path) == 2:
        return path[0] in _TEXT_LISTS
    if len(path) == 3 and path[0] == "ssh_jump":
        return True
    return len(path) == 3 and path[0] in PROGRAMS and path[1] in ("args", "env")


def pick_cloud(
    decl: ServiceDecl, clouds: Mapping[str, Mapping[str, Any]]
) -> tuple[Any, tuple[Any, ...] | None]:
    """The service's cloud (unrendered) and where it is written (None: implicit).

    The service's own `cloud` wins; then the defaults' `cloud`, which a service with `host`
    takes only when it names a static profile (a default of `aws` is for the services cei
    creates; `host` alone means an existing machine): else such a service is on the implicit
    `static`; a service with neither is on the embedded `local` cloud.
    """
    raw = decl.raw
    if "cloud" in raw and "cloud" not in decl.from_defaults:
        return raw["cloud"], ("cloud",)
    if "cloud" in raw and ("host" not in raw or _names_static(clouds, raw["cloud"])):
        return raw["cloud"], ("cloud",)
    if "host" in raw:
        return "static", None
    return "local", None


def _names_static(clouds: Mapping[str, Mapping[str, Any]], name: Any) -> bool:
    """Whether `name` is, as written, a profile of driver static (a template is not read)."""
    return isinstance(name, str) and clouds.get(name, {}).get("driver") == "static"


def resolve_path(base_dir: Path, value: str) -> str:
    """A plan path made absolute: `~` expanded, relative to the plan's directory."""
    return os.path.normpath(base_dir / Path(value).expanduser())


def need_file(base_dir: Path, value: str, site: Site, path: tuple[Any, ...]) -> str:
    """The plan path `value` resolved, or a plan error at `path` when it names no readable
    regular file (a name the system refuses, too long for instance, included)."""
    resolved = resolve_path(base_dir, value)
    try:
        found = os.path.isfile(resolved)
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL
        raise site.fail(path, f"cannot use file {clip(resolved)}: {exc}") from None
    if not found:
        raise site.fail(path, f"file not found: {clip(resolved)}")
    return resolved


def scalar_text(value: Any) -> str:
    """How an argument, env value or tag is passed on: YAML true -> "true", 3 -> "3"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def locate_in(
    locations: Mapping[tuple[Any, ...], SourceLocation], path: tuple[Any, ...], fallback: str
) -> SourceLocation:
    """Location of `path`, or of the nearest enclosing value that has one."""
    while path not in locations:
        if not path:
            return SourceLocation(fallback)
        path = path[:-1]
    return locations[path]


@dataclass(frozen=True)
class Site:
    """Where a mapping of plan values lives: its document path and how to locate inside it."""

    prefix: tuple[Any, ...]
    locate: Callable[[tuple[Any, ...]], SourceLocation]

    def fail(self, path: tuple[Any, ...], message: str) -> PlanError:
        loc = self.locate(path)
        text = f"{schema.subject((*self.prefix, *path))}: {message}"
        return PlanError(text, loc.file, loc.line, loc.column)

    def check(self, value: Mapping[str, Any], definition: str) -> None:
        """Strict schema check of a rendered value."""
        schema.validate(
            value,
            definition=definition,
            raw=False,
            prefix=self.prefix,
            locate=lambda path, _key: self.locate(path[len(self.prefix):]),
        )


def service_site(plan: Plan, decl: ServiceDecl) -> Site:
    return Site(
        ("levels", decl.level - 1, "services", decl.name),
        lambda path: locate_in(decl.locations, path, decl.location.file),
    )


def cloud_site(plan: Plan, name: str) -> Site:
    return Site(
        ("clouds", name),
        lambda path: locate_in(plan.locations, ("clouds", name, *path), str(plan.path)),
    )


def render_tree(value: Any, names: Mapping[str, Any], path: tuple[Any, ...], site: Site) -> Any:
    """Render every template string inside `value` (keys stay as written).

    Called for every node on its service's whole declaration, so plain strings and lists of
    them (a service's `host` list) take the shortest way through.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            rendered = shared_templates().render(value, names, text=wants_text(path))
        except TemplateProblem as problem:
            raise site.fail(path, problem.message) from None
        return to_plain(rendered)
    if type(value) is list and not any(map(is_template, value)) and all(
            isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, Mapping):
        return {k: render_tree(v, names, (*path, k), site) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, names, (*path, i), site) for i, v in enumerate(value)]
    return value


def template_names(
    plan: Plan, run: str, service: Mapping[str, Any], services: Namespace
) -> dict[str, Any]:
    """The names every template sees (env() is a global of the environment)."""
    return {
        "vars": Namespace(plan.variables, "vars"),
        "run": run,
        "service": Namespace(service, "service"),
        "services": services,
    }


def earlier_services(
    plan: Plan, level: int, views: Mapping[str, ServiceView] | None
) -> Namespace:
    """`services` for a service of `level`: earlier levels only; placeholders if no views."""
    data: dict[str, Any] = {}
    for decl in plan.services():
        if decl.level >= level:
            continue
        if views is None:
            data[decl.name] = _placeholder_service(plan, decl)
        elif decl.name in views:
            data[decl.name] = _view_namespace(views[decl.name])
    return Namespace(data, "services")


def _view_namespace(view: ServiceView) -> Namespace:
    label = f"services.{view.name}"
    nodes = [
        Namespace(
            {
                "address": node.address,
                "hostname": node.hostname,
                "outputs": Namespace(node.outputs, f"{label}.nodes[{i}].outputs"),
            },
            f"{label}.nodes[{i}]",
        )
        for i, node in enumerate(view.nodes)
    ]
    return Namespace(
        {
            "name": view.name,
            "count": view.count,
            "outputs": Namespace(view.outputs, f"{label}.outputs"),
            "nodes": nodes,
        },
        label,
    )


def _placeholder_service(plan: Plan, decl: ServiceDecl) -> Namespace:
    name = decl.name
    count = _placeholder_count(plan, decl)
    nodes = [
        Namespace(
            {
                "address": f"<{name}/{i}.address>",
                "hostname": f"<{name}/{i}.hostname>",
                "outputs": Placeholders(f"{name}/{i}.outputs"),
            },
            f"services.{name}.nodes[{i}]",
        )
        for i in range(count)
    ]
    return Namespace(
        {"name": name, "count": count, "outputs": Placeholders(f"{name}.outputs"), "nodes": nodes},
        f"services.{name}",
    )


def _placeholder_count(plan: Plan, decl: ServiceDecl) -> int:
    """An earlier service's node count for placeholders; 1 when it needs launch-time data."""
    return static_count(plan, decl) or 1


def static_count(plan: Plan, decl: ServiceDecl) -> int | None:
    """The service's node count as far as it is known before launch (from variables alone);
    None when it depends on launch-time data."""
    names = template_names(
        plan, "<run>", {"name": decl.name, "index": 0, "count": None}, Namespace({}, "services")
    )
    site = service_site(plan, decl)
    try:
        count = render_tree(decl.raw.get("count"), names, ("count",), site)
        host = render_tree(decl.raw.get("host"), names, ("host",), site)
    except PlanError:
        return None
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        return count
    if count is not None:
        return None
    if isinstance(host, list) and host:
        return len(host)
    return 1


def elastic_settings(
    svc: Mapping[str, Any], count: int | None, driver: str, site: Site
) -> ElasticSpec | None:
    """The service's rendered `elastic` block checked against its other keys, or None."""
    raw = svc.get("elastic")
    if raw is None:
        return None
    return parse_elastic(
        raw,
        count=count,
        agent=agent_settings(svc.get("agent")) is not None,
        metrics_program=svc.get("metrics") is not None,
        creates_machines=driver != "static",
        fail=lambda path, message: site.fail(("elastic", *path), message),
    )


def render_service(
    plan: Plan, name: str, run: str, views: Mapping[str, ServiceView] | None = None
) -> tuple[NodeSpec, ...]:
    """Render service `name` of `plan` for run `run`: one NodeSpec per node.

    `views` are the launched services of earlier levels; None renders placeholders such as
    "<db/0.address>" (for validate and render before anything is launched).
    """
    return _ServiceRenderer(plan, _declared(plan, name), run, views).render()


def render_all(plan: Plan) -> list[NodeSpec]:
    """Every node of `plan` rendered with placeholders for what launch will know: what
    `cei validate` checks, and `cei launch` before it creates anything. PlanErrors names
    every service's problem."""
    problems = Problems()
    specs: list[NodeSpec] = []
    for decl in plan.services():
        with problems.collect():
            specs.extend(render_service(plan, decl.name, plan.name))
    problems.raise_any()
    return specs


def render_node(
    plan: Plan, name: str, run: str, views: Mapping[str, ServiceView], index: int, count: int
) -> NodeSpec:
    """One node of service `name`: `index` is its identity (indexes of nodes added later keep
    growing, so it may exceed `count`), `count` what templates see as service.count."""
    return _ServiceRenderer(plan, _declared(plan, name), run, views).render_one(index, count)


def _declared(plan: Plan, name: str) -> ServiceDecl:
    try:
        return plan.service(name)
    except KeyError:
        hint = did_you_mean(name, [s.name for s in plan.services()])
        raise PlanError(f"no service '{name}' in the plan{hint}", str(plan.path)) from None


class _ServiceRenderer:
    def __init__(
        self,
        plan: Plan,
        decl: ServiceDecl,
        run: str,
        views: Mapping[str, ServiceView] | None,
    ) -> None:
        self.plan = plan
        self.decl = decl
        self.run = run
        self.services = earlier_services(plan, decl.level, views)
        self.site = service_site(plan, decl)
        self._checked: set[tuple[tuple[Any, ...], str, str]] = set()

    def names(self, index: int, count: int | None) -> dict[str, Any]:
        service = {"name": self.decl.name, "index": index, "count": count}
        return template_names(self.plan, self.run, service, self.services)

    def render(self) -> tuple[NodeSpec, ...]:
        cloud_name = self._cloud_name()
        count = self._count(self.names(0, None))
        return tuple(self._node(i, count, cloud_name) for i in range(count))

    def render_one(self, index: int, count: int) -> NodeSpec:
        return self._node(index, count, self._cloud_name())

    def _check(self, site: Site, value: Mapping[str, Any], definition: str) -> None:
        """Site.check, once per distinct rendered value: a service's nodes mostly render
        alike, and checking a list of N hosts again for each of its N nodes made rendering
        a service quadratic. repr tells plain YAML data apart (1, 1.0, True and "1" too)."""
        key = (site.prefix, definition, repr(value))
        if key not in self._checked:
            site.check(value, definition)
            self._checked.add(key)

    def _cloud_name(self) -> str:
        cloud_raw, cloud_path = pick_cloud(self.decl, self.plan.clouds)
        cloud_name = render_tree(cloud_raw, self.names(0, None), ("cloud",), self.site)
        if cloud_name not in self.plan.clouds:
            hint = did_you_mean(cloud_name, self.plan.clouds)
            raise self.site.fail(cloud_path or (), f"unknown cloud '{cloud_name}'{hint}")
        return str(cloud_name)

    def _count(self, names: Mapping[str, Any]) -> int:
        raw = self.decl.raw
        hosts = render_tree(raw.get("host"), names, ("host",), self.site)
        if hosts == []:
            raise self.site.fail(("host",), "host must not be an empty list")
        if "count" not in raw:
            return len(hosts) if isinstance(hosts, list) else 1
        count = render_tree(raw["count"], names, ("count",), self.site)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise self.site.fail(
                ("count",), f"count must be an integer >= 1, got {schema.show(count)}"
            )
        if count > budgets.NODES_PER_SERVICE:
            raise self.site.fail(("count",), f"count is {schema.show(count)}, more than the "
                                 f"{budgets.NODES_PER_SERVICE} nodes a service may have")
        if isinstance(hosts, list) and count != len(hosts):
            raise self.site.fail(
                ("count",),
                f"count is {count} but host lists {len(hosts)} hosts (one node per host)",
            )
        return count

    def _node(self, index: int, count: int, cloud_name: str) -> NodeSpec:
        names = self.names(index, count)
        svc = render_tree(dict(self.decl.raw), names, (), self.site)
        self._check(self.site, svc, "service")
        csite = cloud_site(self.plan, cloud_name)
        profile = render_tree(dict(self.plan.clouds[cloud_name]), names, (), csite)
        self._check(csite, profile, "cloud")
        cloud = self._cloud(cloud_name, profile, svc)
        host = self._host(svc, index, cloud)
        timeout = float(svc.get("timeout", DEFAULT_TIMEOUT))
        ssh_key = self._ssh_file(svc, profile, csite, "ssh_key")
        ssh_config = self._ssh_file(svc, profile, csite, "ssh_config")
        ssh_port = svc.get("ssh_port", profile.get("ssh_port"))
        jump = svc.get("ssh_jump", profile.get("ssh_jump"))
        return NodeSpec(
            run=self.run,
            service=self.decl.name,
            index=index,
            count=count,
            level=self.decl.level,
            level_name=self.decl.level_name,
            cloud=cloud,
            host=host,
            userdata=self._userdata(svc, names),
            config=svc.get("config") or {},
            boot=self._program(svc, "boot", timeout),
            ready=self._program(svc, "ready", READY_TIMEOUT),
            terminate=self._program(svc, "terminate", TERMINATE_TIMEOUT),
            reconfigure=self._program(svc, "reconfigure", RECONFIGURE_TIMEOUT),
            metrics=self._program(svc, "metrics", METRICS_TIMEOUT),
            elastic=elastic_settings(svc, count, cloud.driver, self.site),
            timeout=timeout,
            ssh_user=svc.get("ssh_user") or profile.get("ssh_user"),
            ssh_key=ssh_key,
            ssh_port=None if ssh_port is None else int(ssh_port),
            ssh_config=ssh_config,
            ssh_jump=None if jump is None else tuple(
                {"host": hop} if isinstance(hop, str) else dict(hop) for hop in jump),
            ssh_key_passphrase_env=(svc.get("ssh_key_passphrase_env")
                                    or profile.get("ssh_key_passphrase_env")),
            host_key_policy=svc.get("host_key_policy", "pinned"),
            host_key=svc.get("host_key") or profile.get("host_key"),
            agent=agent_settings(svc.get("agent")),
            compat=svc.get("compat"),
            stage_files=self._stage_files(svc),
            local_exe=bool(svc.get("local_exe", False)),
            output_limit=int(svc.get("output_limit", budgets.OUTPUT_BYTES)),
            secrets=tuple(scalar_text(self.plan.variables[name]) for name in
                          sorted(self.plan.secrets) if name in self.plan.variables),
        )

    def _cloud(self, name: str, profile: Mapping[str, Any], svc: Mapping[str, Any]) -> CloudSpec:
        driver = profile["driver"]
        options = {
            k: v
            for k, v in profile.items()
            if k != "driver" and k not in schema.SSH_KEYS and v is not None
        }
        allowed = schema.driver_keys(driver)
        for key in schema.OVERRIDE_KEYS:
            value = svc.get(key)
            if value is None:
                continue
            if key not in allowed:
                if key in self.decl.from_defaults:
                    continue
                raise self.site.fail(
                    (key,), f"{key} is not an option of cloud '{name}' (driver {driver})"
                )
            if key in ("tags", "run_instances", "create_args") and isinstance(
                    options.get(key), Mapping):
                value = {**options[key], **value}
            options[key] = value
        if "tags" in options:
            options["tags"] = {k: scalar_text(v) for k, v in options["tags"].items()}
        names = credential_env(self.plan.clouds[name].get("credentials"))
        if names:
            options[AUTH_ENV] = names
        return CloudSpec(name=name, driver=driver, options=options)

    def _host(self, svc: Mapping[str, Any], index: int, cloud: CloudSpec) -> str | None:
        host = svc.get("host")
        if isinstance(host, list):
            host = host[index] if index < len(host) else None
        if host is not None and cloud.driver != "static":
            raise self.site.fail(
                ("host",),
                f"host is for existing machines (driver static); cloud '{cloud.name}' "
                f"has driver {cloud.driver}",
            )
        if host is None and cloud.driver == "static":
            raise self.site.fail(
                (), f"cloud '{cloud.name}' (driver static) needs host: the existing machine"
            )
        if cloud.driver == "static" and svc.get("userdata") is not None \
                and "userdata" not in self.decl.from_defaults:
            raise self.site.fail(
                ("userdata",), f"userdata is for machines cei creates; cloud '{cloud.name}' "
                "(driver static) is an existing host, which never receives user-data")
        return host

    def _ssh_file(self, svc: Mapping[str, Any], profile: Mapping[str, Any], csite: Site,
                  key: str) -> str | None:
        """The service's or else the profile's `ssh_key` / `ssh_config` file, made absolute.

        The key is this machine's: whether it exists is checked at launch (machine_problems),
        not here. An ssh_config the plan names is one of its files and must exist."""
        for site, values in ((self.site, svc), (csite, profile)):
            value = values.get(key)
            if value == NO_SSH_CONFIG and key == "ssh_config":
                return NO_SSH_CONFIG
            if value is not None and key == "ssh_key":
                return resolve_path(self.plan.base_dir, value)
            if value is not None:
                return self._file(site, (key,), value)
        return None

    def _file(self, site: Site, path: tuple[Any, ...], value: str) -> str:
        return need_file(self.plan.base_dir, value, site, path)

    def _userdata(self, svc: Mapping[str, Any], names: Mapping[str, Any]) -> tuple[str, ...]:
        raw = svc.get("userdata")
        if raw is None:
            return ()
        items = [(("userdata",), raw)] if isinstance(raw, str) else [
            (("userdata", i), item) for i, item in enumerate(raw)
        ]
        parts = []
        for path, value in items:
            file = Path(self._file(self.site, path, value))
            part = render_userdata(file, names, self.decl.name)
            _check_cloud_config(file, part)
            parts.append(part)
        return tuple(parts)

    def _stage_files(self, svc: Mapping[str, Any]) -> dict[str, str]:
        if svc.get("compat") != compat.CLOUDINITD:
            return {}
        bootconf = svc.get("bootconf")
        if bootconf is not None:
            bootconf = self._file(self.site, ("bootconf",), bootconf)
        return compat.stage_files(svc.get("config") or {}, bootconf)

    def _program(
        self, svc: Mapping[str, Any], kind: str, default_timeout: float
    ) -> ProgramSpec | None:
        body = svc.get(kind)
        if body is None:
            return None
        run = body.get("run")
        if run is not None:
            run = self._file(self.site, (kind, "run"), run)
        return ProgramSpec(
            run=run,
            command=body.get("command"),
            args=tuple(scalar_text(a) for a in body.get("args", ())),
            env={k: scalar_text(v) for k, v in body.get("env", {}).items()},
            timeout=float(body.get("timeout", default_timeout)),
            interval=float(body.get("interval", READY_INTERVAL)),
            retries=int(body.get("retries", 0)),
        )


def _check_cloud_config(file: Path, part: str) -> None:
    """A rendered #cloud-config part that cloud-init would reject is a plan error, at the line
    of the top-level key at fault (launch and validate refuse it alike)."""
    if detect_content_type(part) != "text/cloud-config":
        return
    problems = check_cloud_config(part)
    if not problems:
        return
    collected = Problems()
    source = read_text(file, "user-data file")
    for problem in problems:
        key = re.split(r"[.:\[ ]", problem, maxsplit=1)[0]
        found = re.search(rf"^{re.escape(key)}\s*:", source, re.M)
        line = source.count("\n", 0, found.start()) + 1 if found else None
        collected.add(PlanError(f"cloud-config: {problem}", str(file), line))
    collected.raise_any()


def credential_env(raw: Any) -> list[list[str]]:
    """[[field, VARIABLE], ...] for a profile's unrendered `credentials` (names, never values).

    Stored with the run (the key avoids the store's secret scrubber), it lets a later shell's
    `cei terminate` or `cei status` reach the cloud with the same environment variables.
    """
    if not isinstance(raw, Mapping):
        return []
    names = {str(field): env_variable(value) for field, value in raw.items()}
    return [[field, var] for field, var in names.items() if var]


def agent_settings(value: Any) -> dict[str, Any] | None:
    """The `agent` key as the engine needs it: None (no agent) or {"slots": N}."""
    if value is None or value is False:
        return None
    slots = value.get("slots", DEFAULT_AGENT_SLOTS) if isinstance(value, Mapping) else None
    return {"slots": int(slots or DEFAULT_AGENT_SLOTS)}


def is_cloud_init_jinja(text: str) -> bool:
    """cloud-init renders files that start with "## template: jinja" itself."""
    return text.split("\n", 1)[0].rstrip() == CLOUD_INIT_JINJA


def render_userdata(file: Path, names: Mapping[str, Any], service: str) -> str:
    """A user-data file rendered as a template (cloud-init's own Jinja passes through)."""
    text = read_text(file, "user-data file")
    if is_cloud_init_jinja(text):
        return text
    try:
        return shared_templates().render_file(file, text, names)
    except TemplateProblem as problem:
        message = f"{problem.message} (user-data of service '{service}')"
        raise PlanError(message, str(file), problem.line) from None
