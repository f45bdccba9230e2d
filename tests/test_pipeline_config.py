"""ServiceConfig: YAML + env overrides, unknown keys rejected, the example documents every key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ServiceConfig, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_without_file():
    cfg = load_config(environ={})
    assert cfg.store.path == Path("eidetic-data")
    assert cfg.serve.host == "127.0.0.1" and cfg.serve.token is None


def test_yaml_then_env_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("store:\n  path: /a\ntrigger:\n  pre_roll_s: 2.5\n")
    cfg = load_config(f, environ={"EIDETIC__STORE__PATH": "/b", "EIDETIC__INGEST__PERCEPTION_FPS": "4"})
    assert cfg.store.path == Path("/b")
    assert cfg.trigger.pre_roll_s == 2.5
    assert cfg.ingest.perception_fps == 4.0


def test_token_from_env():
    cfg = load_config(environ={"EIDETIC_API_TOKEN": "s3cret"})
    assert cfg.serve.token.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("trigger:\n  pre_rol_s: 1\n", "trigger.pre_rol_s: unknown key"),
        ("storage:\n  path: x\n", "storage: unknown key"),
        ("ingest:\n  perception_fps: -1\n", "ingest.perception_fps"),
        ("- a\n- b\n", "must hold a mapping"),
        ("store: [unclosed\n", "cannot read config file"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, environ={})
    assert needle in str(e.value) and str(f) in str(e.value)


def test_unknown_env_key_rejected():
    with pytest.raises(ConfigError, match="ingest.nope"):
        load_config(environ={"EIDETIC__INGEST__NOPE": "1"})


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/eidetic.yaml", environ={})


def test_example_documents_every_key():
    example = yaml.safe_load((REPO / "deploy" / "config.example.yaml").read_text())
    model = ServiceConfig()
    assert set(example) == set(ServiceConfig.model_fields)
    for section, fields in example.items():
        assert set(fields) == set(type(getattr(model, section)).model_fields), section
    assert load_config(REPO / "deploy" / "config.example.yaml", environ={}) == load_config(environ={})


def test_example_file_is_what_the_code_writes():
    from pipeline.config import example_yaml

    assert (REPO / "deploy" / "config.example.yaml").read_text() == example_yaml(), (
        "regenerate with: eidetic config example > deploy/config.example.yaml"
    )
