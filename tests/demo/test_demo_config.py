"""`instructrl demo --config FILE`: the demo's settings from YAML (`preset`, then DemoSettings keys), the
shipped demo.yaml being the full demo's, and bad files named at their line (exit 2, nothing run)."""

import dataclasses

import pytest
from conftest import run_cli

from instructrl.demo.settings import SHIPPED_CONFIG, DemoSettings, load_demo_settings


def test_the_shipped_demo_yaml_is_the_full_demo():
    assert load_demo_settings(SHIPPED_CONFIG) == DemoSettings.full()


def test_a_config_sets_its_keys_over_its_preset(tmp_path):
    f = tmp_path / "demo.yaml"
    f.write_text("preset: quick\nseed: 3\nk_range: [4, 6]\nusers:\n  n_users: 500\nmixed_precision: 'no'\n")
    quick = DemoSettings.quick(seed=3)
    expected = dataclasses.replace(
        quick,
        k_range=(4, 6),
        users=dataclasses.replace(quick.users, n_users=500),
        mixed_precision="no",
    )
    assert load_demo_settings(f) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preset: quick\nn_layers: 2\n", "demo.yaml:2: unknown key 'n_layers'. Did you mean 'n_layer'?"),
        ("users:\n  n_user: 3\n", "demo.yaml:2: unknown key 'users.n_user'. Did you mean 'n_users'?"),
        ("preset: quick\nn_layer: two\n", "demo.yaml:2: key 'n_layer': Input should be a valid integer"),
        (
            "users:\n  heavy_prompts: [1, x]\n",
            "demo.yaml:2: key 'users.heavy_prompts.1': Input should be a valid",
        ),
        ("preset: huge\n", "demo.yaml:1: preset 'huge': one of full, quick"),
        ("users: 3\n", "demo.yaml:1: 'users' must be a mapping of UserConfig keys"),
        ("- a list\n", "demo.yaml: expected a mapping of the demo's settings"),
    ],
)
def test_a_bad_demo_config_says_where_and_runs_nothing(tmp_path, text, message):
    (tmp_path / "demo.yaml").write_text(text)
    code, _, err = run_cli("demo", "--config", tmp_path / "demo.yaml", "--out", tmp_path / "out")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_quick_and_config_together_are_refused(tmp_path):
    code, _, err = run_cli("demo", "--quick", "--config", SHIPPED_CONFIG, "--out", tmp_path / "out")
    assert code == 2 and "--quick and --config: choose one" in err
