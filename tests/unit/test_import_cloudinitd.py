"""cei import: cloudinit.d plans written for this suite, converted and compared key by key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchplan.errors import UsageError
from launchplan.importer.ini import parse_ini
from launchplan.importer.problems import ImportRefused, Report
from launchplan.importer.run import import_plan
from launchplan.importer.yamlout import Comments, dump, scalar

SHOP = Path(__file__).parent / "plans" / "cloudinitd" / "shop"


@pytest.fixture(scope="module")
def shop() -> tuple[dict[str, Any], str, list[str]]:
    result = import_plan(SHOP / "top.conf", SHOP / "shop.yml")
    return yaml.safe_load(result.text), result.text, [str(w) for w in result.warnings]


def service(doc: dict[str, Any], level: int, name: str) -> dict[str, Any]:
    svc: dict[str, Any] = doc["levels"][level]["services"][name]
    return svc


def test_shop_plan_keys(shop: tuple[dict[str, Any], str, list[str]]) -> None:
    doc, _, _ = shop
    assert doc["plan"] == "shop"
    assert doc["variables"] == {"domain": "shop.example.org", "greeting": "hello"}
    assert [lvl["name"] for lvl in doc["levels"]] == ["level1", "level2", "level3"]
    assert [list(lvl["services"]) for lvl in doc["levels"]] == [["db", "store"], ["app"],
                                                                 ["web"]]
    assert doc["clouds"] == {
        "us-west-2": {"driver": "ec2", "region": "us-west-2",
                      "credentials": {"access_key": "{{ env('SHOP_KEY') }}",
                                      "secret_key": "{{ env('SHOP_SECRET') }}"}},
        "nimbus": {"driver": "ec2", "region": "nimbus",
                   "endpoint_url": "https://nimbus.example.org:8444/",
                   "credentials": {"access_key": "{{ env('NIMBUS_KEY') }}",
                                   "secret_key": "{{ env('NIMBUS_SECRET') }}"}},
        "libcloud-openstack": {"driver": "libcloud", "provider": "openstack",
                               "options": {"host": "keystone.example.org", "secure": True,
                                           "port": 5000},
                               "credentials": {"key": "{{ env('SVC_WEB_IAAS_KEY') }}",
                                               "secret": "{{ env('SVC_WEB_IAAS_SECRET') }}"}},
    }


def test_shop_first_level(shop: tuple[dict[str, Any], str, list[str]]) -> None:
    doc, _, _ = shop
    assert service(doc, 0, "db") == {
        "compat": "cloudinitd", "cloud": "us-west-2", "image": "ami-db", "size": "m1.small",
        "key_name": "shopkey", "ssh_user": "ubuntu", "ssh_key": "keys/shop_key",
        "timeout": 300,
        "config": {"port": "5432", "user": "shop", "seed": "{{ env('DB_SEED') }}"},
        "bootconf": "db-bootconf.json",
        "boot": {"run": "scripts/db-boot.sh",
                 "args": ["--name", "{{ vars.domain }}", "--port", "5432", "two words"]},
        "ready": {"run": "scripts/ready.sh", "timeout": 300},
        "terminate": {"run": "scripts/stop.sh", "args": ["now"], "timeout": 300},
    }
    assert service(doc, 0, "store") == {
        "compat": "cloudinitd", "host": "storage.example.org", "ssh_user": "storeop",
        "ssh_key": "keys/store_key", "ready": {"run": "scripts/ready.sh"},
    }


def test_shop_references_and_replicas(shop: tuple[dict[str, Any], str, list[str]]) -> None:
    doc, _, _ = shop
    app = service(doc, 1, "app")
    assert (app["cloud"], app["count"], app["security_groups"]) == ("nimbus", 2, ["shop"])
    assert app["local_exe"] is False
    assert app["config"] == {
        "db_host": "{{ services.db.nodes[0].address }}",
        "db_token": "{{ services.db.outputs.token }}",
        "listen": "9090",  # app-more.conf (deps2) loads after app-deps.conf and wins
        "url": "http://{{ services.db.nodes[0].address }}:5432/{{ vars.greeting }}",
        "password": "{{ env('APP_PASSWORD') }}",
        "run": "{{ run }}",
    }
    assert app["boot"] == {"run": "scripts/app-boot.sh", "args": ["5432", "9090"]}
    web = service(doc, 2, "web")
    assert (web["cloud"], web["local_exe"], web["size"]) == ("libcloud-openstack", True, "2")
    assert "key_name" not in web  # the libcloud driver has no key pairs: a warning says so
    assert web["config"] == {
        "app0": "{{ services.app.nodes[0].address }}",
        "app1_listen": "9090",
        "app_out": "{{ services.app.nodes[1].outputs.ready_at }}",
        "db_image": "ami-db",
    }


def test_shop_comments_say_where_each_piece_came_from(
    shop: tuple[dict[str, Any], str, list[str]]
) -> None:
    _, text, _ = shop
    lines = text.splitlines()
    assert "      # from db.conf [svc-db]" in lines
    assert "  # from top.conf:23 (level1: db.conf)" in lines
    assert any(ln.endswith("size: m1.small  # top.conf:4 [defaults] allocation") for ln in lines)
    assert any(ln.endswith("# app-more.conf:2 [deps]") and "listen" in ln for ln in lines)
    assert any(ln.endswith("# db.conf:4 bootpgm_args") for ln in lines)
    assert "#   db.conf:11: [svc-db] scp_username is not supported" in text


def test_shop_warnings_one_per_unsupported_key(
    shop: tuple[dict[str, Any], str, list[str]]
) -> None:
    _, _, warnings = shop
    wanted = [
        ("db.conf:12:", "unknown key 'keyname' (did you mean 'sshkeyname'?)"),
        ("db.conf:11:", "scp_username is not supported"),
        ("app.conf:10:", "pgm_commands is not supported"),
        ("web.conf:4:", "iaas_key is written in the plan"),
        ("web.conf:5:", "iaas_secret is written in the plan"),
        ("top.conf:5:", "[defaults] sshkeyname (service 'web')"),
    ]
    assert len(warnings) == len(wanted)
    for where, what in wanted:
        assert any(where in w and what in w for w in warnings), (where, what, warnings)


def test_shop_never_copies_credentials(shop: tuple[dict[str, Any], str, list[str]]) -> None:
    _, text, _ = shop
    assert "webuser" not in text and "s3cr3t-literal" not in text
    assert "SHOP_KEY" in text and "env.SHOP_KEY" not in text


def test_cloud_local_puts_launched_services_on_the_local_cloud() -> None:
    doc = yaml.safe_load(import_plan(SHOP / "top.conf", SHOP / "x.yml", cloud="local").text)
    assert "clouds" not in doc
    db = service(doc, 0, "db")
    assert db["cloud"] == "local"
    assert not {"image", "size", "key_name", "ssh_user", "ssh_key"} & set(db)
    assert service(doc, 0, "store")["host"] == "storage.example.org"  # existing hosts stay
    assert service(doc, 1, "app")["count"] == 2


def test_cloud_must_name_a_known_cloud() -> None:
    with pytest.raises(ImportRefused, match=r"--cloud nowhere: .*local, us-west-2, nimbus"):
        import_plan(SHOP / "top.conf", cloud="nowhere")


def test_paths_are_relative_to_the_output(tmp_path: Path) -> None:
    doc = yaml.safe_load(import_plan(SHOP / "top.conf", tmp_path / "out" / "p.yml").text)
    run = service(doc, 0, "db")["boot"]["run"]
    assert (tmp_path / "out" / run).resolve() == (SHOP / "scripts" / "db-boot.sh").resolve()


# ----------------------------------------------------------------- refused plans


def write_plan(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path / "top.conf"


def refused(top: Path) -> list[str]:
    with pytest.raises(ImportRefused) as info:
        import_plan(top)
    assert info.value.exit_code == 2
    return [str(p) for p in info.value.problems]


def test_every_problem_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    top = write_plan(tmp_path, {
        "top.conf": """
            [runlevels]
            level1: one.conf
            level2: two.conf
            level3: missing.conf
            levelx: three.conf
            """,
        "one.conf": """
            [svc-db]
            image: img
            iaas_secret: plain-secret
            bootpgm: nowhere.sh
            deps: db-deps.conf
            bootconf: conf.json
            replica_count: many

            [svc-cache]
            image: img
            deps: cache-deps.conf
            """,
        "db-deps.conf": """
            [deps]
            a: ${.b}
            b: ${.a}
            peer: ${cache.hostname}
            """,
        "cache-deps.conf": "[other]\nx: 1\n",
        "conf.json": '{"a": "$a",\n "z": "$zz"}\n',
        "two.conf": """
            [svc-app]
            image: img
            deps: app-deps.conf
            this line is not a key

            [svc-db]
            image: img
            """,
        "app-deps.conf": """
            [deps]
            ghost: ${ghost.port}
            nokey: ${cache.port}
            later: ${web.port}
            secret: ${db.iaas_secret}
            """,
    })
    problems = refused(top)
    wanted = [
        ("top.conf:4:", "level file not found"),
        ("top.conf:5:", "expected levelN with a number N"),
        ("one.conf:4:", "bootpgm: file not found"),
        ("one.conf:7:", "replica_count must be a whole number >= 1, got 'many'"),
        ("db-deps.conf:2:", "refer to each other in a loop"),
        ("db-deps.conf:4:", "service 'cache' is in the same level"),
        ("cache-deps.conf:", "no [deps] section"),
        ("conf.json:2:", "$zz is not a key of the service's config"),
        ("two.conf:4:", "cannot parse 'this line is not a key'"),
        ("two.conf:6:", "service 'db' is also defined in one.conf:1"),
        ("app-deps.conf:2:", "no service 'ghost' in the plan"),
        ("app-deps.conf:3:", "service 'cache' has no key 'port'"),
        ("app-deps.conf:4:", "no service 'web'"),
        ("app-deps.conf:5:", "refers to a credential written in the plan"),
    ]
    assert not any("plain-secret" in p for p in problems)
    for where, what in wanted:
        assert any(where in p and what in p for p in problems), (where, what, problems)


@pytest.mark.parametrize(("files", "where", "what"), [
    ({"top.conf": "[defaults]\niaas: x\n"}, "top.conf", "no [runlevels] section"),
    ({"top.conf": "level1: a.conf\n"}, "top.conf:1:", "a key outside any [section]"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\nlevel01: a.conf\n", "a.conf": "[svc-a]\n"
      "image: i\n"}, "top.conf:3:", "level 1 is also level1"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-]\nimage: i\n"},
     "a.conf:1:", "service name '' must use letters"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nhostname: h\n"
      "iaas_launch: maybe\n"}, "a.conf:3:", "iaas_launch must be true or false"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nbootpgm: p.sh\n",
      "p.sh": "true\n"}, "a.conf:1:", "needs an image (to launch) or a hostname"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nimage: i\n"
      "cloud: cloud-x\n"}, "a.conf:3:", "no [cloud-x] section"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nimage: i\n"
      "bootpgm: p.sh\nbootpgm_args: 'unclosed\n", "p.sh": "true\n"}, "a.conf:4:",
     "cannot split into arguments"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nimage: i\n"
      "bootpgm: p.tar.gz\n", "p.tar.gz": ""}, "a.conf:3:", "a .tar.gz program"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nimage: i\n"
      "deps: d.conf\n", "d.conf": "[deps]\nx: ${global.nope}\n"}, "d.conf:2:",
     "no 'nope' in [globals]"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[svc-a]\nimage: i\n"
      "x: %(missing)s\n"}, "a.conf:3:", "%(missing)s names no key"),
    ({"top.conf": "[runlevels]\nlevel1: a.conf\n", "a.conf": "[other]\nx: 1\n"},
     "top.conf:2:", "the level file has no [svc-NAME] section"),
])
def test_refused(tmp_path: Path, files: dict[str, str], where: str, what: str) -> None:
    problems = refused(write_plan(tmp_path, files))
    assert any(where in p and what in p for p in problems), problems


def test_missing_top_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no such cloudinit\.d top file"):
        import_plan(tmp_path / "top.conf")


def test_earlier_outputs_only_from_services_with_a_boot_program(tmp_path: Path) -> None:
    top = write_plan(tmp_path, {
        "top.conf": "[runlevels]\nlevel1: a.conf\nlevel2: b.conf\n",
        "a.conf": "[svc-a]\nimage: i\nbootpgm: p.sh\n\n[svc-quiet]\nimage: i\n",
        "p.sh": "true\n",
        "b.conf": "[svc-b]\nimage: i\ndeps: d.conf\n",
        "d.conf": "[deps]\nout: ${a.token}\nnone: ${quiet.token}\n",
    })
    problems = refused(top)
    assert len(problems) == 1
    assert "d.conf:3:" in problems[0] and "no boot program that could write it" in problems[0]


# ----------------------------------------------------------------- the INI reader


def test_ini_follows_python2_configparser(tmp_path: Path) -> None:
    report = Report()
    ini = parse_ini(textwrap.dedent("""\
        ; a comment
        [DEFAULT]
        base: /opt

        [svc-a]
        Image: ami-1 ; inline comment
        path = %(base)s/app
        pct: 100%%
        raw: 100%% ${a.b}
        text: first
          second line
        empty: ""
        rem this is a comment too
        Image: ami-2
        """), tmp_path / "x.conf", report)
    section = ini.sections["svc-a"]
    values = {k: e.value for k, e in section.entries.items()}
    assert values == {"base": "/opt", "image": "ami-2", "path": "/opt/app", "pct": "100%%",
                      "raw": "100%% ${a.b}", "text": "first\nsecond line", "empty": ""}
    assert section.entries["path"].line == 7
    assert [str(w) for w in report.warnings] == [
        f"{tmp_path / 'x.conf'}:14: [svc-a] image is set again (first at line 6); "
        "this later value wins"]
    assert report.errors == []


# ----------------------------------------------------------------- the YAML writer


@pytest.mark.parametrize("value", ["plain", "two words", "true", "null", "1.5", "007", "-n",
                                   "a: b", "# x", "{{ x }}", "it's", 'say "hi"', "line\nnext",
                                   "", " lead", "trail ", "[x]", "日本", "*", "~", True, 3, None])
def test_scalars_read_back_as_written(value: object) -> None:
    assert yaml.safe_load(f"k: {scalar(value)}\n") == {"k": value}
    assert yaml.safe_load(f"k: [{scalar(value)}, x]\n") == {"k": [value, "x"]}


def test_writer_round_trips_with_comments() -> None:
    data = {"a": {"b": [1, "x y"], "c": {}}, "levels": [{"name": "l1", "services": {"s": {}}}]}
    comments = Comments()
    comments.above(("levels", 0), "level comment")
    comments.trailing(("a", "b"), "from here")
    text = dump(data, comments, ["header"])
    assert yaml.safe_load(text) == data
    assert text.splitlines()[0] == "# header"
    assert "  b: [1, x y]  # from here" in text
    assert "  # level comment\n  - name: l1" in text
