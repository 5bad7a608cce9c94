"""Malformed plans: each must raise PlanError/UsageError (exit 2) naming FILE:LINE."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from launchplan.errors import EXIT_USAGE, PlanError, UsageError
from launchplan.plan import load_plan, machine_problems, render_all

MARK = "#<"  # marks the line an error must point at

HEAD = """\
plan: broken
variables: {port: 5432, n: 2}
clouds:
  here: {driver: local}
  aws: {driver: ec2, region: us-east-1, image: ami-1}
  rack: {driver: static, ssh_user: admin}
"""


def make_plan(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    """Write a plan (HEAD + body) beside a script, a user-data file and a key."""
    (tmp_path / "boot.sh").write_text("#!/bin/sh\n")
    (tmp_path / "ud.yaml").write_text("#cloud-config\n")
    (tmp_path / "key").write_text("k\n")
    path = tmp_path / "plan.yml"
    path.write_text(head + textwrap.dedent(body))
    return path


def marked_line(path: Path) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if MARK in line)


def expect(path: Path, words: str, line: int | None = None, **kwargs: object) -> PlanError:
    with pytest.raises(PlanError) as info:
        load_plan(path, **kwargs)  # type: ignore[arg-type]
    err = info.value
    where = f"{path}:{line if line is not None else marked_line(path)}"
    assert err.exit_code == EXIT_USAGE
    assert where in str(err), str(err)
    assert words in str(err), str(err)
    return err


CASES = {
    "duplicate key": (
        """
        levels:
          - services:
              db: {}
              db: {}  #<
        """,
        "duplicate key 'db' (first at line",
    ),
    "unknown top-level key": (
        """
        levels:
          - services: {a: {}}
        levles: 3  #<
        """,
        "unknown key 'levles' (did you mean 'levels'?)",
    ),
    "unknown service key": (
        """
        levels:
          - services:
              db:
                cloud: aws
                imge: ami-2  #<
        """,
        "service 'db': unknown key 'imge' (did you mean 'image'?)",
    ),
    "unknown program key": (
        """
        levels:
          - services:
              db:
                boot:
                  run: boot.sh
                  tiemout: 3  #<
        """,
        "service 'db': boot: unknown key 'tiemout' (did you mean 'timeout'?)",
    ),
    "interval outside ready": (
        """
        levels:
          - services:
              db:
                boot: {command: "true",
                  interval: 3}  #<
        """,
        "unknown key 'interval'",
    ),
    "unknown cloud profile key": (
        """
        clouds:
          aws2:
            driver: ec2
            regoin: us-east-1  #<
        levels:
          - services: {a: {}}
        """,
        "cloud 'aws2': unknown key 'regoin' (did you mean 'region'?)",
        "plan: broken\n",
    ),
    "unknown driver": (
        """
        clouds:
          aws2: {driver: ec3}  #<
        levels:
          - services: {a: {}}
        """,
        "driver must be one of local, static, ec2, libcloud, got 'ec3' (did you mean 'ec2'?)",
        "plan: broken\n",
    ),
    "count not an integer": (
        """
        levels:
          - services:
              db: {count: x}  #<
        """,
        "service 'db': count must be an integer from 1 to 1000, got 'x'",
    ),
    "count zero": (
        """
        levels:
          - services:
              db:
                count: 0  #<
        """,
        "count must be an integer from 1 to 1000, got 0",
    ),
    "negative timeout": (
        """
        defaults:
          timeout: -1  #<
        levels:
          - services: {a: {}}
        """,
        "defaults: timeout must be a number > 0, got -1",
    ),
    "bad host key policy": (
        """
        levels:
          - services:
              db:
                host_key_policy: trust  #<
        """,
        "host_key_policy must be one of pinned, console, accept-new, got 'trust'",
    ),
    "ssh port out of range": (
        """
        levels:
          - services:
              db:
                ssh_port: 70000  #<
        """,
        "ssh_port must be an integer from 1 to 65535, got 70000",
    ),
    "args must be scalars": (
        """
        levels:
          - services:
              db:
                boot:
                  command: run
                  args:
                    - {a: 1}  #<
        """,
        "boot.args[0] must be a string or a number or true or false, got a mapping",
    ),
    "run and command both": (
        """
        levels:
          - services:
              db:
                boot: {run: boot.sh, command: "true"}  #<
        """,
        "boot needs exactly one of run (a local file) or command (a shell line)",
    ),
    "neither run nor command": (
        """
        levels:
          - services:
              db:
                ready:  #<
                  timeout: 3
        """,
        "ready needs exactly one of run",
    ),
    "missing program file": (
        """
        levels:
          - services:
              db:
                boot:
                  run: nope.sh  #<
        """,
        "boot.run: file not found: ",
    ),
    "missing userdata file": (
        """
        levels:
          - services:
              db:
                userdata: [ud.yaml, missing.yaml]  #<
        """,
        "userdata[1]: file not found",
    ),
    "unknown cloud": (
        """
        levels:
          - services:
              db:
                cloud: awz  #<
        """,
        "unknown cloud 'awz' (did you mean 'aws'?)",
    ),
    "unknown cloud from defaults": (
        """
        defaults:
          cloud: nowhere  #<
        levels:
          - services: {db: {}}
        """,
        "unknown cloud 'nowhere'",
    ),
    "reference to same level": (
        """
        levels:
          - services:
              db: {}
              web:
                config: {db: "{{ services.db.nodes[0].address }}"}  #<
        """,
        "service 'db' is in the same level (level1); templates can only use services of "
        "earlier levels",
    ),
    "reference to later level": (
        """
        levels:
          - name: first
            services:
              web:
                config: {db: "{{ services['db'].outputs.token }}"}  #<
          - services:
              db: {}
        """,
        "service 'db' is in a later level (level2)",
    ),
    "reference to unknown service": (
        """
        levels:
          - services: {db: {}}
          - services:
              web:
                config: {db: "{{ services.dbb.outputs.x }}"}  #<
        """,
        "unknown service 'dbb' (did you mean 'db'?)",
    ),
    "unknown variable": (
        """
        levels:
          - services:
              db:
                config: {p: "{{ vars.prot }}"}  #<
        """,
        "unknown variable vars.prot (did you mean 'port'?)",
    ),
    "unknown template name": (
        """
        levels:
          - services:
              db:
                config: {p: "{{ varz.port }}"}  #<
        """,
        "unknown name 'varz' in template (did you mean 'vars'?)",
    ),
    "unknown service attribute": (
        """
        levels:
          - services:
              db:
                config: {p: "{{ service.idx }}"}  #<
        """,
        "service.idx is unknown (did you mean 'index'?)",
    ),
    "bad count template": (
        """
        levels:
          - services:
              db:
                count: "{{ vars.n }"  #<
        """,
        "template syntax error",
    ),
    "template syntax error": (
        """
        levels:
          - services:
              db:
                config:
                  x: "{% if vars.n %}yes"  #<
        """,
        "template syntax error",
    ),
    "literal credential": (
        """
        clouds:
          aws2:
            driver: ec2
            credentials:
              access_key: "{{ env('AK') }}"
              secret_key: hunter2  #<
        levels:
          - services: {a: {}}
        """,
        "credentials must come from env('NAME')",
        "plan: broken\n",
    ),
    "credential template without env": (
        """
        clouds:
          os:
            driver: libcloud
            provider: openstack
            credentials: {key: "{{ run }}-key"}  #<
        levels:
          - services: {a: {}}
        """,
        "credentials must come from env('NAME')",
        "plan: broken\n",
    ),
    "service defined twice across levels": (
        """
        levels:
          - services: {db: {}}
          - services:
              db: {}  #<
        """,
        "service 'db' is defined twice",
    ),
    "invalid service name": (
        """
        levels:
          - services:
              bad name: {}  #<
        """,
        "'bad name' is not a valid name",
    ),
    "invalid level key": (
        """
        levels:
          - servics: {a: {}}  #<
        """,
        "unknown key 'servics' (did you mean 'services'?)",
    ),
    "empty levels": (
        """
        levels: []  #<
        """,
        "plan: levels must not be empty",
    ),
    "host on a created cloud": (
        """
        levels:
          - services:
              db:
                cloud: here
                host: 127.0.0.1  #<
        """,
        "host is for existing machines (driver static); cloud 'here' has driver local",
    ),
    "static cloud without host": (
        """
        levels:
          - services:
              db:
                cloud: rack  #<
        """,
        "cloud 'rack' (driver static) needs host",
    ),
    "override unknown to the driver": (
        """
        levels:
          - services:
              db:
                cloud: here
                image: ami-1  #<
        """,
        "image is not an option of cloud 'here' (driver local)",
    ),
    "host list and count disagree": (
        """
        levels:
          - services:
              db:
                host: [127.0.0.1, 127.0.0.2]
                count: 3  #<
        """,
        "count is 3 but host lists 2 hosts",
    ),
    "non-string key": (
        """
        levels:
          - services:
              db:
                config:
                  on: 1  #<
        """,
        "quote it",
    ),
    "bad variable name": (
        """
        variables:
          my-var: 1  #<
        levels:
          - services: {a: {}}
        """,
        "'my-var' is not a valid name",
        "plan: broken\n",
    ),
    "wrong type for config": (
        """
        levels:
          - services:
              db:
                config: [1, 2]  #<
        """,
        "config must be a mapping, got a list",
    ),
    "service is not a mapping": (
        """
        levels:
          - services:
              db: 3  #<
        """,
        "service 'db' must be a mapping, got 3",
    ),
    "unknown tag": (
        """
        levels:
          - services:
              db: !custom {}  #<
        """,
        "unsupported YAML tag !custom",
    ),
    "security groups not a list": (
        """
        levels:
          - services:
              db:
                cloud: aws
                security_groups: default  #<
        """,
        "security_groups must be a list of strings, got 'default'",
    ),
    "address enum": (
        """
        levels:
          - services:
              db:
                cloud: aws
                address: elastic  #<
        """,
        "address must be one of public, private, got 'elastic'",
    ),
    "elastic count above max": (
        """
        levels:
          - services:
              engine:
                count: "{{ vars.n }}"
                elastic: {min: 1, max: 1}  #<
        """,
        "elastic.max: the service launches 2 node(s) (count), outside min 1 .. max 1",
    ),
    "elastic min above max": (
        """
        levels:
          - services:
              engine:
                elastic:
                  min: 5  #<
                  max: 3
        """,
        "elastic.min: min (5) is larger than max (3)",
    ),
    "elastic thresholds that could both fire": (
        """
        levels:
          - services:
              engine:
                elastic:
                  max: 4
                  policy: sensor
                  scale_up: {above: 50}
                  scale_down: {below: 60}  #<
        """,
        "scale_down.below (60) must be less than scale_up.above (50)",
    ),
    "elastic sensor without thresholds": (
        """
        levels:
          - services:
              engine:
                elastic: {max: 4, policy: sensor}  #<
        """,
        "policy sensor needs scale_up",
    ),
    "elastic metric nobody provides": (
        """
        levels:
          - services:
              engine:
                elastic:
                  max: 4
                  policy: target
                  metric: queue_depth  #<
                  target: {value: 10}
        """,
        "no source provides the metric 'queue_depth'",
    ),
    "elastic need without agent": (
        """
        levels:
          - services:
              engine:
                elastic:
                  max: 4
                  policy: need  #<
        """,
        "the service needs `agent`",
    ),
    "elastic on existing hosts": (
        """
        levels:
          - services:
              web:
                host: 192.0.2.10
                elastic: {max: 2}  #<
        """,
        "elastic needs a cloud that creates machines",
    ),
    "elastic unknown key": (
        """
        levels:
          - services:
              engine:
                elastic:
                  max: 4
                  polcy: sensor  #<
        """,
        "unknown key 'polcy' (did you mean 'policy'?)",
    ),
    "elastic negative cooldown from a variable": (
        """
        levels:
          - services:
              engine:
                elastic:
                  max: 4
                  cooldown: "{{ -vars.n }}"  #<
        """,
        "elastic.cooldown must be a number >= 0, got -2",
    ),
    "elastic nothing to scale": (
        """
        levels:
          - services:
              engine:
                elastic:
                  min: 1
                  max: 1  #<
                  policy: target
                  target: {value: 50}
        """,
        "min and max are both 1: policy target has nothing to scale",
    ),
    "bad jump host": (
        """
        levels:
          - services:
              web:
                cloud: rack
                host: 10.0.0.1
                ssh_jump:
                  - "admin@bastion:22:33"  #<
        """,
        "service 'web': ssh_jump[0] must be \"[user@]host[:port]\" or a mapping",
    ),
    "bad jump host in a mapping": (
        """
        levels:
          - services:
              web:
                cloud: rack
                host: 10.0.0.1
                ssh_jump: [{host: "bastion", host_key: "not a key"}]  #<
        """,
        "service 'web': ssh_jump[0] must be",
    ),
    "passphrase variable name": (
        """
        levels:
          - services:
              web: {cloud: rack, host: 10.0.0.1, ssh_key_passphrase_env: "MY-PASS"}  #<
        """,
        "ssh_key_passphrase_env must be a name (letters, digits and '_'",
    ),
    "missing ssh config": (
        """
        levels:
          - services:
              web: {cloud: rack, host: 10.0.0.1, ssh_config: nope.conf}  #<
        """,
        "file not found:",
    ),
    "create_args on ec2": (
        """
        levels:
          - services:
              web:
                cloud: aws
                create_args: {networks: [private]}  #<
        """,
        "create_args is not an option of cloud 'aws' (driver ec2)",
    ),
    "ssh_jump on the local cloud": (
        """
        levels:
          - services:
              web: {}
        """,
        "cloud 'here': unknown key 'ssh_jump'",
        "plan: broken\nclouds:\n  here: {driver: local, ssh_jump: [b]}  #<\n",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_plan(tmp_path: Path, case: str) -> None:
    body, words, *head = CASES[case]
    expect(make_plan(tmp_path, body, *head), words)


def test_at_least_25_malformed_cases() -> None:
    assert len(CASES) >= 25


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("levels:\n  - services:\n      db: {count: 1\n")
    err = expect(path, "YAML syntax error", line=4)
    assert err.line == 4 and err.column is not None


def test_yaml_bad_indentation(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("levels:\n  - services:\n      db: {}\n     bad: 1\n")
    expect(path, "YAML syntax error", line=4)


def test_several_documents(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("levels: []\n---\nlevels: []\n")
    expect(path, "YAML syntax error", line=2)


def test_recursive_alias(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("variables:\n  a: &x [1, *x]\nlevels:\n  - services: {a: {}}\n")
    expect(path, "refers to itself", line=2)


def test_plan_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("- a\n- b\n")
    expect(path, "a plan must be a mapping", line=1)


def test_missing_levels(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("plan: x\n")
    expect(path, "plan needs 'levels'", line=1)


def test_empty_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("# nothing\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == f"{path}: the plan is empty"


def test_missing_plan_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.exit_code == EXIT_USAGE
    assert str(path) in str(info.value) and "not found" in str(info.value)


def test_plan_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="directory"):
        load_plan(tmp_path)


def test_plan_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_bytes(b"plan: \xff\xfe\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan(path)


def test_missing_vars_file(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "levels:\n  - services: {a: {}}\n")
    with pytest.raises(UsageError) as info:
        load_plan(plan, vars_files=[tmp_path / "absent.yml"])
    assert info.value.exit_code == EXIT_USAGE
    assert "vars file not found" in str(info.value)
    assert str(tmp_path / "absent.yml") in str(info.value)


def test_vars_file_not_a_mapping(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "levels:\n  - services: {a: {}}\n")
    vars_file = tmp_path / "v.yml"
    vars_file.write_text("- 1\n- 2\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan, vars_files=[vars_file])
    assert f"{vars_file}:1" in str(info.value)
    assert "a vars file must be a mapping" in str(info.value)


def test_vars_file_syntax_error(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "levels:\n  - services: {a: {}}\n")
    vars_file = tmp_path / "v.yml"
    vars_file.write_text("a: 1\nb: [\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan, vars_files=[vars_file])
    assert f"{vars_file}:3" in str(info.value)


def test_vars_file_bad_name(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "levels:\n  - services: {a: {}}\n")
    vars_file = tmp_path / "v.yml"
    vars_file.write_text("ok: 1\nnot-ok: 2\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan, vars_files=[vars_file])
    assert f"{vars_file}:2" in str(info.value)


def test_bad_override_name(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "levels:\n  - services: {a: {}}\n")
    with pytest.raises(UsageError) as info:
        load_plan(plan, {"1x": "3"})
    assert info.value.exit_code == EXIT_USAGE
    assert "1x" in str(info.value)


def test_userdata_reference_error_points_into_the_file(tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        """
        levels:
          - services:
              db:
                userdata: tpl.yaml
        """,
    )
    (tmp_path / "tpl.yaml").write_text("#cloud-config\nruncmd:\n  - echo {{ vars.nope }}\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    assert f"{tmp_path / 'tpl.yaml'}:3" in str(info.value)
    assert "unknown variable vars.nope" in str(info.value)


def test_userdata_syntax_error_points_into_the_file(tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        """
        levels:
          - services:
              db:
                userdata: tpl.yaml
        """,
    )
    (tmp_path / "tpl.yaml").write_text("#cloud-config\n\n{% for x in y %}\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    assert f"{tmp_path / 'tpl.yaml'}:" in str(info.value)
    assert "template syntax error" in str(info.value)


def test_first_error_in_file_order_is_reported(tmp_path: Path) -> None:
    plan = make_plan(
        tmp_path,
        """
        levels:
          - services:
              db:
                count: x  #<
                timeout: -1
        """,
    )
    expect(plan, "count must be")


def test_a_cloud_config_cloud_init_would_reject_is_an_error_at_its_key(tmp_path: Path) -> None:
    (tmp_path / "bad.cfg").write_text("#cloud-config\npackages: [git]\nruncmd: {not: a list}\n")
    path = make_plan(tmp_path, """
        levels:
          - services:
              web: {cloud: aws, userdata: bad.cfg}
        """)
    plan = load_plan(path)
    with pytest.raises(PlanError) as info:
        render_all(plan)
    assert str(info.value) == f"{tmp_path / 'bad.cfg'}:3: cloud-config: runcmd: must be a list, " \
        "not dict"


def test_userdata_on_an_existing_host_is_refused(tmp_path: Path) -> None:
    path = make_plan(tmp_path, """
        levels:
          - services:
              web: {host: 192.0.2.10, userdata: ud.yaml}  #<
        """)
    with pytest.raises(PlanError) as info:
        render_all(load_plan(path))
    assert f"{path}:{marked_line(path)}:" in str(info.value)
    assert "userdata is for machines cei creates; cloud 'static' (driver static) is an " \
        "existing host" in str(info.value)


def test_a_missing_ssh_key_is_this_machine_s_problem_not_the_plan_s(tmp_path: Path) -> None:
    path = make_plan(tmp_path, """
        levels:
          - services:
              db:
                ssh_key: ~/definitely/not/here/key  #<
        """)
    plan = load_plan(path)
    render_all(plan)
    [problem] = machine_problems(plan)
    assert f"{path}:{marked_line(path)}:" in str(problem)
    assert "ssh_key: file not found" in str(problem)
