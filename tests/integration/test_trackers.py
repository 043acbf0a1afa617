"""`--set report_to=tensorboard`: the metrics of metrics.jsonl also go to TensorBoard, under the run directory."""

import json

import pytest
from conftest import SFT_SET, run_stage


def test_report_to_tensorboard_writes_the_metrics_jsonl_numbers_to_an_event_file(
    tiny_model_dir, data_dir, tmp_path
):
    pytest.importorskip("tensorboard")  # the [tensorboard] extra (in [dev])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sft"
    run_stage(
        "sft",
        out,
        [*SFT_SET, "max_steps=3", "report_to=tensorboard"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard" / "instructrl"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(m["step"], pytest.approx(m["train/loss"], rel=1e-6)) for m in logged]
    assert len(loss) == 3 and [e.value for e in events.Scalars("val/loss")] == [
        pytest.approx(logged[-1]["val/loss"], rel=1e-6)
    ]


def test_report_to_a_tracker_that_is_not_installed_is_refused_before_the_run_starts(monkeypatch, tmp_path):
    import accelerate.utils

    from instructrl.config import StageConfig
    from instructrl.errors import UserError
    from instructrl.training.runtime import make_accelerator

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(UserError, match=r"report_to=wandb needs wandb: pip install 'instructrl\[wandb\]'"):
        make_accelerator(StageConfig(report_to="wandb"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
