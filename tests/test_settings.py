import pytest

from profilekit.training import PAPER_GRPO
from resources.settings import PROJECT_ROOT, Settings, SettingsError
from resources.training import TrainingResource

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model


def test_defaults_without_any_variable():
    s = Settings.from_environ({})
    assert s.env == "local" and s.data_dir == PROJECT_ROOT / ".data"
    assert s.warehouse_path == str(PROJECT_ROOT / ".data" / "warehouse.duckdb")
    assert s.domains == PROJECT_ROOT / "domains.yaml" and s.max_eval_users is None and not s.gcp_credentials


def test_values_are_typed_and_paths_follow_the_data_dir(tmp_path):
    s = Settings.from_environ({"PROFILEKIT_DATA_DIR": str(tmp_path), "PROFILEKIT_MAX_EVAL_USERS": " 50 ",
                               "PROFILEKIT_ENV": "gcp", "PROFILEKIT_GCP_CREDENTIALS": "e30=", "PROFILEKIT_TPU_FSDP": "8"})
    assert s.warehouse_path == str(tmp_path / "warehouse.duckdb") and s.store_root == tmp_path / "store"
    assert s.max_eval_users == 50 and s.env == "gcp" and s.gcp_credentials and s.tpu_fsdp == 8


@pytest.mark.parametrize("name, value", [("MAX_EVAL_USERS", "many"), ("TRAIN_STEPS", "0"), ("TPU_TP", "-1"), ("ENV", "azure")])
def test_unusable_values_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=f"PROFILEKIT_{name}={value!r}"):
        Settings.from_environ({f"PROFILEKIT_{name}": value})


def test_the_paper_budgets_reach_the_training_resource():
    resource = TrainingResource.of(PAPER_GRPO)
    assert (resource.users_per_step, resource.rollouts, resource.learning_rate) == (64, 8, 1e-6)
    assert TrainingResource.of(PAPER_GRPO, steps=3).steps == 3
