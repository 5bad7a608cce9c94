"""render_service: native typing, env(), the sandbox, placeholders and views, NodeSpecs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from launchplan.errors import EXIT_USAGE, PlanError
from launchplan.plan import load_plan, render_service
from launchplan.plan.model import NodeView, ServiceView

PLANS = Path(__file__).parent / "plans"
FULL = PLANS / "full.yml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yml"
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_db_nodes_native_types_and_programs() -> None:
    plan = load_plan(FULL)
    nodes = render_service(plan, "db", "r1")
    assert [n.node for n in nodes] == ["db/0", "db/1"]
    db0 = nodes[0]
    assert (db0.run, db0.level, db0.level_name, db0.count) == ("r1", 1, "base", 2)
    assert db0.config == {"port": 5432, "label": "db-0", "nested": {"list": [1, 2]}}
    assert nodes[1].config["label"] == "db-1"
    assert db0.cloud.name == "here" and db0.cloud.driver == "local"
    assert dict(db0.cloud.options) == {}
    assert db0.ssh_user == "tester"  # from the profile, itself a template
    assert db0.timeout == 300.0  # defaults
    assert db0.boot is not None and db0.ready is not None and db0.terminate is not None
    assert db0.boot.run == str((PLANS / "scripts" / "boot.sh").resolve())
    assert db0.boot.args == ("--port", "5432", "3", "true")
    assert dict(db0.boot.env) == {"MODE": "primary", "LEVEL": "1"}
    assert db0.boot.timeout == 300.0  # boot defaults to the service timeout
    assert (db0.ready.timeout, db0.ready.interval) == (30.0, 0.5)
    assert db0.terminate.command == "echo bye"
    assert db0.terminate.timeout == 120.0
    assert db0.needs_ssh and db0.host is None and db0.userdata == ()


def test_ec2_cloud_overrides_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEI_TEST_AK", "AKIA-FROM-ENV")
    plan = load_plan(FULL)
    (cache,) = render_service(plan, "cache", "r1")
    cloud = cache.cloud
    assert (cloud.name, cloud.driver) == ("aws", "ec2")
    assert cloud.options["size"] == "t3.large"  # the service's override wins
    assert cloud.options["image"] == "ami-0abcdef"
    assert cloud.options["tags"] == {"team": "infra", "cost": "7", "role": "cache"}
    assert cloud.options["zone"] == "us-east-1a"
    assert cloud.options["run_instances"] == {"EbsOptimized": False}
    assert "endpoint_url" not in cloud.options  # null means unset
    assert cloud.options["credentials"] == {
        "access_key": "AKIA-FROM-ENV",
        "secret_key": "secret-default",
    }
    assert "credentials" not in cloud.public_options()
    assert not {"ssh_user", "ssh_key", "ssh_port"} & set(cloud.options)
    assert cache.ssh_user == "ubuntu"
    assert cache.ssh_key == str((PLANS / "keys" / "id_test").resolve())
    assert cache.host_key_policy == "console"
    assert not cache.needs_ssh


def test_later_level_placeholders_and_userdata() -> None:
    plan = load_plan(FULL)
    (web,) = render_service(plan, "web", "r7")
    assert web.cloud.driver == "libcloud"
    assert web.cloud.options["location"] == "hello-dc"
    assert web.cloud.options["options"]["ex_force_auth_version"] == "3.x_password"
    assert web.ssh_user == "r7-user"
    assert web.config == {
        "db_host": "<db/0.address>",
        "db_token": "<db.outputs.token>",
        "db_count": 2,
        "cache_host": "<cache/0.hostname>",
    }
    rendered, untouched = web.userdata
    assert "node=web/0 of 1" in rendered
    assert "db=<db/0.address>" in rendered and "token=<db.outputs.token>" in rendered
    assert "greeting=hello" in rendered
    assert untouched == (PLANS / "templates" / "native.cloud-config").read_text()


def test_views_give_real_outputs() -> None:
    plan = load_plan(FULL)
    views = {
        "db": ServiceView(
            "db",
            (
                NodeView("127.0.0.5", "db-0.local", {"token": "s3cret", "items": 4}),
                NodeView("127.0.0.6", "db-1.local", {"token": "other"}),
            ),
        ),
        "cache": ServiceView("cache", (NodeView("127.0.0.7", "cache-0", {}),)),
    }
    (web,) = render_service(plan, "web", "r1", views)
    assert web.config == {
        "db_host": "127.0.0.5",
        "db_token": "s3cret",
        "db_count": 2,
        "cache_host": "cache-0",
    }
    assert "token=s3cret" in web.userdata[0]


def test_views_missing_output_is_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        levels:
          - services: {db: {}}
          - services:
              web:
                config: {t: "{{ services.db.outputs.tokn }}"}
        """,
    )
    plan = load_plan(path)
    views = {"db": ServiceView("db", (NodeView("127.0.0.5", "h", {"token": "x"}),))}
    with pytest.raises(PlanError) as info:
        render_service(plan, "web", "r1", views)
    assert f"{path}:{line_of(path, 'tokn')}" in str(info.value)
    assert "services.db.outputs has no 'tokn' (did you mean 'token'?)" in str(info.value)


def test_static_hosts_one_node_each() -> None:
    plan = load_plan(FULL)
    nodes = render_service(plan, "lb", "r1")
    assert [n.host for n in nodes] == ["127.0.0.1", "127.0.0.2"]
    assert all(n.cloud.driver == "static" for n in nodes)
    assert nodes[0].ssh_port == 2222 and nodes[0].ssh_user == "admin"
    assert nodes[0].ssh_key == str((PLANS / "keys" / "id_test").resolve())
    assert nodes[0].ready is not None and nodes[0].ready.timeout == 120.0
    assert nodes[0].ready.interval == 2.0


def test_empty_service_uses_defaults() -> None:
    plan = load_plan(FULL)
    (probe,) = render_service(plan, "probe", "r1")
    assert probe.cloud.name == "here" and probe.count == 1
    assert probe.ssh_port is None and probe.host_key_policy == "pinned"  # the ssh config, else 22


def test_implicit_local_and_static_clouds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults: {}
        levels:
          - services:
              a: {}
              b: {host: 127.0.0.9, ssh_port: 2200}
        """,
    )
    plan = load_plan(path)
    (a,) = render_service(plan, "a", "r")
    (b,) = render_service(plan, "b", "r")
    assert (a.cloud.name, a.cloud.driver) == ("local", "local")
    assert (b.cloud.name, b.cloud.driver) == ("static", "static")
    assert (b.host, b.ssh_port) == ("127.0.0.9", 2200)


def test_host_beats_default_cloud(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        clouds: {here: {driver: local}}
        defaults: {cloud: here, image: x}
        levels:
          - services:
              web: {host: 127.0.0.3}
        """,
    )
    (web,) = render_service(load_plan(path), "web", "r")
    assert web.cloud.driver == "static"  # defaults' image does not apply to static: dropped
    assert dict(web.cloud.options) == {}


def test_var_makes_count_an_int(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {nodes: 1, code: x}
        levels:
          - services:
              w:
                count: "{{ vars.nodes }}"
                config:
                  whole: "{{ vars.nodes }}"
                  mixed: "n={{ vars.nodes }}"
                  zeros: "{{ vars.code }}"
                  expr: "{{ vars.nodes | int + 1 }}"
                  text: "{{ vars.code }}-suffix"
        """,
    )
    nodes = render_service(load_plan(path, {"nodes": "10", "code": "007"}), "w", "r")
    assert len(nodes) == 10
    config = nodes[0].config
    assert config["whole"] == 10 and isinstance(config["whole"], int)
    assert config["mixed"] == "n=10"
    assert config["zeros"] == "007"  # not a Python literal: stays text
    assert config["expr"] == 11
    assert config["text"] == "007-suffix"


def test_string_keys_stay_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {user: "123", port: "2222"}
        levels:
          - services:
              s:
                host: 127.0.0.1
                ssh_user: "{{ vars.user }}"
                ssh_port: "{{ vars.port }}"
                boot: {command: "echo", args: ["{{ vars.port }}"], env: {P: "{{ vars.port }}"}}
        """,
    )
    (node,) = render_service(load_plan(path), "s", "r")
    assert node.ssh_user == "123"
    assert node.ssh_port == 2222
    assert node.boot is not None
    assert node.boot.args == ("2222",) and dict(node.boot.env) == {"P": "2222"}


def test_a_host_takes_the_defaults_cloud_only_when_it_is_a_static_profile(
        tmp_path: Path) -> None:
    """`defaults: {cloud: office}` with office a static profile reaches the services that name
    only a host (its login settings with it); a default cloud that creates machines does
    not, nor one written as a template: those services stay on the implicit `static`."""
    path = write(
        tmp_path,
        """
        variables: {where: office}
        clouds:
          office: {driver: static, ssh_user: deploy, ssh_port: 2222}
          aws: {driver: ec2, region: us-east-1, image: ami-1, size: t3.micro}
        defaults: {cloud: office}
        levels:
          - services:
              web: {host: 10.0.0.5}
              own: {host: 10.0.0.6, cloud: static}
        """,
    )
    plan = load_plan(path)
    (web,) = render_service(plan, "web", "r")
    assert (web.cloud.name, web.cloud.driver) == ("office", "static")
    assert (web.host, web.ssh_user, web.ssh_port) == ("10.0.0.5", "deploy", 2222)
    (own,) = render_service(plan, "own", "r")
    assert own.cloud.name == "static" and own.ssh_user != "deploy"

    for default in ("aws", '"{{ vars.where }}"'):
        text = path.read_text().replace("{cloud: office}", f"{{cloud: {default}}}")
        (web,) = render_service(load_plan(write(tmp_path, text)), "web", "r")
        assert web.cloud.name == "static" and web.ssh_user != "deploy"


def test_templated_host_list_and_cloud(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {where: rack}
        clouds: {rack: {driver: static}}
        levels:
          - services:
              s:
                cloud: "{{ vars.where }}"
                host: "{{ vars.hosts }}"
                config: {i: "{{ service.index }}", n: "{{ service.count }}"}
        """,
    )
    nodes = render_service(load_plan(path, {"hosts": "['127.0.0.1', '127.0.0.2']"}), "s", "r")
    assert [n.host for n in nodes] == ["127.0.0.1", "127.0.0.2"]
    assert [dict(n.config) for n in nodes] == [{"i": 0, "n": 2}, {"i": 1, "n": 2}]


def test_templated_cloud_unknown_at_render(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {where: here}
        levels:
          - services:
              s: {cloud: "{{ vars.where }}"}
        """,
    )
    with pytest.raises(PlanError) as info:
        render_service(load_plan(path), "s", "r")
    assert f"{path}:{line_of(path, 'cloud:')}" in str(info.value)
    assert "unknown cloud 'here'" in str(info.value)


def test_rendered_value_is_checked_against_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {port: "22"}
        levels:
          - services:
              s:
                ssh_port: "{{ vars.port }}"
        """,
    )
    plan = load_plan(path, {"port": "abc"})
    with pytest.raises(PlanError) as info:
        render_service(plan, "s", "r")
    assert info.value.exit_code == EXIT_USAGE
    assert f"{path}:{line_of(path, 'ssh_port')}" in str(info.value)
    assert "ssh_port must be an integer from 1 to 65535, got 'abc'" in str(info.value)


def test_bad_count_at_render(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {n: 1}
        levels:
          - services:
              s: {count: "{{ vars.n }}"}
        """,
    )
    with pytest.raises(PlanError) as info:
        render_service(load_plan(path, {"n": "many"}), "s", "r")
    assert f"{path}:{line_of(path, 'count')}" in str(info.value)
    assert "count must be an integer >= 1, got 'many'" in str(info.value)


def test_env_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
        levels:
          - services:
              s:
                config:
                  home: "{{ env('CEI_TEST_HOME') }}"
                  fallback: "{{ env('CEI_TEST_UNSET_VAR', 'dflt') }}"
        """,
    )
    monkeypatch.setenv("CEI_TEST_HOME", "/somewhere")
    monkeypatch.delenv("CEI_TEST_UNSET_VAR", raising=False)
    (node,) = render_service(load_plan(path), "s", "r")
    assert node.config == {"home": "/somewhere", "fallback": "dflt"}
    monkeypatch.delenv("CEI_TEST_HOME")
    with pytest.raises(PlanError) as info:
        render_service(load_plan(path), "s", "r")
    assert f"{path}:{line_of(path, 'CEI_TEST_HOME')}" in str(info.value)
    assert "environment variable CEI_TEST_HOME is not set" in str(info.value)


@pytest.mark.parametrize(
    "expr",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ service.name.__class__ }}",
        "{{ run.__len__() }}",
    ],
)
def test_sandbox_refuses_private_attributes(tmp_path: Path, expr: str) -> None:
    path = write(
        tmp_path,
        f"""
        levels:
          - services:
              s:
                config: {{x: "{expr}"}}
        """,
    )
    with pytest.raises(PlanError) as info:
        render_service(load_plan(path), "s", "r")
    assert f"{path}:{line_of(path, 'config')}" in str(info.value)
    assert "refused by the template sandbox" in str(info.value)


def test_sandbox_refuses_mutation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        variables: {xs: [1]}
        levels:
          - services:
              s:
                config: {x: "{{ vars.xs.append(2) }}"}
        """,
    )
    with pytest.raises(PlanError, match="sandbox"):
        render_service(load_plan(path), "s", "r")


def test_template_runtime_error_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        levels:
          - services:
              s:
                config: {x: "{{ 1 // 0 }}"}
        """,
    )
    with pytest.raises(PlanError, match="ZeroDivisionError"):
        render_service(load_plan(path), "s", "r")


def test_userdata_runtime_error_points_into_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ud.yaml").write_text("#cloud-config\nruncmd:\n  - echo {{ env('CEI_NOPE_X') }}\n")
    path = write(
        tmp_path,
        """
        levels:
          - services:
              s: {userdata: ud.yaml}
        """,
    )
    monkeypatch.delenv("CEI_NOPE_X", raising=False)
    with pytest.raises(PlanError) as info:
        render_service(load_plan(path), "s", "r")
    assert f"{tmp_path / 'ud.yaml'}:3" in str(info.value)
    assert "CEI_NOPE_X" in str(info.value)


def test_cloud_init_jinja_passes_through(tmp_path: Path) -> None:
    text = "## template: jinja\n#cloud-config\nruncmd: ['echo {{ ds.meta_data.x }} {% bad']\n"
    (tmp_path / "ud.yaml").write_text(text)
    path = write(
        tmp_path,
        """
        levels:
          - services:
              s: {userdata: ud.yaml}
        """,
    )
    (node,) = render_service(load_plan(path), "s", "r")
    assert node.userdata == (text,)


def test_unknown_service_name(tmp_path: Path) -> None:
    plan = load_plan(FULL)
    with pytest.raises(PlanError, match=r"no service 'dbx' in the plan \(did you mean 'db'\?\)"):
        render_service(plan, "dbx", "r")


def test_whole_outputs_mapping_renders_as_plain_data() -> None:
    plan = load_plan(FULL)
    views = {"db": ServiceView("db", (NodeView("a", "h", {"token": "t", "n": 1}),))}
    decl = plan.service("web")
    raw = dict(decl.raw)
    raw["config"] = {"all": "{{ services.db.outputs }}"}
    patched = type(plan)(
        name=plan.name,
        path=plan.path,
        base_dir=plan.base_dir,
        variables=plan.variables,
        clouds=plan.clouds,
        levels=tuple(
            type(lvl)(
                lvl.index,
                lvl.name,
                tuple(
                    type(s)(s.name, s.level, s.level_name, raw, s.location, s.from_defaults)
                    if s.name == "web"
                    else s
                    for s in lvl.services
                ),
            )
            for lvl in plan.levels
        ),
    )
    views["cache"] = ServiceView("cache", (NodeView("c", "c", {}),))
    (web,) = render_service(patched, "web", "r", views)
    assert web.config == {"all": {"token": "t", "n": 1}}


def test_ssh_settings_and_create_args(tmp_path: Path) -> None:
    """Profile SSH settings reach each node (the service's win), stay out of the provider's
    options, and `create_args` of profile and service merge like `tags`."""
    (tmp_path / "ssh_config").write_text("Host *\n")
    path = write(tmp_path, """\
        plan: ssh
        variables: {bastion: 10.0.0.1}
        clouds:
          os:
            driver: libcloud
            provider: openstack
            image: img
            size: small
            ssh_config: ssh_config
            ssh_jump: ["ops@{{ vars.bastion }}:2222"]
            ssh_key_passphrase_env: OS_KEY_PASS
            create_args: {networks: [private], ex_keyname: mine}
        levels:
          - services:
              app:
                cloud: os
                create_args: {ex_keyname: theirs, ex_security_groups: [web]}
              direct:
                cloud: os
                ssh_jump: []
                ssh_config: none
                ssh_port: 2200
        """)
    plan = load_plan(path)
    (app,) = render_service(plan, "app", "r1")
    assert app.ssh_config == str(tmp_path / "ssh_config")
    assert app.ssh_jump == ({"host": "ops@10.0.0.1:2222"},)
    assert app.ssh_key_passphrase_env == "OS_KEY_PASS" and app.ssh_port is None
    assert app.cloud.options["create_args"] == {
        "networks": ["private"], "ex_keyname": "theirs", "ex_security_groups": ["web"]}
    assert not {"ssh_config", "ssh_jump", "ssh_key_passphrase_env"} & set(app.cloud.options)
    assert app.ssh_settings() == {"ssh_config": str(tmp_path / "ssh_config"),
                                  "ssh_jump": [{"host": "ops@10.0.0.1:2222"}],
                                  "ssh_key_passphrase_env": "OS_KEY_PASS"}
    (direct,) = render_service(plan, "direct", "r1")
    assert (direct.ssh_jump, direct.ssh_config, direct.ssh_port) == ((), "none", 2200)


def test_a_host_list_is_checked_once_not_once_per_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N hosts made rendering quadratic when each node's whole declaration, the N hosts
    included, was schema-checked again; nodes that differ are still checked each."""
    from launchplan.plan import schema

    checked: list[str | None] = []
    real = schema.validate

    def counting(instance: object, **kwargs: object) -> None:
        checked.append(kwargs["definition"])  # type: ignore[arg-type]
        real(instance, **kwargs)  # type: ignore[arg-type]

    hosts = [f"10.0.0.{i}" for i in range(1, 41)]
    plan = load_plan(write(tmp_path, f"""\
        plan: many
        clouds:
          hosts: {{driver: static}}
        defaults: {{cloud: hosts, ssh_user: u}}
        levels:
          - services:
              same:
                host: {hosts}
              apart:
                host: [a, b, c]
                config: {{slot: "{{{{ service.index }}}}"}}
        """))
    monkeypatch.setattr(schema, "validate", counting)
    same = render_service(plan, "same", "r1")
    assert [n.host for n in same] == hosts
    assert checked == ["service", "cloud"]
    checked.clear()
    apart = render_service(plan, "apart", "r1")
    assert [n.config for n in apart] == [{"slot": 0}, {"slot": 1}, {"slot": 2}]
    assert checked == ["service", "cloud", "service", "service"]
