"""Config models: both formats, the lookup order, and clear errors for anything bad."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_core import config
from grid_core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_is_one_local_head() -> None:
    cfg = config.embedded_default()
    assert [(n.name, n.transport_name, n.is_head) for n in cfg.nodes] == [("local", "local", True)]
    assert cfg.source == config.EMBEDDED_DEFAULT


def test_example_configs_load() -> None:
    for path in sorted((REPO / "config").iterdir()):
        assert config.load_file(path).nodes, path


def test_seed_yaml_means_what_it_says() -> None:
    cfg = config.load_file(REPO / "config" / "my-cluster-enhanced.yaml")
    assert cfg.head.name == "gpu-master"  # role master is the head
    assert cfg.offload.high.cpu == 80.0 and cfg.offload.low.memory == 50.0 and cfg.offload.high.gpu == 90.0
    assert cfg.offload.interval_seconds == 5
    assert cfg.execution.environment == {"OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}
    worker = cfg.node("gpu-worker-1")
    assert worker.resource_sharing is not None and worker.resource_sharing.max_share_cpu == 6
    assert cfg.head.ray_start_params == {"resources": '{"head_gpu": 1}'}
    assert worker.transport_name == "ssh"


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
        ({"nodes": [{"name": "a"}], "offload": {"low": {"cpu": 90}}}, "offload.low.cpu: must not exceed"),
        ({"nodes": [{"name": "a"}], "logging": {"format": "xml"}}, "logging.format: expected one of 'text', 'json'"),
        (
            {"nodes": [{"name": "a"}], "execution": {"resource_sharing": {"thresholds": {"disk_pressure_high": 1}}}},
            "unknown key 'disk_pressure_high'",
        ),
        ([1, 2], "expected a table of settings"),
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
    cfg = config.load_file(REPO / "config" / "my-cluster-enhanced.yaml")
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
    ["name", "ssh", "backend", "offload", "scheduler", "execution", "logging", "plugins", "junk"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"nodes": st.one_of(st.lists(nodes, max_size=3), values)},
        optional={k: values for k in ["name", "offload", "execution", "logging", "junk"]},
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


@settings(max_examples=200)
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


@settings(max_examples=200)
@given(
    st.fixed_dictionaries(
        {
            "cpu": st.floats(min_value=0, max_value=100),
            "memory": st.floats(min_value=0, max_value=100),
        }
    ),
    st.text(alphabet="abcdefgh-_.0123456789", min_size=1, max_size=10),
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
