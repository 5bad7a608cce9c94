"""Static checks run by load_plan before anything launches.

Templates are parsed (not rendered) and their ASTs walked: every `services.X` must name a
service of an earlier level, every `vars.X` a known variable, every other name one that
templates know. Referenced files must exist, every `cloud:` must name a profile, and cloud
credentials must come from env().
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from jinja2 import meta, nodes

from launchplan.errors import PlanError
from launchplan.suggest import did_you_mean

from . import compat, schema
from .model import Plan, ServiceDecl
from .render import (
    NO_SSH_CONFIG,
    PROGRAMS,
    Site,
    cloud_site,
    earlier_services,
    elastic_settings,
    is_cloud_init_jinja,
    pick_cloud,
    render_tree,
    resolve_path,
    service_site,
    static_count,
    template_names,
)
from .templates import TemplateProblem, is_template, shared_templates
from .yamlsrc import read_text

NAMES = ("vars", "run", "service", "services")
SSH_FILES = ("ssh_key", "ssh_config")
SERVICE_KEYS = ("name", "index", "count")

Fail = Callable[[str, int | None], PlanError]


def check_plan(plan: Plan) -> None:
    """Raise PlanError for the first reference, file or cloud problem of `plan`."""
    for name, profile in plan.clouds.items():
        site = cloud_site(plan, name)
        _walk(profile, (), site, _Refs(plan, None))
        _check_credentials(profile, site)
    for decl in plan.services():
        _check_service(plan, decl)


def _check_service(plan: Plan, decl: ServiceDecl) -> None:
    site = service_site(plan, decl)
    refs = _Refs(plan, decl.level)
    _walk(decl.raw, (), site, refs)
    _check_files(plan, decl, site, refs)
    _check_count(decl, site)
    _check_compat(plan, decl, site)
    cloud, cloud_path = pick_cloud(decl)
    if is_template(cloud):
        _check_elastic(plan, decl, site, None)
        return
    if cloud not in plan.clouds:
        hint = did_you_mean(cloud, plan.clouds)
        raise site.fail(cloud_path or (), f"unknown cloud '{cloud}'{hint}")
    profile = plan.clouds[cloud]
    csite = cloud_site(plan, cloud)
    _walk(profile, (), csite, refs)
    for key in SSH_FILES:
        value = profile.get(key)
        if _ssh_file(value) and key not in decl.raw:
            _need_file(plan, csite, (key,), value)
    driver = profile.get("driver")
    if isinstance(driver, str) and not is_template(driver):
        _check_driver(decl, site, str(cloud), driver)
    else:
        driver = None
    _check_elastic(plan, decl, site, driver)


def _check_elastic(plan: Plan, decl: ServiceDecl, site: Site, driver: str | None) -> None:
    """The elastic block, rendered with the variables (and placeholders for earlier services),
    checked before anything launches."""
    if decl.raw.get("elastic") is None:
        return
    names = template_names(plan, "<run>", {"name": decl.name, "index": 0, "count": None},
                           earlier_services(plan, decl.level, None))
    elastic = render_tree(decl.raw["elastic"], names, ("elastic",), site)
    Site((*site.prefix, "elastic"), lambda path: site.locate(("elastic", *path))).check(
        elastic, "elastic")
    elastic_settings({**decl.raw, "elastic": elastic}, static_count(plan, decl),
                     driver or "", site)


def _check_driver(decl: ServiceDecl, site: Site, cloud: str, driver: str) -> None:
    raw = decl.raw
    if "host" in raw and driver != "static":
        raise site.fail(
            ("host",),
            f"host is for existing machines (driver static); cloud '{cloud}' has driver {driver}",
        )
    if "host" not in raw and driver == "static":
        raise site.fail(("cloud",), f"cloud '{cloud}' (driver static) needs host: the machine")
    allowed = schema.driver_keys(driver)
    for key in schema.OVERRIDE_KEYS:
        if key in raw and key not in decl.from_defaults and key not in allowed:
            raise site.fail((key,), f"{key} is not an option of cloud '{cloud}' (driver {driver})")


def _check_count(decl: ServiceDecl, site: Site) -> None:
    count, host = decl.raw.get("count"), decl.raw.get("host")
    if isinstance(count, int) and isinstance(host, list) and count != len(host):
        raise site.fail(
            ("count",), f"count is {count} but host lists {len(host)} hosts (one node per host)"
        )


def _check_compat(plan: Plan, decl: ServiceDecl, site: Site) -> None:
    """bootconf belongs to compat: cloudinitd, and every placeholder must be a config key."""
    raw = decl.raw
    if raw.get("local_exe") is True and raw.get("agent") not in (None, False):
        raise site.fail(("local_exe",), "local_exe runs programs on this machine; "
                                        "an agent needs the node over SSH: use one or the other")
    bootconf = raw.get("bootconf")
    if bootconf is None:
        return
    if raw.get("compat") != compat.CLOUDINITD:
        raise site.fail(("bootconf",), "bootconf is only used with compat: cloudinitd")
    if not _literal(bootconf):
        return
    file = Path(_need_file(plan, site, ("bootconf",), bootconf))
    config = raw.get("config")
    keys = config.keys() if isinstance(config, Mapping) else ()
    problems = compat.bootconf_problems(read_text(file, "bootconf template"), keys)
    if problems:
        line, message = problems[0]
        raise PlanError(f"bootconf of service '{decl.name}': {message}", str(file), line)


def _check_credentials(profile: Mapping[str, Any], site: Site) -> None:
    credentials = profile.get("credentials")
    if not isinstance(credentials, Mapping):
        return
    for key, value in credentials.items():
        if not (is_template(value) and _uses_env(value)):
            raise site.fail(
                ("credentials", key),
                "credentials must come from env('NAME'), for example "
                "\"{{ env('AWS_SECRET_ACCESS_KEY') }}\"; never write a secret in the plan",
            )


def _uses_env(source: str) -> bool:
    try:
        ast = shared_templates().parse(source)
    except TemplateProblem:
        return False
    return any(
        isinstance(call.node, nodes.Name) and call.node.name == "env"
        for call in ast.find_all(nodes.Call)
    )


def _check_files(plan: Plan, decl: ServiceDecl, site: Site, refs: _Refs) -> None:
    raw = decl.raw
    for kind in PROGRAMS:
        body = raw.get(kind)
        if isinstance(body, Mapping) and _literal(body.get("run")):
            _need_file(plan, site, (kind, "run"), body["run"])
    for key in SSH_FILES:
        if _ssh_file(raw.get(key)):
            _need_file(plan, site, (key,), raw[key])
    userdata = raw.get("userdata")
    items = [(("userdata",), userdata)] if isinstance(userdata, str) else [
        (("userdata", i), item) for i, item in enumerate(userdata or [])
    ]
    for path, value in items:
        if _literal(value):
            _check_userdata(Path(_need_file(plan, site, path, value)), refs)


def _check_userdata(file: Path, refs: _Refs) -> None:
    text = read_text(file, "user-data file")
    if is_cloud_init_jinja(text):
        return

    def fail(message: str, line: int | None) -> PlanError:
        return PlanError(message, str(file), line)

    try:
        ast = shared_templates().parse(text)
    except TemplateProblem as problem:
        raise fail(problem.message, problem.line) from None
    refs.check(ast, fail)


def _literal(value: object) -> bool:
    return isinstance(value, str) and not is_template(value)


def _ssh_file(value: object) -> TypeGuard[str]:
    """Whether an `ssh_key` / `ssh_config` value names a file that must exist now."""
    return _literal(value) and value != NO_SSH_CONFIG


def _need_file(plan: Plan, site: Site, path: tuple[Any, ...], value: str) -> str:
    resolved = resolve_path(plan.base_dir, value)
    if not Path(resolved).is_file():
        raise site.fail(path, f"file not found: {resolved}")
    return resolved


def _walk(value: Any, path: tuple[Any, ...], site: Site, refs: _Refs) -> None:
    if isinstance(value, str) and is_template(value):

        def fail(message: str, _line: int | None) -> PlanError:
            return site.fail(path, message)

        try:
            ast = shared_templates().parse(value)
        except TemplateProblem as problem:
            raise site.fail(path, problem.message) from None
        refs.check(ast, fail)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, (*path, key), site, refs)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, (*path, i), site, refs)


class _Refs:
    """Checks the names one template uses, for a service of `level` (None: a cloud profile
    on its own, where services references are checked per service that uses it)."""

    def __init__(self, plan: Plan, level: int | None) -> None:
        self.plan = plan
        self.level = level
        self.levels = {s.name: s.level for s in plan.services()}
        self.level_names = {lvl.index: lvl.name for lvl in plan.levels}
        self.known = frozenset(NAMES) | shared_templates().known_globals()

    def check(self, ast: nodes.Template, fail: Fail) -> None:
        for name in sorted(meta.find_undeclared_variables(ast)):
            if name not in self.known:
                line = next(n.lineno for n in ast.find_all(nodes.Name) if n.name == name)
                hint = did_you_mean(name, self.known)
                raise fail(
                    f"unknown name '{name}' in template{hint}; templates know "
                    "vars, run, service, services and env()",
                    line,
                )
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            assert isinstance(node, (nodes.Getattr, nodes.Getitem))
            base = node.node
            key = _static_key(node)
            if not isinstance(base, nodes.Name) or key is None:
                continue
            problem = self._problem(base.name, key)
            if problem:
                raise fail(problem, node.lineno)

    def _problem(self, base: str, key: str) -> str | None:
        if base == "vars" and key not in self.plan.variables:
            hint = did_you_mean(key, self.plan.variables)
            return f"unknown variable vars.{key}{hint}; set it in variables, --var or --vars-file"
        if base == "service" and key not in SERVICE_KEYS:
            return f"service.{key} is unknown{did_you_mean(key, SERVICE_KEYS)}; "\
                "service has name, index and count"
        if base == "services" and self.level is not None:
            return self._service_problem(key)
        return None

    def _service_problem(self, key: str) -> str | None:
        assert self.level is not None
        level = self.levels.get(key)
        if level is None:
            hint = did_you_mean(key, self.levels)
            return f"services.{key}: unknown service '{key}'{hint}"
        if level < self.level:
            return None
        which = "the same level" if level == self.level else "a later level"
        return (
            f"services.{key}: service '{key}' is in {which} ({self.level_names[level]}); "
            "templates can only use services of earlier levels"
        )


def _static_key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = node.arg
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return arg.value
    return None
