"""Static checks run by load_plan before anything launches.

Templates are parsed (not rendered) and their ASTs walked: every `services.X` must name a
service of an earlier level, every `vars.X` a known variable, every other name one that
templates know. Referenced files must exist, every `cloud:` must name a profile, and cloud
credentials must come from env().
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from launchplan.errors import PlanError
from launchplan.suggest import did_you_mean

from . import budgets, compat, schema
from .model import Plan, ServiceDecl
from .problems import Problems
from .render import (
    NO_SSH_CONFIG,
    PROGRAMS,
    Site,
    cloud_site,
    earlier_services,
    elastic_settings,
    is_cloud_init_jinja,
    need_file,
    pick_cloud,
    render_tree,
    service_site,
    static_count,
    template_names,
)
from .templates import TemplateProblem, is_template, shared_templates
from .yamlsrc import read_text

NAMES = ("vars", "run", "service", "services")
SERVICE_KEYS = ("name", "index", "count")

Fail = Callable[[str, int | None], PlanError]

if TYPE_CHECKING:
    from jinja2 import nodes


def check_plan(plan: Plan, problems: Problems) -> None:
    """Record in `problems` every reference, file, cloud and size problem of `plan`."""
    for name, profile in plan.clouds.items():
        site = cloud_site(plan, name)
        _walk(profile, (), site, _Refs(plan, None), problems)
        with problems.collect():
            _check_credentials(profile, site)
    for decl in plan.services():
        with problems.collect():
            _check_service(plan, decl, problems)
    with problems.collect():
        _check_total(plan)


def _check_total(plan: Plan) -> None:
    """The plan's nodes, as far as they are known before launch, within the budget."""
    total = sum(min(static_count(plan, decl) or 1, budgets.NODES_PER_SERVICE)
                for decl in plan.services())
    if total > budgets.NODES_PER_PLAN:
        raise PlanError(f"the plan has {total:,} nodes, more than the {budgets.NODES_PER_PLAN:,} "
                        "a plan may have", str(plan.path))


def _check_service(plan: Plan, decl: ServiceDecl, problems: Problems) -> None:
    site = service_site(plan, decl)
    refs = _Refs(plan, decl.level)
    _walk(decl.raw, (), site, refs, problems)
    _check_files(plan, decl, site, refs)
    _check_count(plan, decl, site)
    _check_compat(plan, decl, site)
    cloud, cloud_path = pick_cloud(decl, plan.clouds)
    if is_template(cloud):
        _check_elastic(plan, decl, site, None)
        return
    if cloud not in plan.clouds:
        hint = did_you_mean(cloud, plan.clouds)
        raise site.fail(cloud_path or (), f"unknown cloud '{cloud}'{hint}")
    profile = plan.clouds[cloud]
    csite = cloud_site(plan, cloud)
    _walk(profile, (), csite, refs, problems)
    config = profile.get("ssh_config")
    if _ssh_config_file(config) and "ssh_config" not in decl.raw:
        need_file(plan.base_dir, config, csite, ("ssh_config",))
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


def _check_count(plan: Plan, decl: ServiceDecl, site: Site) -> None:
    known = static_count(plan, decl)
    if known is not None and known > budgets.NODES_PER_SERVICE:
        raise site.fail(("count",), f"count is {known:,}, more than the "
                        f"{budgets.NODES_PER_SERVICE} nodes a service may have")
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
    file = Path(need_file(plan.base_dir, bootconf, site, ("bootconf",)))
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
    templates = shared_templates()
    try:
        return templates.calls_env(templates.parse(source))
    except TemplateProblem:
        return False


def _check_files(plan: Plan, decl: ServiceDecl, site: Site, refs: _Refs) -> None:
    raw = decl.raw
    for kind in PROGRAMS:
        body = raw.get(kind)
        if isinstance(body, Mapping) and _literal(body.get("run")):
            need_file(plan.base_dir, body["run"], site, (kind, "run"))
    if _ssh_config_file(raw.get("ssh_config")):
        need_file(plan.base_dir, raw["ssh_config"], site, ("ssh_config",))
    userdata = raw.get("userdata")
    items = [(("userdata",), userdata)] if isinstance(userdata, str) else [
        (("userdata", i), item) for i, item in enumerate(userdata or [])
    ]
    for path, value in items:
        if _literal(value):
            _check_userdata(Path(need_file(plan.base_dir, value, site, path)), refs)


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


def _ssh_config_file(value: object) -> TypeGuard[str]:
    """Whether an `ssh_config` value names a file that must exist now. (An `ssh_key` is this
    machine's file: see machine_problems.)"""
    return _literal(value) and value != NO_SSH_CONFIG


def machine_problems(plan: Plan) -> list[PlanError]:
    """What this machine lacks to launch `plan`: SSH key files (written literally) that do not
    exist. They belong to the machine that launches, not to the plan: `cei validate` warns of
    them, `cei launch` refuses."""
    problems = Problems()
    for decl in plan.services():
        cloud, _ = pick_cloud(decl, plan.clouds)
        if "ssh_key" in decl.raw:
            site, key = service_site(plan, decl), decl.raw["ssh_key"]
        elif isinstance(cloud, str) and cloud in plan.clouds:
            site, key = cloud_site(plan, cloud), plan.clouds[cloud].get("ssh_key")
        else:
            continue
        if _literal(key):
            with problems.collect():
                need_file(plan.base_dir, key, site, ("ssh_key",))
    return problems.errors


def _walk(value: Any, path: tuple[Any, ...], site: Site, refs: _Refs, problems: Problems) -> None:
    """Check every template inside `value`, each problem recorded and the walk going on."""
    if isinstance(value, str) and is_template(value):

        def fail(message: str, _line: int | None) -> PlanError:
            return site.fail(path, message)

        with problems.collect():
            try:
                ast = shared_templates().parse(value)
            except TemplateProblem as problem:
                raise site.fail(path, problem.message) from None
            refs.check(ast, fail)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, (*path, key), site, refs, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, (*path, i), site, refs, problems)


class _Refs:
    """Checks the names one template uses, for a service of `level` (None: a cloud profile
    on its own, where services references are checked per service that uses it)."""

    def __init__(self, plan: Plan, level: int | None) -> None:
        self.plan = plan
        self.level = level
        self.levels = {s.name: s.level for s in plan.services()}
        self.level_names = {lvl.index: lvl.name for lvl in plan.levels}

    @cached_property
    def known(self) -> frozenset[str]:
        """The names a template may use (Jinja2 loads with the first template checked)."""
        return frozenset(NAMES) | shared_templates().known_globals()

    def check(self, ast: nodes.Template, fail: Fail) -> None:
        templates = shared_templates()
        try:
            undeclared = templates.undeclared(ast)
        except TemplateProblem as bad:
            raise fail(bad.message, bad.line) from None
        for name in sorted(undeclared):
            if name not in self.known:
                line = templates.name_line(ast, name)
                hint = did_you_mean(name, self.known)
                raise fail(
                    f"unknown name '{name}' in template{hint}; templates know "
                    "vars, run, service, services and env()",
                    line,
                )
        for base, key, line in templates.lookups(ast):
            problem = self._problem(base, key)
            if problem:
                raise fail(problem, line)

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
