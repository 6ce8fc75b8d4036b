"""Config models: both formats, the lookup order, and clear errors for anything bad."""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
import tomli_w
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_core import config
from grid_core.errors import ConfigError
from tests.conftest import SEED_FILE, grid

REPO = Path(__file__).resolve().parent.parent
EVERY_KEY = REPO / "tests" / "data" / "seed-every-key.yaml"


def test_embedded_default_is_one_local_head() -> None:
    cfg = config.embedded_default()
    assert [(n.name, n.transport_name, n.is_head) for n in cfg.nodes] == [("local", "local", True)]
    assert cfg.source == config.EMBEDDED_DEFAULT


def test_example_configs_load() -> None:
    for path in sorted((REPO / "config").iterdir()):
        assert config.load_file(path).nodes, path


def test_the_seed_projects_own_file_means_what_it_says() -> None:
    cfg = config.load_file(SEED_FILE)
    assert cfg.head.name == "gpu-master"  # role master is the head
    assert (cfg.offload.high.cpu, cfg.offload.high.memory, cfg.offload.low.memory) == (80.0, 70.0, 30.0)
    assert cfg.offload.interval_seconds == 10  # monitoring_interval_seconds
    assert cfg.boost.default_duration_seconds == 600  # allocation_timeout_minutes: 10
    assert [n.priority for n in cfg.nodes] == [1.0, 0.8, 0.9]
    assert (cfg.execution.timeout_seconds, cfg.execution.retry_attempts) == (3600, 3)
    assert cfg.node("gpu1").transport_name == "ssh"
    assert any("excess_threshold has no effect" in note for note in cfg.notes)


def _every_key_file(tmp_path: Path) -> Path:
    """The every-key fixture, logging into tmp_path (validate opens the log file)."""
    path = tmp_path / "seed.yaml"
    path.write_text(EVERY_KEY.read_text().replace("/tmp/grid-seed.log", str(tmp_path / "grid.log")))
    return path


def test_every_seed_key_validates_with_notes_through_the_cli(tmp_path: Path) -> None:
    path = _every_key_file(tmp_path)
    result = grid("config", "validate", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid (3 nodes, head gpu-master)" in result.stdout
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [line for line in result.stderr.splitlines() if line.strip()], result.stderr  # nothing else
    noted = {note.split()[1] for note in notes}
    assert noted == {
        "execution.default_nodes", "execution.default_gpus_per_node", "execution.resource_sharing.mode",
        "execution.resource_sharing.policy", "execution.resource_sharing.rebalance_interval_seconds",
        "resource_sharing.check_interval", "execution.resource_sharing.thresholds.excess_threshold",
        "execution.resource_sharing.auto_offload.head_only_mode"}
    assert all("has no effect in grid: " in note for note in notes)


def test_every_seed_key_is_mapped_in_config_show(tmp_path: Path) -> None:
    path = _every_key_file(tmp_path)
    result = grid("config", "show", "--json", "-c", str(path))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    # Under execution wins key by key over the top level; auto_offload over thresholds.
    assert shown["offload"] == {
        "enabled": True, "policy": "threshold", "window": 3,
        "high": {"cpu": 95.0, "memory": 75.0, "gpu": 95.0},  # auto_offload.*_threshold
        "low": {"cpu": 40.0, "memory": 30.0, "gpu": 50.0},  # thresholds.*_pressure_low
        "interval_seconds": 4.0,  # auto_offload.check_interval_seconds over monitoring_interval_seconds
        "cooldown_seconds": 45.0, "never_evict": []}  # grid's own default
    assert shown["boost"] == {
        "enabled": True, "default_duration_seconds": 600.0, "max_per_source": 3,
        "lend": {"cpu_percent_max": 30.0, "memory_percent_max": 50.0, "gpu_percent_max": 20.0, "cpu_min_free": 1.0,
                 "memory_min_free_gb": 2.0, "gpu_memory_min_free_mb": 1024.0}}
    assert [(n["name"], n["priority"]) for n in shown["nodes"]] == [("gpu-master", 1.0), ("gpu1", 0.8), ("gpu2", 0.75)]
    master, gpu1, _ = shown["nodes"]
    assert master["role"] == "master" and master["ssh_key_path"] == "~/.ssh/id_ed25519"
    assert master["ray_start_params"] == {"resources": '{"head_slot": 1}', "object-store-memory": 200000000}
    assert master["resource_sharing"]["can_share"] is False
    assert gpu1["port"] == 2222 and gpu1["resource_sharing"]["max_share_cpu"] == 5
    assert gpu1["resource_sharing"]["initialization_commands"] == ["echo ready > init-ran.txt"]
    execution = shown["execution"]
    assert execution["environment"] == {"OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}
    assert (execution["working_directory"], execution["timeout_seconds"], execution["retry_attempts"]) == (
        "/tmp/grid-seed-work", 1800.0, 2)
    assert "resource_sharing" not in shown and "resource_sharing" not in execution  # mapped, not kept
    assert shown["logging"] == {"level": "INFO", "format": "json", "file_path": str(tmp_path / "grid.log")}
    # What show prints is grid's own config, and it means the same when read back.
    again = tmp_path / "again.toml"
    again.write_text(tomli_w.dumps({k: v for k, v in shown.items() if k != "source"}))
    assert config.unstructure(config.load_file(again)) == config.unstructure(config.load_file(path))


def test_a_word_priority_and_the_older_top_level_block_alone() -> None:
    cfg = config.structure({"nodes": [{"name": "h", "role": "master"}, {"name": "w", "resource_sharing": {
        "priority": "critical"}}], "resource_sharing": {"offer_expiry": 300, "priorities": {"master_node": "low"}}},
        "t.yaml")
    assert [n.priority for n in cfg.nodes] == [0.25, 1.0]
    assert cfg.boost.default_duration_seconds == 300
    assert config.embedded_default().nodes[0].priority == config.PRIORITY_WORDS["normal"]


def test_head_is_first_node_without_a_role() -> None:
    cfg = config.structure({"nodes": [{"name": "a", "host": "h1"}, {"name": "b", "host": "h2"}]}, "t.toml")
    assert cfg.head.name == "a"


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as err:
        config.structure(data, "cluster.toml")
    return str(err.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"nodes": [{"name": "a"}, {"name": "b", "gpu_count": "two"}]}, "nodes[1].gpu_count: expected int, got 'two'"),
        ({"nodes": [{"name": "a", "colour": "red"}]}, "nodes[0]: unknown key 'colour'"),
        ({"nodes": [{"name": "a"}], "sshh": {}}, "unknown key 'sshh'"),
        ({"nodes": [{"host": "x"}]}, "nodes[0].name: required key is missing"),
        ({"nodes": [{"name": "a", "role": "boss"}]}, "nodes[0].role: expected one of 'head', 'worker', 'master'"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "nodes[1].name: duplicate node name 'a'"),
        ({"nodes": [{"name": "a;rm -rf"}]}, "nodes[0].name: 'a;rm -rf' may hold only"),
        ({"nodes": [{"name": "a", "role": "head"}, {"name": "b", "role": "master"}]}, "more than one head (a, b)"),
        ({"nodes": []}, "nodes: at least one node is required"),
        ({"nodes": [{"name": "a", "port": 70000}]}, "nodes[0].port: expected 1-65535"),
        ({"nodes": [{"name": "a", "cpu_count": True}]}, "nodes[0].cpu_count: expected int, got True"),
        ({"nodes": [{"name": "a"}], "offload": {"high": {"cpu": 180}}}, "offload.high.cpu: expected a percentage"),
        ({"nodes": [{"name": "a"}], "offload": {"low": {"cpu": 90}}},
         "offload.low.cpu: 90% must not exceed offload.high.cpu"),
        ({"nodes": [{"name": "a"}], "logging": {"format": "xml"}}, "logging.format: expected one of 'text', 'json'"),
        (
            {"nodes": [{"name": "a"}], "execution": {"resource_sharing": {"thresholds": {"disk_pressure_high": 1}}}},
            "unknown key 'disk_pressure_high'",
        ),
        ([1, 2], "expected a table of settings"),
        ({"nodes": [{"name": "a", "tags": "gpu"}]}, "nodes[0].tags: expected a list, got 'gpu'"),
        ({"nodes": None}, "nodes: expected a list, got None"),
        ({"nodes": [{"name": "a"}], "source": "x"}, "unknown key 'source'"),
        # The seed's keys: a misspelled key or value is still an error.
        ({"nodes": [{"name": "a"}], "resource_sharing": {"monitoring_interval_secs": 5}},
         "resource_sharing: unknown key 'monitoring_interval_secs'"),
        ({"nodes": [{"name": "a"}], "execution": {"resource_sharing": {"mode": "dynamic"}}},
         "execution.resource_sharing.mode: expected one of 'offload_only'"),
        ({"nodes": [{"name": "a", "resource_sharing": {"priority": "urgent"}}]},
         "nodes[0].resource_sharing.priority: expected a number or one of low, normal, high, critical, got 'urgent'"),
        ({"nodes": [{"name": "a"}], "execution": {"resource_sharing": {"priorities": {"worker_nodes": {"gpu9": 1}}}}},
         "execution.resource_sharing.priorities.worker_nodes['gpu9']: no node named 'gpu9'"),
        ({"nodes": [{"name": "a"}], "execution": {"resource_sharing": {"thresholds": {"cpu_pressure_low": 0.9}}}},
         "execution.resource_sharing.thresholds.cpu_pressure_low: 90% must not exceed offload.high.cpu (80%)"),
        ({"nodes": [{"name": "a"}], "boost": {"max_per_source": 0}}, "boost.max_per_source: must be at least 1, got 0"),
        # What used to pass validation and fail later (issue 12).
        ({"nodes": [{"name": "a", "memory_gb": math.nan}]}, "nodes[0].memory_gb: expected a finite number, got nan"),
        ({"nodes": [{"name": "a", "cpu_count": 2**64}]}, "nodes[0].cpu_count: too large, got 18446744073709551616"),
        ({"nodes": [{"name": "a", "memory_gb": 10**400}]}, "nodes[0].memory_gb: expected a finite number, got 1000"),
        ({"nodes": [{"name": "a"}], "offload": {"interval_seconds": math.inf}},
         "offload.interval_seconds: expected a finite number, got inf"),
        ({"nodes": [{"name": "a"}], "offload": {"high": {"cpu": -math.inf}}}, "offload.high.cpu: expected a finite"),
        ({"nodes": [{"name": "a"}], "execution": {"timeout_seconds": 0}},
         "execution.timeout_seconds: must be positive"),
        ({"nodes": [{"name": "a"}], "execution": {"environment": {"A=B": "1"}}},
         "execution.environment['A=B']: environment variable name 'A=B' must be non-empty, without '='"),
        ({"nodes": [{"name": "a"}], "execution": {"runtime_env": {"env_vars": {"": "1"}}}},
         "execution.runtime_env.env_vars['']: environment variable name ''"),
        ({"nodes": [{"name": "a"}], "backend": {"env": {"X=": "1"}}}, "backend.env['X=']: environment variable"),
        ({"nodes": [{"name": "a"}], "logging": {"file_path": "/no/such/dir/grid.log"}},
         "logging.file_path: directory '/no/such/dir' does not exist"),
        ({"nodes": [{"name": "a", "ray_start_params": {"num-cpus": None}}]},
         "nodes[0].ray_start_params['num-cpus']: expected a string, number or true/false, got None"),
        ({"nodes": [{"name": "a", "ray_start_params": {"x": datetime.date(2024, 1, 1)}}]},
         "nodes[0].ray_start_params['x']: expected a string, number or true/false, got datetime.date(2024, 1, 1)"),
        ({"nodes": [{"name": "a", "ray_start_params": {"resources": '{"a": "x"}'}}]},
         "nodes[0].ray_start_params['resources']['a']: expected a resource name with a non-negative number, got 'x'"),
        ({"nodes": [{"name": "a", "ray_start_params": {"resources": {"a": -1}}}]},
         "nodes[0].ray_start_params['resources']['a']: expected a resource name with a non-negative number"),
        ({"nodes": [{"name": "a", "ray_start_params": {"resources": "[1"}}]},
         "nodes[0].ray_start_params['resources']: not a JSON object"),
        ({"nodes": [{"name": "a", "ray_start_params": {"resources": "[1]"}}]},
         "nodes[0].ray_start_params['resources']: expected a table or JSON object of name -> number, got [1]"),
        ({"nodes": [{"name": "a", "ray_start_params": {"a b": 1}}]}, "'a b' is not a `ray start` flag name"),
        ({"nodes": [{"name": "a", "port": 99999}]}, "nodes[0].port: expected 1-65535, got 99999"),
        ({"nodes": [{"name": "a"}], "backend": {"port": 0}}, "backend.port: expected 1-65535, got 0"),
        ({"nodes": [{"name": "a"}], "backend": {"dashboard_port": -1}}, "backend.dashboard_port: expected 1-65535"),
        ({"nodes": [{"name": "a"}], "ssh": {"connect_timeout": -1}}, "ssh.connect_timeout: must be positive, got -1.0"),
        ({"nodes": [{"name": "a", "connect_timeout": 0}]}, "nodes[0].connect_timeout: must be positive"),
        ({"nodes": [{"name": "a", "command_timeout": math.nan}]}, "nodes[0].command_timeout: expected a finite"),
        ({"nodes": [{"name": "a"}], "plugins": {"memory-pool": {"capacity_gb": "lots"}}},
         "plugins['memory-pool'].capacity_gb: expected number, got 'lots'"),
        ({"nodes": [{"name": "a"}], "plugins": {"memory-pool": {"capacity_gb": {"b": 1}}}},
         "plugins['memory-pool'].capacity_gb['b']: no node named 'b'"),
        ({"nodes": [{"name": "a"}], "plugins": {"memory-pool": {"capacity": 1}}},
         "plugins['memory-pool']: unknown key 'capacity'"),
        ({"nodes": [{"name": "a"}], "name": "../../x"},
         "name: '../../x' may hold only letters, digits, '-', '_' and '.'"),
        ({"nodes": [{"name": "a"}], "name": ".hidden"}, "must not start with '.'"),
        ({"nodes": [{"name": "a", "ray_start_params": {"dashboard_host": "0.0.0.0"}}]},
         "nodes[0].ray_start_params['dashboard_host']: may bind Ray beyond this node's address; "
         "set backend.allow_public_bind = true"),
        ({"nodes": [{"name": "a", "ray_start_params": {"--ray-client-server-port": 10001}}]},
         "nodes[0].ray_start_params['--ray-client-server-port']: may bind Ray"),
    ],
)
def test_errors_name_the_file_and_the_path(data: object, expected: str) -> None:
    message = _error(data)
    assert message.startswith("cluster.toml: ")
    assert expected in message


def test_every_problem_is_reported_at_once() -> None:
    message = _error({"nodes": [{"name": "a", "gpu_count": "x", "cpu_count": "y"}], "extra": 1})
    assert "gpu_count" in message and "cpu_count" in message and "'extra'" in message


def test_files_bad_toml_yaml_and_missing(tmp_path: Path) -> None:
    bad_toml, bad_yaml = tmp_path / "a.toml", tmp_path / "b.yaml"
    bad_toml.write_text("nodes = [\n")
    bad_yaml.write_text("nodes: [\n")
    with pytest.raises(ConfigError, match=r"a\.toml: not valid TOML"):
        config.load_file(bad_toml)
    with pytest.raises(ConfigError, match=r"b\.yaml: not valid YAML"):
        config.load_file(bad_yaml)
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        config.load_file(tmp_path / "nope.toml")
    binary = tmp_path / "c.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_file(binary)


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(name: str, cluster: str) -> Path:
        path = tmp_path / name
        path.write_text(f'name = "{cluster}"\n[[nodes]]\nname = "n"\n')
        return path

    monkeypatch.chdir(tmp_path)
    assert config.load(None).name == "local"
    write("grid.toml", "cwd")
    assert config.load(None).name == "cwd"
    monkeypatch.setenv("GRID_CONFIG", str(write("env.toml", "env")))
    assert config.load(None).name == "env"
    assert config.load(str(write("flag.toml", "flag"))).name == "flag"


def test_round_trip_through_toml() -> None:
    cfg = config.load_file(SEED_FILE)
    again = config.structure(config.unstructure(cfg), "again")
    assert config.unstructure(again) == config.unstructure(cfg)
    tomli_w.dumps(config.unstructure(cfg))  # representable in TOML


# --------------------------------------------------------------------------- property tests

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
node_keys = st.sampled_from(
    [
        "name",
        "host",
        "user",
        "port",
        "role",
        "transport",
        "cpu_count",
        "gpu_count",
        "memory_gb",
        "tags",
        "ssh_key_path",
        "ray_start_params",
        "resource_sharing",
        "bogus",
    ]
)
nodes = st.dictionaries(node_keys, values, max_size=6)
top_keys = st.sampled_from(
    ["name", "ssh", "backend", "offload", "boost", "scheduler", "execution", "logging", "plugins",
     "resource_sharing", "junk"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"nodes": st.one_of(st.lists(nodes, max_size=3), values)},
        optional={k: values for k in ["name", "ssh", "backend", "offload", "boost", "execution", "logging",
                                      "resource_sharing", "plugins", "junk"]},
    )
)
def test_odd_configs_give_a_model_or_a_clear_error(data: dict[str, object]) -> None:
    try:
        cfg = config.structure(data, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
        assert "Traceback" not in str(exc)
    else:
        assert cfg.nodes and cfg.head in cfg.nodes


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_file_text_never_crashes(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for suffix in (".toml", ".yaml"):
        path = folder / f"c{suffix}"
        path.write_text(text)
        try:
            config.load_file(path)
        except ConfigError as exc:
            assert str(path) in str(exc)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "cpu": st.floats(min_value=0, max_value=100),
            "memory": st.floats(min_value=0, max_value=100),
        }
    ),
    st.from_regex(r"\A[a-h0-9_][a-h0-9_.-]{0,9}\Z"),
)
def test_valid_configs_round_trip(marks: dict[str, float], name: str) -> None:
    data = {
        "name": name,
        "nodes": [{"name": "n" + name, "host": "h"}],
        "offload": {"high": marks, "low": {"cpu": 0.0, "memory": 0.0}},
    }
    cfg = config.structure(data, "ok.toml")
    assert cfg.offload.high.cpu == marks["cpu"]
    assert config.unstructure(config.structure(config.unstructure(cfg), "x")) == config.unstructure(cfg)


# Odd values put anywhere in a config with every seed key: each gives a model or a ConfigError
# naming the bad value's place, never another exception.

ODD_VALUES = [math.nan, math.inf, -math.inf, 10**400, 2**64, -(10**30), 1e308, -1, -0.5, 0, "", "lots", "../../x",
              "[/]", "a=b", None, True, [], {}, [None], {"": None}, datetime.date(2024, 1, 1)]
ODD = st.one_of(st.sampled_from(ODD_VALUES), values)


def _places(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in children:
        found += _places(value, (*path, key))
    return found


SEED_DATA = yaml.safe_load(EVERY_KEY.read_text().replace("/tmp/grid-seed.log", "/tmp/grid-fuzz.log"))
PLACES = _places(SEED_DATA)


def _model_or_error_at(place: tuple[Any, ...], odd: object) -> None:
    data = copy.deepcopy(SEED_DATA)
    parent = data
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = odd
    try:
        cfg = config.structure(data, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml: invalid config:\n  ") and "Traceback" not in message
        assert str(place[-1]) in message, (place, odd, message)
    else:
        assert cfg.nodes and cfg.head in cfg.nodes
        tomli_w.dumps(config.unstructure(cfg))  # and it can be shown


def test_each_odd_value_at_each_place() -> None:
    for place in PLACES:
        for odd in ODD_VALUES:
            _model_or_error_at(place, odd)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(PLACES), ODD)
def test_random_values_anywhere_give_a_model_or_an_error_at_their_place(place: tuple[Any, ...], odd: object) -> None:
    _model_or_error_at(place, odd)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PLACES), ODD, st.sampled_from(PLACES), ODD)
def test_two_odd_values_report_both(place: tuple[Any, ...], odd: object, other: tuple[Any, ...],
                                    odd2: object) -> None:
    data = copy.deepcopy(SEED_DATA)
    for where, value in ((place, odd), (other, odd2)):
        parent = data
        try:
            for key in where[:-1]:
                parent = parent[key]
            parent[where[-1]] = value
        except (KeyError, IndexError, TypeError):  # the first change replaced this place's parent
            pass
    try:
        config.structure(data, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: ")


def test_what_would_fail_later_is_refused_by_validate_through_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: ../../x\n"
        "nodes:\n"
        "  - {name: a, memory_gb: .nan, port: 99999, connect_timeout: -1,\n"
        "     ray_start_params: {num-cpus: null, since: 2024-01-01}}\n"
        "offload: {interval_seconds: .inf}\n"
        "execution: {environment: {'A=B': '1'}}\n"
        "backend: {dashboard_port: -1}\n"
        f"logging: {{file_path: {tmp_path}/missing/grid.log}}\n"
        "plugins: {memory-pool: {capacity_gb: lots}}\n")
    result = grid("config", "validate", "-c", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    for line in ["name: '../../x' may hold only", "nodes[0].memory_gb: expected a finite number, got nan",
                 "nodes[0].port: expected 1-65535, got 99999", "nodes[0].connect_timeout: must be positive",
                 "nodes[0].ray_start_params['num-cpus']: expected a string, number or true/false, got None",
                 "nodes[0].ray_start_params['since']: expected a string, number or true/false, got datetime.date",
                 "offload.interval_seconds: expected a finite number, got inf",
                 "execution.environment['A=B']: environment variable name", "backend.dashboard_port: expected 1-65535",
                 "plugins['memory-pool'].capacity_gb: expected number, got 'lots'"]:
        assert line in result.stderr, (line, result.stderr)
    # Cross-field rules are reported once the values themselves are right.
    bad.write_text(
        "nodes:\n"
        "  - {name: a, ray_start_params: {resources: '{\"a\": \"x\"}', dashboard-host: 0.0.0.0}}\n"
        f"logging: {{file_path: {tmp_path}/missing/grid.log}}\n")
    result = grid("config", "validate", "-c", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for line in ["nodes[0].ray_start_params['resources']['a']: expected a resource name with a non-negative number",
                 "nodes[0].ray_start_params['dashboard-host']: may bind Ray beyond this node's address",
                 f"logging.file_path: directory '{tmp_path}/missing' does not exist"]:
        assert line in result.stderr, (line, result.stderr)


@pytest.mark.parametrize("name", ["config/local.toml", "config/three-nodes.toml",
                                  "examples/seed-project/config/my-cluster-enhanced.yaml",
                                  "tests/data/seed-every-key.yaml"])
def test_unstructure_writes_what_the_cattrs_converter_writes(name: str) -> None:
    """config.unstructure uses attrs' asdict (no code generation) for what cattrs would write."""
    cfg = config.load_file(Path(__file__).resolve().parent.parent / name)
    cfg = attrs.evolve(cfg, plugins={"memory-pool": {"capacity_share": 0.5}}, notes=("a note",))
    assert config.unstructure(cfg) == _pruned(config.converter.unstructure(cfg))


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    return [_pruned(v) for v in value] if isinstance(value, list) else value


def test_parsed_configs_are_kept_and_never_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_file keeps what it parsed (config.cache.keep); an edit, even of the same size within the
    same second, is read afresh; a damaged entry is ignored; a config with problems is never kept."""
    monkeypatch.setenv("GRID_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "grid.toml"
    path.write_text('name = "aa"\n[[nodes]]\nname = "n1"\n')
    assert config.load_file(path).name == "aa"
    kept = config.cache.file_for(path)
    assert kept.exists() and config.load_file(path) == config.structure(config.parse_file(path), str(path))
    path.write_text('name = "bb"\n[[nodes]]\nname = "n1"\n')  # same size, same second
    assert config.load_file(path).name == "bb"
    kept.write_bytes(b"not a pickle")
    assert config.load_file(path).name == "bb"
    path.write_text('name = "bb"\n[[nodes]]\nname = "n1"\ncpu_count = -1\n')
    kept.unlink()
    with pytest.raises(ConfigError, match="cpu_count"):
        config.load_file(path)
    assert not kept.exists()
    blocked = tmp_path / "a-file"  # a state directory that cannot be made: no cache, the same answer
    blocked.write_text("")
    monkeypatch.setenv("GRID_STATE_DIR", str(blocked))
    path.write_text('name = "cc"\n[[nodes]]\nname = "n1"\n')
    assert config.load_file(path).name == "cc"
