"""The job type catalog: loading TOML files, checking declarations, validating params."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine_hub.jobs.catalog import (
    DEFAULT_PLAN_TIMEOUT,
    MAX_PLAN_TIMEOUT,
    MAX_STR_PARAM,
    Catalog,
    CatalogError,
    JobType,
    ParamSpec,
    hash_token,
    parse_param_text,
)
from engine_hub.jobs.catalog_file import load_catalog
from engine_hub.jobs.demo_types import builtin_catalog

REPO = Path(__file__).resolve().parents[3]

GOOD = f"""
include_demo = false

[[types]]
name = "search.reindex"
description = "Rebuild an index"
command = ["/bin/echo", "reindex"]
timeout = 90
exclusive = true
cwd = "work"
env = {{ SEARCH_URL = "http://127.0.0.1:9200" }}

[[types.params]]
name = "index"
type = "str"
required = true
choices = ["products", "orders"]

[[types.params]]
name = "batch"
type = "int"
default = 100
min = 1
max = 5000

[[types.params]]
name = "full"
type = "bool"
default = false

[[types.params]]
name = "note"
type = "str"

[[clients]]
name = "legacy-crm"
scope = "submit"
token_sha256 = "{hash_token("s3cret-token")}"
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write a catalog file and return its path."""
    path = tmp_path / "catalog.toml"
    path.write_text(textwrap.dedent(text))
    return path


def one_type(body: str, params: str = "") -> str:
    """Return a catalog text with one type whose keys are ``body`` plus ``params`` blocks."""
    return f'[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\ntimeout = 5\n{body}\n{params}'


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` as a catalog file and return the CatalogError message."""
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"catalog {path}: ")
    return message


@pytest.fixture
def reindex(tmp_path: Path) -> JobType:
    """The search.reindex type of the good catalog."""
    job_type = load_catalog(write(tmp_path, GOOD)).get("search.reindex")
    assert job_type is not None
    return job_type


class TestLoadGoodFile:
    def test_types_and_fields(self, tmp_path: Path) -> None:
        """A valid file yields its types with every declared field."""
        catalog = load_catalog(write(tmp_path, GOOD))
        assert set(catalog.types) == {"search.reindex"}
        job_type = catalog.get("search.reindex")
        assert job_type is not None
        assert job_type.command == ("/bin/echo", "reindex")
        assert job_type.timeout == 90.0
        assert job_type.exclusive is True
        assert job_type.cwd == tmp_path.resolve() / "work"
        assert dict(job_type.env) == {"SEARCH_URL": "http://127.0.0.1:9200"}
        assert [p.name for p in job_type.params] == ["index", "batch", "full", "note"]
        assert catalog.get("demo.sleep") is None
        assert catalog.get("nope") is None

    def test_clients_hashed(self, tmp_path: Path) -> None:
        """Client tokens are kept as hashes and found by the presented token only."""
        catalog = load_catalog(write(tmp_path, GOOD))
        (client,) = catalog.clients
        assert client.name == "legacy-crm" and client.scope == "submit"
        assert client.token_sha256 == hash_token("s3cret-token") != "s3cret-token"
        assert catalog.find_client("s3cret-token") == client
        assert catalog.find_client("s3cret-tokeN") is None
        assert catalog.find_client("") is None

    def test_include_demo(self, tmp_path: Path) -> None:
        """include_demo = true adds the built-in demo types to the file's types."""
        catalog = load_catalog(write(tmp_path, "include_demo = true\n" + one_type("")))
        assert set(catalog.types) == {"t.one", "demo.sleep", "demo.echo", "demo.fail", "demo.guarded"}

    def test_example_file_loads(self) -> None:
        """deploy/catalog.example.toml is a valid catalog."""
        catalog = load_catalog(REPO / "deploy" / "catalog.example.toml")
        assert {"search.reindex", "cache.warmup"} <= set(catalog.types)
        assert catalog.find_client("example-token-do-not-use") is not None

    def test_none_is_builtin(self) -> None:
        """No file means the built-in demo catalog without client tokens."""
        catalog = load_catalog(None)
        assert set(catalog.types) == {"demo.sleep", "demo.echo", "demo.fail", "demo.guarded"}
        assert catalog.clients == ()

    def test_to_json(self, tmp_path: Path) -> None:
        """to_json serves declarations but never the command, cwd or env."""
        catalog = load_catalog(write(tmp_path, GOOD))
        (served,) = catalog.to_json()
        assert served["name"] == "search.reindex" and served["exclusive"] is True and served["timeout"] == 90.0
        assert "command" not in served and "env" not in served and "cwd" not in served
        index, batch, full, _note = served["params"]
        assert index == {
            "name": "index",
            "type": "str",
            "required": True,
            "default": None,
            "choices": ["products", "orders"],
            "description": "",
            "maxLength": MAX_STR_PARAM,
        }
        assert batch["min"] == 1 and batch["max"] == 5000 and batch["default"] == 100
        assert full["type"] == "bool" and full["default"] is False


class TestLoadBadFile:
    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("[[types]\n", "invalid TOML"),
            ("colour = 1\n" + one_type(""), "colour: unknown key"),
            (one_type("shell = true"), "types[0] (t.one).shell: unknown key"),
            ('[[types]]\ncommand = ["/bin/true"]\ntimeout = 5\n', "types[0].name: missing required key"),
            ('[[types]]\nname = "t.one"\ntimeout = 5\n', "types[0] (t.one).command: missing required key"),
            ('[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\n', "timeout: missing required key"),
            (
                '[[types]]\nname = "t.one"\ncommand = "/bin/true x"\ntimeout = 5\n',
                "command: must be an array of strings",
            ),
            ('[[types]]\nname = "t.one"\ncommand = []\ntimeout = 5\n', "command must be a non-empty argv list"),
            (
                '[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\ntimeout = 0\n',
                "timeout must be a number of seconds above 0",
            ),
            (
                '[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\ntimeout = "5"\n',
                "timeout: must be a number of seconds; got a string",
            ),
            (
                '[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\ntimeout = true\n',
                "timeout: must be a number of seconds; got a bool",
            ),
            ('[[types]]\nname = "Bad Name"\ncommand = ["/bin/true"]\ntimeout = 5\n', "must match [a-z][a-z0-9_.-]"),
            (one_type('exclusive = "yes"'), "exclusive: must be true or false"),
            (one_type('env = { job_x = "1" }'), "env name 'job_x' must match"),
            (one_type('env = { JOB_ID = "1" }'), "reserved"),
            (one_type("") + '\n[[types]]\nname = "t.one"\ncommand = ["/bin/true"]\ntimeout = 5\n', "declared twice"),
            (
                "include_demo = true\n" + '[[types]]\nname = "demo.echo"\ncommand = ["/bin/true"]\ntimeout = 5\n',
                "built-in demo type",
            ),
            ("include_demo = false\n", "no job types"),
            ("", "no job types"),
            ("types = 3\n", "types: must be an array"),
        ],
    )
    def test_type_errors(self, tmp_path: Path, text: str, fragment: str) -> None:
        """Each kind of broken type declaration is refused with a message naming the key."""
        assert fragment in load_error(tmp_path, text)

    @pytest.mark.parametrize(
        ("param", "fragment"),
        [
            ('name = "x"\ntype = "float"', "type: must be one of str, int, bool"),
            ('type = "int"', "params[0].name: missing required key"),
            ('name = "X"\ntype = "int"', "must match [a-z][a-z0-9_]"),
            ('name = "x"\ntype = "int"\nrequired = true\ndefault = 1', "a required param cannot have a default"),
            ('name = "x"\ntype = "int"\ndefault = "1"', "default '1' is not an int"),
            ('name = "x"\ntype = "int"\ndefault = true', "default True is not an int"),
            ('name = "x"\ntype = "int"\ndefault = 1.5', "default 1.5 is not an int"),
            ('name = "x"\ntype = "int"\ndefault = 9\nmax = 5', "default 9 is not an int of at most 5"),
            ('name = "x"\ntype = "int"\nmin = 5\nmax = 1', "min (5) is greater than max (1)"),
            ('name = "x"\ntype = "int"\nmin = 1.5', "min: must be an integer"),
            ('name = "x"\ntype = "str"\nmax = 3', "min and max apply to int params only"),
            ('name = "x"\ntype = "bool"\nchoices = [true]', "a bool param cannot have choices"),
            ('name = "x"\ntype = "str"\nchoices = []', "choices must not be empty"),
            ('name = "x"\ntype = "str"\nchoices = ["a", "a"]', "choices must not repeat"),
            ('name = "x"\ntype = "str"\nchoices = ["a", 1]', "choice 1 is not a string"),
            ('name = "x"\ntype = "str"\nchoices = [["a"]]', "choice ['a'] is not a string"),
            ('name = "x"\ntype = "int"\nchoices = [1, 2]\ndefault = 3', "default 3 is not one of 1, 2"),
            ('name = "x"\ntype = "str"\ndefault = "%s"' % ("y" * (MAX_STR_PARAM + 1)), "is not a string of at most"),
            ('name = "x"\ntype = "str"\nhelp = "?"', "help: unknown key"),
        ],
    )
    def test_param_errors(self, tmp_path: Path, param: str, fragment: str) -> None:
        """Each contradictory or malformed param declaration is refused at load."""
        message = load_error(tmp_path, one_type("", "[[types.params]]\n" + param))
        assert "types[0] (t.one).params[0]" in message
        assert fragment in message

    def test_duplicate_param(self, tmp_path: Path) -> None:
        """A param declared twice in one type is refused."""
        block = '[[types.params]]\nname = "x"\ntype = "int"\n'
        assert "param 'x' is declared twice" in load_error(tmp_path, one_type("", block + block))

    @pytest.mark.parametrize(
        ("client", "fragment"),
        [
            ('name = "crm"\nscope = "admin"\ntoken_sha256 = "%s"' % ("a" * 64), 'scope: must be "submit"'),
            ('name = "crm"\nscope = "submit"\ntoken_sha256 = "plaintext"', "must be 64 hex digits"),
            ('name = "crm"\ntoken_sha256 = "%s"' % ("a" * 64), "clients[0].scope: missing required key"),
            ('name = "admin"\nscope = "submit"\ntoken_sha256 = "%s"' % ("a" * 64), "admin token's name"),
            ('name = "c r m"\nscope = "submit"\ntoken_sha256 = "%s"' % ("a" * 64), "must match"),
            (
                'name = "crm"\nscope = "submit"\ntoken = "x"\ntoken_sha256 = "%s"' % ("a" * 64),
                "clients[0].token: unknown key",
            ),
        ],
    )
    def test_client_errors(self, tmp_path: Path, client: str, fragment: str) -> None:
        """Client tokens with another scope, an unhashed token or a bad name are refused."""
        assert fragment in load_error(tmp_path, one_type("") + "\n[[clients]]\n" + client)

    def test_duplicate_clients(self, tmp_path: Path) -> None:
        """Two clients with one name, or sharing one token hash, are refused."""
        block = '[[clients]]\nname = "%s"\nscope = "submit"\ntoken_sha256 = "%s"\n'
        same_name = block % ("crm", "a" * 64) + block % ("crm", "b" * 64)
        same_hash = block % ("crm", "a" * 64) + block % ("erp", "a" * 64)
        assert "client 'crm' is declared twice" in load_error(tmp_path, one_type("") + same_name)
        assert "already given to another client" in load_error(tmp_path, one_type("") + same_hash)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A file that does not exist is a CatalogError naming it, not an OSError."""
        path = tmp_path / "absent.toml"
        with pytest.raises(CatalogError, match=r"absent\.toml: cannot read"):
            load_catalog(path)

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is a CatalogError, not a crash."""
        path = tmp_path / "bin.toml"
        path.write_bytes(b'x = "\xff\xfe"\n')
        with pytest.raises(CatalogError, match="invalid TOML"):
            load_catalog(path)


class TestPlanDeclaration:
    def test_plan_and_its_timeout_load(self, tmp_path: Path) -> None:
        """plan is kept as an argv tuple with plan_timeout; a type without plan has none and the default timeout."""
        text = one_type('plan = ["/bin/echo", "would do it"]\nplan_timeout = 12.5') + one_type("").replace(
            "t.one", "t.two"
        )
        catalog = load_catalog(write(tmp_path, text))
        one, two = catalog.get("t.one"), catalog.get("t.two")
        assert one is not None and two is not None
        assert (one.plan, one.plan_timeout) == (("/bin/echo", "would do it"), 12.5)
        assert (two.plan, two.plan_timeout) == ((), DEFAULT_PLAN_TIMEOUT)

    def test_to_json_says_whether_there_is_a_plan_never_its_argv(self, tmp_path: Path) -> None:
        """GET /api/types serves plan: true/false, not the plan's argv."""
        text = one_type('plan = ["/opt/secret-path/plan"]') + one_type("").replace("t.one", "t.two")
        served = {t["name"]: t for t in load_catalog(write(tmp_path, text)).to_json()}
        assert served["t.one"]["plan"] is True and served["t.two"]["plan"] is False
        assert "secret-path" not in repr(served)

    def test_plan_timeout_bounds(self, tmp_path: Path) -> None:
        """plan_timeout may be up to MAX_PLAN_TIMEOUT, not above and not 0."""
        top = load_catalog(write(tmp_path, one_type(f'plan = ["/bin/true"]\nplan_timeout = {MAX_PLAN_TIMEOUT:g}')))
        assert top.types["t.one"].plan_timeout == MAX_PLAN_TIMEOUT

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ('plan = "/bin/true --dry-run"', "plan: must be an array of strings"),
            ('plan = ["/bin/true", 1]', "plan: must be an array of strings"),
            ("plan = []", "plan: must be a non-empty argv list"),
            ('plan = [""]', "plan must be a non-empty argv list"),
            ('plan = ["/bin/true", "a\\u0000b"]', "plan must not contain NUL characters"),
            ('plan = ["/bin/true"]\nplan_timeout = 0', "plan_timeout must be a number of seconds above 0"),
            ('plan = ["/bin/true"]\nplan_timeout = 121', "at most 120"),
            ('plan = ["/bin/true"]\nplan_timeout = "30"', "plan_timeout: must be a number of seconds; got a string"),
            ('plan = ["/bin/true"]\nplan_timeout = true', "plan_timeout: must be a number of seconds; got a bool"),
            ('plan = ["/bin/true"]\nplan_timeout = nan', "plan_timeout must be a number of seconds above 0"),
            ("plan_timeout = 10", "plan_timeout: the type declares no plan"),
        ],
    )
    def test_bad_plans_are_refused(self, tmp_path: Path, body: str, fragment: str) -> None:
        """A malformed plan or plan_timeout stops the load with a message naming the type and key."""
        message = load_error(tmp_path, one_type(body))
        assert "types[0] (t.one)" in message
        assert fragment in message

    def test_demo_plans(self) -> None:
        """demo.sleep and demo.echo have plans; demo.fail has none."""
        catalog = builtin_catalog()
        assert [n for n in ("demo.sleep", "demo.echo", "demo.fail") if catalog.types[n].plan] == [
            "demo.sleep",
            "demo.echo",
        ]


class TestValidateParams:
    def test_defaults_filled(self, reindex: JobType) -> None:
        """Missing optional params take their defaults; optional ones without default stay absent."""
        assert reindex.validate_params({"index": "orders"}) == {"index": "orders", "batch": 100, "full": False}

    def test_given_values_kept(self, reindex: JobType) -> None:
        """Valid values of every type are returned as given."""
        raw = {"index": "products", "batch": 5000, "full": True, "note": "ünïcode ✓"}
        assert reindex.validate_params(raw) == raw

    def test_none_means_empty(self) -> None:
        """None is treated as an empty object (all defaults)."""
        sleep = builtin_catalog().get("demo.sleep")
        assert sleep is not None
        assert sleep.validate_params(None) == {"seconds": 3}

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ({}, "param 'index' is required for type 'search.reindex': one of 'products', 'orders'"),
            ({"index": "users"}, "param 'index' must be one of 'products', 'orders'; got 'users'"),
            ({"index": "orders", "batch": True}, "param 'batch' must be an int between 1 and 5000; got a bool"),
            ({"index": "orders", "batch": "10"}, "param 'batch' must be an int between 1 and 5000; got a string"),
            ({"index": "orders", "batch": 10.0}, "param 'batch' must be an int between 1 and 5000; got a number"),
            ({"index": "orders", "batch": 0}, "param 'batch' must be an int between 1 and 5000; got 0"),
            ({"index": "orders", "batch": 5001}, "got 5001"),
            ({"index": "orders", "batch": None}, "got null"),
            ({"index": "orders", "full": 1}, "param 'full' must be a bool (true or false); got an int"),
            ({"index": "orders", "full": "true"}, "param 'full' must be a bool (true or false); got a string"),
            ({"index": "orders", "note": 5}, "param 'note' must be a string of at most 4096 characters; got an int"),
            ({"index": "orders", "note": ["a"]}, "got an array"),
            (
                {"index": "orders", "note": "x" * (MAX_STR_PARAM + 1)},
                "got a string that is not at most 4096 characters",
            ),
            ({"index": "orders", "note": "a\x00b"}, "got a string that is not without NUL characters"),
            ({"index": "orders", "note": "\ud800"}, "got a string that is not valid Unicode text"),
            (
                {"index": "orders", "extra": 1},
                "unknown param 'extra' for type 'search.reindex'; allowed params: index, batch, full, note",
            ),
        ],
    )
    def test_rejected(self, reindex: JobType, raw: dict[str, Any], message: str) -> None:
        """Wrong types, out-of-range values, unknown and missing params say what is allowed."""
        with pytest.raises(CatalogError) as info:
            reindex.validate_params(raw)
        assert message in str(info.value)

    @pytest.mark.parametrize("raw", [[], "index=orders", 3, True])
    def test_not_an_object(self, reindex: JobType, raw: object) -> None:
        """Params that are not a JSON object are refused."""
        with pytest.raises(CatalogError, match="params must be a JSON object"):
            reindex.validate_params(raw)

    def test_no_params_type(self) -> None:
        """A type without params refuses any param and accepts an empty object."""
        job_type = JobType(name="t.bare", command=("/bin/true",), timeout=1)
        assert job_type.validate_params({}) == {}
        with pytest.raises(CatalogError, match="allowed params: none"):
            job_type.validate_params({"x": 1})

    def test_open_range_messages(self) -> None:
        """One-sided int ranges are described as such."""
        low = ParamSpec(name="n", type="int", min=0)
        high = ParamSpec(name="n", type="int", max=9)
        with pytest.raises(CatalogError, match="an int of at least 0; got -1"):
            low.check(-1)
        with pytest.raises(CatalogError, match="an int of at most 9; got 10"):
            high.check(10)
        assert ParamSpec(name="n", type="int").check(-(10**12)) == -(10**12)


class TestParseText:
    @pytest.mark.parametrize(
        ("kind", "text", "value"),
        [
            ("int", "42", 42),
            ("int", "-3", -3),
            ("int", " 7 ", 7),
            ("bool", "true", True),
            ("bool", "FALSE", False),
            ("bool", "1", True),
            ("bool", "no", False),
            ("str", "a=b c", "a=b c"),
            ("str", "", ""),
        ],
    )
    def test_converts(self, kind: str, text: str, value: object) -> None:
        """CLI text is converted to the declared type."""
        assert parse_param_text(kind, text) == value

    @pytest.mark.parametrize(("kind", "text"), [("int", "4.5"), ("int", "1e3"), ("int", ""), ("bool", "maybe")])
    def test_refuses(self, kind: str, text: str) -> None:
        """Text that does not spell a value of the type is refused."""
        with pytest.raises(CatalogError, match="must be"):
            parse_param_text(kind, text)

    def test_spec_checks_range(self) -> None:
        """ParamSpec.parse_text converts, then applies range and choices."""
        spec = ParamSpec(name="seconds", type="int", min=0, max=10)
        assert spec.parse_text("10") == 10
        with pytest.raises(CatalogError, match="between 0 and 10; got 11"):
            spec.parse_text("11")


class TestBuiltin:
    def test_demo_declarations(self) -> None:
        """The demo types declare the params and bounds the issue asks for."""
        catalog = builtin_catalog()
        sleep, echo, fail = (catalog.get(n) for n in ("demo.sleep", "demo.echo", "demo.fail"))
        assert sleep is not None and echo is not None and fail is not None
        (seconds,) = sleep.params
        assert (seconds.type, seconds.default, seconds.min, seconds.max) == ("int", 3, 0, 3600)
        assert sleep.timeout > 3600
        assert echo.validate_params({}) == {"message": "hello"}
        with pytest.raises(CatalogError, match="between 0 and 3600; got 3601"):
            sleep.validate_params({"seconds": 3601})

    def test_catalog_is_immutable(self) -> None:
        """The types mapping of a catalog cannot be changed after loading."""
        catalog = builtin_catalog()
        assert isinstance(catalog, Catalog)
        with pytest.raises(TypeError):
            catalog.types["x"] = catalog.types["demo.echo"]  # type: ignore[index]


class TestApprovalPolicy:
    @pytest.mark.parametrize(
        ("body", "approval", "approvers"),
        [
            ("", "none", 1),
            ('approval = "none"', "none", 1),
            ('approval = "required"', "required", 1),
            ('approval = "required"\napprovers = 5', "required", 5),
        ],
    )
    def test_good_policies(self, tmp_path: Path, body: str, approval: str, approvers: int) -> None:
        """approval defaults to none; with "required", approvers defaults to 1 and may go up to 5."""
        job_type = load_catalog(write(tmp_path, one_type(body))).get("t.one")
        assert job_type is not None
        assert (job_type.approval, job_type.approvers, job_type.needs_approval) == (
            approval,
            approvers,
            approval == "required",
        )
        assert job_type.to_json()["approval"] == approval
        assert job_type.to_json()["approvers"] == (approvers if approval == "required" else 0)

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ('approval = "maybe"', 'types[0] (t.one).approval: must be "none" or "required"; got \'maybe\''),
            ("approval = true", "types[0] (t.one).approval: must be a string; got a bool"),
            ("approvers = 2", 'types[0] (t.one).approvers: only with approval = "required"'),
            ('approval = "none"\napprovers = 1', 'approvers: only with approval = "required"'),
            ('approval = "required"\napprovers = 0', "approvers: must be from 1 to 5"),
            ('approval = "required"\napprovers = 6', "approvers: must be from 1 to 5"),
            ('approval = "required"\napprovers = 1.5', "approvers: must be an integer; got a number"),
            ('approval = "required"\napprovers = true', "approvers: must be an integer; got a bool"),
        ],
    )
    def test_bad_policies_stop_start_up(self, tmp_path: Path, body: str, fragment: str) -> None:
        """A bad approval or approvers value is a CatalogError naming the type and key."""
        assert fragment in load_error(tmp_path, one_type(body))

    def test_the_model_checks_its_own_policy(self) -> None:
        """JobType itself refuses an unknown policy and approvers out of bounds."""
        for kwargs in ({"approval": "sometimes"}, {"approval": "required", "approvers": 9}):
            with pytest.raises(CatalogError, match=r"t\.one"):
                JobType(name="t.one", command=("/bin/true",), timeout=5.0, **kwargs)

    def test_the_demo_catalog_has_a_guarded_type(self) -> None:
        """demo.guarded needs one approval; the other demo types none."""
        catalog = builtin_catalog()
        assert [t.name for t in catalog.types.values() if t.needs_approval] == ["demo.guarded"]
